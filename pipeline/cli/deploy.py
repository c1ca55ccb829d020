"""`deploy`, `stop`, `status`, `logs`, `exec`: run the image on the cluster and look after it.

Each command maps its flags onto `pipeline.deploy.service` and renders what comes back; the decisions
(modes, options, which commands run where) are made there, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.launching import deploy_options, run_deploy
from pipeline.cli.nodeopts import cluster_from, cluster_options, limit_option, limited, name_option
from pipeline.cli.types import PORT, Tail

if TYPE_CHECKING:
    from pipeline.deploy.service import Deployer


@click.command(context_settings={"ignore_unknown_options": False})
@deploy_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def deploy(command: tuple[str, ...], **o: Any) -> None:
    """Ship the image, start the cluster, run COMMAND, and return when it answers.

    \b
    Examples:
      python -m pipeline deploy --solo -- vllm serve Qwen/Qwen3-8B --port 8000
      python -m pipeline deploy -n 192.168.100.10,192.168.100.11 -- vllm serve org/model -tp 2
      python -m pipeline deploy --ray --dry-run -- vllm serve org/model -tp 2
    """
    run_deploy(command, o)


def _deployer(o: dict[str, Any], name: str, limit: str | None = None) -> Deployer:
    from pipeline import paths
    from pipeline.deploy.service import Deployer

    return Deployer(limited(cluster_from(o), limit, paths.failed_hosts_file()), name)


@click.command()
@cluster_options
@name_option
@limit_option
def stop(name: str, limit: str | None, **o: Any) -> None:
    """Remove the deployment's container on every node."""
    from pipeline import paths
    from pipeline.cli.console import console
    from pipeline.cli.tables import outcome_table
    from pipeline.deploy.failed import record_failed

    deployer = _deployer(o, name, limit)
    try:
        results = deployer.stop()
    finally:
        deployer.close()
    console.print(outcome_table("stop", results, lambda v: str(v)))
    record_failed(paths.failed_hosts_file(), list(results.failed))
    results.raise_if_failed("stop")


STATUS_COLUMNS = ("node", "role", "container", "exit", "health", "ray_nodes", "image")


@click.command()
@cluster_options
@name_option
@limit_option
@click.option("--port", type=PORT, default=8000, show_default=True, help="The server port to check on the head.")
@click.option("--json", "as_json", is_flag=True, help="Per-node status as JSON on stdout.")
def status(name: str, limit: str | None, port: int, as_json: bool, **o: Any) -> None:
    """Per node: container, image, role, exit status, health and Ray nodes (on the head). Exits 1 when
    a node cannot be reached."""
    from rich.markup import escape
    from rich.table import Table

    from pipeline.cli.console import console, emit_json

    deployer = _deployer(o, name, limit)
    try:
        results = deployer.status(port)
    finally:
        deployer.close()
    rows = [
        o_.result
        if o_.ok
        else {**dict.fromkeys(STATUS_COLUMNS, ""), "node": o_.node.label, "container": f"unreachable: {o_.reason}"}
        for o_ in results
    ]
    if as_json:
        emit_json(rows)
    table = Table(title="status", title_justify="left")
    for col in STATUS_COLUMNS:
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(r[c]) for c in STATUS_COLUMNS))
    console.print(table)
    results.raise_if_failed("status")


@click.command()
@cluster_options
@name_option
@click.option("--node", "node_name", default=None, help="Which node [default: the head].")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming (Ctrl-C ends).")
@click.option("--tail", type=Tail(), default="200", show_default=True, help="Lines from the end (or all).")
def logs(name: str, node_name: str | None, follow: bool, tail: str, **o: Any) -> None:
    """The container log of one node (the command's output goes there)."""
    from pipeline.errors import HostError

    deployer = _deployer(o, name)
    node = deployer.spec.node(node_name)
    try:
        argv = ["docker", "logs", "--tail", tail, *(["-f"] if follow else []), name]
        status = deployer.hosts.stream(node, argv)
        if status != 0:
            raise HostError(node.label, "docker logs failed", remote_status=status)
    except KeyboardInterrupt:
        pass
    finally:
        deployer.close()


@click.command("exec")
@cluster_options
@name_option
@click.option("--node", "node_name", default=None, help="Which node [default: the head].")
@click.option("--all", "all_nodes", is_flag=True, help="Every node, in parallel.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, node_name: str | None, all_nodes: bool, command: tuple[str, ...], **o: Any) -> None:
    """Run COMMAND in the deployment's container (after --). Exits 1 when it fails on any node."""
    from rich.markup import escape

    from pipeline.cli.console import console
    from pipeline.errors import NodesFailed

    deployer = _deployer(o, name)
    if all_nodes and node_name:
        raise click.UsageError("--node and --all exclude each other")
    nodes = deployer.spec.ordered() if all_nodes else [deployer.spec.node(node_name)]
    try:
        results = deployer.exec(nodes, command)
    finally:
        deployer.close()
    bad: dict[str, str] = {}
    for out in results:
        prefix = f"[{out.node.label}] " if len(nodes) > 1 else ""
        if not out.ok:
            bad[out.node.label] = out.reason
            console.print(f"{escape(prefix)}[red]{escape(out.reason)}[/red]")
            continue
        ran = out.result
        click.echo("".join(f"{prefix}{line}\n" for line in ran.stdout.splitlines()), nl=False)
        if ran.stderr:
            console.print(escape(ran.stderr.rstrip()))
        if ran.status != 0:
            bad[out.node.label] = f"exit status {ran.status}"
    if bad:
        raise NodesFailed(f"the command failed on {', '.join(bad)}", bad)

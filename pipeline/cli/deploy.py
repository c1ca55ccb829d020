"""`deploy`, `stop`, `status`, `logs`, `exec`: run the image on the cluster and look after it.

Each command maps its flags onto `pipeline.deploy.service` and renders what comes back; the decisions
(modes, options, which commands run where) are made there, not here.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.nodes import cluster_from, cluster_options, facts_option, limit_option, limited, read_facts
from pipeline.cli.types import PORT, ContainerName, ImageRef, Tail, Volume
from pipeline.contract import CONTAINER

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.deploy.service import Deployer, DeployPlan, DeployRequest
    from pipeline.launch.plan import LaunchPlan

name_option = click.option("--name", type=ContainerName(), default=CONTAINER, show_default=True,
                           help="Container name on every node.")


def request_from(command: tuple[str, ...], o: dict[str, Any]) -> Any:
    from pipeline.deploy.service import DeployRequest
    from pipeline.launch.plan import resolve_mode

    limits = {k: o[k] for k in ("mem_limit_gb", "mem_swap_limit_gb", "pids_limit", "shm_size_gb") if o[k] is not None}
    return DeployRequest(
        command=command, image=o["image"], mode=resolve_mode(o["solo"], o["ray"]), name=o["name"], env=o["env"],
        nccl_debug=o["nccl_debug"], privileged=not o["non_privileged"], limits=limits, nofile=o["nofile"],
        earlyoom=o["earlyoom"], earlyoom_args=o["earlyoom_args"], cache_dirs=not o["no_cache_dirs"],
        volumes=o["volumes"], master_port=o["master_port"], jobs=o["jobs"], gpus=o["gpus"],
        ray_num_cpus=o["ray_num_cpus"], ray_object_store_bytes=o["ray_object_store_bytes"], mods=o["mods"],
        vllm_prs=o["vllm_prs"], vllm_repo=o["vllm_repo"], ship_mode=o["ship_mode"], timeout=o["timeout"],
        force=o["force"], cleanup_on_failure=o["cleanup_on_failure"])


@click.command(context_settings={"ignore_unknown_options": False})
@cluster_options
@name_option
@click.option("--image", type=ImageRef(), default=None,
              help="Image to run. Overrides cluster.yaml `image` (default vllm-node).")
@click.option("--ray/--no-ray", "ray", default=None, help="Ray cluster, or (default for 2+ nodes) vLLM's own "
                                                          "multi-node mode with --nnodes/--node-rank.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Environment for every container; repeatable.")
@click.option("--nccl-debug", is_flag=False, flag_value="INFO", default=None, metavar="[LEVEL]",
              type=click.Choice(["VERSION", "WARN", "INFO", "TRACE"], case_sensitive=False),
              help="Set NCCL_DEBUG (INFO when no level is given).")
@click.option("--non-privileged", is_flag=True, help="No --privileged: IPC_LOCK, /dev/infiniband and limits.")
@click.option("--nofile", type=click.IntRange(min=1024), envvar="VLLM_SPARK_NOFILE_LIMIT", default=1048576,
              show_default=True, help="Open-files limit in the containers (env VLLM_SPARK_NOFILE_LIMIT).")
@click.option("--mem-limit-gb", type=click.IntRange(min=1), default=None,
              help="Memory limit (with --non-privileged) [110].")
@click.option("--mem-swap-limit-gb", type=click.IntRange(min=1), default=None, help="Memory+swap limit [mem + 10].")
@click.option("--pids-limit", type=click.IntRange(min=16), default=None,
              help="PIDs limit (with --non-privileged) [4096].")
@click.option("--shm-size-gb", type=click.IntRange(min=1), default=None,
              help="/dev/shm size (with --non-privileged) [64].")
@click.option("--earlyoom", is_flag=True, help="Run earlyoom as the container's keepalive process.")
@click.option("--earlyoom-args", default=None, help="earlyoom arguments (implies --earlyoom).")
@click.option("--no-cache-dirs", is_flag=True, help="Do not mount the vLLM/FlashInfer/Triton cache dirs.")
@click.option("-v", "--volume", "volumes", multiple=True, type=Volume(), help="Extra mount on every node.")
@click.option("--master-port", type=PORT, default=29501, show_default=True, help="Ray / torch.distributed port.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="MAX_JOBS etc. inside the containers (JIT compiles).")
@click.option("--gpus", type=click.Choice(["all", "none"]), default="all", show_default=True,
              help="none: no GPU is requested (hosts without the NVIDIA runtime, e.g. tests).")
@click.option("--apply-mod", "mods", multiple=True, metavar="DIR|ZIP|NAME",
              help="Patch each container before the command (mods/<name>/run.sh); repeatable, in order.")
@click.option("--apply-vllm-pr", "vllm_prs", multiple=True, metavar="N|URL",
              help="Apply a vLLM PR (python-only) in each container before the command; repeatable, after mods.")
@click.option("--vllm-repo", default="https://github.com/vllm-project/vllm.git", show_default=True,
              help="Where --apply-vllm-pr finds PRs (a fork, a file:// URL or a local path).")
@click.option("--ship", "ship_mode", type=click.Choice(["registry", "stream"]), default="registry",
              show_default=True, help="How the image reaches nodes that lack it.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1800, show_default=True,
              help="Seconds until the server must answer /health and /v1/models.")
@click.option("--force", is_flag=True, help="Redeploy even when every node runs this exact deployment.")
@click.option("--cleanup-on-failure", is_flag=True, help="Remove the containers when the launch fails.")
@click.option("--ray-num-cpus", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--ray-object-store-bytes", type=click.IntRange(min=78643200), default=1073741824, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print every command each node would run, and why; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan and its commands as JSON on stdout.")
@facts_option
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


def run_deploy(command: tuple[str, ...], o: dict[str, Any]) -> None:
    """deploy's work for its flags `o` (also `recipe run`'s, with the recipe's command, env and mods)."""
    from pipeline import paths
    from pipeline.cli.console import ConsoleReporter, console, say
    from pipeline.deploy.failed import record_failed
    from pipeline.deploy.service import Deployer
    from pipeline.errors import LaunchFailed
    from pipeline.launch.mods import cleanup

    if o["facts_file"] is not None and not o["dry_run"]:
        raise click.UsageError("--facts plans from saved facts: use it with --dry-run (a deploy reads the nodes)")
    request = request_from(command, o)
    spec = cluster_from(o)
    saved = read_facts(o["facts_file"], spec) if o["facts_file"] is not None else None
    deployer = Deployer(spec, o["name"], ConsoleReporter())
    secrets = request.secrets(spec)
    mods = deployer.load_mods(request)
    try:
        dp = plan_recording_failures(deployer, request, mods, secrets, saved, o["dry_run"])
        for note in dp.launch.notes:
            say(f"note: {note}")
        for w in dp.warnings:
            say(w, "warn")
        if o["dry_run"]:
            show_dry_run(dp, o["as_json"])
            return
        started = time.monotonic()
        try:
            result = deployer.apply(dp, request, secrets)
        except LaunchFailed as e:
            record_failed(paths.failed_hosts_file(), list(e.failures))
            show_failure(e)
            raise
        record_failed(paths.failed_hosts_file(), [])
        if result.skipped:
            say(f"nothing to do: {dp.steps.nothing}")
        else:
            console.print(result_table(result.dep.rows()))
            say(f"ready in {time.monotonic() - started:.1f} s: http://{dp.launch.head.ip}:{dp.launch.port}/v1")
        named = f" --name {o['name']}" if o["name"] != CONTAINER else ""
        say(f"useful: python -m pipeline status{named} | logs{named} -f | exec{named} -- CMD | stop{named}")
    finally:
        cleanup(mods, paths.deploy_workdir())
        deployer.close()


def plan_recording_failures(deployer: Deployer, request: DeployRequest, mods: list[Any], secrets: Any,
                            saved: Any, dry_run: bool) -> DeployPlan:
    """The deploy plan; nodes it cannot launch on are recorded for `--limit @failed` like a failed apply's
    (a dry run from saved facts contacted nothing, so it records nothing)."""
    from pipeline import paths
    from pipeline.deploy.failed import record_failed
    from pipeline.errors import LaunchFailed

    try:
        return deployer.plan(request, mods, secrets, saved)
    except LaunchFailed as e:
        if not dry_run:
            record_failed(paths.failed_hosts_file(), list(e.failures))
        raise


def show_dry_run(dp: DeployPlan, as_json: bool) -> None:
    from pipeline.cli.console import console, emit_json, say

    if as_json:
        emit_json({**dp.launch.to_json(), "warnings": dp.warnings, "steps": dp.steps.to_json()})
    console.print(plan_table(dp.launch))
    for line in dp.steps.lines():
        say(line)


def show_failure(e: Any) -> None:
    from rich.markup import escape

    from pipeline.cli.console import console, say

    dep = e.deployment
    if dep is not None:
        console.print(result_table(dep.rows()))
        for name, st in dep.states.items():
            if st.log_tail:
                console.rule(f"{escape(name)}: last lines of the container log")
                console.print(escape(st.log_tail), soft_wrap=True)
    say("containers are left for inspection: `python -m pipeline logs`, `… stop` removes them")


def plan_table(p: LaunchPlan) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from pipeline.launch.plan import command_of

    table = Table(title=f"deploy plan ({p.mode})", title_justify="left")
    for col in ("node", "role", "ip", "eth_if", "ib_if", "starts"):
        table.add_column(col)
    for n in p.nodes:
        starts = "\n".join(shlex.join(command_of(s)) for s in n.start)
        table.add_row(escape(n.name), f"{n.role} (rank {n.rank})", escape(n.ip), escape(n.eth_if or "?"),
                      escape(",".join(n.ib_if) or "-"), escape(starts))
    return table


def result_table(rows: list[tuple[str, str, str, str]]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="nodes", title_justify="left")
    for col in ("node", "role", "status", "detail"):
        table.add_column(col)
    for name, role, status, detail in rows:
        color = {"ready": "green", "skipped": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(escape(name), role, f"[{color}]{status}[/{color}]", escape(detail[:200]))
    return table


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
    from pipeline.cli.nodes import outcome_table
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
    rows = [o_.result if o_.ok else {**dict.fromkeys(STATUS_COLUMNS, ""), "node": o_.node.label,
                                     "container": f"unreachable: {o_.reason}"} for o_ in results]
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

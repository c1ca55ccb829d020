"""`deploy`, `stop`, `status`, `logs`, `exec`: run the image on the cluster and look after it."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from pipeline.build.store import cache_root
from pipeline.cli.nodes import cluster_from, cluster_options, failed_file, limit_option, limited
from pipeline.deploy.apply import LaunchFailed, record_failed
from pipeline.deploy.launch import Options, command_of, parse_env_items
from pipeline.deploy.mods import cleanup, load_mod
from pipeline.deploy.run import Cluster, fail_table_rows, secrets_from_env
from pipeline.errors import ConfigError, PipelineError
from pipeline.ui import console, emit_json

REPO_MODS = Path(__file__).resolve().parents[2] / "mods"


name_option = click.option("--name", default="vllm_node", show_default=True, help="Container name on every node.")


@click.command(context_settings={"ignore_unknown_options": False})
@cluster_options
@name_option
@click.option("--image", default=None, help="Image to run. Overrides cluster.yaml `image` (default vllm-node).")
@click.option("--ray/--no-ray", "ray", default=None, help="Ray cluster, or (default for 2+ nodes) vLLM's own "
                                                          "multi-node mode with --nnodes/--node-rank.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Environment for every container; repeatable.")
@click.option("--nccl-debug", is_flag=False, flag_value="INFO", default=None, metavar="[LEVEL]",
              help="Set NCCL_DEBUG (INFO when no level is given).")
@click.option("--non-privileged", is_flag=True, help="No --privileged: IPC_LOCK, /dev/infiniband and limits.")
@click.option("--nofile", type=click.IntRange(min=1024), envvar="VLLM_SPARK_NOFILE_LIMIT", default=1048576,
              show_default=True, help="Open-files limit in the containers (env VLLM_SPARK_NOFILE_LIMIT).")
@click.option("--mem-limit-gb", type=int, default=None, help="Memory limit (with --non-privileged) [110].")
@click.option("--mem-swap-limit-gb", type=int, default=None, help="Memory+swap limit [mem + 10].")
@click.option("--pids-limit", type=int, default=None, help="PIDs limit (with --non-privileged) [4096].")
@click.option("--shm-size-gb", type=int, default=None, help="/dev/shm size (with --non-privileged) [64].")
@click.option("--earlyoom", is_flag=True, help="Run earlyoom as the container's keepalive process.")
@click.option("--earlyoom-args", default=None, help="earlyoom arguments (implies --earlyoom).")
@click.option("--no-cache-dirs", is_flag=True, help="Do not mount the vLLM/FlashInfer/Triton cache dirs.")
@click.option("-v", "--volume", "volumes", multiple=True, metavar="SRC:DST", help="Extra mount on every node.")
@click.option("--master-port", type=int, default=29501, show_default=True, help="Ray / torch.distributed port.")
@click.option("-j", "--jobs", type=int, default=None, help="MAX_JOBS etc. inside the containers (JIT compiles).")
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
@click.option("--timeout", type=float, default=1800, show_default=True,
              help="Seconds until the server must answer /health and /v1/models.")
@click.option("--force", is_flag=True, help="Redeploy even when every node runs this exact deployment.")
@click.option("--cleanup-on-failure", is_flag=True, help="Remove the containers when the launch fails.")
@click.option("--ray-num-cpus", type=int, default=2, show_default=True)
@click.option("--ray-object-store-bytes", type=int, default=1073741824, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan (per node: role, interfaces, docker run, command).")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON on stdout.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def deploy(command: tuple[str, ...], **o: Any) -> None:
    """Ship the image, start the cluster, run COMMAND, and return when it answers.

    \b
    Examples:
      python -m pipeline deploy --solo -- vllm serve Qwen/Qwen3-8B --port 8000
      python -m pipeline deploy -n 192.168.100.10,192.168.100.11 -- vllm serve org/model -tp 2
      python -m pipeline deploy --ray -- vllm serve org/model -tp 2 --dry-run
    """
    spec = cluster_from(o)
    if not o["non_privileged"] and any(o[k] is not None for k in ("mem_limit_gb", "mem_swap_limit_gb", "pids_limit",
                                                                   "shm_size_gb")):
        raise ConfigError("--mem-limit-gb, --mem-swap-limit-gb, --pids-limit and --shm-size-gb need --non-privileged")
    image = o["image"] or spec.image
    mode = "auto" if o["ray"] is None else ("ray" if o["ray"] else "noray")
    if o["solo"]:
        if o["ray"] is not None:
            raise ConfigError("--ray/--no-ray make no sense with --solo")
        mode = "solo"
    workdir = cache_root() / "deploy"
    workdir.mkdir(parents=True, exist_ok=True)
    mods = [load_mod(m, [Path("mods"), REPO_MODS], workdir) for m in o["mods"]]
    mods += pr_mods(o["vllm_prs"], o["vllm_repo"], workdir)
    secrets = secrets_from_env()
    opts = Options(
        image=image, command=tuple(command), mode=mode, name=o["name"],
        env=tuple(list(spec.container_env.items()) + parse_env_items(o["env"])),
        secret_env=tuple(secrets), nccl_debug=o["nccl_debug"], privileged=not o["non_privileged"], nofile=o["nofile"],
        **{k: o[k] for k in ("mem_limit_gb", "pids_limit", "shm_size_gb") if o[k] is not None},
        mem_swap_limit_gb=o["mem_swap_limit_gb"], gpus=o["gpus"], earlyoom=bool(o["earlyoom"] or o["earlyoom_args"]),
        **({"earlyoom_args": o["earlyoom_args"]} if o["earlyoom_args"] else {}),
        cache_dirs=not o["no_cache_dirs"], volumes=tuple(o["volumes"]), master_port=o["master_port"], jobs=o["jobs"],
        ray_num_cpus=o["ray_num_cpus"], ray_object_store_memory=o["ray_object_store_bytes"],
        mods=tuple(f"{m.name}:{m.digest}" for m in mods))
    cluster = Cluster(spec, o["name"])
    try:
        the_plan, _ = cluster.make_plan(opts, image)
        for note in the_plan.notes:
            console.print(f"note: {note}")
        if o["dry_run"]:
            if o["as_json"]:
                emit_json(the_plan.to_json())
            console.print(plan_table(the_plan))
            return
        started = time.monotonic()
        try:
            result = cluster.deploy(the_plan, opts, mods, o["ship_mode"], o["force"], o["timeout"],
                                    cache_root() / "ship", secrets)
        except LaunchFailed as e:
            dep = e.dep
            failed = list(e.failures)
            record_failed(failed_file(), failed)
            if dep is not None:
                console.print(result_table(fail_table_rows(dep)))
                for name, st in dep.states.items():
                    if st.log_tail:
                        console.rule(f"{name}: last lines of the container log")
                        console.print(escape(st.log_tail), soft_wrap=True)
            if o["cleanup_on_failure"]:
                cluster.stop()
                console.print("removed the containers (--cleanup-on-failure)")
            else:
                console.print("containers are left for inspection: `python -m pipeline logs`, `… stop` removes them")
            raise
        record_failed(failed_file(), [])
        if result.skipped:
            console.print(f"nothing to do: every node runs this deployment and "
                          f"http://{the_plan.head.ip}:{the_plan.port} answers (--force redeploys)")
        else:
            console.print(result_table(fail_table_rows(result.dep)))
            console.print(f"ready in {time.monotonic() - started:.1f} s: http://{the_plan.head.ip}:{the_plan.port}/v1")
        console.print("useful: python -m pipeline status | logs -f | exec -- CMD | stop")
    finally:
        cleanup(mods, workdir)
        cluster.close()


def pr_mods(prs: tuple[str, ...], repo: str, workdir: Path) -> list:
    """--apply-vllm-pr values -> generated mods (PRs fetched through the source mirror)."""
    from pipeline.build.sources import Mirrors
    from pipeline.deploy.prmod import fetch_pr_diff, launch_diff, make_mod
    from pipeline.spec.types import parse_pr

    out = []
    for raw in prs:
        try:
            pr = parse_pr(raw)
        except ValueError as e:
            raise ConfigError(f"--apply-vllm-pr {raw}: {e}") from None
        label, head, diff = fetch_pr_diff(Mirrors(cache_root()), repo, Path.cwd(), pr)
        kept, dropped = launch_diff(diff, label)
        if dropped:
            console.print(f"vLLM PR {label}: leaving out {len(dropped)} file(s) not needed at launch "
                          f"({', '.join(dropped[:3])}{'…' if len(dropped) > 3 else ''})")
        out.append(make_mod(label, head, kept, workdir))
    return out


def plan_table(p: Any) -> Table:
    table = Table(title=f"deploy plan ({p.mode})", title_justify="left")
    for col in ("node", "role", "ip", "eth_if", "ib_if", "starts"):
        table.add_column(col)
    for n in p.nodes:
        starts = "\n".join(shlex.join(command_of(s)) for s in n.start)
        table.add_row(n.name, f"{n.role} (rank {n.rank})", n.ip, n.eth_if or "?", ",".join(n.ib_if) or "-", starts)
    return table


def result_table(rows: list[tuple[str, str, str, str]]) -> Table:
    table = Table(title="nodes", title_justify="left")
    for col in ("node", "role", "status", "detail"):
        table.add_column(col)
    for name, role, status, detail in rows:
        color = {"ready": "green", "skipped": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(name, role, f"[{color}]{status}[/{color}]", escape(detail[:200]))
    return table


@click.command()
@cluster_options
@name_option
@limit_option
def stop(name: str, limit: str | None, **o: Any) -> None:
    """Remove the deployment's container on every node."""
    cluster = Cluster(limited(cluster_from(o), limit), name)
    try:
        rows = cluster.stop()
    finally:
        cluster.close()
    table = Table(title="stop", title_justify="left")
    table.add_column("node")
    table.add_column("result")
    for n, r in rows:
        table.add_row(n, r)
    console.print(table)
    failed = [n for n, r in rows if r.startswith("failed")]
    record_failed(failed_file(), failed)
    if failed:
        raise PipelineError(f"stop failed on {', '.join(failed)}")


@click.command()
@cluster_options
@name_option
@limit_option
@click.option("--port", type=int, default=8000, show_default=True, help="The server port to check on the head.")
@click.option("--json", "as_json", is_flag=True, help="Per-node status as JSON on stdout.")
def status(name: str, limit: str | None, port: int, as_json: bool, **o: Any) -> None:
    """Per node: container, image, role, exit status, health and Ray nodes (on the head)."""
    cluster = Cluster(limited(cluster_from(o), limit), name)
    try:
        rows = cluster.status(port)
    finally:
        cluster.close()
    if as_json:
        emit_json(rows)
    table = Table(title="status", title_justify="left")
    for col in ("node", "role", "container", "exit", "health", "ray_nodes", "image"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(r[c]) for c in ("node", "role", "container", "exit", "health", "ray_nodes", "image")))
    console.print(table)


@click.command()
@cluster_options
@name_option
@click.option("--node", "node_name", default=None, help="Which node [default: the head].")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming (Ctrl-C ends).")
@click.option("--tail", default="200", show_default=True, help="Lines from the end (or all).")
def logs(name: str, node_name: str | None, follow: bool, tail: str, **o: Any) -> None:
    """The container log of one node (the command's output goes there)."""
    spec = cluster_from(o)
    node = next((n for n in spec.nodes if node_name in (n.label, n.address)), None) if node_name else spec.head
    if node is None:
        raise ConfigError(f"--node {node_name}: not a node of the cluster")
    cluster = Cluster(spec, name)
    try:
        argv = ["docker", "logs", "--tail", tail, *(["-f"] if follow else []), name]
        conn = cluster.hosts.open(node)
        conn.run(shlex.join(argv), warn=True, in_stream=False, pty=False)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()


@click.command("exec")
@cluster_options
@name_option
@click.option("--node", "node_name", default=None, help="Which node [default: the head].")
@click.option("--all", "all_nodes", is_flag=True, help="Every node, in parallel.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str, node_name: str | None, all_nodes: bool, command: tuple[str, ...], **o: Any) -> None:
    """Run COMMAND in the deployment's container (after --)."""
    spec = cluster_from(o)
    nodes = spec.ordered() if all_nodes else [next((n for n in spec.nodes if node_name in (n.label, n.address)),
                                                    None) if node_name else spec.head]
    if nodes[0] is None:
        raise ConfigError(f"--node {node_name}: not a node of the cluster")
    cluster = Cluster(spec, name)
    try:
        outcomes = cluster.hosts.each(lambda n: cluster.hosts.run(n, ["docker", "exec", name, *command], check=False,
                                                                  timeout=3600), nodes)  # type: ignore[list-item]
    finally:
        cluster.close()
    bad = []
    for out in outcomes:
        prefix = f"[{out.node.label}] " if len(nodes) > 1 else ""
        if not out.ok:
            bad.append(out.node.label)
            console.print(f"{prefix}[red]{escape(str(out.error))}[/red]")
            continue
        ran = out.value
        click.echo("".join(f"{prefix}{line}\n" for line in ran.stdout.splitlines()), nl=False)  # type: ignore[union-attr]
        if ran.stderr:  # type: ignore[union-attr]
            console.print(escape(ran.stderr.rstrip()))  # type: ignore[union-attr]
        if ran.exit_code != 0:  # type: ignore[union-attr]
            bad.append(out.node.label)
    if bad:
        raise PipelineError(f"the command failed on {', '.join(bad)}")


def register(group: click.Group) -> None:
    for cmd in (deploy, stop, status, logs, exec_):
        group.add_command(cmd)

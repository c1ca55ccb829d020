"""What `deploy` and `recipe run` share: deploy's flags (each default taken from DeployRequest, defined
once), the request they make, and how a deploy is run and rendered (plan, dry run, result, failure)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.nodeopts import cluster_from, cluster_options, facts_option, name_option, read_facts
from pipeline.cli.types import PORT, ImageRef, Volume
from pipeline.contract import CONTAINER
from pipeline.deploy.request import DeployRequest

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.deploy.service import Deployer, DeployPlan
    from pipeline.launch.plan import LaunchPlan

F = Callable[..., Any]
DEFAULTS = DeployRequest(command=())


def deploy_options(f: F) -> F:
    """Every flag of `deploy` (also `recipe run`'s), in the order --help lists them."""
    for option in reversed(
        [
            cluster_options,
            name_option,
            click.option(
                "--image",
                type=ImageRef(),
                default=None,
                help="Image to run. Overrides cluster.yaml `image` (default vllm-node).",
            ),
            click.option(
                "--ray/--no-ray",
                "ray",
                default=None,
                help="Ray cluster, or (default for 2+ nodes) vLLM's own multi-node mode with --nnodes/--node-rank.",
            ),
            click.option(
                "-e", "--env", "env", multiple=True, metavar="K=V", help="Environment for every container; repeatable."
            ),
            click.option(
                "--nccl-debug",
                is_flag=False,
                flag_value="INFO",
                default=None,
                metavar="[LEVEL]",
                type=click.Choice(["VERSION", "WARN", "INFO", "TRACE"], case_sensitive=False),
                help="Set NCCL_DEBUG (INFO when no level is given).",
            ),
            click.option(
                "--non-privileged", is_flag=True, help="No --privileged: IPC_LOCK, /dev/infiniband and limits."
            ),
            click.option(
                "--nofile",
                type=click.IntRange(min=1024),
                envvar="VLLM_SPARK_NOFILE_LIMIT",
                default=DEFAULTS.nofile,
                show_default=True,
                help="Open-files limit in the containers (env VLLM_SPARK_NOFILE_LIMIT).",
            ),
            click.option(
                "--mem-limit-gb",
                type=click.IntRange(min=1),
                default=None,
                help="Memory limit (with --non-privileged) [110].",
            ),
            click.option(
                "--mem-swap-limit-gb", type=click.IntRange(min=1), default=None, help="Memory+swap limit [mem + 10]."
            ),
            click.option(
                "--pids-limit",
                type=click.IntRange(min=16),
                default=None,
                help="PIDs limit (with --non-privileged) [4096].",
            ),
            click.option(
                "--shm-size-gb",
                type=click.IntRange(min=1),
                default=None,
                help="/dev/shm size (with --non-privileged) [64].",
            ),
            click.option("--earlyoom", is_flag=True, help="Run earlyoom as the container's keepalive process."),
            click.option("--earlyoom-args", default=None, help="earlyoom arguments (implies --earlyoom)."),
            click.option("--no-cache-dirs", is_flag=True, help="Do not mount the vLLM/FlashInfer/Triton cache dirs."),
            click.option("-v", "--volume", "volumes", multiple=True, type=Volume(), help="Extra mount on every node."),
            click.option(
                "--master-port",
                type=PORT,
                default=DEFAULTS.master_port,
                show_default=True,
                help="Ray / torch.distributed port.",
            ),
            click.option(
                "-j",
                "--jobs",
                type=click.IntRange(min=1),
                default=None,
                help="MAX_JOBS etc. inside the containers (JIT compiles).",
            ),
            click.option(
                "--gpus",
                type=click.Choice(["all", "none"]),
                default=DEFAULTS.gpus,
                show_default=True,
                help="none: no GPU is requested (hosts without the NVIDIA runtime, e.g. tests).",
            ),
            click.option(
                "--apply-mod",
                "mods",
                multiple=True,
                metavar="DIR|ZIP|NAME",
                help="Patch each container before the command (mods/<name>/run.sh); repeatable, in order.",
            ),
            click.option(
                "--apply-vllm-pr",
                "vllm_prs",
                multiple=True,
                metavar="N|URL",
                help="Apply a vLLM PR (python-only) in each container before the command; repeatable, after mods.",
            ),
            click.option(
                "--vllm-repo",
                default=DEFAULTS.vllm_repo,
                show_default=True,
                help="Where --apply-vllm-pr finds PRs (a fork, a file:// URL or a local path).",
            ),
            click.option(
                "--ship",
                "ship_mode",
                type=click.Choice(["registry", "stream"]),
                default=DEFAULTS.ship_mode,
                show_default=True,
                help="How the image reaches nodes that lack it.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=DEFAULTS.timeout,
                show_default=True,
                help="Seconds, in all, until the server must answer /health and /v1/models (each startup "
                "phase also has its own deadline: --phase-timeout).",
            ),
            click.option(
                "--phase-timeout",
                "phase_timeouts",
                multiple=True,
                metavar="PHASE=SECONDS",
                help="A startup phase's own deadline, from when the head's log shows it: start "
                "(900), weights (3600), compile (3600, torch.compile, autotune, CUDA graphs), serve (900). "
                "Repeatable.",
            ),
            click.option(
                "--force",
                is_flag=True,
                help="Redeploy even when every node runs this exact deployment, and launch even when the "
                "memory estimate says the model does not fit.",
            ),
            click.option("--cleanup-on-failure", is_flag=True, help="Remove the containers when the launch fails."),
            click.option(
                "--api-key",
                type=click.Choice(["auto"]),
                default=None,
                help="auto: the server wants an API key, made once per --name and kept 0600 in the cache "
                "(its path is printed, never the key); deploy's wait and bench use it. A key of your "
                "own: -e VLLM_API_KEY.",
            ),
            click.option(
                "--expose",
                type=click.Choice(["local", "cluster", "all"]),
                default=None,
                help="Who reaches the API: local = the head itself (127.0.0.1), cluster = the head's "
                "cluster-link address, all = every interface of the head (0.0.0.0). Sets `vllm serve "
                "--host`, over a recipe's. Default: as the command says (vLLM binds every interface).",
            ),
            click.option(
                "--ray-auth/--no-ray-auth",
                default=DEFAULTS.ray_auth,
                show_default=True,
                help="With --ray: Ray's token auth (RAY_AUTH_MODE=token; the token is made once per --name, "
                "kept 0600, and reaches the containers through the env file). Ray's ports listen on every "
                "interface and run code for whoever reaches them.",
            ),
            click.option(
                "--ray-client",
                is_flag=True,
                help="With --ray: start Ray's client server on the head (port 10001, off by default: "
                "whoever reaches it runs code; token auth guards it too).",
            ),
            click.option(
                "--ray-num-cpus", type=click.IntRange(min=1), default=DEFAULTS.ray_num_cpus, show_default=True
            ),
            click.option(
                "--ray-object-store-bytes",
                type=click.IntRange(min=78643200),
                default=DEFAULTS.ray_object_store_bytes,
                show_default=True,
            ),
            click.option(
                "--dry-run", is_flag=True, help="Print every command each node would run, and why; run nothing."
            ),
            click.option(
                "--json", "as_json", is_flag=True, help="With --dry-run: the plan and its commands as JSON on stdout."
            ),
            facts_option,
        ]
    ):
        f = option(f)
    return f


def request_from(command: tuple[str, ...], o: dict[str, Any]) -> Any:
    from pipeline.launch.plan import resolve_mode
    from pipeline.launch.startup import parse_deadlines

    limits = {k: o[k] for k in ("mem_limit_gb", "mem_swap_limit_gb", "pids_limit", "shm_size_gb") if o[k] is not None}
    return DeployRequest(
        command=command,
        image=o["image"],
        mode=resolve_mode(o["solo"], o["ray"]),
        name=o["name"],
        env=o["env"],
        nccl_debug=o["nccl_debug"],
        privileged=not o["non_privileged"],
        limits=limits,
        nofile=o["nofile"],
        earlyoom=o["earlyoom"],
        earlyoom_args=o["earlyoom_args"],
        cache_dirs=not o["no_cache_dirs"],
        volumes=o["volumes"],
        master_port=o["master_port"],
        jobs=o["jobs"],
        gpus=o["gpus"],
        ray_num_cpus=o["ray_num_cpus"],
        ray_object_store_bytes=o["ray_object_store_bytes"],
        mods=o["mods"],
        vllm_prs=o["vllm_prs"],
        vllm_repo=o["vllm_repo"],
        ship_mode=o["ship_mode"],
        timeout=o["timeout"],
        phase_deadlines=parse_deadlines(o["phase_timeouts"]),
        force=o["force"],
        cleanup_on_failure=o["cleanup_on_failure"],
        api_key=o["api_key"],
        expose=o["expose"],
        ray_auth=o["ray_auth"],
        ray_client=o["ray_client"],
    )


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
    secrets = request.secrets(spec, make_key=not o["dry_run"])
    mods = deployer.load_mods(request)
    try:
        dp = plan_recording_failures(deployer, request, mods, secrets, saved, o["dry_run"])
        for note in dp.launch.notes:
            say(f"note: {note}")
        if request.api_key == "auto":
            say(
                f"API key: in {paths.api_key_file(request.name)} (mode 0600); clients send it as "
                "`Authorization: Bearer KEY`, and bench reads it from there"
            )
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
            where = f" (on {dp.launch.head.name} only)" if dp.launch.expose == "local" else ""
            ready = time.monotonic() - started
            say(f"ready in {ready:.1f} s: {dp.launch.url}/v1{where}")
            record_startup(request.name, dp.launch.url, ready, result.dep.phases)
        named = f" --name {o['name']}" if o["name"] != CONTAINER else ""
        say(f"useful: python -m pipeline status{named} | logs{named} -f | exec{named} -- CMD | stop{named}")
    finally:
        cleanup(mods, paths.deploy_workdir())
        deployer.close()


def record_startup(container: str, url: str, ready: float, phases: list[tuple[str, float]]) -> None:
    """What `bench` records beside its numbers: how long this deployment took to answer, per phase."""
    import json
    from datetime import UTC, datetime

    from pipeline import paths
    from pipeline.fsutil import write_atomic
    from pipeline.launch.startup import LABELS

    doc = {
        "url": f"{url}/v1",
        "ready_seconds": round(ready, 1),
        "phases": {LABELS[name]: seconds for name, seconds in phases},
        "deployed": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
    }
    write_atomic(paths.startup_file(container), json.dumps(doc) + "\n")


def plan_recording_failures(
    deployer: Deployer, request: DeployRequest, mods: list[Any], secrets: Any, saved: Any, dry_run: bool
) -> DeployPlan:
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
        memory = [{**e.__dict__, "fits": not e.problems} for e in dp.memory]
        emit_json({**dp.launch.to_json(), "warnings": dp.warnings, "memory": memory, "steps": dp.steps.to_json()})
    console.print(plan_table(dp.launch))
    for e in dp.memory:
        say(e.line())
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
    from pipeline.launch.scripts import shown

    table = Table(title=f"deploy plan ({p.mode})", title_justify="left")
    for col in ("node", "role", "ip", "eth_if", "ib_if", "starts"):
        table.add_column(col)
    for n in p.nodes:
        starts = "\n".join(shown(shlex.join(command_of(s))) for s in n.start)
        table.add_row(
            escape(n.name),
            f"{n.role} (rank {n.rank})",
            escape(n.ip),
            escape(n.eth_if or "?"),
            escape(",".join(n.ib_if) or "-"),
            escape(starts),
        )
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

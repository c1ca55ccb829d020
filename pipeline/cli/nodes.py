"""`doctor`, `ship` and `cluster import`: reach the nodes, learn what they are, put the image on them.
Also the options every node command shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.contract import GPU_ARCH_LABEL

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.config.cluster import ClusterSpec
    from pipeline.launch.interfaces import Choice
    from pipeline.nodes.discover import NodeFacts
    from pipeline.nodes.hosts import HostResults
    from pipeline.ship.shipper import ShipResult

F = Callable[..., Any]


def cluster_options(f: F) -> F:
    opts = [
        click.option("-n", "--nodes", default=None, metavar="HOST[,HOST…]",
                     help="Nodes, head first; replaces cluster.yaml's node list."),
        click.option("--solo", is_flag=True, help="Only the head node."),
        click.option("--cluster", "cluster_file", type=click.Path(path_type=Path), default=None,
                     help="Cluster file [default: ./cluster.yaml]."),
        click.option("--parallel", type=click.IntRange(min=1), default=None,
                     help="Nodes worked on at once. Overrides `ssh.parallel`."),
        click.option("--known-hosts", default=None, help="known_hosts file. Overrides `ssh.known_hosts`."),
        click.option("--accept-new", is_flag=True, default=None,
                     help="Trust and record host keys seen for the first time. Overrides `ssh.host_keys`."),
        click.option("--key", default=None, help="SSH private key. Overrides `ssh.key`."),
        click.option("--connect-timeout", type=click.IntRange(min=1), default=None,
                     help="Seconds to wait for each node's SSH. Overrides `ssh.connect_timeout`."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def cluster_from(opts: dict[str, Any]) -> ClusterSpec:
    from pipeline.config.clusterfile import load_cluster

    ssh: dict[str, Any] = {}
    for key in ("parallel", "known_hosts", "key", "connect_timeout"):
        if opts.get(key) is not None:
            ssh[key] = opts[key]
    if opts.get("accept_new"):
        ssh["host_keys"] = "accept-new"
    spec = load_cluster(opts.get("cluster_file"), opts.get("nodes"), bool(opts.get("solo")))
    if ssh:
        spec = spec.model_copy(update={"ssh": spec.ssh.model_copy(update=ssh)})
    return spec


def limited(spec: ClusterSpec, limit: str | None, failed_file: Path | None = None) -> ClusterSpec:
    from pipeline import paths
    from pipeline.deploy.failed import limit_nodes

    return limit_nodes(spec, limit, failed_file or paths.failed_hosts_file())


def read_facts(path: Path, spec: ClusterSpec) -> list[NodeFacts]:
    """A facts file saved by `doctor --save-facts`, for the cluster's nodes (located errors, exit 2)."""
    import json

    from pipeline.errors import ConfigError
    from pipeline.nodes.factsfile import from_json

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"--facts {path}: cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"--facts {path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path.name}:{e.lineno}: not JSON: {e.msg}") from None
    return from_json(data, spec, path.name)


facts_option = click.option("--facts", "facts_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                            help="Plan from facts saved by `doctor --save-facts FILE`: no node is contacted.")

limit_option = click.option("--limit", default=None, metavar="@failed|HOST,…",
                            help="Only these nodes; @failed: those the last failed run named.")


def outcome_table(title: str, results: HostResults[Any], show: Callable[[Any], str]) -> Table:
    """One row per node: its result, or why it failed."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("node")
    table.add_column("result")
    for o in results:
        table.add_row(escape(o.node.label), escape(show(o.value)) if o.ok else f"[red]failed[/red]: {escape(o.reason)}")
    return table


def doctor_table(facts: list[NodeFacts], choices: list[Choice], image: str) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="doctor", title_justify="left")
    for col in ("node", "reachable", "docker", "free disk", "GPU", "RoCE links up", "eth_if", "ib_if", image):
        table.add_column(escape(col))
    for f, choice in zip(facts, choices, strict=True):
        if not f.reachable:
            table.add_row(escape(f.node.label), "[red]no[/red]", "", "", "", "", "", "", "")
            continue
        gpu = ", ".join(f"{g.name} (cc {g.compute_cap})" for g in f.gpus) or "none"
        links = ", ".join(lk.netdev for lk in f.links if lk.up) or ("-" if f.ib_note else "none")
        cells = [f.node.label, "yes", f.docker_version or "no", f"{f.disk_free / 1e9:.1f} GB", gpu, links,
                 choice.eth_if or "?", ",".join(choice.ib_if) or "-", f.image_id[7:19] if f.image_id else "absent"]
        table.add_row(*(escape(c) for c in cells))
    return table


def image_arch(image: str) -> str:
    """The gpu-arch label of the local image (what it was compiled for), '' when unknown here."""
    from pipeline.engines.docker import Docker
    from pipeline.errors import PipelineError

    try:
        return Docker().image_labels(image).get(GPU_ARCH_LABEL, "")
    except (PipelineError, OSError):
        return ""


@click.command()
@cluster_options
@click.option("--image", default=None, help="Image to look for on the nodes. Overrides cluster.yaml `image`.")
@click.option("--min-free-gb", type=float, default=None,
              help="Free disk under Docker's root below which a node is not fit to deploy [40].")
@click.option("--no-gpu-ok", is_flag=True, help="A node without a GPU is a warning, not a failure (tests).")
@click.option("--json", "as_json", is_flag=True, help="Print the facts and problems as JSON on stdout.")
@click.option("--save-facts", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write what every node answered to FILE (JSON), to plan offline later with --facts.")
@facts_option
def doctor(image: str | None, min_free_gb: float | None, no_gpu_ok: bool, as_json: bool, save_facts: Path | None,
           facts_file: Path | None, **opts: Any) -> None:
    """Check every node: reachable, Docker, free disk, GPU, RoCE links, chosen interfaces, image.

    Exits 1 when something blocks a deploy; each problem comes with its fix."""
    import json

    from pipeline.cli.console import console, emit_json, say
    from pipeline.errors import ChecksFailed
    from pipeline.launch import doctor as rules
    from pipeline.launch.interfaces import interfaces
    from pipeline.nodes.discover import gather
    from pipeline.nodes.hosts import Hosts

    spec = cluster_from(opts)
    image = image or spec.image
    if facts_file is not None:
        facts = read_facts(facts_file, spec)
    else:
        hosts = Hosts(spec)
        try:
            facts = gather(hosts, image)
        finally:
            hosts.close()
    if save_facts is not None:
        from pipeline.fsutil import write_atomic
        from pipeline.nodes.factsfile import to_json

        write_atomic(save_facts.resolve(), json.dumps(to_json(facts), indent=1) + "\n")
        say(f"wrote the facts of {len(facts)} node(s) to {save_facts}")
    choices = interfaces(facts)
    found = rules.problems(facts, choices, image, image_arch(image), min_free_gb or rules.MIN_FREE_GB,
                           not no_gpu_ok)
    if as_json:
        emit_json({"nodes": [{"node": f.node.label, "reachable": f.reachable, "error": f.error,
                              "hostname": f.hostname, "docker": f.docker_version, "docker_root": f.docker_root,
                              "disk_free": f.disk_free, "gpus": [g.__dict__ for g in f.gpus],
                              "links_up": [lk.netdev for lk in f.links if lk.up], "eth_if": c.eth_if,
                              "ib_if": list(c.ib_if), "mode": c.mode, "image_id": f.image_id}
                             for f, c in zip(facts, choices, strict=True)],
                   "problems": [{"node": p.node, "problem": p.text, "blocking": p.blocking} for p in found]})
    console.print(doctor_table(facts, choices, image))
    for p in found:
        console.print(f"{'[red]✗[/red]' if p.blocking else '[yellow]![/yellow]'} ", end="")
        say(f"{p.node}: {p.text}")
    blocking = [p for p in found if p.blocking]
    if blocking:
        raise ChecksFailed(f"{len(blocking)} problem(s) block a deploy on {len({p.node for p in blocking})} node(s)")
    say("ready to deploy", "ok")


def ship_table(results: list[ShipResult]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="ship", title_justify="left")
    for col in ("node", "result", "received", "time", ""):
        table.add_column(col)
    for r in results:
        color = {"skipped": "green", "shipped": "yellow", "failed": "red"}[r.status]
        detail = r.detail.splitlines()[0] if r.detail else ""
        status = f"[{color}]{r.status}[/{color}]" + (" (same image)" if r.status == "skipped" else "")
        table.add_row(escape(r.node.label), status, f"{r.bytes / 1e6:.1f} MB", f"{r.seconds:.1f} s", escape(detail))
    return table


def run_ship(spec: ClusterSpec, image: str, mode: str, force: bool) -> list[ShipResult]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from pipeline import paths
    from pipeline.cli.console import ConsoleReporter, console
    from pipeline.engines.docker import Docker
    from pipeline.nodes.hosts import Hosts
    from pipeline.ship.shipper import Shipper

    hosts = Hosts(spec)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        reporter = ConsoleReporter(progress)
        shipper = Shipper(hosts, Docker(), paths.ship_workdir(), spec.registry_port, progress=reporter.transfer)
        try:
            return shipper.ship(image, spec.ordered(), mode=mode, force=force)
        finally:
            hosts.close()


@click.command()
@cluster_options
@limit_option
@click.argument("image", required=False)
@click.option("--ship", "mode", type=click.Choice(["registry", "stream"]), default="registry", show_default=True,
              help="registry: only the layers a node lacks, through an SSH tunnel; stream: docker save | docker "
                   "load (the toolkit's way, always the whole image).")
@click.option("--force", is_flag=True, help="Ship even to nodes that already have the same image ID.")
@click.option("--json", "as_json", is_flag=True, help="Print per-node results as JSON on stdout.")
def ship(image: str | None, mode: str, force: bool, as_json: bool, limit: str | None, **opts: Any) -> None:
    """Put IMAGE (default: cluster.yaml `image`, vllm-node) on every node; nodes that have it are skipped."""
    from pipeline import paths
    from pipeline.cli.console import console, emit_json, say
    from pipeline.deploy.failed import record_failed
    from pipeline.errors import NodesFailed

    spec = limited(cluster_from(opts), limit)
    results = run_ship(spec, image or spec.image, mode, force)
    failed = {r.node.label: r.detail for r in results if r.status == "failed"}
    record_failed(paths.failed_hosts_file(), list(failed))
    if as_json:
        emit_json([{"node": r.node.label, "status": r.status, "bytes": r.bytes, "seconds": round(r.seconds, 3),
                    "detail": r.detail} for r in results])
    console.print(ship_table(results))
    for detail in failed.values():
        say(f"✗ {detail}")
    if failed:
        raise NodesFailed(f"shipping failed on {len(failed)} of {len(results)} node(s): {', '.join(failed)}", failed)


@click.group()
def cluster() -> None:
    """cluster.yaml helpers."""


@cluster.command("import")
@click.argument("dotenv", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("cluster.yaml"), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def cluster_import(dotenv: Path, output: Path, force: bool) -> None:
    """Convert the toolkit's .env (CLUSTER_NODES, ETH_IF, IB_IF, COPY_HOSTS, LOCAL_IP, CONTAINER_*) to cluster.yaml."""
    from pipeline.cli.console import say
    from pipeline.config.clusterfile import dump_cluster, import_dotenv
    from pipeline.config.load import read_text
    from pipeline.errors import ConfigError
    from pipeline.fsutil import write_atomic

    if output.exists() and not force:
        raise ConfigError(f"{output} exists; use --force to overwrite it")
    data, notes = import_dotenv(read_text(dotenv, dotenv.name), dotenv.name)
    write_atomic(output.resolve(), dump_cluster(data))
    for note in notes:
        say(note, "warn")
    say(f"wrote {output} ({len(data['nodes'])} nodes)")

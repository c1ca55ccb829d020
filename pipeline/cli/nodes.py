"""`doctor`, `ship` and `cluster import`: reach the nodes, learn what they are, put the image on them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from pipeline.deploy.apply import read_failed
from pipeline.deploy.discover import NodeFacts, gather, interfaces
from pipeline.deploy.hosts import Hosts
from pipeline.deploy.image import Shipper, ShipResult
from pipeline.engines.docker_cli import Docker
from pipeline.errors import ConfigError, PipelineError
from pipeline.spec.cluster import ClusterSpec
from pipeline.spec.clusterfile import dump_cluster, import_dotenv, load_cluster
from pipeline.ui import console, emit_json

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
    ssh: dict[str, Any] = {}
    for key, field in (("parallel", "parallel"), ("known_hosts", "known_hosts"), ("key", "key"),
                       ("connect_timeout", "connect_timeout")):
        if opts.get(key) is not None:
            ssh[field] = opts[key]
    if opts.get("accept_new"):
        ssh["host_keys"] = "accept-new"
    spec = load_cluster(opts.get("cluster_file"), opts.get("nodes"), bool(opts.get("solo")))
    if ssh:
        spec = spec.model_copy(update={"ssh": spec.ssh.model_copy(update=ssh)})
    return spec


def failed_file() -> Path:
    from pipeline.build.store import cache_root

    return cache_root() / "last-failed.json"


def limited(spec: ClusterSpec, limit: str | None) -> ClusterSpec:
    """`--limit @failed` (the hosts the last run failed on) or `--limit a,b`."""
    if not limit:
        return spec
    names = read_failed(failed_file()) if limit == "@failed" else [x.strip() for x in limit.split(",") if x.strip()]
    chosen = [n for n in spec.nodes if n.label in names or n.address in names]
    if not chosen:
        raise ConfigError(f"--limit {limit}: matches no node of the cluster"
                          + (" (no failed hosts recorded)" if limit == "@failed" else ""))
    return spec.model_copy(update={"nodes": chosen})


limit_option = click.option("--limit", default=None, metavar="@failed|HOST,…",
                            help="Only these nodes; @failed: those the last failed run named.")
def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def doctor_rows(facts: list[NodeFacts], image: str, min_free_gb: float, gpu_required: bool
                ) -> tuple[Table, list[tuple[str, str, bool]]]:
    """The table, and (node, problem with its fix, blocking) for everything found."""
    table = Table(title="doctor", title_justify="left")
    for col in ("node", "reachable", "docker", "free disk", "GPU", "RoCE links up", "eth_if", "ib_if", image):
        table.add_column(col)
    problems: list[tuple[str, str, bool]] = []
    for f, choice in zip(facts, interfaces(facts), strict=True):
        n = f.node.label
        if not f.reachable:
            table.add_row(n, "[red]no[/red]", "", "", "", "", "", "", "")
            problems.append((n, f.error, True))
            continue
        gpu = ", ".join(f"{g.name} (cc {g.compute_cap})" for g in f.gpus) or "none"
        links = [lk.netdev for lk in f.links if lk.up]
        table.add_row(n, "yes", f.docker_version or "[red]no[/red]", _gb(f.disk_free), gpu,
                      ", ".join(links) or ("-" if f.ib_note else "none"), choice.eth_if or "?",
                      ",".join(choice.ib_if) or "-", f.image_id[7:19] if f.image_id else "absent")
        if not f.docker_version:
            problems.append((n, "Docker does not answer: install docker.io / start dockerd, and let the SSH user "
                                "use it (group docker)", True))
        if f.disk_free and f.disk_free < min_free_gb * 1e9:
            problems.append((n, f"only {_gb(f.disk_free)} free under {f.docker_root}: `docker system prune` or "
                                f"grow the disk (need ≥ {min_free_gb:g} GB)", True))
        if not f.gpus:
            problems.append((n, f"{f.gpu_note or 'no GPU'}: vLLM needs the NVIDIA driver (nvidia-smi) and the "
                                "NVIDIA container toolkit", gpu_required))
        for gpu_ in f.gpus:
            if gpu_.compute_cap != "12.1":
                problems.append((n, f"GPU {gpu_.name} has compute capability {gpu_.compute_cap}, not GB10's 12.1: "
                                    "build with a matching --gpu-arch", False))
        if f.ib_note and len(facts) > 1:
            problems.append((n, f"{f.ib_note}: NCCL will use TCP sockets (install the Mellanox OFED / "
                                "rdma-core tools for RoCE)", False))
        problems += [(n, p, True) for p in choice.problems]
        problems += [(n, w, False) for w in choice.warnings]
        if not f.image_id:
            problems.append((n, f"{image} is not on this node: `python -m pipeline ship` puts it there", False))
    return table, problems


@click.command()
@cluster_options
@click.option("--image", default=None, help="Image to look for on the nodes. Overrides cluster.yaml `image`.")
@click.option("--min-free-gb", type=float, default=40.0, show_default=True,
              help="Free disk under Docker's root below which a node is not fit to deploy.")
@click.option("--no-gpu-ok", is_flag=True, help="A node without a GPU is a warning, not a failure (tests).")
@click.option("--json", "as_json", is_flag=True, help="Print the facts and problems as JSON on stdout.")
def doctor(image: str | None, min_free_gb: float, no_gpu_ok: bool, as_json: bool, **opts: Any) -> None:
    """Check every node: reachable, Docker, free disk, GPU, RoCE links, chosen interfaces, image.

    Exits 1 when something blocks a deploy; each problem comes with its fix."""
    spec = cluster_from(opts)
    hosts = Hosts(spec)
    try:
        facts = gather(hosts, image or spec.image)
    finally:
        hosts.close()
    table, problems = doctor_rows(facts, image or spec.image, min_free_gb, not no_gpu_ok)
    blocking = [p for p in problems if p[2]]
    if as_json:
        emit_json({"nodes": [{"node": f.node.label, "reachable": f.reachable, "error": f.error,
                              "hostname": f.hostname, "docker": f.docker_version, "docker_root": f.docker_root,
                              "disk_free": f.disk_free, "gpus": [g.__dict__ for g in f.gpus],
                              "links_up": [lk.netdev for lk in f.links if lk.up], "eth_if": c.eth_if,
                              "ib_if": list(c.ib_if), "mode": c.mode, "image_id": f.image_id}
                             for f, c in zip(facts, interfaces(facts), strict=True)],
                   "problems": [{"node": n, "problem": p, "blocking": b} for n, p, b in problems]})
    console.print(table)
    for n, p, b in problems:
        console.print(f"{'[red]✗[/red]' if b else '[yellow]![/yellow]'} {n}: {p}", soft_wrap=True)
    if blocking:
        raise PipelineError(f"{len(blocking)} problem(s) block a deploy on "
                            f"{len({n for n, _, _ in blocking})} node(s)")
    console.print("[green]ready to deploy[/green]")


def ship_table(results: list[ShipResult]) -> Table:
    table = Table(title="ship", title_justify="left")
    for col in ("node", "result", "received", "time", ""):
        table.add_column(col)
    for r in results:
        color = {"skipped": "green", "shipped": "yellow", "failed": "red"}[r.status]
        detail = r.detail.splitlines()[0] if r.detail else ""
        status = f"[{color}]{r.status}[/{color}]" + (" (same image)" if r.status == "skipped" else "")
        table.add_row(r.node.label, status, f"{r.bytes / 1e6:.1f} MB", f"{r.seconds:.1f} s", detail)
    return table


def run_ship(spec: ClusterSpec, image: str, mode: str, force: bool) -> list[ShipResult]:
    from pipeline.build.store import cache_root

    hosts = Hosts(spec)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def report(node: str, nbytes: int) -> None:
            if node not in tasks:
                tasks[node] = progress.add_task(f"{node}", total=None)
            progress.update(tasks[node], completed=nbytes)

        shipper = Shipper(hosts, Docker(), cache_root() / "ship", spec.registry_port, progress=report)
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
    from pipeline.deploy.apply import record_failed

    spec = limited(cluster_from(opts), limit)
    results = run_ship(spec, image or spec.image, mode, force)
    record_failed(failed_file(), [r.node.label for r in results if r.status == "failed"])
    if as_json:
        emit_json([{"node": r.node.label, "status": r.status, "bytes": r.bytes, "seconds": round(r.seconds, 3),
                    "detail": r.detail} for r in results])
    console.print(ship_table(results))
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        console.print(f"[red]✗[/red] {r.detail}", soft_wrap=True)
    if failed:
        raise PipelineError(f"shipping failed on {len(failed)} of {len(results)} node(s): "
                            + ", ".join(r.node.label for r in failed))


@click.group()
def cluster() -> None:
    """cluster.yaml helpers."""


@cluster.command("import")
@click.argument("dotenv", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("cluster.yaml"), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def cluster_import(dotenv: Path, output: Path, force: bool) -> None:
    """Convert the toolkit's .env (CLUSTER_NODES, ETH_IF, IB_IF, COPY_HOSTS, LOCAL_IP, CONTAINER_*) to cluster.yaml."""
    if output.exists() and not force:
        raise ConfigError(f"{output} exists; use --force to overwrite it")
    data, notes = import_dotenv(dotenv.read_text(), dotenv.name)
    from pipeline.build.lock import write_atomic

    write_atomic(output.resolve(), dump_cluster(data))
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}", soft_wrap=True)
    console.print(f"wrote {output} ({len(data['nodes'])} nodes)")


def register(group: click.Group) -> None:
    group.add_command(doctor)
    group.add_command(ship)
    group.add_command(cluster)

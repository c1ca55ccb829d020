"""`doctor`, `ship` and `cluster import`: reach the nodes, learn what they are, put the image on them.
Also the options every node command shares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.nodeopts import (
    cluster_from,
    cluster_options,
    facts_option,
    limit_option,
    limited,
    name_option,
    read_facts,
)
from pipeline.cli.tables import ship_table
from pipeline.contract import GPU_ARCH_LABEL

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.launch.interfaces import Choice
    from pipeline.nodes.discover import NodeFacts

F = Callable[..., Any]


def doctor_table(facts: list[NodeFacts], choices: list[Choice], image: str) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from pipeline.launch.doctor import exposure

    table = Table(title="doctor", title_justify="left")
    columns = ("node", "reachable", "docker", "free disk", "GPU", "RoCE links up", "eth_if", "ib_if", image, "listens")
    for col in columns:
        table.add_column(escape(col))
    for f, choice in zip(facts, choices, strict=True):
        if not f.reachable:
            table.add_row(escape(f.node.label), "[red]no[/red]", *[""] * (len(columns) - 2))
            continue
        gpu = ", ".join(f"{g.name} (cc {g.compute_cap})" for g in f.gpus) or "none"
        links = ", ".join(lk.netdev for lk in f.links if lk.up) or ("-" if f.ib_note else "none")
        cells = [
            f.node.label,
            "yes",
            " ".join(x for x in (f.docker_version or "no", f.image_store, f.buildx and f"buildx {f.buildx}") if x),
            f"{f.disk_free / 1e9:.1f} GB",
            gpu,
            links,
            choice.eth_if or "?",
            ",".join(choice.ib_if) or "-",
            f.image_id[7:19] if f.image_id else "absent",
            "\n".join(f"{x.port} on {x.address} ({x.scope})" for x in exposure(f, choice)) or "-",
        ]
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
@click.option(
    "--min-free-gb",
    type=float,
    default=None,
    help="Free disk under Docker's root below which a node is not fit to deploy [40].",
)
@click.option("--no-gpu-ok", is_flag=True, help="A node without a GPU is a warning, not a failure (tests).")
@name_option
@click.option("--json", "as_json", is_flag=True, help="Print the facts and problems as JSON on stdout.")
@click.option(
    "--save-facts",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write what every node answered to FILE (JSON), to plan offline later with --facts.",
)
@facts_option
def doctor(
    image: str | None,
    min_free_gb: float | None,
    no_gpu_ok: bool,
    as_json: bool,
    save_facts: Path | None,
    facts_file: Path | None,
    name: str,
    **opts: Any,
) -> None:
    """Check every node: reachable, Docker, free disk, GPU, RoCE links, chosen interfaces, image, and
    which ports the running deploy (--name) listens on, for whom: local (loopback), cluster (the cluster
    link's subnet), all (every interface) or beyond (another network); the last two are warned about.

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
            facts = gather(hosts, image, name)
        finally:
            hosts.close()
    if save_facts is not None:
        from pipeline.fsutil import write_atomic
        from pipeline.nodes.factsfile import to_json

        write_atomic(save_facts.resolve(), json.dumps(to_json(facts), indent=1) + "\n")
        say(f"wrote the facts of {len(facts)} node(s) to {save_facts}")
    choices = interfaces(facts)
    found = rules.problems(facts, choices, image, image_arch(image), min_free_gb or rules.MIN_FREE_GB, not no_gpu_ok)
    if as_json:
        emit_json(
            {
                "nodes": [
                    {
                        "node": f.node.label,
                        "reachable": f.reachable,
                        "error": f.error,
                        "hostname": f.hostname,
                        "docker": f.docker_version,
                        "docker_root": f.docker_root,
                        "image_store": f.image_store,
                        "buildx": f.buildx,
                        "disk_free": f.disk_free,
                        "gpus": [g.__dict__ for g in f.gpus],
                        "links_up": [lk.netdev for lk in f.links if lk.up],
                        "eth_if": c.eth_if,
                        "ib_if": list(c.ib_if),
                        "mode": c.mode,
                        "image_id": f.image_id,
                        "listening": [x.__dict__ for x in rules.exposure(f, c)],
                    }
                    for f, c in zip(facts, choices, strict=True)
                ],
                "problems": [{"node": p.node, "problem": p.text, "blocking": p.blocking} for p in found],
            }
        )
    console.print(doctor_table(facts, choices, image))
    for p in found:
        console.print(f"{'[red]✗[/red]' if p.blocking else '[yellow]![/yellow]'} ", end="")
        say(f"{p.node}: {p.text}")
    blocking = [p for p in found if p.blocking]
    if blocking:
        raise ChecksFailed(f"{len(blocking)} problem(s) block a deploy on {len({p.node for p in blocking})} node(s)")
    say("ready to deploy", "ok")


@click.command()
@cluster_options
@limit_option
@click.argument("image", required=False)
@click.option(
    "--ship",
    "mode",
    type=click.Choice(["registry", "stream"]),
    default="registry",
    show_default=True,
    help="registry: only the layers a node lacks, through an SSH tunnel; stream: docker save | docker "
    "load (the toolkit's way, always the whole image).",
)
@click.option("--force", is_flag=True, help="Ship even to nodes that already have the same image ID.")
@click.option("--json", "as_json", is_flag=True, help="Print per-node results as JSON on stdout.")
@click.option("--dry-run", is_flag=True, help="Ask each node for its image, say what would be shipped; move nothing.")
def ship(
    image: str | None, mode: str, force: bool, as_json: bool, dry_run: bool, limit: str | None, **opts: Any
) -> None:
    """Put IMAGE (default: cluster.yaml `image`, vllm-node) on every node; nodes that have it are skipped."""
    from pipeline.cli.console import console, emit_json, say, transfer_progress
    from pipeline.deploy.shipping import ImageShipping
    from pipeline.errors import NodesFailed

    spec = limited(cluster_from(opts), limit)
    with transfer_progress() as reporter:
        use = ImageShipping(spec, reporter)
        try:
            if dry_run:
                plan = use.plan(image or spec.image, mode, force)
                if as_json:
                    emit_json(
                        {
                            "image": plan.image,
                            "image_id": plan.local_id,
                            "mode": plan.mode,
                            "ship": [n.label for n in plan.todo],
                            "decided": [
                                {"node": r.node.label, "status": r.status, "detail": r.detail} for r in plan.decided
                            ],
                        }
                    )
                for line in plan.lines():
                    say(line)
                return
            results = use.ship(image or spec.image, mode, force)
        finally:
            use.close()
    failed = {r.node.label: r.detail for r in results if r.status == "failed"}
    if as_json:
        emit_json(
            [
                {
                    "node": r.node.label,
                    "status": r.status,
                    "bytes": r.bytes,
                    "seconds": round(r.seconds, 3),
                    "detail": r.detail,
                }
                for r in results
            ]
        )
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

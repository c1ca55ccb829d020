"""The flags every command that works on nodes shares: which nodes (cluster.yaml, -n, --solo, --limit),
how SSH reaches them, and saved facts for offline plans. One definition, used by every command group."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.types import ContainerName
from pipeline.contract import CONTAINER

if TYPE_CHECKING:
    from pipeline.config.cluster import ClusterSpec
    from pipeline.nodes.discover import NodeFacts

F = Callable[..., Any]
name_option = click.option(
    "--name", type=ContainerName(), default=CONTAINER, show_default=True, help="Container name on every node."
)


def cluster_options(f: F) -> F:
    opts = [
        click.option(
            "-n",
            "--nodes",
            default=None,
            metavar="HOST[,HOST…]",
            help="Nodes, head first; replaces cluster.yaml's node list.",
        ),
        click.option("--solo", is_flag=True, help="Only the head node."),
        click.option(
            "--cluster",
            "cluster_file",
            type=click.Path(path_type=Path),
            default=None,
            help="Cluster file [default: ./cluster.yaml].",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(min=1),
            default=None,
            help="Nodes worked on at once. Overrides `ssh.parallel`.",
        ),
        click.option("--known-hosts", default=None, help="known_hosts file. Overrides `ssh.known_hosts`."),
        click.option(
            "--accept-new",
            is_flag=True,
            default=None,
            help="Trust and record host keys seen for the first time. Overrides `ssh.host_keys`.",
        ),
        click.option("--key", default=None, help="SSH private key. Overrides `ssh.key`."),
        click.option(
            "--connect-timeout",
            type=click.IntRange(min=1),
            default=None,
            help="Seconds to wait for each node's SSH. Overrides `ssh.connect_timeout`.",
        ),
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

    from pipeline.config.load import read_text
    from pipeline.errors import ConfigError
    from pipeline.nodes.factsfile import from_json

    text = read_text(path, f"--facts {path}", limit=16 << 20)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path.name}:{e.lineno}: not JSON: {e.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path.name}: nested too deep to be saved facts") from None
    return from_json(data, spec, path.name)


facts_option = click.option(
    "--facts",
    "facts_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Plan from facts saved by `doctor --save-facts FILE`: no node is contacted.",
)

limit_option = click.option(
    "--limit",
    default=None,
    metavar="@failed|HOST,…",
    help="Only these nodes; @failed: those the last failed run named.",
)

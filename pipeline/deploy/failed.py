"""`--limit`: run a command on some nodes only, by name, or `@failed` (the nodes the last deploy, ship
or stop failed on, recorded atomically after each of them)."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config.cluster import ClusterSpec
from pipeline.errors import ConfigError
from pipeline.fsutil import write_atomic


def record_failed(path: Path, names: list[str]) -> None:
    write_atomic(path, json.dumps(sorted(names)) + "\n")


def read_failed(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [str(n) for n in data] if isinstance(data, list) else []


def limit_nodes(spec: ClusterSpec, limit: str | None, failed_file: Path) -> ClusterSpec:
    """`--limit @failed` (the hosts the last run failed on) or `--limit a,b`."""
    if limit is None:
        return spec
    if not limit.strip():
        raise ConfigError("--limit '': names no node (give @failed or HOST,…; leave --limit out for every node)")
    names = read_failed(failed_file) if limit == "@failed" else [x.strip() for x in limit.split(",") if x.strip()]
    known = {n.label for n in spec.nodes} | {n.address for n in spec.nodes}
    unknown = [n for n in names if n not in known]
    if unknown and limit != "@failed":
        raise ConfigError(
            f"--limit {limit}: {', '.join(unknown)} is not a node of the cluster "
            f"(nodes: {', '.join(n.label for n in spec.nodes)})"
        )
    chosen = [n for n in spec.nodes if n.label in names or n.address in names]
    if not chosen:
        raise ConfigError(
            f"--limit {limit}: matches no node of the cluster"
            + (" (no failed hosts recorded)" if limit == "@failed" else "")
        )
    return spec.model_copy(update={"nodes": chosen})

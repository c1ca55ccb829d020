"""Secrets of a deploy, wherever the user set them: this environment, `-e NAME[=VALUE]`, cluster.yaml's
`container_env` or a node's `env`. A known secret name (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, and any name
listed under cluster.yaml `secrets`) reaches the containers only through the 0600 env file each node
gets for the moment of `docker run`: never argv, logs, plans or the deploy hash. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.config.cluster import ClusterSpec
from pipeline.contract import KNOWN_SECRETS, is_one_line
from pipeline.errors import ConfigError

KNOWN = KNOWN_SECRETS


@dataclass(frozen=True)
class Secrets:
    common: dict[str, str] = field(default_factory=dict)  # for every node
    per_node: dict[str, dict[str, str]] = field(default_factory=dict)  # node label -> its own values

    def names(self) -> tuple[str, ...]:
        return tuple(sorted({*self.common, *(k for v in self.per_node.values() for k in v)}))

    def for_node(self, label: str) -> dict[str, str]:
        return {**self.common, **self.per_node.get(label, {})}

    def values(self) -> set[str]:
        return {*self.common.values(), *(v for d in self.per_node.values() for v in d.values())}


def secret_names(spec: ClusterSpec) -> set[str]:
    return {*KNOWN, *spec.secrets}


def gather(spec: ClusterSpec, env_items: list[tuple[str, str]], environ: Mapping[str, str]) -> Secrets:
    """Later sources win, as for the container's environment: this environment, container_env, -e, a
    node's env. `env_items` are the parsed `-e` values."""
    names = secret_names(spec)
    common = {n: environ[n] for n in names if environ.get(n)}
    broken = sorted(n for n, v in common.items() if not is_one_line(v))
    if broken:
        raise ConfigError(
            f"{broken[0]} (from this environment): its value holds a line break; it would add a line "
            "to the env file the containers read"
        )
    common.update({k: v for k, v in spec.container_env.items() if k in names})
    common.update({k: v for k, v in env_items if k in names})
    per_node = {n.label: {k: v for k, v in n.env.items() if k in names} for n in spec.nodes}
    return Secrets(common, {k: v for k, v in per_node.items() if v})

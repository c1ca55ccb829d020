"""Loading cluster.yaml, the `-n host,host` / `--solo` shortcuts, and importing the toolkit's `.env`."""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from dotenv.parser import parse_stream

from pipeline.config.cluster import ClusterSpec
from pipeline.config.load import read_yaml, validate
from pipeline.contract import is_env_name
from pipeline.errors import ConfigError

THIS_MACHINE: dict[str, Any] = {"address": "127.0.0.1", "name": "local", "transport": "local", "head": True}


def load_cluster(
    path: Path | None = None, nodes: str | None = None, solo: bool = False, overrides: dict[str, Any] | None = None
) -> ClusterSpec:
    """cluster.yaml (if given or present), with `-n a,b` replacing its node list; `--solo` keeps the head.
    With neither, the one node is this machine (`transport: local`)."""
    label = "cluster.yaml"
    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        label = path.name
        data, lines = read_yaml(path, label)
    elif Path("cluster.yaml").exists() and not nodes:
        data, lines = read_yaml(Path("cluster.yaml"), label)
    if nodes:
        label = "-n"
        known = {str(n.get("address")): n for n in data.get("nodes", []) if isinstance(n, dict)}
        data = {**data, "nodes": [known.get(a, {"address": a}) for a in (x.strip() for x in nodes.split(",")) if a]}
        lines = {}
    if path is None and not nodes and not data:
        data = {"nodes": [THIS_MACHINE]}  # no cluster anywhere: the machine you are on, without SSH
    if not data.get("nodes"):
        raise ConfigError(
            f"{label}: no nodes: give -n HOST[,HOST…], --cluster FILE, or write cluster.yaml "
            "(python -m pipeline cluster import .env converts the toolkit's .env)"
        )
    data.update(overrides or {})
    spec = validate(ClusterSpec, data, label, lines)
    if solo:
        spec = spec.model_copy(update={"nodes": [spec.head]})
    return spec


def parse_dotenv(text: str, label: str = ".env") -> dict[str, str]:
    """The toolkit's .env, which its scripts `source` with bash: lines split by python-dotenv, each
    value as bash reads it (`A=foo#bar` keeps the #, `A=x #note` drops the note), and lines bash would
    refuse or read otherwise (an unbalanced quote, an unquoted space) refused with their line."""
    out: dict[str, str] = {}
    for b in parse_stream(io.StringIO(text)):
        line, raw = b.original.line, b.original.string.strip()
        if b.error or (b.key is None and raw and not raw.startswith("#")) or (b.key is not None and b.value is None):
            key = raw.removeprefix("export").strip().split("=", 1)[0]
            if "=" in raw and is_env_name(key):
                _bash_value(raw, key, f"{label}:{line}")  # says what bash would make of it
            raise ConfigError(f"{label}:{line}: expected KEY=VALUE, got {raw!r}")
        if b.key is None:
            continue
        if not is_env_name(b.key):
            raise ConfigError(f"{label}:{line}: {b.key!r} is not a variable name (letters, digits, _)")
        if b.key in out:
            raise ConfigError(f"{label}:{line}: {b.key} is set twice")
        out[b.key] = _bash_value(raw, b.key, f"{label}:{line}")
    return out


def _bash_value(raw: str, key: str, where: str) -> str:
    """The value bash gives KEY on this line (`source .env`), or a located refusal."""
    try:
        words = shlex.split(raw.removeprefix("export").strip(), posix=True)
    except ValueError:
        raise ConfigError(
            f'{where}: unbalanced quote: bash refuses this line (quote the value whole, e.g. {key}="…")'
        ) from None
    comment = next((i for i, w in enumerate(words) if w.startswith("#")), len(words))
    words = words[:comment]  # bash: a comment starts at a word beginning with # (A=foo#bar keeps it)
    if len(words) != 1 or not words[0].startswith(f"{key}="):
        raise ConfigError(f"{where}: unquoted space: bash would not assign all of it to {key}; quote the value")
    return words[0].split("=", 1)[1]


def dotenv_node(env: dict[str, str], host: str, local: str) -> dict[str, Any]:
    """One cluster.yaml node from the toolkit's per-cluster settings (the same ETH_IF/IB_IF for all)."""
    node: dict[str, Any] = {"address": host}
    if host == local:
        node["head"] = True
    if env.get("ETH_IF"):
        node["eth_if"] = env["ETH_IF"]
    if env.get("IB_IF"):
        node["ib_if"] = [x for x in env["IB_IF"].split(",") if x]
    return node


def import_dotenv(text: str, label: str = ".env") -> tuple[dict[str, Any], list[str]]:
    """(cluster.yaml data, notes) from the toolkit's .env (CLUSTER_NODES, ETH_IF, IB_IF, COPY_HOSTS,
    LOCAL_IP, CONTAINER_*)."""
    env = parse_dotenv(text, label)
    notes: list[str] = []
    hosts = [h.strip() for h in re.split(r"[,\s]+", env.get("CLUSTER_NODES", "")) if h.strip()]
    local = env.get("LOCAL_IP", "").split("/")[0]
    if not hosts:
        if not local:
            raise ConfigError(f"{label}: neither CLUSTER_NODES nor LOCAL_IP is set; nothing to import")
        hosts = [local]
    copy_only = [h for h in re.split(r"[,\s]+", env.get("COPY_HOSTS", "")) if h.strip() and h not in hosts]
    if copy_only:
        notes.append(
            f"COPY_HOSTS lists {', '.join(copy_only)} which are not in CLUSTER_NODES: not imported "
            "(ship and deploy go to the cluster's nodes)"
        )
    nodes = [dotenv_node(env, h, local) for h in hosts]
    if env.get("ETH_IF"):
        notes.append(
            f"ETH_IF={env['ETH_IF']} was set for every node; if interface names differ per node, "
            "set eth_if per node or use auto"
        )
    data: dict[str, Any] = {"nodes": nodes}
    container = {
        k.removeprefix("CONTAINER_"): v for k, v in env.items() if k.startswith("CONTAINER_") and k != "CONTAINER_NAME"
    }
    if container:
        data["container_env"] = container
    ignored = sorted(
        k
        for k in env
        if k not in ("CLUSTER_NODES", "COPY_HOSTS", "LOCAL_IP", "ETH_IF", "IB_IF") and not k.startswith("CONTAINER_")
    )
    if ignored:
        notes.append(f"not imported: {', '.join(ignored)}")
    validate(ClusterSpec, data, label)
    return data, notes


def dump_cluster(data: dict[str, Any]) -> str:
    header = "# cluster.yaml — written by `python -m pipeline cluster import`; edit freely.\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

"""What the last `model verify` found damaged on each node (a file of its size whose sha256 is not ours),
kept until a `model copy --verify` repairs it or a later verify finds it whole. `deploy` refuses such a
node: its listing alone (sizes) cannot see the damage."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import paths
from pipeline.fsutil import write_atomic

LIMIT = 16 << 20

Damage = dict[str, dict[str, list[str]]]  # node -> "repo@commit" -> damaged files


def key(repo: str, commit: str) -> str:
    return f"{repo}@{commit}"


def damage_file() -> Path:
    return paths.cache_root() / "models" / "damaged.json"


def load() -> Damage:
    """The record, {} when there is none or it is not ours (hostile or cut short: nothing is trusted)."""
    try:
        path = damage_file()
        doc = json.loads(path.read_text()) if path.stat().st_size <= LIMIT else {}
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out: Damage = {}
    for node, models in doc.items():
        if not isinstance(models, dict):
            continue
        kept = {str(k): [str(f) for f in v] for k, v in models.items() if isinstance(v, list) and v}
        if kept:
            out[node] = kept
    return out


def record(node: str, repo: str, commit: str, damaged: list[str]) -> None:
    """Set what a check of `node` found for repo@commit (nothing damaged: the entry goes)."""
    doc = load()
    models = doc.setdefault(node, {})
    if damaged:
        models[key(repo, commit)] = sorted(damaged)
    else:
        models.pop(key(repo, commit), None)
    write_atomic(damage_file(), json.dumps({n: m for n, m in doc.items() if m}, indent=1) + "\n")

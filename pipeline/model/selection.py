"""What a download chose, kept beside our cache (not in huggingface_hub's), so `model copy` sends the
same set and `model ls` says what was left out and how much. I/O at the edge of select.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline import paths
from pipeline.contract import is_inner_path
from pipeline.errors import ConfigError
from pipeline.fsutil import write_atomic
from pipeline.model.select import Selection, select

RECORD_LIMIT = 64 << 20


@dataclass(frozen=True)
class Choice:
    """How the weight set is chosen: vLLM's `--load-format`, the GGUF file it serves, or every file."""

    load_format: str = "auto"
    gguf: str | None = None
    all_files: bool = False


@dataclass(frozen=True)
class Record:
    selection: Selection
    left_out_bytes: int


def record_path(repo: str, commit: str) -> Path:
    return paths.cache_root() / "models" / repo.replace("/", "--") / f"{commit}.json"


def save_selection(repo: str, commit: str, sel: Selection, files: dict[str, int]) -> None:
    """Written whole (temp file, then rename): an interrupted download never leaves half a record."""
    doc = {
        "weights": sel.weights,
        "chosen": list(sel.chosen),
        "left_out": [{"path": p, "why": why, "bytes": files.get(p, 0)} for p, why in sel.left_out],
    }
    write_atomic(record_path(repo, commit), json.dumps(doc))


def load_selection(repo: str, commit: str) -> Record | None:
    """The record of a download, None when there is none or it is not one of ours (then the rule runs
    again on the files the cache holds)."""
    path = record_path(repo, commit)
    try:
        doc = json.loads(path.read_text()) if path.stat().st_size <= RECORD_LIMIT else None
    except (OSError, ValueError):
        return None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("chosen"), list)
        or not isinstance(doc.get("left_out"), list)
    ):
        return None
    try:
        chosen = tuple(p for p in doc["chosen"] if isinstance(p, str) and is_inner_path(p))
        left = [(str(e["path"]), str(e["why"]), int(e["bytes"])) for e in doc["left_out"]]
        sel = Selection(chosen, tuple((p, why) for p, why, _ in left), str(doc["weights"]))
    except (TypeError, KeyError, ValueError):
        return None
    return Record(sel, sum(max(0, n) for _, _, n in left))


def local_files(snapshot: Path) -> dict[str, int]:
    return {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}


def chosen_files(repo: str, commit: str, snapshot: Path, choice: Choice) -> set[str] | None:
    """The files of a cached snapshot that a copy sends: None for every file (`all_files`); else what the
    download chose, or the rule over the files the cache holds (a snapshot another tool downloaded)."""
    if choice.all_files:
        return None
    rec = load_selection(repo, commit)
    if rec is not None and choice == Choice():
        return set(rec.selection.chosen)

    def read(name: str) -> str:
        return (snapshot / name).read_text(errors="replace")

    try:
        return set(select(local_files(snapshot), read, choice.load_format, choice.gguf).chosen)
    except ConfigError as e:
        raise ConfigError(f"model {repo} (this machine's cache): {e}; --all-files sends every file") from None

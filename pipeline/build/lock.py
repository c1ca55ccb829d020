"""build.lock: the resolved SHAs, keys and input facts of the last plan/build, sorted, diff-friendly,
written atomically. `plan` compares against it to say *why* a stage must rebuild."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

LOCK_FORMAT = 1


@dataclass(frozen=True)
class LockedStage:
    key: str
    facts: dict[str, str]


@dataclass(frozen=True)
class Lock:
    stages: dict[str, LockedStage]
    sources: dict[str, dict[str, Any]]

    def to_json(self) -> str:
        data = {
            "format": LOCK_FORMAT,
            "generated_by": "spark-pipeline (python -m pipeline plan --write-lock | build); do not edit",
            "stages": {n: {"key": s.key, "facts": dict(sorted(s.facts.items()))}
                       for n, s in sorted(self.stages.items())},
            "sources": {n: self.sources[n] for n in sorted(self.sources)},
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_lock(path: Path) -> Lock | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != LOCK_FORMAT:
            return None  # an older format: plan as if there were no lock, the next write replaces it
        stages = {n: LockedStage(key=s["key"], facts=dict(s.get("facts", {})))
                  for n, s in data.get("stages", {}).items()}
        return Lock(stages=stages, sources=dict(data.get("sources", {})))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path.name}: not a valid build.lock ({e}); delete it and run "
                          "'python -m pipeline plan --write-lock'") from None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lock(path: Path, lock: Lock) -> None:
    write_atomic(path, lock.to_json())

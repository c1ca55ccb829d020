"""build.lock: the resolved SHAs, keys and input facts of the last plan/build, sorted and diff-friendly.
`plan` compares against it to say *why* a stage must rebuild. Pure: the builder reads and writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
    # the Python environment plan resolved: {"target": {...}, "packages": {name: {"version", "hashes"}}}
    python: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "format": LOCK_FORMAT,
            "generated_by": "spark-pipeline (python -m pipeline plan --write-lock | build); do not edit",
            "stages": {
                n: {"key": s.key, "facts": dict(sorted(s.facts.items()))} for n, s in sorted(self.stages.items())
            },
            "sources": {n: self.sources[n] for n in sorted(self.sources)},
        }
        if self.python:
            data["python"] = self.python
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_lock(text: str | None, label: str = "build.lock") -> Lock | None:
    """A Lock from build.lock's text; None when there is none or it has an older format (the next
    write replaces it). Raises ConfigError for a file that is not a build.lock."""
    if text is None:
        return None
    try:
        data = json.loads(text)
        if data.get("format") != LOCK_FORMAT:
            return None
        stages = {
            n: LockedStage(key=s["key"], facts=dict(s.get("facts", {}))) for n, s in data.get("stages", {}).items()
        }
        python = data.get("python", {})
        if not isinstance(python, dict):
            raise TypeError("python is not a mapping")
        return Lock(stages=stages, sources=dict(data.get("sources", {})), python=python)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"{label}: not a valid build.lock ({e}); delete it and run 'python -m pipeline plan --write-lock'"
        ) from None

"""What the tool tells a user while it works, as events rather than printed text.

The core (builder, engines, deploy) writes to a `Reporter` it is handed; it never imports a console.
The command line hands in a reporter that renders to stderr with rich (`pipeline.cli.console`); a
Python caller can pass `NullReporter()`, and `ListReporter` keeps every event as plain text, which is
how tests see exactly what a user would.
"""

from __future__ import annotations

from typing import Literal, Protocol

Level = Literal["info", "note", "warn", "ok"]
StageState = Literal["cached", "building", "pulled", "failed"]


class Reporter(Protocol):
    def say(self, text: str, level: Level = "info") -> None:
        """A line of progress. `note` lines are details of the current step (indented)."""

    def step(self, index: int, total: int, text: str) -> None:
        """A numbered step of a longer job: `[2/5] start containers`."""

    def stage(self, index: int, total: int, name: str, key: str, state: StageState, detail: str = "") -> None:
        """A build stage's state: `[3/5] flashinfer 654fe079ba32 building (why)`."""

    def transfer(self, node: str, nbytes: int) -> None:
        """Bytes moved to a node so far (shipping progress)."""


class NullReporter:
    """Says nothing (library use)."""

    def say(self, text: str, level: Level = "info") -> None:
        pass

    def step(self, index: int, total: int, text: str) -> None:
        pass

    def stage(self, index: int, total: int, name: str, key: str, state: StageState, detail: str = "") -> None:
        pass

    def transfer(self, node: str, nbytes: int) -> None:
        pass


def stage_line(index: int, total: int, name: str, key: str, state: StageState, detail: str = "") -> str:
    """The plain text of a stage event (the console adds colour to the same words)."""
    tail = f" ({detail})" if detail else ""
    return f"[{index}/{total}] {name} {key[:12]} {state}{tail}"


class ListReporter:
    """Keeps every event as the plain line a user would read (tests, logs)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.transfers: dict[str, int] = {}

    def say(self, text: str, level: Level = "info") -> None:
        prefix = {"warn": "warning: ", "note": "  "}.get(level, "")
        self.lines.append(prefix + text)

    def step(self, index: int, total: int, text: str) -> None:
        self.lines.append(f"[{index}/{total}] {text}")

    def stage(self, index: int, total: int, name: str, key: str, state: StageState, detail: str = "") -> None:
        self.lines.append(stage_line(index, total, name, key, state, detail))

    def transfer(self, node: str, nbytes: int) -> None:
        self.transfers[node] = nbytes

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

"""Human output goes to stderr (rich); stdout carries only data (`--json`).

Every text that reaches rich from outside the tool's own literals (messages, node output, user
values) is escaped, so `[/INST]` in a chat template or an IPv6 address with `:100:` is printed as it
is, never read as markup or an emoji code.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape

from pipeline.report import Level, StageState

console = Console(stderr=True, highlight=False, emoji=False)

_LEVEL = {"info": "{}", "note": "  {}", "warn": "[yellow]warning:[/yellow] {}", "ok": "[green]{}[/green]"}
_STATE = {"cached": "green", "pulled": "green", "building": "yellow", "failed": "red"}


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def say(text: str, level: Level = "info") -> None:
    console.print(_LEVEL[level].format(escape(text)), soft_wrap=True)


class ConsoleReporter:
    """The Reporter the command line hands to the core: rich on stderr, user text escaped."""

    def __init__(self, progress: Any = None) -> None:
        self._progress = progress  # a rich Progress for transfers, when the command shows one
        self._tasks: dict[str, Any] = {}

    def say(self, text: str, level: Level = "info") -> None:
        say(text, level)

    def step(self, index: int, total: int, text: str) -> None:
        console.print(f"[bold]\\[{index}/{total}][/bold] {escape(text)}", soft_wrap=True)

    def stage(self, index: int, total: int, name: str, key: str, state: StageState, detail: str = "") -> None:
        color = _STATE[state]
        tail = f" ({escape(detail)})" if detail else ""
        console.print(
            f"[bold]\\[{index}/{total}] {name}[/bold] {key[:12]} [{color}]{state}[/{color}]{tail}", soft_wrap=True
        )

    def transfer(self, node: str, nbytes: int) -> None:
        if self._progress is None:
            return
        if node not in self._tasks:
            self._tasks[node] = self._progress.add_task(escape(node), total=None)
        self._progress.update(self._tasks[node], completed=nbytes)


@contextlib.contextmanager
def transfer_progress() -> Iterator[ConsoleReporter]:
    """A reporter whose transfers show as live per-node byte counts (gone when the block ends)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield ConsoleReporter(progress)

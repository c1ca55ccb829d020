"""Tables more than one command prints: per-node outcomes, build results, ship and model-copy results.
Rendering only; every cell that holds outside text is escaped."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.builder import StageResult
    from pipeline.model.copy import CopyResult
    from pipeline.nodes.hosts import HostResults
    from pipeline.ship.shipper import ShipResult


def outcome_table(title: str, results: HostResults[Any], show: Callable[[Any], str]) -> Table:
    """One row per node: its result, or why it failed."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("node")
    table.add_column("result")
    for o in results:
        table.add_row(escape(o.node.label), escape(show(o.value)) if o.ok else f"[red]failed[/red]: {escape(o.reason)}")
    return table


def results_table(results: list[StageResult]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="build", title_justify="left")
    for col in ("stage", "key", "result", "time", ""):
        table.add_column(col, justify="right" if col == "time" else "left")
    for r in results:
        color = {"built": "yellow", "cached": "green", "pulled": "green", "failed": "red"}[r.status]
        table.add_row(r.name, r.key[:12], f"[{color}]{r.status}[/{color}]", f"{r.seconds:.1f} s", escape(r.note))
    return table


def ship_table(results: list[ShipResult]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="ship", title_justify="left")
    for col in ("node", "result", "received", "time", ""):
        table.add_column(col)
    for r in results:
        color = {"skipped": "green", "shipped": "yellow", "failed": "red"}[r.status]
        detail = r.detail.splitlines()[0] if r.detail else ""
        status = f"[{color}]{r.status}[/{color}]" + (" (same image)" if r.status == "skipped" else "")
        table.add_row(escape(r.node.label), status, f"{r.bytes / 1e6:.1f} MB", f"{r.seconds:.1f} s", escape(detail))
    return table


def copy_table(results: list[CopyResult]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="model copy", title_justify="left")
    for col in ("node", "model", "sent", "files", "kept partial", "time", ""):
        t.add_column(col)
    for r in results:
        t.add_row(
            escape(r.node),
            escape(r.repo),
            f"{r.sent_bytes / 1e6:.1f} MB",
            str(r.sent_files),
            str(r.resumed),
            f"{r.seconds:.1f} s",
            escape(r.note),
        )
    return t


def size_text(n: int) -> str:
    """Bytes for a person: 512 B, 3.1 MB, 65.2 GB (binary units)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)

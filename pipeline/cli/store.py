"""`store ls` and `store gc`: what the artifact store holds, and making room."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click
from rich.table import Table

from pipeline.cli.console import console, emit_json, say
from pipeline.paths import default_store
from pipeline.store import Store


def _store(path: Path | None) -> Store:
    return Store(path or default_store())


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group()
def store() -> None:
    """The artifact store: <store>/<stage>/<key>/ with the stage's files and manifest.json."""


store_option = click.option("--store", "store_path", type=click.Path(path_type=Path, file_okay=False), default=None,
                            help="Store directory [default: $SPARK_PIPELINE_STORE or the user cache].")


@store.command("ls")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print entries as JSON on stdout.")
def ls(store_path: Path | None, as_json: bool) -> None:
    """List store entries: stage, key, files, size, engine, when."""
    s = _store(store_path)
    entries = s.entries()
    if as_json:
        emit_json([{"stage": e.stage, "key": e.key, "files": [f["path"] for f in e.files], "size": e.size,
                    "engine": e.manifest.get("engine"), "created": e.created, "path": str(e.path)}
                   for e in entries])
        return
    table = Table(title=f"store {s.root}", title_justify="left")
    for col in ("stage", "key", "files", "size", "engine", "built"):
        table.add_column(col)
    for e in entries:
        when = datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M") if e.created else "?"
        table.add_row(e.stage, e.key[:12], str(len(e.files)), _size(e.size), str(e.manifest.get("engine", "")), when)
    console.print(table)
    console.print(f"{len(entries)} entries, {_size(sum(e.size for e in entries))}")


@store.command("gc")
@store_option
@click.option("-f", "--file", "build_file", type=click.Path(path_type=Path), default=Path("build.yaml"),
              show_default=True, help="Keep every key its build.lock references.")
@click.option("--keep", type=click.IntRange(min=0), default=2, show_default=True,
              help="Also keep the N most recent entries per stage.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(store_path: Path | None, build_file: Path, keep: int, dry_run: bool) -> None:
    """Remove entries that build.lock does not reference, beyond the N most recent per stage."""
    from pipeline.resolution import read_lock

    s = _store(store_path)
    lock = read_lock(build_file.parent / "build.lock")
    keep_keys = {(n, st.key) for n, st in lock.stages.items()} if lock else set()
    if lock is None:
        say(f"no build.lock next to {build_file}: keeping only the {keep} most recent entries per stage", "warn")
    if dry_run:
        doomed = s.gc(keep_keys, keep, dry_run=True)
        for e in doomed:
            console.print(f"would remove {e.stage}/{e.key[:12]} ({_size(e.size)})")
        console.print(f"{len(doomed)} entries would be removed")
        return
    removed = s.gc(keep_keys, keep)
    cleaned = s.clean_staging()  # temp dirs of killed builds
    for e in removed:
        console.print(f"removed {e.stage}/{e.key[:12]} ({_size(e.size)})")
    console.print(f"{len(removed)} entries removed, {_size(sum(e.size for e in removed))} freed"
                  + (f"; {cleaned} stale temp dirs" if cleaned else ""))


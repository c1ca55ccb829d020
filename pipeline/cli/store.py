"""`store ls` and `store gc`: what the artifact store holds, and making room."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from pipeline.cli.console import console, emit_json, say
from pipeline.cli.tables import size_text
from pipeline.cli.types import KeyPrefix, StageKey
from pipeline.contract import STORED_STAGES
from pipeline.paths import default_store
from pipeline.store import Entry, Store

if TYPE_CHECKING:
    from pipeline.remote_store import RemoteStore


def _store(path: Path | None) -> Store:
    return Store(path or default_store())


@click.group()
def store() -> None:
    """The artifact store: <store>/<stage>/<key>/ with the stage's files and manifest.json."""


store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Store directory [default: $SPARK_PIPELINE_STORE or the user cache].",
)


@store.command("ls")
@store_option
@click.option(
    "--remote",
    "remote_url",
    default=None,
    metavar="oci://HOST[:PORT]/REPO",
    help="List the keys a shared store on an OCI registry holds instead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print entries as JSON on stdout.")
def ls(store_path: Path | None, remote_url: str | None, as_json: bool) -> None:
    """List store entries: stage, key, files, size, engine, when (or, with --remote, a remote store's keys)."""
    if remote_url:
        ls_remote(remote_url, as_json)
        return
    s = _store(store_path)
    entries = s.entries()
    if as_json:
        emit_json(
            [
                {
                    "stage": e.stage,
                    "key": e.key,
                    "files": [f["path"] for f in e.files],
                    "size": e.size,
                    "engine": e.manifest.get("engine"),
                    "created": e.created,
                    "path": str(e.path),
                }
                for e in entries
            ]
        )
        return
    table = Table(title=f"store {s.root}", title_justify="left")
    for col in ("stage", "key", "files", "size", "engine", "built"):
        table.add_column(col)
    for e in entries:
        when = datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M") if e.created else "?"
        table.add_row(
            e.stage, e.key[:12], str(len(e.files)), size_text(e.size), str(e.manifest.get("engine", "")), when
        )
    console.print(table)
    console.print(f"{len(entries)} entries, {size_text(sum(e.size for e in entries))}")


@store.command("gc")
@store_option
@click.option(
    "-f",
    "--file",
    "build_file",
    type=click.Path(path_type=Path),
    default=Path("build.yaml"),
    show_default=True,
    help="Keep every key its build.lock references.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Also keep the N most recent entries per stage.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(store_path: Path | None, build_file: Path, keep: int, dry_run: bool) -> None:
    """Remove entries that build.lock does not reference, beyond the N most recent per stage; then collect
    the image registry that shipping keeps (layers no current image uses)."""
    from pipeline.resolution import read_lock

    s = _store(store_path)
    lock = read_lock(build_file.parent / "build.lock")
    keep_keys = {(n, st.key) for n, st in lock.stages.items()} if lock else set()
    if lock is None:
        say(f"no build.lock next to {build_file}: keeping only the {keep} most recent entries per stage", "warn")
    if dry_run:
        doomed = s.gc(keep_keys, keep, dry_run=True)
        for e in doomed:
            console.print(f"would remove {e.stage}/{e.key[:12]} ({size_text(e.size)})")
        console.print(f"{len(doomed)} entries would be removed")
        _untag(doomed, dry_run=True)
        _collect_registry(dry_run=True)
        return
    removed = s.gc(keep_keys, keep)
    cleaned = s.clean_staging()  # temp dirs of killed builds
    for e in removed:
        console.print(f"removed {e.stage}/{e.key[:12]} ({size_text(e.size)})")
    console.print(
        f"{len(removed)} entries removed, {size_text(sum(e.size for e in removed))} freed"
        + (f"; {cleaned} stale temp dirs" if cleaned else "")
    )
    _untag(removed, dry_run=False)
    _collect_registry(dry_run=False)


def image_names(entries: list[Entry]) -> list[str]:
    """The local Docker names removed entries kept their images by: a runtime build's name by key, a
    toolchain's tag (itself by key). Never the moving tag, which a newer build may hold."""
    from pipeline.engines.identity import key_tag

    names = []
    for e in entries:
        tag, toolchain = e.manifest.get("tag"), e.manifest.get("toolchain")
        if isinstance(tag, str) and tag and e.manifest.get("image_id"):
            names.append(key_tag(tag, e.key))
        if isinstance(toolchain, str) and toolchain:
            names.append(toolchain)
    return names


def _untag(entries: list[Entry], dry_run: bool) -> None:
    """Those names go from the local Docker with their entries (the image too, when no other name holds
    it), so that the store's keep policy also bounds what the builds leave in Docker."""
    from pipeline.engines.docker import Docker
    from pipeline.errors import PipelineError

    names = image_names(entries)
    if not names:
        return
    try:
        docker = Docker()
        held = [n for n in names if docker.image_id(n)]
        for name in held:
            if dry_run:
                console.print(f"would untag {name} in the local Docker")
            elif docker.run("rmi", name, check=False, timeout=120).returncode == 0:
                console.print(f"untagged {name} in the local Docker")
            else:
                say(f"{name} stays in the local Docker (a container uses it)", "warn")
    except (PipelineError, OSError) as e:
        say(f"the local Docker was not asked to drop {len(names)} image name(s): {e}", "warn")


def _collect_registry(dry_run: bool) -> None:
    from pipeline.paths import ship_workdir
    from pipeline.ship.registry import collect

    where = ship_workdir() / "registry"
    done = collect(where, dry_run=dry_run)
    if done is not None:
        what = f"{done.blobs} blobs and {done.manifests} manifests no tag uses"
        console.print(
            f"image registry {where}: "
            + (f"would remove {what}" if dry_run else f"removed {what}, {size_text(done.freed)} freed")
        )


remote_option = click.option(
    "--remote",
    "remote_url",
    required=True,
    metavar="oci://HOST[:PORT]/REPO",
    help="The shared store on an OCI registry.",
)


def _remote(url: str) -> RemoteStore:
    from pipeline.remote_store import RemoteStore, parse_url

    return RemoteStore(parse_url(url, "--remote"))


def _chosen(s: Store, stage: str | None, key: str | None) -> list[Entry]:
    return [
        e
        for e in s.entries()
        if e.stage in STORED_STAGES and (stage is None or e.stage == stage) and (key is None or e.key.startswith(key))
    ]


@store.command("push")
@store_option
@remote_option
@click.option("--stage", type=click.Choice(STORED_STAGES), default=None, help="Only this stage's entries.")
@click.option("--key", type=KeyPrefix(), default=None, help="Only entries whose key starts with this.")
def push(store_path: Path | None, remote_url: str, stage: str | None, key: str | None) -> None:
    """Push local entries (every wheel stage's, or --stage/--key) to the remote store; an entry it has
    already is skipped."""
    remote, s = _remote(remote_url), _store(store_path)
    pushed = 0
    for e in _chosen(s, stage, key):
        checked, why = s.verify(e.stage, e.key)
        if checked is None:
            say(f"{why}: not pushed", "warn")
        elif remote.has(e.stage, e.key):
            say(f"{e.stage}/{e.key[:12]}: the remote store has it", "note")
        else:
            say(f"pushed {remote.push(checked)} ({size_text(checked.size)})")
            pushed += 1
    say(f"{pushed} entr{'y' if pushed == 1 else 'ies'} pushed to {remote_url}", "ok")


@store.command("pull")
@store_option
@remote_option
@click.argument("stage", type=click.Choice(STORED_STAGES))
@click.argument("key", type=StageKey())
def pull(store_path: Path | None, remote_url: str, stage: str, key: str) -> None:
    """Pull STAGE's entry KEY (the full key) from the remote store into the local one, checked file by
    file against its manifest."""
    s = _store(store_path)
    if s.verify(stage, key)[0] is not None:
        say(f"{stage}/{key[:12]}: already in the local store", "ok")
        return
    entry = _remote(remote_url).pull(s, stage, key)
    if entry is None:
        from pipeline.errors import StoreError

        raise StoreError(f"{stage}/{key[:12]}: the remote store {remote_url} does not have it")
    say(f"pulled {stage}/{key[:12]} ({size_text(entry.size)}) into {s.root}", "ok")


def ls_remote(remote_url: str, as_json: bool) -> None:
    remote = _remote(remote_url)
    rows = [(st, k) for st in STORED_STAGES for k in remote.keys(st)]
    if as_json:
        emit_json([{"stage": st, "key": k} for st, k in rows])
        return
    table = Table(title=f"remote store {remote_url}", title_justify="left")
    table.add_column("stage")
    table.add_column("key")
    for st, k in rows:
        table.add_row(st, k[:12])
    console.print(table)

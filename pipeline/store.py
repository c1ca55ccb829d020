"""The artifact store: `<store>/<stage>/<key>/` holds a stage's exported files and `manifest.json`.

A stage whose key is in the store is not run. Entries are written into a temp directory beside their
final place and renamed into it, so a reader sees a whole entry or none, and two builds writing the
same key both succeed (the second finds the first's entry and drops its own). Reads verify every
file's sha256; a mismatch is reported and the entry is moved aside so the stage is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fsutil
from pipeline.contract import STAGES, is_inner_path, is_stage_key
from pipeline.errors import StoreError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    stage: str
    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("files", []))

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.files)

    @property
    def created(self) -> float:
        return float(self.manifest.get("created", 0))


def manifest_shape_ok(manifest: Any) -> bool:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", []), list):
        return False
    return all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and isinstance(f.get("size"), int)
        and isinstance(f.get("sha256"), str)
        for f in manifest.get("files", [])
    )


class Store:
    def __init__(self, root: Path):
        self.root = root

    def entry_path(self, stage: str, key: str) -> Path:
        """<store>/<stage>/<key>. Both parts are identifiers, checked here whatever handed them in (a
        command line, a remote listing, a manifest): never a path that leaves the store."""
        if stage not in STAGES or not is_stage_key(key):
            raise StoreError(
                f"not a store entry: stage {stage!r}, key {key!r} (stages: {', '.join(STAGES)}; a key is 64 hex digits)"
            )
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.entry_path(stage, key) / MANIFEST).is_file()

    def get(self, stage: str, key: str) -> Entry | None:
        path = self.entry_path(stage, key)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"store entry {stage}/{key[:12]} is unreadable: {e}") from None
        if not manifest_shape_ok(manifest):
            raise StoreError(
                f"store entry {stage}/{key[:12]}: its manifest.json is not a store manifest "
                "(expected files: [{path, size, sha256}])"
            )
        return Entry(stage=stage, key=key, path=path, manifest=manifest)

    def verify(self, stage: str, key: str) -> tuple[Entry | None, str]:
        """(the entry, '') when every file matches its manifest; (None, why) otherwise.

        A corrupt entry is moved out of the way so the stage is rebuilt, never used."""
        entry = self.get(stage, key)
        if entry is None:
            return None, "not in the store"
        for f in entry.files:
            if not is_inner_path(str(f.get("path", ""))):
                self._quarantine(entry.path)
                return None, f"store entry {stage}/{key[:12]} is corrupt (its manifest names {f.get('path')!r})"
            p = entry.path / f["path"]
            if not p.is_file() or p.stat().st_size != f["size"] or fsutil.file_sha256(p) != f["sha256"]:
                self._quarantine(entry.path)
                return None, f"store entry {stage}/{key[:12]} is corrupt ({f['path']} does not match its sha256)"
        return entry, ""

    def _quarantine(self, path: Path) -> None:
        target = path.with_name(f".corrupt-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            path.rename(target)
        except OSError:
            return
        shutil.rmtree(target, ignore_errors=True)

    def staging_dir(self, stage: str) -> Path:
        """A fresh temp dir on the store's filesystem, so the final rename is atomic."""
        d = self.root / stage / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        d.mkdir(parents=True)
        return d

    def commit(self, stage: str, key: str, staging: Path, meta: dict[str, Any]) -> Entry:
        """Hash the files in `staging`, write the manifest last, rename into place."""
        files = []
        for p in sorted(staging.rglob("*")):
            if p.is_file() and p.name != MANIFEST:
                files.append(
                    {
                        "path": p.relative_to(staging).as_posix(),
                        "size": p.stat().st_size,
                        "sha256": fsutil.file_sha256(p),
                    }
                )
        manifest = {**meta, "stage": stage, "key": key, "files": files, "created": time.time()}
        mpath = staging / MANIFEST
        with mpath.open("w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        return self._place(stage, key, staging)

    def adopt(self, stage: str, key: str, staging: Path) -> Entry:
        """Take an entry made elsewhere (pulled from a remote store) whose manifest.json is in `staging`:
        every file must match it (path, size, sha256), nothing else may be there. Refused otherwise."""
        try:
            manifest = json.loads((staging / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"entry {stage}/{key[:12]} from the remote store has no readable manifest: {e}") from None
        if manifest.get("stage") != stage or manifest.get("key") != key:
            raise StoreError(
                f"entry {stage}/{key[:12]} from the remote store names another entry "
                f"({manifest.get('stage')}/{str(manifest.get('key'))[:12]})"
            )
        want = {f["path"]: f for f in manifest.get("files", [])}
        have = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()} - {MANIFEST}
        if have != set(want):
            raise StoreError(f"entry {stage}/{key[:12]} from the remote store: its files differ from its manifest")
        for rel, f in want.items():
            p = staging / rel
            if p.stat().st_size != f["size"] or fsutil.file_sha256(p) != f["sha256"]:
                raise StoreError(
                    f"entry {stage}/{key[:12]} from the remote store is corrupt ({rel} does not match its sha256)"
                )
        return self._place(stage, key, staging)

    def _place(self, stage: str, key: str, staging: Path) -> Entry:
        fsutil.fsync_dir(staging)
        final = self.entry_path(stage, key)
        try:
            os.rename(staging, final)
        except OSError:
            # Another build committed the same key first: same inputs, same content; keep theirs.
            shutil.rmtree(staging, ignore_errors=True)
            if not self.has(stage, key):
                raise StoreError(f"cannot write store entry {final}") from None
        fsutil.fsync_dir(final.parent)
        entry = self.get(stage, key)
        if entry is None:
            raise StoreError(f"store entry {stage}/{key[:12]} vanished right after it was written")
        return entry

    def entries(self) -> list[Entry]:
        out: list[Entry] = []
        if not self.root.is_dir():
            return out
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name in STAGES):
            for d in sorted(stage_dir.iterdir()):
                if not is_stage_key(d.name):
                    continue  # temp dirs of running builds, quarantined entries, anything not ours
                try:
                    e = self.get(stage_dir.name, d.name)
                except StoreError:
                    continue  # unreadable or foreign: not an entry (verify quarantines it when asked)
                if e is not None:
                    out.append(e)
        return out

    def clean_staging(self) -> int:
        """Remove temp dirs of builds that were killed (their PID is gone); live builds' are kept."""
        n = 0
        if not self.root.is_dir():
            return 0
        for d in self.root.glob("*/.tmp-*"):
            try:
                pid = int(d.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if pid != os.getpid() and not fsutil.pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n

    def gc(self, keep: set[tuple[str, str]], keep_recent: int, dry_run: bool = False) -> list[Entry]:
        """Delete entries not in `keep` beyond the `keep_recent` newest per stage; returns them.
        With dry_run, only returns what would go."""
        doomed: list[Entry] = []
        by_stage: dict[str, list[Entry]] = {}
        for e in self.entries():
            by_stage.setdefault(e.stage, []).append(e)
        for entries in by_stage.values():
            entries.sort(key=lambda e: e.created, reverse=True)
            doomed += [e for i, e in enumerate(entries) if (e.stage, e.key) not in keep and i >= keep_recent]
        if not dry_run:
            for e in doomed:
                gone = e.path.with_name(f".gc-{e.key}-{uuid.uuid4().hex[:8]}")
                e.path.rename(gone)  # atomic removal from the store's view, then delete
                shutil.rmtree(gone, ignore_errors=True)
        return doomed

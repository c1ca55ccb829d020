"""Resume what a killed download left behind.

huggingface_hub (since its PR #4228, in every version transformers 5 accepts) downloads each file to a
process-unique `<etag>.<random>.incomplete` and never continues one: a download that was killed leaves
its partial files behind and the next one starts those files over. For a 200 GB model in 5 GB shards,
with 8 files in flight, that is up to 40 GB fetched again (and kept on disk as litter). Before
`snapshot_download` runs, we adopt the largest leftover of each blob, continue it with a Range request
through huggingface_hub's own `http_get`, check it (sha256 for LFS files, whose etag is their sha256;
size otherwise) and move it into place; `snapshot_download` then finds the blob and only links it.
Other leftovers are removed. A blob another process is downloading right now is left alone (its lock).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.model.manifest import SHA256

CHUNK = 1 << 20


def leftovers(blobs: Path) -> dict[str, Path]:
    """etag -> its largest leftover partial file; the smaller ones are removed."""
    best: dict[str, Path] = {}
    for p in sorted(blobs.glob("*.*.incomplete")) if blobs.is_dir() else []:
        etag = p.name.split(".", 1)[0]
        keep = best.get(etag)
        if keep is None or p.stat().st_size > keep.stat().st_size:
            if keep is not None:
                keep.unlink(missing_ok=True)
            best[etag] = p
        else:
            p.unlink(missing_ok=True)
    return best


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def resume_partials(repo: str, repo_dir: Path, revision: str | None) -> int:
    """Continue the leftovers of an interrupted download of repo; returns the bytes they already had."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    parts = leftovers(repo_dir / "blobs")
    if not parts:
        return 0
    api = HfApi()
    commit = api.repo_info(repo, revision=revision).sha
    files = {
        (f.lfs.sha256 if f.lfs else f.blob_id): f
        for f in api.list_repo_tree(repo, revision=commit, recursive=True)
        if isinstance(f, RepoFile)
    }
    kept = 0
    locks = repo_dir.parent / ".locks" / repo_dir.name
    locks.mkdir(parents=True, exist_ok=True)
    for etag, part in parts.items():
        entry = files.get(etag)
        dest = repo_dir / "blobs" / etag
        with WeakFileLock(locks / f"{etag}.lock"):
            have = part.stat().st_size if part.exists() else 0
            if entry is None or dest.exists() or have > entry.size:
                part.unlink(missing_ok=True)  # not in this revision, done by someone else, or damaged
                continue
            with part.open("ab") as out:
                http_get(
                    hf_hub_url(repo, entry.path, revision=commit),
                    out,
                    resume_size=have,
                    headers=build_hf_headers(),
                    expected_size=entry.size,
                    displayed_filename=entry.path,
                )
            whole = part.stat().st_size == entry.size and (not SHA256.fullmatch(etag) or _sha256(part) == etag)
            if whole:
                os.replace(part, dest)
                kept += have
            else:
                part.unlink(missing_ok=True)
    return kept

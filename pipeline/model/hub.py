"""The Hugging Face side: download a repository into this machine's cache with huggingface_hub (which
honours HF_HOME, HF_ENDPOINT and HF_TOKEN, resumes partial files and shows progress), and list what the
cache holds. HF_TOKEN is read by huggingface_hub from the environment; it is never printed or passed on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract import is_inner_path
from pipeline.errors import ConfigError, RemoteError
from pipeline.fsutil import write_atomic
from pipeline.model.manifest import SHA256
from pipeline.model.select import select
from pipeline.model.selection import Choice, save_selection

COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Snapshot:
    repo: str
    commit: str
    path: Path  # .../hub/models--ORG--NAME/snapshots/COMMIT
    files: int
    size: int

    @property
    def repo_dir(self) -> Path:
        return self.path.parents[1]


def hub_cache() -> Path:
    """The Hugging Face cache as huggingface_hub finds it (HF_HUB_CACHE, else HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub), read here at each call: deploy and copy look at it without
    importing huggingface_hub (which reads the environment once, at import)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _snapshot(repo: str, path: str) -> Snapshot:
    p = Path(path)
    files = [f for f in p.rglob("*") if f.is_file()]
    return Snapshot(repo=repo, commit=p.name, path=p, files=len(files), size=sum(f.stat().st_size for f in files))


def local_snapshot(repo: str, revision: str | None = None) -> Snapshot | None:
    """The cached snapshot of repo at revision (a branch, tag or commit), without any network. Read from
    the cache's layout (refs/<name> -> snapshots/<commit>), not with snapshot_download: that counts a
    snapshot as missing when it lacks files of the repository, as one holding only what vLLM loads does."""
    repo_dir = hub_cache() / repo_folder(repo)
    name = revision or "main"
    commit = name
    if not COMMIT.fullmatch(name):
        ref = repo_dir / "refs" / name
        try:
            commit = ref.read_text().strip() if is_inner_path(name) and ref.is_file() else ""
        except OSError:
            commit = ""
    path = repo_dir / "snapshots" / commit
    if not COMMIT.fullmatch(commit) or not path.is_dir():
        return None
    return _snapshot(repo, str(path))


def download(
    repo: str,
    revision: str | None = None,
    on_resume: Callable[[int], None] | None = None,
    choice: Choice | None = None,
) -> Snapshot:
    """Download what the cache lacks of the files vLLM will load (select.py; `choice.all_files`: every
    file): files it has are not fetched again, the partial files an interrupted download left are
    continued (resume.py); `on_resume` hears how many bytes were kept. Unreachable hub: the cache's
    snapshot, as huggingface_hub answers it."""
    from huggingface_hub import snapshot_download

    from pipeline.model.resume import resume_partials

    choice, asked = choice or Choice(), revision
    with _hub_errors(repo, revision):
        listing = None if choice.all_files else remote_files(repo, revision)
        allow = None
        if listing is not None:
            commit, files, lfs = listing
            try:
                sel = select(files, _index_reader(repo, commit), choice.load_format, choice.gguf)
            except ConfigError as e:
                raise ConfigError(f"model {repo}: {e}") from None
            save_selection(repo, commit, sel, files)
            revision, allow = commit, [glob.escape(p) for p in sel.chosen]
        kept = resume_partials(repo, hub_cache() / repo_folder(repo), revision)
        if kept and on_resume is not None:
            on_resume(kept)
        where = str(hub_cache())  # as this process reads the environment now (huggingface_hub read it at import)
        snap = _snapshot(repo, snapshot_download(repo, revision=revision, allow_patterns=allow, cache_dir=where))
        if listing is not None:
            check_arrived(snap, {p: files[p] for p in sel.chosen}, lfs)
            _name_commit(snap.repo_dir, asked or "main", snap.commit)
        return snap


def check_arrived(snap: Snapshot, sizes: dict[str, int], lfs: dict[str, str]) -> None:
    """Each chosen file is in the snapshot with the size the hub listed, and an LFS file under the sha256
    the hub listed (huggingface_hub names the blob by it, having checked it): a short or swapped file
    never passes as the model."""
    for path, size in sorted(sizes.items()):
        f = snap.path / path
        if not f.is_file():
            raise RemoteError(f"model {snap.repo}: {path} did not arrive")
        if size and f.stat().st_size != size:
            raise RemoteError(f"model {snap.repo}: {path} has {f.stat().st_size} bytes, the hub lists {size}")
        if path in lfs and f.resolve().name != lfs[path]:
            raise RemoteError(f"model {snap.repo}: {path} is not the file the hub lists (sha256 {lfs[path][:12]}…)")


def _name_commit(repo_dir: Path, revision: str, commit: str) -> None:
    """refs/<branch or tag> -> commit, as huggingface_hub writes it when it resolves a name itself (we
    download by the commit our listing named, so the files chosen are that commit's)."""
    if revision == commit or not is_inner_path(revision):
        return
    write_atomic(repo_dir / "refs" / revision, commit)


def remote_files(repo: str, revision: str | None) -> tuple[str, dict[str, int], dict[str, str]] | None:
    """(commit, path -> size, path -> LFS sha256) from the hub's file listing (metadata only), None when
    the hub cannot be reached (the download then answers from the cache). The hub's refusals are raised."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except HfHubHTTPError:
        raise
    except Exception:  # httpx's connect and timeout errors, offline mode: snapshot_download decides
        return None
    if not isinstance(info.sha, str) or not COMMIT.fullmatch(info.sha):
        raise RemoteError(f"model {repo}: the hub answered no commit for {revision or 'main'}")
    # names that would leave the snapshot folder are never chosen (huggingface_hub refuses them too)
    siblings = [s for s in info.siblings or [] if is_inner_path(s.rfilename)]
    sizes = {s.rfilename: max(0, s.size or 0) for s in siblings}
    lfs = {s.rfilename: s.lfs.sha256 for s in siblings if s.lfs and SHA256.fullmatch(s.lfs.sha256 or "")}
    return info.sha, sizes, lfs


def _index_reader(repo: str, commit: str) -> Callable[[str], str]:
    """Reads a weight index from the hub (into the cache: it is one of the files chosen)."""
    from huggingface_hub import hf_hub_download

    where = str(hub_cache())
    return lambda name: Path(hf_hub_download(repo, name, revision=commit, cache_dir=where)).read_text(errors="replace")


@contextlib.contextmanager
def _hub_errors(repo: str, revision: str | None) -> Iterator[None]:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise ConfigError(
            f"model {repo}: gated. Accept its terms on its Hugging Face page, then set HF_TOKEN "
            "(a token of the account that accepted them) in the environment, or log in once with "
            "`hf auth login`"
        ) from None
    except RevisionNotFoundError:
        raise ConfigError(f"model {repo}: revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"model {repo}: not found on the hub (a private repository also needs HF_TOKEN)") from None
    except LocalEntryNotFoundError as e:
        raise RemoteError(f"model {repo}: cannot reach the hub and the cache lacks it ({_first_line(e)})") from None
    except HfHubHTTPError as e:
        raise RemoteError(f"model {repo}: the hub answered {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def cached_models() -> list[Snapshot]:
    """Every model snapshot in this machine's cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache())
    except CacheNotFound:
        return []
    out = []
    for r in sorted(info.repos, key=lambda r: r.repo_id):
        if r.repo_type != "model":
            continue
        for rev in sorted(r.revisions, key=lambda v: v.commit_hash):
            out.append(
                Snapshot(
                    repo=r.repo_id,
                    commit=rev.commit_hash,
                    path=Path(rev.snapshot_path),
                    files=len(rev.files),
                    size=rev.size_on_disk,
                )
            )
    return out


def resumed_note(repo: str, say: Callable[[str], None], prefix: str = "") -> Callable[[int], None]:
    """What a download says when it continued the partial files an interrupted download left."""

    def note(n: int) -> None:
        say(
            f"{prefix}model {repo}: continued the partial files of an interrupted download "
            f"({n / 1e6:.1f} MB were already here)"
        )

    return note

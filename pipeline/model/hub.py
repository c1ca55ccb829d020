"""The Hugging Face side: download a repository into this machine's cache with huggingface_hub (which
honours HF_HOME, HF_ENDPOINT and HF_TOKEN, resumes partial files and shows progress), and list what the
cache holds. HF_TOKEN is read by huggingface_hub from the environment; it is never printed or passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, RemoteError


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
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")


def _snapshot(repo: str, path: str) -> Snapshot:
    p = Path(path)
    files = [f for f in p.rglob("*") if f.is_file()]
    return Snapshot(repo=repo, commit=p.name, path=p, files=len(files), size=sum(f.stat().st_size for f in files))


def local_snapshot(repo: str, revision: str | None = None) -> Snapshot | None:
    """The cached snapshot of repo at revision (a branch, tag or commit), without any network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return _snapshot(repo, snapshot_download(repo, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def download(repo: str, revision: str | None = None, on_resume: Callable[[int], None] | None = None) -> Snapshot:
    """Download what the cache lacks: files it has are not fetched again, the partial files an
    interrupted download left are continued (resume.py); `on_resume` hears how many bytes were kept."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from pipeline.model.resume import resume_partials

    try:
        kept = resume_partials(repo, hub_cache() / repo_folder(repo), revision)
        if kept and on_resume is not None:
            on_resume(kept)
        return _snapshot(repo, snapshot_download(repo, revision=revision))
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
        info = scan_cache_dir()
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

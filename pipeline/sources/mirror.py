"""Sources: a bare git mirror per repository, refs and PRs resolved to commit SHAs, submodules at the
commits their parent records, digests of patches.

Mirrors fetch only what a build needs, as a partial clone (`--filter=blob:none`: commits and trees
now, file contents when a checkout needs them): the ref's branch or tag with its history (tags that
point into it come along, for versions), each PR's head, each submodule's commit. Nothing else: vLLM
has thousands of branches and PR refs. A ref whose commit the mirror already has is not fetched again.

A local path or `file://` URL works exactly like a GitHub URL (same fetch, same refs), so tests use
local repositories and never the network. PRs are `refs/pull/N/head` on the repository, as on GitHub.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.config.types import pr_url_parts
from pipeline.core.ir import SourceSpec
from pipeline.core.keys import Resolved, canonical_json, sha256_text
from pipeline.errors import SourceError
from pipeline.sources import gitcmd
from pipeline.sources.gitcmd import git

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEXPREFIX = re.compile(r"^[0-9a-f]{7,39}$")
_PULL_REF = re.compile(r"^pull/([1-9]\d*)/head$")
EMPTY_TREE = hashlib.sha256(b"").hexdigest()


def repo_location(repo: str, root: Path) -> str:
    """A URL as given, or a local path made absolute against build.yaml's directory."""
    if "://" in repo or re.match(r"^[\w.-]+@[\w.-]+:", repo):
        return repo
    return str((root / repo).resolve())


def mirror_path(cache: Path, name: str, url: str) -> Path:
    return cache / "git" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}.git"


@dataclass(frozen=True)
class Submodule:
    path: str  # where the parent tree has it
    url: str
    commit: str
    mirror: Path
    children: tuple[Submodule, ...] = ()


@dataclass(frozen=True)
class ResolvedSource:
    """A source pinned to commits: what `checkout` materializes and what keys hash."""

    name: str
    url: str
    mirror: Path
    ref: str
    commit: str
    prs: tuple[tuple[str, str, str], ...] = ()  # (label '#12' or URL, head sha, local ref in the mirror)
    patches: tuple[tuple[str, str, Path], ...] = ()  # (display name, sha256, path)
    tolerate_conflicts: tuple[str, ...] = ()
    source_dir: str | None = None
    submodules: tuple[Submodule, ...] = ()
    facts: tuple[tuple[str, str], ...] = field(default=())

    @property
    def digest(self) -> str:
        def subs(items: tuple[Submodule, ...]) -> list[object]:
            return [[s.path, s.commit, subs(s.children)] for s in items]

        return sha256_text(
            canonical_json(
                {
                    "commit": self.commit,
                    "prs": [sha for _, sha, _ in self.prs],
                    "patches": [sha for _, sha, _ in self.patches],
                    "tolerate": list(self.tolerate_conflicts),
                    **({"submodules": subs(self.submodules)} if self.submodules else {}),
                }
            )
        )

    def resolved(self) -> Resolved:
        return Resolved(digest=self.digest, facts=self.facts)


def is_remote(url: str) -> bool:
    """Partial clones need a server that filters: any URL; local paths are copied whole (cheap)."""
    return ("://" in url and not url.startswith("file://")) or bool(re.match(r"^[\w.-]+@[\w.-]+:", url))


class Mirrors:
    """The source cache: one bare mirror per repository URL, each ref fetched at most once per process."""

    def __init__(
        self,
        cache: Path,
        offline: bool = False,
        progress: Callable[[str], None] | None = None,
        detail: Callable[[str], None] | None = None,
    ):
        """`progress` hears one line per clone or fetch; `detail` hears git's own progress lines."""
        self.cache = cache
        self.offline = offline
        self.progress = progress or (lambda line: None)
        self.detail = detail or (lambda line: None)
        self._fetched: set[tuple[Path, str]] = set()
        self._seeded: set[tuple[Path, str]] = set()  # (mirror, ref) cloned by this process: fresh, no need to ask

    def mirror(self, name: str, url: str, seed: str = "", what: str = "") -> Path:
        """The mirror of `url`, made on first use: by a partial single-branch clone of `seed` (a branch
        or tag) when one is given, else empty."""
        path = mirror_path(self.cache, name, url)
        if (path / "HEAD").exists():
            return path
        if self.offline:
            raise SourceError(f"{name}: no mirror of {url} in {self.cache} and --offline was given")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if seed and not _HEX40.match(seed) and not _PULL_REF.match(seed):
            self.progress(f"{name}: cloning {seed} from {url}")
            if gitcmd.clone(url, tmp, seed, what=what or name, progress=self.detail, partial=is_remote(url)):
                self._seeded.add((path, seed))
        if not (tmp / "HEAD").exists():
            git("init", "--bare", "--quiet", str(tmp))
            git("remote", "add", "origin", url, cwd=tmp)
            if is_remote(url):  # a promisor remote: blobs arrive when a checkout needs them
                for key, value in (
                    ("core.repositoryformatversion", "1"),
                    ("extensions.partialClone", "origin"),
                    ("remote.origin.promisor", "true"),
                    ("remote.origin.partialclonefilter", "blob:none"),
                ):
                    git("config", key, value, cwd=tmp)
        # No default refspec: a fetch brings exactly the refs asked for (no remote-tracking copies).
        git("config", "--unset-all", "remote.origin.fetch", cwd=tmp, check=False)
        try:
            tmp.rename(path)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def fetch(self, mirror: Path, url: str, *refspecs: str, what: str = "") -> None:
        key = (mirror, f"{url} {' '.join(refspecs)}")
        if self.offline or key in self._fetched:
            return
        origin = git("remote", "get-url", "origin", cwd=mirror, check=False).stdout.decode().strip()
        remote = "origin" if url == origin else url  # a fork's PR: that URL, without filtering
        partial = remote == "origin" and is_remote(url)
        source = mirror.name.rsplit("-", 1)[0]
        self.progress(f"{source}: fetching {' '.join(r.split(':')[0].lstrip('+') for r in refspecs)} from {url}")
        gitcmd.fetch(mirror, remote, list(refspecs), what=what or source, progress=self.detail, partial=partial)
        self._fetched.add(key)

    def remote_refs(self, mirror: Path, url: str, ref: str) -> dict[str, str]:
        """refname -> sha for `ref` as a branch or tag on the remote (one round trip, no objects)."""
        proc = git(
            "ls-remote",
            url,
            f"refs/heads/{ref}",
            f"refs/tags/{ref}",
            f"refs/tags/{ref}^{{}}",
            cwd=mirror,
            check=False,
            timeout=gitcmd.git_timeout(),
        )
        if proc.returncode != 0:
            raise SourceError(f"cannot reach {url}: {proc.stderr.decode(errors='replace').strip()}")
        pairs = (line.split("\t", 1) for line in proc.stdout.decode().splitlines() if "\t" in line)
        return {name: sha for sha, name in pairs}


def rev(mirror: Path, expr: str) -> str | None:
    proc = git("rev-parse", "--verify", "--quiet", f"{expr}^{{commit}}", cwd=mirror, check=False)
    out = proc.stdout.decode().strip()
    return out if proc.returncode == 0 and _HEX40.match(out) else None


def _named_ref(mirrors: Mirrors, mirror: Path, url: str, ref: str, what: str) -> str | None:
    """A branch or tag: asked of the remote, fetched (with its history) unless the mirror has it."""
    if mirrors.offline or (mirror, ref) in mirrors._seeded:
        return rev(mirror, f"refs/heads/{ref}") or rev(mirror, f"refs/tags/{ref}")
    remote = mirrors.remote_refs(mirror, url, ref)
    for kind in ("heads", "tags"):
        name = f"refs/{kind}/{ref}"
        if name not in remote:
            continue
        want = remote.get(f"{name}^{{}}", remote[name])  # an annotated tag's commit
        if rev(mirror, name) != want:
            mirrors.fetch(mirror, url, f"+{name}:{name}", what=what)
        return rev(mirror, name)
    return None


def resolve_ref(mirrors: Mirrors, name: str, url: str, ref: str, what: str) -> tuple[Path, str]:
    """Resolve a branch, tag, full SHA, SHA prefix or `pull/N/head` to a full commit SHA."""
    mirror = mirrors.mirror(name, url, seed=ref, what=what)
    pull = _PULL_REF.match(ref)
    sha: str | None
    if pull:
        mirrors.fetch(mirror, url, f"+refs/pull/{pull[1]}/head:refs/pull/{pull[1]}/head", what=what)
        sha = rev(mirror, f"refs/pull/{pull[1]}/head")
    elif _HEX40.match(ref):
        sha = fetch_commit(mirrors, mirror, url, ref, what)
    else:
        sha = _named_ref(mirrors, mirror, url, ref, what)
        if sha is None and _HEXPREFIX.match(ref):  # a short SHA: look in the default branch's history
            sha = rev(mirror, ref)
            if sha is None and not mirrors.offline:
                mirrors.fetch(mirror, url, "+HEAD:refs/remotes/origin/HEAD", what=what)
                sha = rev(mirror, ref)
    if sha is None:
        raise SourceError(f"{what}: {ref!r} is not a branch, tag or commit of {url}")
    return mirror, sha


def fetch_commit(mirrors: Mirrors, mirror: Path, url: str, sha: str, what: str) -> str | None:
    """A commit by full SHA, fetched (and kept under a ref of ours, so it is never pruned) if missing."""
    if rev(mirror, sha) is None and not mirrors.offline:
        mirrors.fetch(mirror, url, f"+{sha}:refs/spark-pipeline/commits/{sha}", what=what)
    return rev(mirror, sha)


def resolve_pr(mirrors: Mirrors, name: str, url: str, mirror: Path, pr: int | str) -> tuple[str, str, str]:
    """(label, head sha, local ref) of a PR given by number (on `url`) or by full GitHub URL."""
    if isinstance(pr, int):
        pr_url, number, label = url, pr, f"#{pr}"
    else:
        pr_url, number = pr_url_parts(pr)
        label = pr
    local = f"refs/spark-pipeline/pr/{hashlib.sha256(pr_url.encode()).hexdigest()[:8]}/{number}"
    mirrors.fetch(mirror, pr_url, f"+refs/pull/{number}/head:{local}", what=f"{name}.prs {label}")
    sha = rev(mirror, local)
    if sha is None:
        raise SourceError(f"{name}.prs: PR {label} has no head (refs/pull/{number}/head) in {pr_url}")
    return label, sha, local


def patch_files(spec: SourceSpec, root: Path, label: str) -> list[Path]:
    if spec.patches is None:
        d = paths.input_dir(root, f"docker-contexts/{spec.name}/patches")
        return sorted(p for p in d.glob("*") if p.suffix in (".patch", ".diff") and p.is_file()) if d else []
    out = []
    for rel in spec.patches:
        p = (root / rel).resolve()
        if not p.is_file():
            raise SourceError(f"{label}:{spec.name}.patches: file not found: {rel}")
        out.append(p)
    return out

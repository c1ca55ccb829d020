"""Sources: a bare git mirror per repository, refs and PRs resolved to commit SHAs, digests of
patches and local directories.

A local path or `file://` URL works exactly like a GitHub URL (same fetch, same refs), so tests use
local repositories and never the network. PRs are `refs/pull/N/head` on the repository, as on GitHub.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.core.ir import SourceSpec
from pipeline.core.keys import Resolved, canonical_json, sha256_text
from pipeline.errors import SourceError
from pipeline.spec.types import pr_url_parts

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEXPREFIX = re.compile(r"^[0-9a-f]{7,39}$")
_PULL_REF = re.compile(r"^pull/([1-9]\d*)/head$")
EMPTY_TREE = hashlib.sha256(b"").hexdigest()
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def git(*args: str, cwd: Path | None = None, check: bool = True, input: bytes | None = None,
        timeout: float = 600, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **GIT_ENV, **(extra_env or {})}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, input=input, capture_output=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise SourceError(f"git {' '.join(args[:3])}… failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def repo_location(repo: str, root: Path) -> str:
    """A URL as given, or a local path made absolute against build.yaml's directory."""
    if "://" in repo or re.match(r"^[\w.-]+@[\w.-]+:", repo):
        return repo
    return str((root / repo).resolve())


def mirror_path(cache: Path, name: str, url: str) -> Path:
    return cache / "git" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}.git"


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
    facts: tuple[tuple[str, str], ...] = field(default=())

    @property
    def digest(self) -> str:
        return sha256_text(canonical_json({
            "commit": self.commit,
            "prs": [sha for _, sha, _ in self.prs],
            "patches": [sha for _, sha, _ in self.patches],
            "tolerate": list(self.tolerate_conflicts),
        }))

    def resolved(self) -> Resolved:
        return Resolved(digest=self.digest, facts=self.facts)


class Mirrors:
    """The source cache: one bare mirror per repository URL, fetched at most once per process."""

    def __init__(self, cache: Path, offline: bool = False):
        self.cache = cache
        self.offline = offline
        self._fetched: set[tuple[Path, str]] = set()

    def mirror(self, name: str, url: str) -> Path:
        path = mirror_path(self.cache, name, url)
        if not (path / "HEAD").exists():
            if self.offline:
                raise SourceError(f"{name}: no mirror of {url} in {self.cache} and --offline was given")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            git("init", "--bare", "--quiet", str(tmp))
            # Lets a shallow fetch ask for any commit (checkouts fetch exactly the resolved SHA).
            git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=tmp)
            try:
                tmp.rename(path)
            except OSError:  # another process made it first
                git_rm_tree(tmp)
        return path

    def fetch(self, mirror: Path, url: str, *refspecs: str) -> None:
        specs = refspecs or ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
        key = (mirror, " ".join(specs))
        if self.offline or key in self._fetched:
            return
        proc = git("fetch", "--quiet", "--prune", "--force", url, *specs, cwd=mirror, check=False)
        if proc.returncode != 0:
            raise SourceError(f"cannot fetch {url}: {proc.stderr.decode(errors='replace').strip()}")
        self._fetched.add(key)


def git_rm_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def rev(mirror: Path, expr: str) -> str | None:
    proc = git("rev-parse", "--verify", "--quiet", f"{expr}^{{commit}}", cwd=mirror, check=False)
    out = proc.stdout.decode().strip()
    return out if proc.returncode == 0 and _HEX40.match(out) else None


def resolve_ref(mirrors: Mirrors, name: str, url: str, ref: str, what: str) -> tuple[Path, str]:
    """Resolve a branch, tag, full SHA, SHA prefix or `pull/N/head` to a full commit SHA."""
    mirror = mirrors.mirror(name, url)
    pull = _PULL_REF.match(ref)
    if pull:
        mirrors.fetch(mirror, url, f"+refs/pull/{pull[1]}/head:refs/pull/{pull[1]}/head")
        sha = rev(mirror, f"refs/pull/{pull[1]}/head")
    else:
        mirrors.fetch(mirror, url)
        if _HEX40.match(ref):
            sha = rev(mirror, ref)
            if sha is None and not mirrors.offline:
                git("fetch", "--quiet", url, ref, cwd=mirror, check=False)
                sha = rev(mirror, ref)
        else:
            sha = rev(mirror, f"refs/heads/{ref}") or rev(mirror, f"refs/tags/{ref}")
            if sha is None and _HEXPREFIX.match(ref):
                sha = rev(mirror, ref)
    if sha is None:
        raise SourceError(f"{what}: {ref!r} is not a branch, tag or commit of {url}")
    return mirror, sha


def resolve_pr(mirrors: Mirrors, name: str, url: str, mirror: Path, pr: int | str) -> tuple[str, str, str]:
    """(label, head sha, local ref) of a PR given by number (on `url`) or by full GitHub URL."""
    if isinstance(pr, int):
        pr_url, number, label = url, pr, f"#{pr}"
    else:
        pr_url, number = pr_url_parts(pr)
        label = pr
    local = f"refs/spark-pipeline/pr/{hashlib.sha256(pr_url.encode()).hexdigest()[:8]}/{number}"
    mirrors.fetch(mirror, pr_url, f"+refs/pull/{number}/head:{local}")
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


def resolve_source(mirrors: Mirrors, spec: SourceSpec, root: Path, label: str) -> ResolvedSource:
    facts: list[tuple[str, str]] = []
    if spec.source_dir is not None:
        work = Path(repo_location(spec.source_dir, root))
        commit = local_head(work, f"{label}:{spec.name}.source_dir")
        url = str(work)
        mirror = mirrors.mirror(spec.name, url)
        if rev(mirror, commit) is None:
            git("fetch", "--quiet", str(work), commit, cwd=mirror)
        facts.append((f"{spec.name}.source_dir {spec.source_dir}", commit))
        ref = "HEAD"
    else:
        url = repo_location(spec.repo, root)
        mirror, commit = resolve_ref(mirrors, spec.name, url, spec.ref, f"{label}:{spec.name}.ref")
        facts.append((f"{spec.name}.ref {spec.ref}", commit))
        ref = spec.ref
    prs = tuple(resolve_pr(mirrors, spec.name, url, mirror, pr) for pr in spec.prs)
    facts += [(f"{spec.name}.prs {lbl}", sha) for lbl, sha, _ in prs]
    patches = []
    for p in patch_files(spec, root, label):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        patches.append((p.name, digest, p))
        facts.append((f"{spec.name}.patches {p.name}", digest))
    return ResolvedSource(name=spec.name, url=url, mirror=mirror, ref=ref, commit=commit, prs=prs,
                          patches=tuple(patches), tolerate_conflicts=spec.tolerate_conflicts,
                          source_dir=spec.source_dir, facts=tuple(facts))


def local_head(work: Path, what: str) -> str:
    """HEAD of a clean local checkout (the toolkit's rule: no dirty files, no submodules)."""
    if not (work / ".git").exists():
        raise SourceError(f"{what}: {work} is not the root of a git checkout")
    status = git("status", "--porcelain", "--untracked-files=normal", cwd=work).stdout.decode()
    if status.strip():
        first = status.strip().splitlines()[0]
        raise SourceError(f"{what}: {work} has uncommitted changes ({first.strip()} …); commit or stash them "
                          "so the build is reproducible")
    if (work / ".gitmodules").exists():
        raise SourceError(f"{what}: {work} uses submodules, which a source dir build does not support")
    sha = git("rev-parse", "HEAD", cwd=work).stdout.decode().strip()
    return sha

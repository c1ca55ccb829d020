"""A source spec resolved to commits: the ref, each PR's head (checked to apply, so `plan` names a
conflicting PR before anything is built), the submodules the commit records, the patches."""

from __future__ import annotations

import hashlib
import posixpath
import re
import tempfile
from pathlib import Path

from pipeline.core.ir import SourceSpec
from pipeline.errors import SourceError
from pipeline.sources.gitcmd import git
from pipeline.sources.mirror import (
    Mirrors,
    ResolvedSource,
    Submodule,
    fetch_commit,
    patch_files,
    repo_location,
    resolve_pr,
    resolve_ref,
    rev,
)

IDENTITY = {
    "GIT_AUTHOR_NAME": "spark-pipeline",
    "GIT_AUTHOR_EMAIL": "spark-pipeline@localhost",
    "GIT_COMMITTER_NAME": "spark-pipeline",
    "GIT_COMMITTER_EMAIL": "spark-pipeline@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}
MAX_DEPTH = 3  # submodules of submodules of submodules


def conflict_error(name: str, label: str, paths: list[str]) -> SourceError:
    """The one message for a PR that does not merge (plan and build say the same)."""
    return SourceError(
        f"{name}: PR {label} conflicts in {', '.join(paths)}; rebase the PR, pick another "
        f"{name}.ref, or drop it from {name}.prs"
    )


def tolerated(path: str, patterns: tuple[str, ...]) -> bool:
    import fnmatch

    # fnmatch's * crosses '/', so 'tests/*' covers the whole tree and '*.md' any Markdown file.
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def check_prs(
    mirror: Path, commit: str, prs: tuple[tuple[str, str, str], ...], name: str, tolerate: tuple[str, ...]
) -> str:
    """Merge each PR onto the commit (and the PRs before it) in the mirror, the way checkout applies
    them; a conflict outside the tolerated paths is the same SourceError checkout would raise. Returns
    the merged commit (the one checkout's tree has before patches)."""
    current = commit
    for label, head, _ in prs:
        proc = git("merge-tree", "--write-tree", "--name-only", "--no-messages", current, head, cwd=mirror, check=False)
        lines = proc.stdout.decode().splitlines()
        if proc.returncode not in (0, 1) or not lines:
            raise SourceError(
                f"{name}: cannot check PR {label} against {commit[:12]}: {proc.stderr.decode(errors='replace').strip()}"
            )
        fatal = [p for p in lines[1:] if p and not tolerated(p, tolerate)]
        if proc.returncode == 1 and fatal:
            raise conflict_error(name, label, fatal)
        current = (
            git(
                "commit-tree",
                lines[0],
                "-p",
                current,
                "-p",
                head,
                "-m",
                f"check {label}",
                cwd=mirror,
                extra_env=IDENTITY,
            )
            .stdout.decode()
            .strip()
        )
    return current


def check_patches(mirror: Path, tree: str, patches: list[Path], name: str, ref: str) -> None:
    """Apply each patch, in order, to the tree checkout will have (a scratch index in the mirror: no
    work tree), so a patch that does not apply fails plan instead of the stage, after the stages before
    it were built. One already in the tree is skipped, as checkout skips it."""
    if not patches:
        return
    with tempfile.TemporaryDirectory(prefix="spark-pipeline-patch-check-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", tree, cwd=mirror, extra_env=env)
        for patch in patches:
            data = patch.read_bytes()
            if (
                git(
                    "apply", "--cached", "--reverse", "--check", "-", cwd=mirror, input=data, check=False, extra_env=env
                ).returncode
                == 0
            ):
                continue
            proc = git("apply", "--cached", "--binary", "-", cwd=mirror, input=data, check=False, extra_env=env)
            if proc.returncode != 0:
                raise SourceError(
                    f"{name}: patch {patch.name} does not apply to {name} {ref} ({tree[:12]}): "
                    f"{proc.stderr.decode(errors='replace').strip()}\n  the {name} stage would fail "
                    f"on it; update the patch, or leave it out ({name}.patches in build.yaml)"
                )


def sub_url(parent: str, url: str) -> str:
    """A submodule URL, relative ones (../cutlass.git) against the parent's URL."""
    if not url.startswith(("./", "../")):
        return url
    if "://" in parent:
        scheme, rest = parent.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest.rstrip('/'), url))}"
    return posixpath.normpath(posixpath.join(parent.rstrip("/"), url))


def submodules_of(
    mirrors: Mirrors, mirror: Path, url: str, commit: str, name: str, depth: int = 0
) -> tuple[Submodule, ...]:
    """The submodules `commit` records, each mirrored and fetched at the commit recorded for it."""
    proc = git(
        "config",
        "--blob",
        f"{commit}:.gitmodules",
        "--get-regexp",
        r"^submodule\..*\.(path|url)$",
        cwd=mirror,
        check=False,
    )
    if proc.returncode != 0 or depth > MAX_DEPTH:
        return ()
    entries: dict[str, dict[str, str]] = {}
    for line in proc.stdout.decode().splitlines():
        key, _, value = line.partition(" ")
        sub, _, field = key.removeprefix("submodule.").rpartition(".")
        entries.setdefault(sub, {})[field] = value
    out = []
    for _, e in sorted(entries.items()):
        listing = git("ls-tree", commit, "--", e.get("path", ""), cwd=mirror).stdout.decode().split()
        if len(listing) < 3 or listing[1] != "commit":
            continue  # declared but not in the tree at this commit
        s_url = sub_url(url, e["url"])
        s_mirror = mirrors.mirror(f"{name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', e['path'])}", s_url)
        what = f"{name} submodule {e['path']}"
        if fetch_commit(mirrors, s_mirror, s_url, listing[2], what) is None:
            raise SourceError(f"{what}: commit {listing[2][:12]} is not in {s_url}")
        out.append(
            Submodule(
                path=e["path"],
                url=s_url,
                commit=listing[2],
                mirror=s_mirror,
                children=submodules_of(mirrors, s_mirror, s_url, listing[2], name, depth + 1),
            )
        )
    return tuple(out)


def submodule_facts(name: str, subs: tuple[Submodule, ...], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for s in subs:
        out.append((f"{name}.submodules {prefix}{s.path}", s.commit))
        out += submodule_facts(name, s.children, f"{prefix}{s.path}/")
    return out


def local_head(work: Path, what: str) -> str:
    """HEAD of a clean local checkout (the toolkit's rule: no dirty files, no submodules)."""
    if not (work / ".git").exists():
        raise SourceError(f"{what}: {work} is not the root of a git checkout")
    status = git("status", "--porcelain", "--untracked-files=normal", cwd=work).stdout.decode()
    if status.strip():
        first = status.strip().splitlines()[0]
        raise SourceError(
            f"{what}: {work} has uncommitted changes ({first.strip()} …); commit or stash them "
            "so the build is reproducible"
        )
    if (work / ".gitmodules").exists():
        raise SourceError(f"{what}: {work} uses submodules, which a source dir build does not support")
    return git("rev-parse", "HEAD", cwd=work).stdout.decode().strip()


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
    merged = check_prs(mirror, commit, prs, spec.name, spec.tolerate_conflicts)
    subs = submodules_of(mirrors, mirror, url, commit, spec.name)
    facts += submodule_facts(spec.name, subs)
    patches = []
    for p in patch_files(spec, root, label):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        patches.append((p.name, digest, p))
        facts.append((f"{spec.name}.patches {p.name}", digest))
    check_patches(mirror, merged, [p for _, _, p in patches], spec.name, ref)
    return ResolvedSource(
        name=spec.name,
        url=url,
        mirror=mirror,
        ref=ref,
        commit=commit,
        prs=prs,
        patches=tuple(patches),
        tolerate_conflicts=spec.tolerate_conflicts,
        source_dir=spec.source_dir,
        submodules=subs,
        facts=tuple(facts),
    )

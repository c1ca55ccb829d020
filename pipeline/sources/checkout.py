"""Materialize a resolved source as a plain directory tree for a stage: the commit checked out from
the mirror, upstream PRs merged the toolkit's way, then local patches.

PRs (toolkit §1.4/§1.5): the diff from merge-base(commit, PR head) to the PR head is applied with
`git apply --3way`; a PR whose diff is empty or already applied is skipped; a conflict fails, except in
paths the source tolerates (vLLM: tests/, docs/, *.md, *.rst), where our side is kept.

The tree is cached under the source cache by the source's digest, so a second build reuses it. The
build containers receive the tree only: no .git, no remotes, no credentials.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import SourceError
from pipeline.sources.mirror import ResolvedSource, git

IDENTITY = {
    "GIT_AUTHOR_NAME": "spark-pipeline", "GIT_AUTHOR_EMAIL": "spark-pipeline@localhost",
    "GIT_COMMITTER_NAME": "spark-pipeline", "GIT_COMMITTER_EMAIL": "spark-pipeline@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
}


def _git_env(*args: str, cwd: Path, check: bool = True,
             input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """git with a fixed identity and dates, so applying the same PRs gives the same commits."""
    return git(*args, cwd=cwd, check=check, input=input, extra_env=IDENTITY)


SCM_VERSION_FILE = ".scm-version"
_DESCRIBE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?[^-]*-(\d+)-g([0-9a-f]+)$")


def scm_version(describe: str, sha: str) -> str:
    """`git describe --tags --long` -> a version like setuptools-scm's guess-next-dev (the patch level is
    bumped, also after an rc tag), so packages that take their version from git (vLLM) build from a
    tree handed over without .git."""
    m = _DESCRIBE.match(describe.strip())
    if not m:
        return f"0.0.0.dev0+g{sha[:9]}"
    major, minor, patch, distance, short = m.groups()
    patch = patch or "0"
    if distance == "0":
        return f"{major}.{minor}.{patch}"
    return f"{major}.{minor}.{int(patch) + 1}.dev{distance}+g{short}"


def tolerated(path: str, patterns: tuple[str, ...]) -> bool:
    # fnmatch's * crosses '/', so 'tests/*' covers the whole tree and '*.md' any Markdown file.
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def apply_pr(work: Path, label: str, head: str, name: str, tolerate: tuple[str, ...]) -> str:
    """Apply one PR in the worktree. Returns 'applied', 'skipped (empty)' or 'skipped (already applied)'."""
    base = _git_env("merge-base", "HEAD", head, cwd=work).stdout.decode().strip()
    diff = _git_env("diff", "--binary", base, head, cwd=work).stdout
    if not diff.strip():
        return "skipped (empty)"
    if _git_env("apply", "--reverse", "--check", "--binary", "-", cwd=work, check=False, input=diff).returncode == 0:
        return "skipped (already applied)"
    proc = _git_env("apply", "--3way", "--index", "--binary", "-", cwd=work, check=False, input=diff)
    if proc.returncode != 0:
        conflicted = _git_env("diff", "--name-only", "--diff-filter=U", cwd=work).stdout.decode().split()
        if not conflicted:
            raise SourceError(f"{name}: PR {label} does not apply: {proc.stderr.decode(errors='replace').strip()}")
        fatal = [p for p in conflicted if not tolerated(p, tolerate)]
        if fatal:
            raise SourceError(f"{name}: PR {label} conflicts in {', '.join(fatal)}; rebase the PR, pick another "
                              f"{name}.ref, or drop it from {name}.prs")
        for p in conflicted:  # docs/tests conflicts: keep our side, as the toolkit does
            _git_env("checkout", "--ours", "--", p, cwd=work)
            _git_env("add", "--", p, cwd=work)
    _git_env("commit", "--quiet", "--no-verify", "--allow-empty", "-m", f"Apply {name} PR {label}", cwd=work)
    return "applied"


def apply_patch(work: Path, patch: Path, name: str) -> None:
    data = patch.read_bytes()
    if _git_env("apply", "--reverse", "--check", "-", cwd=work, check=False, input=data).returncode == 0:
        return  # already in the tree
    proc = _git_env("apply", "--index", "--binary", "-", cwd=work, check=False, input=data)
    if proc.returncode != 0:
        raise SourceError(f"{name}: patch {patch.name} does not apply: {proc.stderr.decode(errors='replace').strip()}")
    _git_env("commit", "--quiet", "--no-verify", "-m", f"Apply patch {patch.name}", cwd=work)


def checkout(src: ResolvedSource, cache: Path, log: list[str] | None = None) -> Path:
    """The source tree for `src`, made once per digest under cache/trees/ and reused after that."""
    final = cache / "trees" / f"{src.name}-{src.digest[:16]}"
    if (final / ".complete").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{src.name}-", dir=final.parent) as tmp:
        work = Path(tmp) / "work"
        _git_env("worktree", "add", "--quiet", "--detach", "--force", str(work), src.commit, cwd=src.mirror)
        try:
            for label, head, _ in src.prs:
                result = apply_pr(work, label, head, src.name, src.tolerate_conflicts)
                if log is not None:
                    log.append(f"{src.name} PR {label} ({head[:7]}): {result}")
            for pname, _, path in src.patches:
                apply_patch(work, path, src.name)
                if log is not None:
                    log.append(f"{src.name} patch {pname}: applied")
            tree = Path(tmp) / "tree"
            shutil.copytree(work, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            describe = _git_env("describe", "--tags", "--long", "--match", "v[0-9]*", src.commit, cwd=work,
                                check=False).stdout.decode()
            (tree / SCM_VERSION_FILE).write_text(scm_version(describe, src.commit) + "\n")
            (tree / ".complete").write_text(src.digest + "\n")
            try:
                tree.rename(final)
            except OSError:
                if not (final / ".complete").exists():  # not another process's finished tree: a leftover
                    shutil.rmtree(final, ignore_errors=True)
                    tree.rename(final)
        finally:
            _git_env("worktree", "remove", "--force", str(work), cwd=src.mirror, check=False)
            _git_env("worktree", "prune", cwd=src.mirror, check=False)
    return final

"""Materialize a resolved source as a plain directory tree for a stage: the commit checked out from
the mirror with its submodules at their recorded commits, upstream PRs merged the toolkit's way, then
local patches.

PRs (toolkit §1.4/§1.5): the diff from merge-base(commit, PR head) to the PR head is applied with
`git apply --3way`; a PR whose diff is empty or already applied is skipped; a conflict fails, except in
paths the source tolerates (vLLM: tests/, docs/, *.md, *.rst), where our side is kept.

The version: packages that take theirs from git (vLLM, via setuptools-scm) get it from setuptools-scm
itself, run here on the commit while `.git` exists (before PRs are applied), and written to
`.scm-version`; the build hands it over as SETUPTOOLS_SCM_PRETEND_VERSION, since the tree reaches the
build container without `.git`.

The tree is cached under the source cache by the source's digest, so a second build reuses it. The
build containers receive the tree only: no .git, no remotes, no credentials.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.errors import SourceError
from pipeline.sources.gitcmd import git
from pipeline.sources.mirror import ResolvedSource, Submodule
from pipeline.sources.resolve import IDENTITY, conflict_error, tolerated

SCM_VERSION_FILE = ".scm-version"


def _git_env(
    *args: str, cwd: Path, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """git with a fixed identity and dates, so applying the same PRs gives the same commits."""
    return git(*args, cwd=cwd, check=check, input=input, extra_env=IDENTITY)


def scm_version(work: Path) -> str:
    """The version setuptools-scm gives the checked-out commit, with the project's own settings
    ([tool.setuptools_scm] in pyproject.toml: version and local schemes); '' without tags."""
    import tomllib

    from setuptools_scm import get_version

    settings: dict[str, object] = {}
    pyproject = work / "pyproject.toml"
    if pyproject.is_file():
        try:
            settings = tomllib.loads(pyproject.read_text()).get("tool", {}).get("setuptools_scm", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            settings = {}
    schemes = {k: str(settings[k]) for k in ("version_scheme", "local_scheme") if k in settings}
    try:
        return get_version(root=str(work), **schemes)  # type: ignore[arg-type]
    except LookupError:  # no tag, no version: the build falls back to the package's own
        return ""


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
            raise conflict_error(name, label, fatal)
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


def add_submodules(tree: Path, subs: tuple[Submodule, ...], log: list[str] | None, name: str) -> None:
    """Each submodule's tree at its recorded commit, where the parent has it (and theirs, inside)."""
    for s in subs:
        dest = tree / s.path
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.Popen(["git", "--git-dir", str(s.mirror), "archive", s.commit], stdout=subprocess.PIPE)
        unpack = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True, check=False)
        if archive.wait() != 0 or unpack.returncode != 0:
            raise SourceError(f"{name}: cannot check out submodule {s.path} at {s.commit[:12]} from {s.url}")
        if log is not None:
            log.append(f"{name} submodule {s.path}: {s.commit[:12]}")
        add_submodules(dest, s.children, log, name)


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
            version = scm_version(work)
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
            add_submodules(tree, src.submodules, log, src.name)
            if version:
                (tree / SCM_VERSION_FILE).write_text(version + "\n")
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

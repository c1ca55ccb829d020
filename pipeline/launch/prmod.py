"""Launch-time vLLM PR layers (toolkit §3.7) as generated mods.

A PR is fetched through the source mirror (refs/pull/N/head, as for builds), diffed from its merge base
with the repository's main, and checked: only Python under vllm/ may change at launch (docs, tests,
benchmarks and the like are dropped from the diff); native code (C/C++/CUDA, CMake) needs a rebuild.
The mod carries the diff and its sha256, and applies it to the installed vllm package, or says it is
already there.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.launch.mods import Mod
from pipeline.sources.gitcmd import git
from pipeline.sources.mirror import Mirrors, repo_location, resolve_pr, resolve_ref

IGNORED = (".buildkite/*", ".github/*", "benchmarks/*", "docs/*", "examples/*", "tests/*", "setup.py", "*.md", "*.rst")
NATIVE = (
    "*.c",
    "*.cc",
    "*.cpp",
    "*.cu",
    "*.cuh",
    "*.cxx",
    "*.h",
    "*.hpp",
    "*.o",
    "*.so",
    "*.a",
    "*CMakeLists.txt",
    "*Makefile",
)
_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)

RUN_SH = Path(__file__).with_name("templates") / "vllm-pr-run.sh"  # the generated mod's run.sh


def split_diff(diff: str) -> list[tuple[str, str]]:
    """(path, that file's part of the diff) for each file in a git diff."""
    heads = list(_HEADER.finditer(diff))
    ends = [m.start() for m in heads[1:]] + [len(diff)]
    return [(m.group(2), diff[m.start() : end]) for m, end in zip(heads, ends, strict=True)]


def launch_diff(diff: str, label: str) -> tuple[str, list[str]]:
    """(the diff limited to vllm/**, the dropped paths). Raises ConfigError when the PR cannot be
    applied at launch."""
    keep, dropped, native, other = [], [], [], []
    for path, chunk in split_diff(diff):
        if any(fnmatch.fnmatch(path, p) for p in IGNORED):
            dropped.append(path)
        elif any(fnmatch.fnmatch(path, p) for p in NATIVE):
            native.append(path)
        elif path.startswith("vllm/"):
            keep.append(chunk)
        else:
            other.append(path)
    if native or other:
        what = ", ".join((native + other)[:5])
        raise ConfigError(
            f"--apply-vllm-pr {label}: changes {what}, which a launch-time patch cannot change "
            f"(native code or files outside vllm/); build it in: python -m pipeline build "
            f"--apply-vllm-pr {label}"
        )
    if not keep:
        raise ConfigError(f"--apply-vllm-pr {label}: changes no file under vllm/; nothing to apply at launch")
    return "".join(keep), dropped


def fetch_pr_diff(mirrors: Mirrors, repo: str, root: Path, pr: int | str) -> tuple[str, str, str]:
    """(label, head sha, diff from the merge base with main to the PR head)."""
    url = repo_location(repo, root)
    mirror, main = resolve_ref(mirrors, "vllm", url, "main", "--apply-vllm-pr")
    label, head, _ = resolve_pr(mirrors, "vllm", url, mirror, pr)
    base = git("merge-base", main, head, cwd=mirror).stdout.decode().strip()
    diff = git("diff", "--binary", base, head, cwd=mirror).stdout.decode(errors="replace")
    return label, head, diff


def make_mod(label: str, head: str, diff: str, workdir: Path) -> Mod:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    digest = hashlib.sha256(diff.encode()).hexdigest()
    d = workdir / f"vllm-pr-{slug}-{head[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "pr.diff").write_text(diff)
    (d / "pr.sha256").write_text(digest + "\n")
    (d / "pr-reference").write_text(f"{label} ({head[:12]})\n")
    (d / "run.sh").write_text(RUN_SH.read_text())
    (d / "run.sh").chmod(0o755)
    return Mod(name=d.name, path=d, digest=digest[:16])

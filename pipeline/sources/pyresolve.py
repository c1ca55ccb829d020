"""The plan-time resolution of the build's Python environment, with uv's resolver, from package
metadata only (nothing is installed, nothing built for the target): `uv pip compile` for the target's
platform and Python, every stage's requirements together (pipeline/core/pyenv.py says which).

A set that cannot be installed is a ConfigError naming both sides of each conflict and where each comes
from. After one conflict, build.yaml's requirements on the projects it names are taken back and the
rest is resolved again, so one plan names every conflict build.yaml has with vLLM. Each plan resolves
afresh against URL indexes: a new release of an unpinned project is a visible change of keys (and of
build.lock), as with any other input; `--offline` reuses build.lock's set. Against local wheel
directories only, uv's answer is kept under the directories' content digest (a new wheel changes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from pipeline import paths
from pipeline.core.pyenv import Pinned, Req, Target, explain, input_text, parse_compiled, relaxed
from pipeline.errors import ConfigError, SourceError
from pipeline.fsutil import tree_digest, write_atomic

DEADLINE = 300.0  # seconds for one uv run (a cold cache fetches a few hundred metadata files)
ROUNDS = 8  # conflicts named in one plan at most


def uv_bin() -> str:
    try:
        import uv  # the uv wheel, a dependency of spark-pipeline

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise SourceError("plan resolves the build's Python packages with uv, which is not installed: pip install uv")


def simple_index(directory: Path, dest: Path) -> str:
    """A PEP 503 index over a directory of wheels (file:// links with their sha256), so a local directory
    can rank before PyPI: as find-links, uv weighs it equally and takes PyPI's torch over the stand-in."""
    by: dict[str, list[Path]] = {}
    for f in sorted(directory.iterdir()):
        if f.suffix == ".whl" or f.name.endswith((".tar.gz", ".zip")):
            by.setdefault(canonicalize_name(re.split(r"-\d", f.name, maxsplit=1)[0]), []).append(f)
    for name, files in by.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="{f.resolve().as_uri()}#sha256={hashlib.sha256(f.read_bytes()).hexdigest()}">'
            f"{html.escape(f.name)}</a>\n"
            for f in files
        )
        (dest / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return dest.as_uri()


def argv(tgt: Target, src: Path, out: Path, tmp: Path) -> list[str]:
    cmd = [
        uv_bin(),
        "pip",
        "compile",
        "--no-config",
        "--no-header",
        "--generate-hashes",
        "--no-progress",
        "--python-platform",
        tgt.platform,
        "--python-version",
        tgt.python,
        # each project from the first index that has it, local directories first: a name on PyPI
        # never shadows the build's own wheels (pip's versions then follow through the constraints)
        "--index-strategy",
        "first-index",
        "--output-file",
        str(out),
    ]
    if not tgt.indexes:
        cmd.append("--no-index")
        for d in tgt.find_links:
            cmd += ["--find-links", d]
        return [*cmd, str(src)]
    local = [simple_index(Path(d), tmp / f"index-{i}") for i, d in enumerate(tgt.find_links)]
    *extra, default = [*local, *tgt.indexes]
    for url in extra:
        cmd += ["--extra-index-url", url]
    return [*cmd, "--index-url", default, str(src)]


@dataclass(frozen=True)
class Attempt:
    pinned: dict[str, Pinned] | None  # None: no solution
    message: str  # uv's explanation when there is none


def compile_once(reqs: list[Req], tgt: Target, dirs: list[str] | None) -> Attempt:
    """uv's answer for these requirements; when every index is a local directory (`dirs`: their content
    digests) the answer is a function of their content, so it is kept under that content's digest and a
    warm plan asks uv nothing."""
    key = memo_key(reqs, tgt, dirs)
    memo = paths.cache_root() / "pyresolve" / f"{key}.json" if key else None
    if memo is not None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(memo.read_text())
            pinned = (
                {n: Pinned(v, tuple(h), tuple(b)) for n, (v, h, b) in data["pinned"].items()}
                if data["pinned"] is not None
                else None
            )
            return Attempt(pinned=pinned, message=str(data["message"]))
    attempt = run_uv(reqs, tgt)
    if memo is not None:
        pinned_json = (
            None
            if attempt.pinned is None
            else {n: [p.version, list(p.hashes), list(p.needed_by)] for n, p in attempt.pinned.items()}
        )
        with contextlib.suppress(OSError):
            write_atomic(memo, json.dumps({"pinned": pinned_json, "message": attempt.message}))
    return attempt


def local_digests(tgt: Target) -> list[str] | None:
    """The content digests of the target's wheel directories when they are its only indexes; None when an
    index is a URL (its answer changes with time: a new release must show as a change)."""
    if tgt.indexes:
        return None
    try:
        return [tree_digest(Path(d.removeprefix("file://"))) for d in tgt.find_links]
    except FileNotFoundError:
        return None


def memo_key(reqs: list[Req], tgt: Target, dirs: list[str] | None) -> str | None:
    """The digest of everything uv's answer depends on, or None when it is not kept (`dirs` None)."""
    if dirs is None:
        return None
    data = {
        "reqs": input_text(reqs),
        "platform": tgt.platform,
        "python": tgt.python,
        "dirs": dirs,
        "uv": uv_version(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def uv_version() -> str:
    try:
        return importlib.metadata.version("uv")
    except importlib.metadata.PackageNotFoundError:
        return uv_bin()


def run_uv(reqs: list[Req], tgt: Target) -> Attempt:
    with tempfile.TemporaryDirectory(prefix="spark-pipeline-pyenv-") as tmp:
        src, out = Path(tmp) / "requirements.in", Path(tmp) / "requirements.txt"
        src.write_text(input_text(reqs))
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
        try:
            proc = subprocess.run(
                argv(tgt, src, out, Path(tmp)), capture_output=True, text=True, timeout=DEADLINE, env=env
            )
        except subprocess.TimeoutExpired:
            raise SourceError(
                f"resolving the build's Python packages took over {DEADLINE:.0f} s "
                f"(uv pip compile for {tgt.platform}, Python {tgt.python})"
            ) from None
        if proc.returncode == 0:
            return Attempt(pinned=parse_compiled(out.read_text()), message="")
        message = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:"))
        if "No solution found" not in message:
            raise SourceError(
                f"cannot resolve the build's Python packages for {tgt.platform}, Python {tgt.python} "
                f"(uv pip compile):\n{message.strip()[-3000:]}"
            )
        return Attempt(pinned=None, message=message)


def resolve(reqs: list[Req], tgt: Target) -> dict[str, Pinned]:
    """name -> version and hashes of the whole environment; ConfigError naming every conflict."""
    conflicts: list[str] = []
    todo: list[Req] | None = reqs
    dirs = local_digests(tgt)  # once: every round asks about the same directories
    for _ in range(ROUNDS):
        if todo is None:
            break
        attempt = compile_once(todo, tgt, dirs)
        if attempt.pinned is not None:
            if not conflicts:
                return attempt.pinned
            break
        conflicts.append(explain(attempt.message, reqs))
        todo = relaxed(todo, attempt.message)
    listed = "\n".join(f"  conflict {i}:\n{c}" for i, c in enumerate(conflicts, 1))
    raise ConfigError(
        f"the build's Python packages cannot be installed together (resolved for Python "
        f"{tgt.python} on {tgt.platform}):\n{listed}\n  change or remove the build.yaml lines "
        "named, or set them to NAME==auto to follow vLLM's pin"
    )

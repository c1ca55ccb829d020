"""What a vLLM commit says about the versions around it, read from the mirror (no network beyond the
blobs a partial clone fetches on demand): its requirement pins and whether it builds Rust."""

from __future__ import annotations

import posixpath
import re
import tomllib
from pathlib import Path

from pipeline.config.auto import REQUIREMENT_FILES, VllmFacts, parse_pins, parse_rust_toolchain
from pipeline.core.pyenv import BUILD_FILES, Req, requirement_lines
from pipeline.sources.gitcmd import git


def show(mirror: Path, commit: str, path: str) -> str | None:
    proc = git("show", f"{commit}:{path}", cwd=mirror, check=False)
    return proc.stdout.decode(errors="replace") if proc.returncode == 0 else None


def requirement_texts(mirror: Path, commit: str) -> dict[str, str]:
    """requirements/cuda.txt, common.txt, the build requirements (both layouts) and every file they
    include (-r), then setup.py."""
    texts: dict[str, str] = {}
    todo = [*REQUIREMENT_FILES, *BUILD_FILES]
    while todo:
        path = todo.pop(0)
        if path in texts:
            continue
        text = show(mirror, commit, path)
        if text is None:
            continue
        texts[path] = text
        for inc in re.findall(r"^\s*-r\s+(\S+)", text, flags=re.M):
            todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), inc)))
    setup = show(mirror, commit, "setup.py")
    if setup is not None:
        texts["setup.py"] = setup
    return texts


def vllm_facts(mirror: Path, commit: str) -> VllmFacts:
    has_rust = git("cat-file", "-e", f"{commit}:rust/Cargo.toml", cwd=mirror, check=False).returncode == 0
    toolchain = show(mirror, commit, "rust-toolchain.toml") or show(mirror, commit, "rust-toolchain")
    texts = requirement_texts(mirror, commit)
    # pins follow the runtime files (and setup.py), never a build file's `setuptools==…`
    runtime = {p: t for p, t in texts.items() if p not in BUILD_FILES and not p.startswith("requirements/build")}
    return VllmFacts(
        commit=commit,
        pins=parse_pins(runtime),
        has_rust=has_rust,
        rust_toolchain=parse_rust_toolchain(toolchain) if toolchain else None,
        files={p: t for p, t in texts.items() if p != "setup.py"},
    )


# The toolchain's torch family: a tree's own pin on it is never installed (as build_requires.py skips it).
TORCH_FAMILY = re.compile(r"^\s*(torch|torchvision|torchaudio)\b", re.I)


def build_requires(mirror: Path, commit: str, label: str, subdirs: tuple[str, ...] = (".",)) -> list[Req]:
    """A tree's PEP 518 build requirements (pyproject.toml [build-system] requires, in each of `subdirs`),
    which a stage building it without isolation installs itself (FlashInfer: setuptools, packaging,
    apache-tvm-ffi; Triton: pybind11, cmake, ninja); the torch family is the toolchain's."""
    return [
        r
        for sub in subdirs
        for r in _build_requires(mirror, commit, label, posixpath.normpath(f"{sub}/pyproject.toml"))
        if not TORCH_FAMILY.match(r.line)
    ]


def _build_requires(mirror: Path, commit: str, label: str, path: str) -> list[Req]:
    text = show(mirror, commit, path)
    if text is None:
        return []
    try:
        requires = tomllib.loads(text).get("build-system", {}).get("requires", [])
    except tomllib.TOMLDecodeError:
        return []  # the stage's own pip reports a broken pyproject.toml with its context
    return [Req(r, f"{label} {path} [build-system] requires") for r in requires if isinstance(r, str)]


def requirements_file(mirror: Path, commit: str, label: str, path: str = "requirements.txt") -> list[Req]:
    """A tree's requirements file as Reqs with file:line origins (FlashInfer's runtime requirements, which
    its pyproject reads dynamically); the torch family is the toolchain's."""
    text = show(mirror, commit, path)
    if text is None:
        return []
    return [Req(line, f"{label} {path}:{n}") for n, line in requirement_lines(text) if not TORCH_FAMILY.match(line)]

"""The build's whole Python environment, as one set of requirements with where each comes from.

Every pip install of every stage is resolved together at plan time, for the target (the base image's
Python and glibc, linux/<arch>), before anything builds: the torch family and `base.pip_packages`, vLLM's
build requirements and its runtime requirements (as docker-contexts/vllm/prepare.py leaves them: the
toolchain's torch kept, FlashInfer from our own stage), and `runtime.pip_packages`. A conflict names both
sides and the line each comes from: a build.yaml key (with the vLLM pin an `auto` followed) or a line of
the vLLM ref's requirements file.

Pure: the caller reads the files and runs the resolver (pipeline/sources/pyresolve.py).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pipeline.config.build import BuildSpec
from pipeline.errors import ConfigError

# What prepare.py strips from vLLM's files before its wheel is built: the toolchain's torch family is
# kept, FlashInfer comes from the flashinfer stage.
DROPPED = re.compile(
    r"^(torch|torchvision|torchaudio|torchcodec|flashinfer-python|flashinfer-cubin|"
    r"flashinfer-jit-cache)$"
)
BUILD_LAYOUTS = (("requirements/build/cuda.txt", "requirements/build/rust.txt"), ("requirements/build.txt",))
BUILD_FILES = tuple(p for layout in BUILD_LAYOUTS for p in layout)
RUNTIME_FILE = "requirements/cuda.txt"
PYPI = "https://pypi.org/simple"


@dataclass(frozen=True)
class Req:
    line: str  # a PEP 508 requirement, markers included
    origin: str  # where a user finds it: "build.yaml base.pip_packages[1]", "vLLM v0.34.0 requirements/cuda.txt:12"

    @property
    def name(self) -> str:
        return canonicalize_name(Requirement(self.line).name)


@dataclass(frozen=True)
class Target:
    """Who the environment is for: uv's --python-platform and --python-version, and where packages come
    from (index URLs, or local directories of wheels for air-gapped machines and the smoke stack)."""

    platform: str  # aarch64-manylinux_2_39
    python: str  # 3.12
    indexes: tuple[str, ...]  # URLs, in priority order (the torch index first)
    find_links: tuple[str, ...]  # local directories


@dataclass(frozen=True)
class Pinned:
    version: str
    hashes: tuple[str, ...] = ()
    needed_by: tuple[str, ...] = ()  # the projects that require it (uv's `# via`); empty: a requirement of ours


def is_local(where: str | None) -> bool:
    """An index value that is a directory of wheels (a path or file://), not a URL."""
    return where is not None and ("://" not in where or where.startswith("file://"))


def uses_pypi(spec: BuildSpec, stage_reqs: bool) -> bool:
    """Whether some pip of the build reaches PyPI: a URL torch index (torch's nvidia-* come from PyPI),
    runtime extras or vLLM's runtime requirements without a local index, or a stage's own build
    requirements (Triton from git, FlashInfer's build-system), which its pip takes from PyPI."""
    return (
        not is_local(spec.base.torch.index)
        or (bool(spec.runtime.pip_packages) and not is_local(spec.runtime.pip_index))
        or not is_local(spec.vllm.deps_index)
        or stage_reqs
        or spec.triton.source == "git"
    )


def target(spec: BuildSpec, local: Mapping[str, str], stage_reqs: bool = False) -> Target:
    """`local` maps a build.yaml index value that is a directory to its absolute path. Indexes are in
    priority order: local directories, then the torch index, then PyPI (when some pip reaches it)."""
    arch = "aarch64" if spec.platform.endswith("arm64") else "x86_64"
    indexes: list[str] = []
    links: list[str] = []
    for where in (spec.base.torch.index, spec.runtime.pip_index, spec.vllm.deps_index):
        if where is None:
            continue
        if where in local:
            links.append(local[where])
        elif where not in indexes:
            indexes.append(where)
    if PYPI not in indexes and (indexes or uses_pypi(spec, stage_reqs)):
        indexes.append(PYPI)
    return Target(
        platform=f"{arch}-manylinux_{spec.base.glibc.replace('.', '_')}",
        python=spec.base.python,
        indexes=tuple(indexes),
        find_links=tuple(dict.fromkeys(links)),
    )


def requirement_lines(text: str) -> list[tuple[int, str]]:
    """(line number, requirement) of a requirements file: comments, options and includes left out."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"(^|\s)#", raw, maxsplit=1)[0].strip()
        if line and not line.startswith("-"):
            out.append((n, line))
    return out


def _file_reqs(files: Mapping[str, str], path: str, label: str, seen: set[str]) -> list[Req]:
    """The requirements of `path` and of every file it includes (-r), in order."""
    if path in seen or path not in files:
        return []
    seen.add(path)
    out: list[Req] = []
    for raw in files[path].splitlines():
        inc = re.match(r"^\s*-r\s+(\S+)", raw)
        if inc:
            out += _file_reqs(files, posixpath.normpath(posixpath.join(posixpath.dirname(path), inc[1])), label, seen)
    for n, line in requirement_lines(files[path]):
        try:
            parsed = Requirement(line)
        except InvalidRequirement:
            continue  # not a requirement pip reads either; the build's pip reports it with its context
        if parsed.url:  # a ref (a PR) would make plan fetch from any address it names
            raise ConfigError(
                f"{label} {path}:{n}: {parsed.name} comes from a URL ({parsed.url}); plan resolves "
                "from package indexes only: drop the line with a patch, or build another ref"
            )
        if not DROPPED.match(canonicalize_name(parsed.name)):
            out.append(Req(line, f"{label} {path}:{n}"))
    return out


def vllm_reqs(files: Mapping[str, str], label: str) -> list[Req]:
    """vLLM's build requirements (the layout prepare.py installs) and its runtime requirements."""
    out: list[Req] = []
    for layout in BUILD_LAYOUTS:
        if layout[0] in files:
            for path in layout:
                out += _file_reqs(files, path, label, set())
            break
    return out + _file_reqs(files, RUNTIME_FILE, label, set())


def spec_reqs(spec: BuildSpec, written: BuildSpec, vllm_label: str) -> list[Req]:
    """The torch family, base.pip_packages and runtime.pip_packages of the effective `spec`; `written` is
    build.yaml as loaded, so a value `auto` filled in says so."""
    out: list[Req] = []
    t, w = spec.base.torch, written.base.torch
    for key, name, version, was in (
        ("version", "torch", t.version, w.version),
        ("torchvision", "torchvision", t.torchvision, w.torchvision),
        ("torchaudio", "torchaudio", t.torchaudio, w.torchaudio),
    ):
        if version in ("none", "auto"):
            continue
        followed = f" (auto: {vllm_label}'s pin in {RUNTIME_FILE})" if was == "auto" else ""
        out.append(Req(f"{name}=={version}", f"build.yaml base.torch.{key}{followed}"))
    for section in ("base", "runtime"):
        got, had = getattr(spec, section).pip_packages, getattr(written, section).pip_packages
        for i, line in enumerate(got):
            auto = i < len(had) and had[i].endswith("==auto") and not line.endswith("==auto")
            followed = f" ({had[i]}: {vllm_label}'s pin in {RUNTIME_FILE})" if auto else ""
            out.append(Req(line, f"build.yaml {section}.pip_packages[{i}]{followed}"))
    return out


_NAMED = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?(?:\{[^}]*\})?\s*(?:==|!=|>=|<=|~=|>|<|\s+depends\b|"
    r"\s+was not found|\s+has no\b)"
)
_REQUIRED = re.compile(r"\brequire\s+([A-Za-z0-9][A-Za-z0-9._-]*)")


def conflict_names(message: str) -> set[str]:
    """The projects uv's explanation of an unsatisfiable set talks about."""
    found = [*_NAMED.findall(message), *_REQUIRED.findall(message)]
    return {canonicalize_name(m) for m in found if not m[0].isdigit()}


def explain(message: str, reqs: list[Req]) -> str:
    """uv's explanation, then every requirement of ours on a project it names, with its origin."""
    names = conflict_names(message)
    ours = [r for r in reqs if r.name in names]
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    why = "\n".join(f"    {ln}" for ln in lines)
    sides = "\n".join(f"    {r.line}  <- {r.origin}" for r in ours) or "    (no requirement of ours names them)"
    return f"{why}\n  where each side comes from:\n{sides}"


def relaxed(reqs: list[Req], message: str) -> list[Req] | None:
    """The set without build.yaml's requirements on the projects a conflict names, to look for the next
    conflict; None when build.yaml has none there (nothing of ours to take back)."""
    names = conflict_names(message)
    keep = [r for r in reqs if not (r.name in names and r.origin.startswith("build.yaml"))]
    return keep if len(keep) < len(reqs) else None


def parse_compiled(text: str) -> dict[str, Pinned]:
    """`uv pip compile --generate-hashes` output -> name -> (version, hashes, who needs it)."""
    out: dict[str, Pinned] = {}
    via: dict[str, list[str]] = {}
    current = ""
    for raw in re.sub(r"\\\n\s*", " ", text).splitlines():
        line, _, comment = raw.partition("#")
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)(.*)$", line.strip())
        if m:
            current = canonicalize_name(m[1])
            out[current] = Pinned(version=m[2].split(";")[0], hashes=tuple(re.findall(r"--hash=(\S+)", m[3])))
            via[current] = []
        comment = comment.strip().removeprefix("via").strip()
        if current and comment and not comment.startswith("-"):
            via[current] += [
                canonicalize_name(re.split(r"[\[\s]", n.strip())[0]) for n in comment.split(",") if n.strip()
            ]
    return {n: dataclasses.replace(p, needed_by=tuple(dict.fromkeys(via[n]))) for n, p in out.items()}


def closure(packages: Mapping[str, Pinned], roots: set[str]) -> dict[str, Pinned]:
    """The part of the set `roots` pull in: the roots and everything they need, transitively."""
    children: dict[str, set[str]] = {}
    for name, p in packages.items():
        for parent in p.needed_by:
            children.setdefault(parent, set()).add(name)
    todo, seen = [r for r in roots if r in packages], set()
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += children.get(n, ())
    return {n: packages[n] for n in sorted(seen)}


def constraints(pinned: Mapping[str, Pinned]) -> str:
    """What every pip of every stage is held to (PIP_CONSTRAINT): the resolved version of each project."""
    return "".join(f"{n}=={p.version}\n" for n, p in sorted(pinned.items()))


def input_text(reqs: list[Req]) -> str:
    return "".join(f"{r.line}\n" for r in reqs)

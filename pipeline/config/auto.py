"""Versions that follow vLLM: `auto` in build.yaml is read from the vLLM ref being built.

The torch family (`base.torch.version|torchvision|torchaudio: auto`), the FlashInfer ref
(`flashinfer.ref: auto` -> the `v<version>` tag of the flashinfer-python vLLM pins), extras written
`NAME==auto` in `base.pip_packages`, and the Rust toolchain (`base.rust.enabled: auto`: when the tree
has rust/) are taken from the resolved commit's own files (requirements/cuda.txt and what it
includes, setup.py's extras), read from the mirror at plan time: no network. An explicit value wins,
and when it differs from vLLM's pin, plan warns and names both ("Nightly drift breaks builds" is the
most-reported problem in the toolkit's issues).

Pure: the caller reads the files; this parses them and returns the effective spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.config.build import FALLBACK_RUST, BuildSpec
from pipeline.errors import ConfigError

AUTO = "auto"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*(;.*)?$")
# vLLM's setup.py before the pin moved to requirements (0.11: `"flashinfer": ["flashinfer-python==0.3.1"]`)
_SETUP_PIN = re.compile(r'"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9][A-Za-z0-9.+!_-]*)"')
REQUIREMENT_FILES = ("requirements/cuda.txt", "requirements/common.txt")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class VllmFacts:
    """What a vLLM commit says about the versions around it."""

    commit: str
    pins: dict[str, str] = field(default_factory=dict)  # normalized name -> exact version
    has_rust: bool = False
    rust_toolchain: str | None = None  # the channel its rust-toolchain.toml names
    files: dict[str, str] = field(default_factory=dict)  # its requirements files (build and runtime): path -> text


def parse_rust_toolchain(text: str) -> str | None:
    """`[toolchain]\nchannel = "1.95"` (or the old one-line `rust-toolchain` file) -> '1.95'."""
    m = re.search(r'^\s*channel\s*=\s*"([^"]+)"', text, flags=re.M)
    value = m[1] if m else (text.strip() if "\n" not in text.strip() and "=" not in text else "")
    return value if re.fullmatch(r"\d+\.\d+(\.\d+)?", value) else None


def parse_pins(files: Mapping[str, str]) -> dict[str, str]:
    """Exact pins (`name==version`, any extras or markers) from requirements files and setup.py text;
    the first pin of a name wins (requirements before setup.py)."""
    pins: dict[str, str] = {}
    for path, text in files.items():
        if path.endswith("setup.py"):
            for name, version in _SETUP_PIN.findall(text):
                pins.setdefault(norm(name), version)
            continue
        for line in text.splitlines():
            m = _PIN.match(line.split(" #", 1)[0])
            if m and "python_version == '3.9'" not in (m[4] or ""):
                pins.setdefault(norm(m[1]), m[3])
    return pins


@dataclass
class Effective:
    spec: BuildSpec
    versions: dict[str, str]  # what auto resolved to, for plan and build.lock
    warnings: list[str]


def _pick(label: str, key: str, value: str, pkg: str, facts: VllmFacts, out: Effective, required: bool = True) -> str:
    """An auto value from vLLM's pin, or an explicit value checked against it."""
    pinned = facts.pins.get(pkg)
    if value == AUTO:
        if pinned is None:
            if required:
                raise ConfigError(
                    f"{label}:{key}: is auto but vLLM {facts.commit[:12]} pins no {pkg}; write the version to build"
                )
            return value
        out.versions[pkg] = pinned
        return pinned
    if pinned is not None and value not in ("none", pinned):
        out.warnings.append(
            f"{key} is {value} but vLLM {facts.commit[:12]} pins {pkg}=={pinned}; set {key}: auto to follow vLLM"
        )
    return value


def _extras(spec: BuildSpec, label: str, facts: VllmFacts, out: Effective) -> list[str]:
    result = []
    for req in spec.base.pip_packages:
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(.+)$", req)
        if not m:
            result.append(req)
            continue
        name, extras, version = m[1], m[2] or "", m[3]
        got = _pick(label, f"base.pip_packages {name}", version, norm(name), facts, out, required=False)
        result.append(f"{name}{extras}=={got}" if got != AUTO else f"{name}{extras}")
        if got == AUTO:
            out.warnings.append(
                f"base.pip_packages {name}==auto: vLLM {facts.commit[:12]} pins no {name}; left unpinned"
            )
    return result


def _rust(spec: BuildSpec, facts: VllmFacts, out: Effective) -> str:
    """The Rust toolchain: the tree's rust-toolchain.toml for auto. An explicit one that differs is
    still what builds (the vllm stage sets RUSTUP_TOOLCHAIN), with a warning."""
    chosen = spec.base.rust.toolchain
    tree = facts.rust_toolchain
    if chosen == AUTO:
        if tree is None:
            return FALLBACK_RUST
        out.versions["rust"] = tree
        return tree
    if tree is not None and tree != chosen:
        out.warnings.append(
            f"base.rust.toolchain is {chosen} but vLLM {facts.commit[:12]}'s rust-toolchain.toml "
            f"asks for {tree}; building with {chosen} (set base.rust.toolchain: auto to follow vLLM)"
        )
    return chosen


def apply(spec: BuildSpec, facts: VllmFacts, label: str) -> Effective:
    """The spec with every `auto` replaced by what the vLLM commit pins; warnings where an explicit
    value differs from vLLM's pin."""
    out = Effective(spec=spec, versions={}, warnings=[])
    t = spec.base.torch
    torch = {"version": _pick(label, "base.torch.version", t.version, "torch", facts, out)}
    for name in ("torchvision", "torchaudio"):  # unpinned by vLLM: left out
        got = _pick(label, f"base.torch.{name}", getattr(t, name), name, facts, out, required=False)
        torch[name] = "none" if got == AUTO else got
    rust = spec.base.rust.enabled if spec.base.rust.enabled != AUTO else facts.has_rust
    base = spec.base.model_copy(
        update={
            "torch": t.model_copy(update=torch),
            "pip_packages": _extras(spec, label, facts, out),
            "rust": spec.base.rust.model_copy(update={"enabled": rust, "toolchain": _rust(spec, facts, out)}),
        }
    )
    ref = spec.flashinfer.ref
    pinned = facts.pins.get("flashinfer-python")
    if ref == AUTO:
        ref = f"v{pinned}" if pinned else "main"
        if pinned:
            out.versions["flashinfer-python"] = pinned
        else:
            out.warnings.append(
                f"flashinfer.ref is auto but vLLM {facts.commit[:12]} pins no flashinfer-python: "
                "building FlashInfer main"
            )
    elif pinned and ref not in (f"v{pinned}", pinned):
        out.warnings.append(
            f"flashinfer.ref is {ref} but vLLM {facts.commit[:12]} pins flashinfer-python=={pinned}; "
            "set flashinfer.ref: auto to follow vLLM"
        )
    out.spec = spec.model_copy(update={"base": base, "flashinfer": spec.flashinfer.model_copy(update={"ref": ref})})
    return out

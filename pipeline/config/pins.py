"""Pinned content: a requirement in build.yaml without an exact version (`ray[default]`,
`setuptools-rust>=1.9.0`) would change an image without changing its key. Plan resolves the whole
Python environment together (python_env.py) and builds each as `name==version` of that set: the version
is in the key (through the step), in build.lock, and a new release is a visible rebuild.

Pure: this finds the unpinned requirements and rewrites the spec with the versions chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pipeline.config.build import BuildSpec

# The sections whose pip requirements are resolved (their index: see resolution.py).
SECTIONS = ("base", "runtime")


def label(req: str) -> str:
    """`ray[default]>=2` -> `ray[default]`: how plan, build.lock and warnings name a requirement."""
    try:
        parsed = Requirement(req)
    except InvalidRequirement:
        return req
    return parsed.name + (f"[{','.join(sorted(parsed.extras))}]" if parsed.extras else "")


@dataclass(frozen=True)
class Unpinned:
    section: str
    requirement: str  # as written in build.yaml
    name: str  # canonical project name

    @property
    def key(self) -> str:
        return f"{self.section}.pip_packages {label(self.requirement)}"


def unpinned(spec: BuildSpec) -> list[Unpinned]:
    out = []
    for section in SECTIONS:
        for req in getattr(spec, section).pip_packages:
            try:
                parsed = Requirement(req)
            except InvalidRequirement:
                continue  # the spec validated it; a form packaging does not parse is left as written
            if not any(s.operator in ("==", "===") and "*" not in s.version for s in parsed.specifier):
                out.append(Unpinned(section, req, canonicalize_name(parsed.name)))
    return out


def pinned_requirement(req: str, version: str) -> str:
    parsed = Requirement(req)
    extras = f"[{','.join(sorted(parsed.extras))}]" if parsed.extras else ""
    marker = f"; {parsed.marker}" if parsed.marker else ""
    return f"{parsed.name}{extras}=={version}{marker}"


def apply(spec: BuildSpec, resolved: Mapping[str, str]) -> BuildSpec:
    """The spec with each resolved requirement (Unpinned.key -> version) written as name==version."""
    update = {}
    for section in SECTIONS:
        sec = getattr(spec, section)
        reqs = [
            pinned_requirement(r, resolved[f"{section}.pip_packages {label(r)}"])
            if f"{section}.pip_packages {label(r)}" in resolved
            else r
            for r in sec.pip_packages
        ]
        update[section] = sec.model_copy(update={"pip_packages": reqs})
    return spec.model_copy(update=update)

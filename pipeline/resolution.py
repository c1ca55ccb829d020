"""From a loaded build.yaml to stages with resolved inputs and a plan: the I/O edge of planning.

Order: vLLM's source first (its commit says which torch, FlashInfer and Rust the build follows when
build.yaml says `auto`, see spec/auto.py), then the effective spec's stages and every other source,
then each directory input's digest, then the keys and the plan against the store and build.lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import fsutil, paths
from pipeline.core.ir import Stage
from pipeline.core.keys import Resolved
from pipeline.core.lockfile import Lock, parse_lock
from pipeline.core.plan import Plan, make_plan
from pipeline.errors import ConfigError
from pipeline.sources import index
from pipeline.sources.mirror import EMPTY_TREE, Mirrors, ResolvedSource
from pipeline.sources.resolve import resolve_source
from pipeline.sources.upstream import vllm_facts
from pipeline.spec import LoadedBuild, auto, pins
from pipeline.spec.build import BuildSpec
from pipeline.stages import all_stages, source_specs
from pipeline.store import Store


@dataclass(frozen=True)
class Resolution:
    build: LoadedBuild
    spec: BuildSpec  # build.yaml's spec with every `auto` resolved
    stages: list[Stage]
    sources: dict[str, ResolvedSource]
    inputs: dict[tuple[str, str], Resolved]
    versions: dict[str, str] = field(default_factory=dict)  # what `auto` resolved to
    warnings: tuple[str, ...] = ()

    def lock_sources(self) -> dict[str, dict[str, Any]]:
        return {
            n: {"url": s.url if "://" in s.url else os.path.relpath(s.url, self.build.root), "ref": s.ref,
                "commit": s.commit, "prs": {lbl: sha for lbl, sha, _ in s.prs},
                "patches": {name: digest for name, digest, _ in s.patches}}
            for n, s in self.sources.items()
        }


def dir_input(root: Path, ref: str) -> Resolved:
    """The digest of a local directory input (a docker-contexts/<stage>/ folder may be absent: empty)."""
    path = paths.input_dir(root, ref)
    if path is None:
        digest = EMPTY_TREE
    else:
        try:
            digest = fsutil.tree_digest(path)
        except FileNotFoundError:
            raise ConfigError(f"{ref}: directory not found ({path})") from None
    return Resolved(digest=digest, facts=((f"dir {ref}", digest),))


def pin_unpinned(spec: BuildSpec, root: Path, offline: bool, lock: Lock | None) -> tuple[BuildSpec, list[str]]:
    """Every requirement without an exact version, resolved to the newest its index has for the
    platform (offline: what build.lock recorded), with a warning each."""
    todo = pins.unpinned(spec)
    if not todo:
        return spec, []
    arch = "aarch64" if spec.platform.endswith("arm64") else "x86_64"
    indexes = {"base": spec.base.torch.index if "://" not in spec.base.torch.index else index.PYPI,
               "runtime": spec.runtime.pip_index or index.PYPI}
    resolved: dict[str, str] = {}
    warnings = []
    for u in todo:
        stage = lock.stages.get(u.section) if lock else None
        fact = stage.facts.get(u.key, "") if stage else ""
        recorded = fact.partition("==")[2].split(";")[0].strip()  # '' when build.lock has it unpinned too
        if offline:
            version = recorded or None
        else:
            where = indexes[u.section]
            where = str(root / where) if "://" not in where and not Path(where).is_absolute() else where
            version = pins.choose(u.requirement, index.files(u.name, where), arch)
        if version is None:
            why = "offline, and build.lock has no version for it" if offline else f"no version for {arch} was found"
            warnings.append(f"{u.key}: not pinned, and {why}; it stays unpinned")
            continue
        resolved[u.key] = version
        warnings.append(f"{u.key}: not pinned; built as {u.name}=={version} (the newest for {arch}); pin it in "
                        "build.yaml to choose when it changes")
    return pins.apply(spec, resolved), warnings


def resolve(build: LoadedBuild, mirrors: Mirrors, lock: Lock | None = None) -> Resolution:
    specs = source_specs(build.spec)
    vllm = resolve_source(mirrors, specs["vllm"], build.root, build.label)
    effective = auto.apply(build.spec, vllm_facts(vllm.mirror, vllm.commit), build.label)
    spec, pin_warnings = pin_unpinned(effective.spec, build.root, mirrors.offline, lock)
    stages = all_stages(spec)
    sources = {name: vllm if name == "vllm" else resolve_source(mirrors, spec_, build.root, build.label)
               for name, spec_ in source_specs(spec).items()}
    inputs: dict[tuple[str, str], Resolved] = {("source", n): s.resolved() for n, s in sources.items()}
    for stage in stages:
        for inp in stage.inputs:
            if inp.kind == "dir" and ("dir", inp.ref) not in inputs:
                inputs[("dir", inp.ref)] = dir_input(build.root, inp.ref)
    return Resolution(build=build, spec=spec, stages=stages, sources=sources, inputs=inputs,
                      versions=effective.versions, warnings=(*effective.warnings, *pin_warnings))


def read_lock(path: Path) -> Lock | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_lock(text, path.name)


def write_lock(path: Path, lock: Lock) -> None:
    fsutil.write_atomic(path, lock.to_json())


def plan_build(build: LoadedBuild, mirrors: Mirrors, store: Store,
               lock_path: Path | None = None) -> tuple[Resolution, Plan, Lock | None]:
    lock = read_lock(lock_path or build.root / "build.lock")
    res = resolve(build, mirrors, lock)
    plan = make_plan(res.stages, res.inputs, store.has, lock)
    plan = Plan(stages=plan.stages, warnings=(*res.warnings, *plan.warnings))
    return res, plan, lock

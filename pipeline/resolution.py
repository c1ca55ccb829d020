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
from pipeline.sources.mirror import EMPTY_TREE, Mirrors, ResolvedSource
from pipeline.sources.resolve import resolve_source
from pipeline.sources.upstream import vllm_facts
from pipeline.spec import LoadedBuild, auto
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


def resolve(build: LoadedBuild, mirrors: Mirrors) -> Resolution:
    specs = source_specs(build.spec)
    vllm = resolve_source(mirrors, specs["vllm"], build.root, build.label)
    effective = auto.apply(build.spec, vllm_facts(vllm.mirror, vllm.commit), build.label)
    stages = all_stages(effective.spec)
    sources = {name: vllm if name == "vllm" else resolve_source(mirrors, spec, build.root, build.label)
               for name, spec in source_specs(effective.spec).items()}
    inputs: dict[tuple[str, str], Resolved] = {("source", n): s.resolved() for n, s in sources.items()}
    for stage in stages:
        for inp in stage.inputs:
            if inp.kind == "dir" and ("dir", inp.ref) not in inputs:
                inputs[("dir", inp.ref)] = dir_input(build.root, inp.ref)
    return Resolution(build=build, spec=effective.spec, stages=stages, sources=sources, inputs=inputs,
                      versions=effective.versions, warnings=tuple(effective.warnings))


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
    res = resolve(build, mirrors)
    lock = read_lock(lock_path or build.root / "build.lock")
    plan = make_plan(res.stages, res.inputs, store.has, lock)
    plan = Plan(stages=plan.stages, warnings=(*res.warnings, *plan.warnings))
    return res, plan, lock

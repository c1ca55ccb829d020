"""From a loaded build.yaml to stages, resolved inputs and a plan: the I/O edge of planning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.build.ir import Stage
from pipeline.build.keys import Resolved
from pipeline.build.lock import Lock, read_lock
from pipeline.build.plan import Plan, make_plan
from pipeline.build.sources import EMPTY_TREE, Mirrors, ResolvedSource, resolve_source, tree_digest
from pipeline.build.store import Store
from pipeline.spec import LoadedBuild
from pipeline.stages import all_stages, source_specs


@dataclass(frozen=True)
class Resolution:
    build: LoadedBuild
    stages: list[Stage]
    sources: dict[str, ResolvedSource]
    inputs: dict[tuple[str, str], Resolved]

    def lock_sources(self) -> dict[str, dict[str, Any]]:
        return {
            n: {"url": s.url if "://" in s.url else _rel(s.url, self.build.root), "ref": s.ref,
                "commit": s.commit, "prs": {lbl: sha for lbl, sha, _ in s.prs},
                "patches": {name: digest for name, digest, _ in s.patches}}
            for n, s in self.sources.items()
        }


def _rel(path: str, root: Path) -> str:
    import os

    return os.path.relpath(path, root)


def resolve(build: LoadedBuild, mirrors: Mirrors) -> Resolution:
    stages = all_stages(build.spec)
    sources = {name: resolve_source(mirrors, spec, build.root, build.label)
               for name, spec in source_specs(build.spec).items()}
    inputs: dict[tuple[str, str], Resolved] = {("source", n): s.resolved() for n, s in sources.items()}
    for stage in stages:
        for inp in stage.inputs:
            if inp.kind == "dir" and ("dir", inp.ref) not in inputs:
                path = build.root / inp.ref
                # A docker-contexts/<stage>/ directory is optional: absent means empty.
                missing_ok = not path.exists() and inp.ref.startswith("docker-contexts/")
                digest = EMPTY_TREE if missing_ok else tree_digest(path)
                inputs[("dir", inp.ref)] = Resolved(digest=digest, facts=((f"dir {inp.ref}", digest),))
    return Resolution(build=build, stages=stages, sources=sources, inputs=inputs)


def plan_build(build: LoadedBuild, mirrors: Mirrors, store: Store,
               lock_path: Path | None = None) -> tuple[Resolution, Plan, Lock | None]:
    res = resolve(build, mirrors)
    lock = read_lock(lock_path or build.root / "build.lock")
    plan = make_plan(res.stages, res.inputs, store.has, lock)
    return res, plan, lock

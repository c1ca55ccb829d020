"""From a loaded build.yaml to stages with resolved inputs and a plan: the I/O edge of planning.

Order: vLLM's source first (its commit says which torch, FlashInfer and Rust the build follows when
build.yaml says `auto`, see config/auto.py), then the effective spec's stages and every other source,
then each directory input's digest, then the keys and the plan against the store and build.lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import fsutil, paths, python_env
from pipeline.config import LoadedBuild, auto, pins
from pipeline.config.build import BuildSpec
from pipeline.config.load import read_text
from pipeline.core.ir import SourceSpec, Stage
from pipeline.core.keys import Resolved
from pipeline.core.lockfile import Lock, parse_lock
from pipeline.core.plan import Plan, make_plan
from pipeline.errors import ConfigError, SourceError
from pipeline.sources.mirror import EMPTY_TREE, Mirrors, ResolvedSource
from pipeline.sources.resolve import resolve_source
from pipeline.sources.upstream import build_requires, requirements_file, vllm_facts
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
    python: python_env.PythonEnv | None = None  # the resolved Python environment (None: --offline without one)

    def lock_python(self) -> dict[str, Any]:
        return self.python.lock() if self.python else {}

    def lock_sources(self) -> dict[str, dict[str, Any]]:
        return {
            n: {
                "url": s.url if "://" in s.url else os.path.relpath(s.url, self.build.root),
                "ref": s.ref,
                "commit": s.commit,
                "prs": {lbl: sha for lbl, sha, _ in s.prs},
                "patches": {name: digest for name, digest, _ in s.patches},
            }
            for n, s in self.sources.items()
        }


def dir_input(root: Path, ref: str, label: str | None = None) -> Resolved:
    """The digest of a local directory input (a docker-contexts/<stage>/ folder may be absent: empty);
    `label` names it in build.lock where its path is the machine's own (the resolved Python env)."""
    path = paths.input_dir(root, ref)
    if path is None:
        digest = EMPTY_TREE
    else:
        try:
            digest = fsutil.tree_digest(path)
        except FileNotFoundError:
            raise ConfigError(f"{ref}: directory not found ({path})") from None
    return Resolved(digest=digest, facts=((label or f"dir {ref}", digest),))


def _source(
    mirrors: Mirrors, spec: SourceSpec, build: LoadedBuild, versions: dict[str, str], vllm_label: str
) -> ResolvedSource:
    """A source; when `auto` chose its ref from vLLM's pin, an error says so (vLLM 0.34.0 pins a
    flashinfer-python 0.7.3 that was never released)."""
    try:
        return resolve_source(mirrors, spec, build.root, build.label)
    except SourceError as e:
        pinned = versions.get("flashinfer-python") if spec.name == "flashinfer" else None
        if pinned is None or "is not a branch, tag or commit" not in str(e):
            raise
        raise SourceError(
            f"{e}\n  (flashinfer.ref is auto: {vllm_label} pins flashinfer-python=={pinned} in "
            f"requirements/cuda.txt, so v{pinned} was asked; set flashinfer.ref to a tag "
            f"{spec.repo} has)"
        ) from None


def resolve(build: LoadedBuild, mirrors: Mirrors, lock: Lock | None = None) -> Resolution:
    specs = source_specs(build.spec)
    vllm = resolve_source(mirrors, specs["vllm"], build.root, build.label)
    facts = vllm_facts(vllm.mirror, vllm.commit)
    effective = auto.apply(build.spec, facts, build.label)
    vllm_label = f"vLLM {specs['vllm'].ref} ({vllm.commit[:12]})"
    # sources first: what they are does not depend on the pip versions chosen below
    sources = {
        name: vllm if name == "vllm" else _source(mirrors, spec_, build, effective.versions, vllm_label)
        for name, spec_ in source_specs(effective.spec).items()
    }
    extra = {
        n: build_requires(src.mirror, src.commit, f"{label} {src.ref} ({src.commit[:12]})", subdirs)
        for n, label, subdirs in (
            ("flashinfer", "FlashInfer", (".",)),
            ("triton", "Triton", tuple(effective.spec.triton.wheels)),
        )
        if (src := sources.get(n)) is not None
    }
    fi = sources["flashinfer"]
    extra[python_env.FLASHINFER_RUNTIME] = requirements_file(
        fi.mirror, fi.commit, f"FlashInfer {fi.ref} ({fi.commit[:12]})"
    )
    env, env_warnings = python_env.resolve_env(
        build, effective.spec, facts, vllm_label, mirrors.offline, lock, mirrors.cache, extra
    )
    chosen, pin_warnings = python_env.unpinned_versions(effective.spec, env) if env else ({}, [])
    spec = pins.apply(effective.spec, chosen)
    stages = [python_env.with_python_env(s, env) if env else s for s in all_stages(spec)]
    inputs: dict[tuple[str, str], Resolved] = {("source", n): s.resolved() for n, s in sources.items()}
    for stage in stages:
        for inp in stage.inputs:
            if inp.kind == "dir" and ("dir", inp.ref) not in inputs:
                label = "python env (the resolved set)" if inp.name == python_env.INPUT else None
                inputs[("dir", inp.ref)] = dir_input(build.root, inp.ref, label)
    return Resolution(
        build=build,
        spec=spec,
        stages=stages,
        sources=sources,
        inputs=inputs,
        versions=effective.versions,
        warnings=(*effective.warnings, *env_warnings, *pin_warnings),
        python=env,
    )


LOCK_LIMIT = 64 << 20  # a lock with every wheel's hashes is a few MiB; past this it is not ours


def read_lock(path: Path) -> Lock | None:
    """build.lock, through the reader every settings file goes through (a regular file, read to a cap)."""
    if not path.exists() and not path.is_symlink():
        return None
    return parse_lock(read_text(path, path.name, limit=LOCK_LIMIT), path.name)


def write_lock(path: Path, lock: Lock) -> None:
    fsutil.write_atomic(path, lock.to_json())


def plan_build(
    build: LoadedBuild, mirrors: Mirrors, store: Store, lock_path: Path | None = None
) -> tuple[Resolution, Plan, Lock | None]:
    lock = read_lock(lock_path or build.root / "build.lock")
    res = resolve(build, mirrors, lock)
    plan = make_plan(res.stages, res.inputs, store.has, lock)
    plan = Plan(stages=plan.stages, warnings=(*res.warnings, *plan.warnings))
    return res, plan, lock

"""The build: plan (resolution.py), then run the stages the store lacks in dependency order, commit
their outputs, assemble the runtime image and write build.lock. A failed stage stops the build;
stages that finished stay stored.

What a stage is and what its key is live in the pure core (`pipeline.core`) and the stage modules.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipeline import __version__, paths
from pipeline.config import LoadedBuild
from pipeline.contract import GPU_ARCH_LABEL, GPU_CODE_LABEL, key_label, source_label
from pipeline.core.ir import Stage, toolchain_tag, with_toolchain
from pipeline.core.plan import Plan, lock_of
from pipeline.engines import Engine, StageRun
from pipeline.engines.identity import key_tag
from pipeline.errors import ConfigError, StageError, StoreError
from pipeline.remote_store import RemoteStore
from pipeline.report import NullReporter, Reporter
from pipeline.resolution import Resolution, plan_build, write_lock
from pipeline.sources.checkout import checkout
from pipeline.sources.mirror import Mirrors
from pipeline.store import Store

StageStatus = Literal["built", "cached", "pulled", "failed"]


# --- run -------------------------------------------------------------------------------------------
@dataclass
class StageResult:
    name: str
    key: str
    status: StageStatus
    seconds: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.name, "key": self.key, "status": self.status, "seconds": round(self.seconds, 3)}


def log_path(stage: str, key: str) -> Path:
    path = paths.stage_log(stage, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def preflight(stages: Sequence[Stage], plan: Plan, engine: Engine) -> None:
    """Fail before the first stage, not hours later when a stage starts: a stage that will build needs
    a secret the environment lacks, or asks for what this engine cannot do."""
    for stage in stages:
        if plan.stage(stage.name).cached:
            continue
        for name in stage.secrets:
            if name not in os.environ:
                raise ConfigError(
                    f"secrets: {name} is not set in the environment (stage {stage.name} needs it); "
                    f"export {name}=… before the build, or remove it from build.yaml's secrets"
                )
        why = engine.refuses(stage)
        if why:
            raise ConfigError(f"engine {engine.name}: {why}")


def gpu_code(vllm_entry: Path) -> dict[str, Any]:
    """What check_gpu_code.py found in the vLLM wheel (gpu-code.json beside it); {} for older entries."""
    try:
        data = json.loads((vllm_entry / "gpu-code.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def image_labels(
    build: LoadedBuild, plan: Plan, res: Resolution, code: dict[str, Any] | None = None
) -> tuple[dict[str, str], str]:
    """The runtime image's labels (every stage key and source commit, the GPU code the vLLM wheel
    holds) and its metadata file."""
    keys = {s.name: s.key for s in plan.stages}
    metadata = {
        "tool": f"spark-pipeline {__version__}",
        "gpu_arch": build.spec.gpu_arch,
        "gpu_code": code or {},
        "platform": build.spec.platform,
        "stage_keys": keys,
        "versions": res.versions,
        "sources": {
            n: {"commit": s.commit, "ref": s.ref, "prs": {lbl: sha for lbl, sha, _ in s.prs}}
            for n, s in res.sources.items()
        },
    }
    labels = {key_label(n): k for n, k in keys.items()}
    labels.update({source_label(n): s.commit for n, s in res.sources.items()})
    labels[GPU_ARCH_LABEL] = build.spec.gpu_arch
    if code and isinstance(code.get("archs"), list):
        labels[GPU_CODE_LABEL] = ",".join(str(a) for a in code["archs"])  # e.g. sm_121a,sm_80
    labels["org.opencontainers.image.created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return labels, json.dumps(metadata, indent=2, sort_keys=True)


class Builder:
    def __init__(
        self,
        build: LoadedBuild,
        engine: Engine,
        store: Store,
        mirrors: Mirrors,
        reporter: Reporter | None = None,
        remote: RemoteStore | None = None,
    ):
        self.build = build
        self.engine = engine
        self.store = store
        self.mirrors = mirrors
        self.report: Reporter = reporter or NullReporter()
        self.results: list[StageResult] = []
        self.remote = remote  # a shared store on an OCI registry: pull what we lack, push what we built
        self.refused: set[tuple[str, str]] = set()  # remote entries that did not check out: replaced after a build

    def inputs_of(self, stage: Stage, res: Resolution, plan: Plan, notes: list[str]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for inp in stage.inputs:
            if inp.kind == "stage":
                out[inp.name] = self.store.entry_path(inp.ref, plan.stage(inp.ref).key)
            elif inp.kind == "source":
                out[inp.name] = checkout(res.sources[inp.ref], self.mirrors.cache, notes)
            else:
                path = paths.input_dir(self.build.root, inp.ref)
                if path is None:
                    path = paths.cache_root() / "empty"
                    path.mkdir(parents=True, exist_ok=True)
                out[inp.name] = path
        return out

    def prepare(self, stage: Stage, key: str, res: Resolution, plan: Plan) -> StageRun:
        """The stage's inputs on the host, a fresh log (starting with what checkout did), its base image
        (a toolchain image is made again when the local Docker lost it)."""
        if stage.base.stage:
            self._ensure_toolchain(stage.base.stage, res, plan)
            stage = with_toolchain(stage, plan.stage(stage.base.stage).key)
        notes: list[str] = []
        run = StageRun(
            stage=stage,
            key=key,
            inputs=self.inputs_of(stage, res, plan, notes),
            log=log_path(stage.name, key),
            build_env=stage.build_env,
            ca_bundle=self.ca_bundle(),
        )
        run.log.write_text("".join(f"{n}\n" for n in notes))
        for n in notes:
            self.report.say(n, "note")
        self.engine.prepare_base(run, self.report)
        return run

    def ca_bundle(self) -> Path | None:
        given = self.build.spec.ca_bundle
        if given is None:
            return None
        path = (self.build.root / given).resolve()
        if not path.is_file():
            raise ConfigError(f"{self.build.label}:ca_bundle: file not found: {given}")
        return path

    def _ensure_toolchain(self, name: str, res: Resolution, plan: Plan) -> None:
        stage = next(s for s in res.stages if s.name == name)
        tag = toolchain_tag(stage.platform, plan.stage(name).key)
        if self.engine.has_image(tag):
            return
        self.report.say(
            f"toolchain image {tag} is not in the local Docker: making it again from the {name} "
            "stage's steps (its store entry stays)",
            "note",
        )
        self.engine.build_toolchain(self.prepare(stage, plan.stage(name).key, res, plan), tag)

    def manifest(self, stage: Stage, plan: Plan, seconds: float) -> dict[str, object]:
        return {
            "engine": self.engine.name,
            "duration_s": round(seconds, 3),
            "tool": f"spark-pipeline {__version__}",
            "platform": stage.platform,
            "inputs": plan.stage(stage.name).facts,
        }

    def run(
        self, tag: str | None = None, export: Path | None = None, push: str | None = None
    ) -> tuple[Plan, list[StageResult]]:
        try:
            return self._run(tag, export, push)
        finally:
            self.engine.close()

    def _run(self, tag: str | None, export: Path | None, push: str | None) -> tuple[Plan, list[StageResult]]:
        self.engine.check()
        res, plan, _ = plan_build(self.build, self.mirrors, self.store)
        for w in plan.warnings:
            self.report.say(w, "warn")
        self.store.clean_staging()
        preflight(res.stages, plan, self.engine)
        image_tag = tag or res.stages[-1].output.tag
        for i, stage in enumerate(res.stages, 1):
            if stage.output.kind != "image":
                self._wheels(i, len(res.stages), stage, res, plan)
            else:
                self._image(i, len(res.stages), stage, res, plan, image_tag)
        if export is not None:
            self.report.say(f"exporting {image_tag} to {export}")
            self.engine.export_image(image_tag, export)
        if push is not None:
            self.report.say(f"pushed {self.engine.push_image(image_tag, push)}")
        write_lock(self.build.root / "build.lock", lock_of(plan, res.lock_sources(), res.lock_python()))
        return plan, self.results

    def _wheels(self, index: int, total: int, stage: Stage, res: Resolution, plan: Plan) -> None:
        sp = plan.stage(stage.name)
        entry, why = self.store.verify(stage.name, sp.key)
        if entry is not None:
            self.report.stage(index, total, stage.name, sp.key, "cached")
            self.results.append(StageResult(stage.name, sp.key, "cached", 0.0))
            self._push(stage.name, sp.key)  # a shared store that lacks it gets it (built here earlier)
            return
        if why != "not in the store":
            self.report.say(f"{why}; rebuilding", "warn")
        if self._pulled(index, total, stage.name, sp.key):
            return
        self.report.stage(index, total, stage.name, sp.key, "building", "; ".join(sp.reasons))
        started = time.monotonic()
        run = self.prepare(stage, sp.key, res, plan)
        staging = self.store.staging_dir(stage.name)
        try:
            self.engine.run_stage(run, staging)
            if not any(p.is_file() for p in staging.rglob("*")):
                raise StageError(stage.name, f"it exported no files from {stage.output.path}", log_path=str(run.log))
            extra: dict[str, object] = {}
            if stage.output.kind == "toolchain":
                tag = toolchain_tag(stage.platform, sp.key)
                extra = {"toolchain": tag, "image_id": self.engine.build_toolchain(run, tag)}
            seconds = time.monotonic() - started
            self.store.commit(stage.name, sp.key, staging, {**self.manifest(stage, plan, seconds), **extra})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            self.results.append(StageResult(stage.name, sp.key, "failed", time.monotonic() - started))
            raise
        self.results.append(StageResult(stage.name, sp.key, "built", seconds, f"log: {run.log}"))
        self._push(stage.name, sp.key)

    def _pulled(self, index: int, total: int, name: str, key: str) -> bool:
        """The entry from the remote store, when it has it and it checks out (a damaged one is refused)."""
        if self.remote is None:
            return False
        started = time.monotonic()
        try:
            entry = self.remote.pull(self.store, name, key)
        except StoreError as e:
            self.report.say(f"{e}; refused, building {name} here", "warn")
            self.refused.add((name, key))
            return False
        if entry is None:
            return False
        seconds = time.monotonic() - started
        self.report.stage(index, total, name, key, "pulled", f"{entry.size / 1e6:.1f} MB from {self.remote.spec.host}")
        self.results.append(StageResult(name, key, "pulled", seconds, f"from {self.remote.spec.ref(name, key)}"))
        return True

    def _push(self, name: str, key: str) -> None:
        entry = self.store.get(name, key)
        if self.remote is None or entry is None:
            return
        try:
            if (name, key) in self.refused or not self.remote.has(name, key):
                self.report.say(f"pushed {self.remote.push(entry)}", "note")
        except StoreError as e:  # the build stands; the next machine builds this stage itself
            self.report.say(f"{e}; {name} stays in the local store only", "warn")

    def _image(self, index: int, total: int, stage: Stage, res: Resolution, plan: Plan, tag: str) -> None:
        key = plan.stage(stage.name).key
        entry = self.store.get(stage.name, key)
        if entry is not None:
            image_id = str(entry.manifest.get("image_id", ""))
            if image_id and self.engine.reuse_image(image_id, tag, key_tag(tag, key)):
                self.report.stage(index, total, stage.name, key, "cached", f"{tag} = {image_id[7:19]}")
                self.results.append(StageResult(stage.name, key, "cached", 0.0, tag))
                return
        self.report.stage(index, total, stage.name, key, "building", f"image {tag}")
        started = time.monotonic()
        run = self.prepare(stage, key, res, plan)
        code = (
            gpu_code(self.store.entry_path("vllm", plan.stage("vllm").key))
            if any(p.name == "vllm" for p in plan.stages)
            else {}
        )
        labels, metadata = image_labels(self.build, plan, res, code)
        try:
            image_id = self.engine.build_image(run, labels, metadata, tag)
            self.engine.reuse_image(image_id, tag, key_tag(tag, key))  # the name by key beside the moving tag
        except BaseException:
            self.results.append(StageResult(stage.name, key, "failed", time.monotonic() - started))
            raise
        seconds = time.monotonic() - started
        self._commit_image(stage, key, plan, seconds, image_id, tag, labels)
        self.results.append(StageResult(stage.name, key, "built", seconds, f"{tag} = {image_id[7:19]}"))

    def _commit_image(
        self, stage: Stage, key: str, plan: Plan, seconds: float, image_id: str, tag: str, labels: dict[str, str]
    ) -> None:
        staging = self.store.staging_dir(stage.name)
        (staging / "image.json").write_text(
            json.dumps({"image_id": image_id, "tag": tag, "labels": labels}, indent=2, sort_keys=True)
        )
        if self.store.has(stage.name, key):  # rebuilt because the local image was gone: replace the entry
            shutil.rmtree(self.store.entry_path(stage.name, key), ignore_errors=True)
        try:
            self.store.commit(
                stage.name, key, staging, {**self.manifest(stage, plan, seconds), "image_id": image_id, "tag": tag}
            )
        except StoreError:
            shutil.rmtree(staging, ignore_errors=True)
            raise

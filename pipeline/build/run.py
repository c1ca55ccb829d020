"""`build`: plan, run the stages the store lacks in dependency order, commit their outputs, assemble
the runtime image, write build.lock. A failed stage stops the build; stages that finished stay stored."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline import __version__
from pipeline.build.checkout import checkout
from pipeline.build.ir import Stage
from pipeline.build.lock import write_lock
from pipeline.build.plan import Plan, lock_of
from pipeline.build.resolve import Resolution, plan_build
from pipeline.build.sources import Mirrors
from pipeline.build.store import Store, cache_root
from pipeline.engines import Engine, StageRun
from pipeline.errors import StageError, StoreError
from pipeline.spec import LoadedBuild
from pipeline.ui import console

LABEL = "io.spark-pipeline"


@dataclass
class StageResult:
    name: str
    key: str
    status: str  # built | cached | failed
    seconds: float
    note: str = ""


def log_path(stage: str, key: str) -> Path:
    d = cache_root() / "logs" / stage / key[:16]
    d.mkdir(parents=True, exist_ok=True)
    return d / "build.log"


class Builder:
    def __init__(self, build: LoadedBuild, engine: Engine, store: Store, mirrors: Mirrors):
        self.build = build
        self.engine = engine
        self.store = store
        self.mirrors = mirrors
        self.results: list[StageResult] = []

    def inputs_of(self, stage: Stage, res: Resolution, plan: Plan, notes: list[str]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for inp in stage.inputs:
            if inp.kind == "stage":
                out[inp.name] = self.store.entry_path(inp.ref, plan.stage(inp.ref).key)
            elif inp.kind == "source":
                out[inp.name] = checkout(res.sources[inp.ref], self.mirrors.cache, notes)
            else:
                path = self.build.root / inp.ref
                if not path.exists():
                    path = cache_root() / "empty"
                    path.mkdir(parents=True, exist_ok=True)
                out[inp.name] = path
        return out

    def prepare(self, stage: Stage, key: str, res: Resolution, plan: Plan) -> StageRun:
        """The stage's inputs on the host, a fresh log (starting with what checkout did), its base image."""
        notes: list[str] = []
        run = StageRun(stage=stage, key=key, inputs=self.inputs_of(stage, res, plan, notes),
                       log=log_path(stage.name, key), build_env=stage.build_env)
        run.log.write_text("".join(f"{n}\n" for n in notes))
        for n in notes:
            console.print(f"  {n}")
        self.engine.prepare_base(run)
        return run

    def manifest(self, stage: Stage, key: str, plan: Plan, seconds: float) -> dict[str, object]:
        return {"engine": self.engine.name, "duration_s": round(seconds, 3), "tool": f"spark-pipeline {__version__}",
                "platform": stage.platform, "inputs": plan.stage(stage.name).facts}

    def run(self, tag: str | None = None, export: Path | None = None,
            push: str | None = None) -> tuple[Plan, list[StageResult]]:
        try:
            return self._run(tag, export, push)
        finally:
            self.engine.close()

    def _run(self, tag: str | None, export: Path | None, push: str | None) -> tuple[Plan, list[StageResult]]:
        self.engine.check()
        res, plan, _ = plan_build(self.build, self.mirrors, self.store)
        for w in plan.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}", soft_wrap=True)
        self.store.clean_staging()
        total = len(res.stages)
        image_tag = tag or res.stages[-1].output.tag
        for i, stage in enumerate(res.stages, 1):
            sp = plan.stage(stage.name)
            head = f"[bold][{i}/{total}] {stage.name}[/bold] {sp.short_key}"
            started = time.monotonic()
            if stage.output.kind == "wheels":
                entry, why = self.store.verify(stage.name, sp.key)
                if entry is not None:
                    console.print(f"{head} [green]cached[/green]")
                    self.results.append(StageResult(stage.name, sp.key, "cached", 0.0))
                    continue
                if why != "not in the store":
                    console.print(f"[yellow]warning:[/yellow] {why}; rebuilding")
                console.print(f"{head} [yellow]building[/yellow] ({'; '.join(sp.reasons)})", soft_wrap=True)
                self._run_wheels(stage, res, plan, started)
            else:
                self._run_image(stage, res, plan, head, image_tag, started)
        if export is not None:
            console.print(f"exporting {image_tag} to {export}")
            self.engine.export_image(image_tag, export)
        if push is not None:
            pushed = self.engine.push_image(image_tag, push)
            console.print(f"pushed {pushed}")
        write_lock(self.build.root / "build.lock", lock_of(plan, res.lock_sources()))
        return plan, self.results

    def _run_wheels(self, stage: Stage, res: Resolution, plan: Plan, started: float) -> None:
        key = plan.stage(stage.name).key
        run = self.prepare(stage, key, res, plan)
        staging = self.store.staging_dir(stage.name)
        try:
            self.engine.run_stage(run, staging)
            if not any(p.is_file() for p in staging.rglob("*")):
                raise StageError(stage.name, f"it exported no files from {stage.output.path}",
                                 log_path=str(run.log))
            seconds = time.monotonic() - started
            self.store.commit(stage.name, key, staging, self.manifest(stage, key, plan, seconds))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            self.results.append(StageResult(stage.name, key, "failed", time.monotonic() - started))
            raise
        self.results.append(StageResult(stage.name, key, "built", seconds, f"log: {run.log}"))

    def _run_image(self, stage: Stage, res: Resolution, plan: Plan, head: str, tag: str, started: float) -> None:
        key = plan.stage(stage.name).key
        entry = self.store.get(stage.name, key)
        if entry is not None:
            image_id = str(entry.manifest.get("image_id", ""))
            if image_id and self.engine.reuse_image(image_id, tag):
                console.print(f"{head} [green]cached[/green] ({tag} = {image_id[7:19]})")
                self.results.append(StageResult(stage.name, key, "cached", 0.0, tag))
                return
        console.print(f"{head} [yellow]building[/yellow] image {tag}")
        run = self.prepare(stage, key, res, plan)
        keys = {s.name: s.key for s in plan.stages}
        metadata = {
            "tool": f"spark-pipeline {__version__}", "gpu_arch": self.build.spec.gpu_arch,
            "platform": stage.platform, "stage_keys": keys,
            "sources": {n: {"commit": s.commit, "ref": s.ref, "prs": {lbl: sha for lbl, sha, _ in s.prs}}
                        for n, s in res.sources.items()},
        }
        labels = {f"{LABEL}.key.{n}": k for n, k in keys.items()}
        labels.update({f"{LABEL}.source.{n}": s.commit for n, s in res.sources.items()})
        labels[f"{LABEL}.gpu-arch"] = self.build.spec.gpu_arch
        labels["org.opencontainers.image.created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            image_id = self.engine.build_image(run, labels, json.dumps(metadata, indent=2, sort_keys=True), tag)
        except BaseException:
            self.results.append(StageResult(stage.name, key, "failed", time.monotonic() - started))
            raise
        seconds = time.monotonic() - started
        staging = self.store.staging_dir(stage.name)
        (staging / "image.json").write_text(json.dumps({"image_id": image_id, "tag": tag, "labels": labels},
                                                       indent=2, sort_keys=True))
        if self.store.has(stage.name, key):  # rebuilt because the local image was gone: replace the entry
            shutil.rmtree(self.store.entry_path(stage.name, key), ignore_errors=True)
        try:
            self.store.commit(stage.name, key, staging,
                              {**self.manifest(stage, key, plan, seconds), "image_id": image_id, "tag": tag})
        except StoreError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.results.append(StageResult(stage.name, key, "built", seconds, f"{tag} = {image_id[7:19]}"))

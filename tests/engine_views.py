"""Test-only: what each engine would run for a stage, read back from the engine's own artefact and
normalized to one shape, so one list of tests checks both engines against the IR (the way buildx
runs one test list against every worker).

BuildKit answers by its generated Dockerfile (parsed back); Dagger by the lazy dagger-io chain
(`_ctx.selections`), built without any engine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagger
from dagger.client.base import Type

from pipeline.core.ir import Stage
from pipeline.engines import StageRun, cache_id
from pipeline.engines import buildkit as bk
from pipeline.engines import dagger as dg

HOST = Path("/host-inputs")  # fake host paths: chains are only built, never run


@dataclass
class View:
    base: str
    platform: str
    env: list[tuple[str, str]] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)  # (container path, input name)
    caches: list[tuple[str, str]] = field(default_factory=list)  # (container path, IR cache name)
    steps: list[tuple[list[str], str, list[tuple[str, str]]]] = field(default_factory=list)
    export: str = ""
    build_env: list[tuple[str, str]] = field(default_factory=list)


def expected(stage: Stage) -> View:
    return View(
        base=stage.base.ref,
        platform=stage.platform,
        env=list(stage.env),
        copies=[(i.path, i.name) for i in stage.inputs if i.mode == "copy"],
        caches=[(c.path, c.name) for c in stage.caches],
        steps=[
            (list(s.argv), s.workdir or "/", sorted((stage.input(m).path, m) for m in s.mounts)) for s in stage.steps
        ],
        export=stage.output.path,
        build_env=list(stage.build_env),
    )


def fake_run(stage: Stage) -> StageRun:
    return StageRun(
        stage=stage,
        key="0" * 64,
        inputs={i.name: HOST / i.name for i in stage.inputs},
        log=Path("/nonexistent/build.log"),
        build_env=stage.build_env,
    )


# --- BuildKit: parse the generated Dockerfile back -------------------------------------------------
def _unquote(v: str) -> str:
    assert v.startswith('"') and v.endswith('"'), v
    return re.sub(r"\\(.)", r"\1", v[1:-1])


def buildkit_dockerfile(stage: Stage) -> str:
    return bk.dockerfile(stage, "0" * 64, {"io.spark-pipeline.test": "1"} if stage.output.kind == "image" else None)


def buildkit_view(stage: Stage) -> View:
    text = buildkit_dockerfile(stage)
    args = bk.BuildKitEngine(Path("/nonexistent"))._build_args(fake_run(stage), Path("/nonexistent"))
    view = View(base="", platform=args[args.index("--platform") + 1])
    view.build_env = [
        tuple(a.split("=", 1))
        for a in args[args.index("--platform") + 2 :]
        if "=" in a  # type: ignore[misc]
        and not a.startswith("id=")
    ]
    cache_ids = {cache_id(stage, c): c.name for c in stage.caches}
    workdir = "/"
    for line in text.splitlines():
        if line.startswith("FROM ") and line.endswith(f" AS {bk.BUILD_TARGET}"):
            view.base = line.split()[1]
        elif line.startswith("ENV ") and not view.export:
            name, value = line[4:].split("=", 1)
            view.env.append((name, _unquote(value)))
        elif line.startswith("COPY src/"):
            _, src, dst = line.split()
            view.copies.append((dst, src.removeprefix("src/")))
        elif line.startswith("WORKDIR ") and not view.export:
            workdir = line.split()[1]
        elif line.startswith("RUN "):
            rest = line[4:]
            mounts, caches = [], []
            while rest.startswith("--mount="):
                opt, rest = rest.split(" ", 1)
                kv = dict(p.split("=", 1) for p in opt.removeprefix("--mount=").split(","))
                if kv["type"] == "cache":
                    caches.append((kv["target"], cache_ids[kv["id"]]))
                elif kv["type"] == "bind":
                    mounts.append((kv["target"], kv["source"].removeprefix("inputs/")))
            if not view.caches:
                view.caches = caches
            assert caches == view.caches, "every RUN mounts the stage's caches"
            view.steps.append((json.loads(rest), workdir, sorted(mounts)))
        elif line.startswith(f"COPY --from={bk.BUILD_TARGET} "):
            view.export = line.split()[2].rstrip("/")
        elif line.startswith("COPY meta/"):
            view.export = line.split()[2]
    return view


# --- Dagger: walk the lazy chain ------------------------------------------------------------------
def chain(obj: Type) -> list[dict[str, Any]]:
    """Engine-free description of a lazy pipeline; object arguments are expanded recursively."""

    def norm(v: Any) -> Any:
        if isinstance(v, Type):
            return {"$" + type(v).__name__: chain(v)}
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return [{"type": f.type_name, "field": f.name, "args": norm(f.args)} for f in obj._ctx.selections]


def dagger_chain(stage: Stage) -> dagger.Container | dagger.Directory:
    client = dagger.dag
    run = fake_run(stage)
    dirs = dg.host_dirs(client, stage, run.inputs)
    if stage.output.kind == "image":
        return dg.image_container(client, stage, dirs, {"io.spark-pipeline.test": "1"}, "{}", run.build_env)
    return dg.stage_container(client, stage, dirs, run.build_env).directory(stage.output.path)


def dagger_view(stage: Stage) -> View:
    sels = chain(dagger_chain(stage))
    view = View(base="", platform="")
    names = {cache_id(stage, c): c.name for c in stage.caches}
    mounts: dict[str, str] = {}
    workdir = "/"
    image_tail = False

    def host_input(d: dict[str, Any]) -> str:
        [(_, sub)] = d.items()
        return Path(sub[-1]["args"]["path"]).name

    for s in sels:
        f, a = s["field"], s["args"]
        if f == "container":
            view.platform = a["platform"]
        elif f == "from":
            view.base = a["address"]
        elif f == "containerImage":
            # a bootstrap or toolchain image read from the local Docker: its platform is the image's own,
            # and its tag names that platform (…:amd64-…), so check the tag says the stage's
            view.base = a["name"]
            arch = stage.platform.split("/")[-1]
            assert f":{arch}-" in a["name"] or f"-{arch}-" in a["name"], a["name"]
            view.platform = stage.platform
        elif f == "withEnvVariable" and not image_tail:
            view.env.append((a["name"], a["value"]))
        elif f == "withVolatileVariable":
            view.build_env.append((a["name"], a["value"]))
        elif f == "withDirectory":
            view.copies.append((a["path"], host_input(a["source"])))
        elif f == "withMountedCache":
            [(_, sub)] = a["cache"].items()
            view.caches.append((a["path"], names[sub[-1]["args"]["key"]]))
        elif f == "withMountedDirectory":
            assert a.get("readOnly") is True
            mounts[a["path"]] = host_input(a["source"])
        elif f == "withoutMount":
            mounts.pop(a["path"])
        elif f == "withWorkdir" and not image_tail:
            workdir = a["path"]
        elif f == "withExec":
            view.steps.append((a["args"], workdir, sorted(mounts.items())))
        elif f == "directory":
            view.export = a["path"]
        elif f == "withNewFile":
            view.export = a["path"]
            image_tail = True
    return view


VIEWS = {"buildkit": buildkit_view, "dagger": dagger_view}

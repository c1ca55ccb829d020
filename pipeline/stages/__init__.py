"""One module per stage; each turns the build spec into one Stage of the IR.

The order here is the dependency order: a stage only consumes stages listed before it.
"""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.core.ir import SourceSpec, Stage
from pipeline.stages import base, flashinfer, runtime, triton, vllm

MODULES = {"base": base, "triton": triton, "flashinfer": flashinfer, "vllm": vllm, "runtime": runtime}


def all_stages(spec: BuildSpec) -> list[Stage]:
    stages = [m.stage(spec) for m in MODULES.values()]
    for s in stages:
        s.validate()
    return stages


def source_specs(spec: BuildSpec) -> dict[str, SourceSpec]:
    out: dict[str, SourceSpec] = {}
    for m in MODULES.values():
        for src in getattr(m, "sources", lambda _s: [])(spec):
            out[src.name] = src
    return out

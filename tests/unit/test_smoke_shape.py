"""The smoke stack has the real build's shape: the smoke build.yaml and the repo's build.yaml give the
same stages, each starting from the same kind of image, with the same step kinds in the same order,
the same outputs and caches. They differ only in inputs (refs, repositories, the CUDA image
stand-in, versions, local indexes), so what CI proves on the smoke stack is what runs on a Spark."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.ir import Stage
from pipeline.spec import load_build
from tests.specs import SMOKE, SPARK, stages


def shape(stage: Stage) -> dict[str, Any]:
    base = "toolchain" if stage.base.stage else "cuda image"  # a bootstrap stand-in or nvidia/cuda
    return {"base": base, "steps": [s.kind for s in stage.steps], "layers": [s.layer for s in stage.steps],
            "output": stage.output.kind, "caches": [c.name for c in stage.caches],
            "upstream": list(stage.upstream), "sources": [i.ref for i in stage.inputs if i.kind == "source"]}


def stacks() -> tuple[list[Stage], list[Stage]]:
    return stages(SMOKE), stages(SPARK)


def test_same_stages_in_the_same_order() -> None:
    smoke, spark = stacks()
    assert [s.name for s in smoke] == [s.name for s in spark]


@pytest.mark.parametrize("name", ["base", "triton", "flashinfer", "vllm", "runtime"])
def test_each_stage_has_the_same_shape(name: str) -> None:
    smoke, spark = stacks()
    a, b = (next(s for s in stack if s.name == name) for stack in (smoke, spark))
    assert shape(a) == shape(b)
    assert all(s.kind for s in a.steps), f"{name}: every step says what kind it is"


def test_the_stand_in_has_what_the_cuda_devel_image_has_and_nothing_more() -> None:
    spec = load_build(SMOKE).spec
    recipe = spec.base.image.bootstrap
    assert recipe is not None and recipe.include == []  # Debian minbase: no python3, no pip, no compiler
    assert {p.split("==")[0] for p in recipe.unpack} == {"nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm",
                                                        "nvidia-cuda-runtime", "nvidia-cuda-cuobjdump"}
    for tool in ("python3", "python3-pip", "g++"):  # the base stage installs them, as on a Spark
        assert tool in spec.base.apt_packages

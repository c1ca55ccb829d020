"""The smoke stack has the real build's shape and content: the smoke build.yaml and the repo's build.yaml
give the same stages, each starting from the same kind of image, with the same step kinds in the same
order, the same outputs and caches, the same pip flow (every pip held to the plan's resolved set), the
same arch in each compiler's spelling. What differs is listed here, each with why (a Python minor that
Debian does not have, the network the real build needs, local indexes), so a new difference fails the
test until it is named: what CI proves on the smoke stack is what runs on a Spark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import python_env
from pipeline.config import load_build
from pipeline.core.ir import Stage
from pipeline.core.pyenv import Target
from tests.specs import SMOKE, SPARK, effective, stages

# Inputs that are stand-ins for a network service on the real build: local wheel indexes.
LOCAL_INDEXES = {"torch-index", "rust-installer", "deps-index", "pip-index"}
# What differs in content, and why. Anything else that differs fails test_only_the_named_differences.
NAMED = {
    # bookworm's Python: Debian's mirror has no 3.12 (Ubuntu 24.04's); the plan resolves each stack for its own
    "python": ("3.11", "3.12"),
    "glibc": ("2.36", "2.39"),
    "platform": ("linux/amd64", "linux/arm64"),  # the machine's own (arm64 builds under qemu: bench/arm64.py)
    # the compiling stages get every input locally (--network none); the real ones reach PyPI, the artifactory
    "network": (
        {"base": True, "triton": False, "flashinfer": False, "vllm": False, "runtime": True},
        {"base": True, "triton": True, "flashinfer": True, "vllm": True, "runtime": True},
    ),
}


def shape(stage: Stage) -> dict[str, Any]:
    base = "toolchain" if stage.base.stage else "cuda image"  # a bootstrap stand-in or nvidia/cuda
    return {
        "base": base,
        "steps": [s.kind for s in stage.steps],
        "layers": [s.layer for s in stage.steps],
        "output": stage.output.kind,
        "caches": [c.name for c in stage.caches],
        "upstream": list(stage.upstream),
        "sources": [i.ref for i in stage.inputs if i.kind == "source"],
    }


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
    assert {p.split("==")[0] for p in recipe.unpack} == {
        "nvidia-cuda-nvcc",
        "nvidia-cuda-crt",
        "nvidia-nvvm",
        "nvidia-cuda-runtime",
        "nvidia-cuda-cuobjdump",
    }
    for tool in ("python3", "python3-pip", "g++"):  # the base stage installs them, as on a Spark
        assert tool in spec.base.apt_packages


def held(stack: Path) -> list[Stage]:
    """The stages as the plan hands them on, held to a resolved set (flashinfer with build requirements)."""
    env = python_env.PythonEnv(
        target=Target("p", "3", (), ()), inputs="", packages={}, directory=Path("/env"), own=("flashinfer",)
    )
    return [python_env.with_python_env(s, env) for s in stages(stack)]


def pip_flow(stage: Stage) -> list[tuple[str, bool]]:
    """Each step's kind, and whether its pip is held to the resolved set."""
    env = dict(stage.env).get("PIP_CONSTRAINT") == python_env.CONSTRAINTS
    return [(s.kind, env or python_env.CONSTRAINTS in s.argv) for s in stage.steps]


@pytest.mark.parametrize("name", ["base", "triton", "flashinfer", "vllm", "runtime"])
def test_the_same_pip_flow_and_inputs(name: str) -> None:
    a, b = (next(s for s in held(stack) if s.name == name) for stack in (SMOKE, SPARK))
    assert pip_flow(a) == pip_flow(b)
    assert all(held for kind, held in pip_flow(a) if kind in ("pip-download", "pip-install", "runtime-deps"))
    assert {i.name for i in a.inputs} - LOCAL_INDEXES == {i.name for i in b.inputs} - LOCAL_INDEXES


def test_each_compiler_gets_the_same_arch_in_its_own_spelling() -> None:
    smoke, spark = effective(SMOKE), effective(SPARK)
    assert smoke.compiler_archs() == spark.compiler_archs()
    for a, b in zip(stages(SMOKE), stages(SPARK), strict=True):
        archs = ("TORCH_CUDA_ARCH_LIST", "FLASHINFER_CUDA_ARCH_LIST", "NCCL_NVCC_GENCODE")
        assert {k: v for k, v in a.env if k in archs} == {k: v for k, v in b.env if k in archs}, a.name


def content(stack: Path) -> dict[str, Any]:
    spec = effective(stack)
    return {
        "python": spec.base.python,
        "glibc": spec.base.glibc,
        "platform": spec.platform,
        "network": {s.name: s.network for s in stages(stack)},
        "rust": spec.base.rust.enabled,
        "gpu_arch": spec.gpu_arch,
        "prepare": [c[:2] for c in spec.vllm.prepare],
    }


def test_only_the_named_differences() -> None:
    a, b = content(SMOKE), content(SPARK)
    differs = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert differs == NAMED

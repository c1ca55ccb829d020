"""Test-only: build.yaml specs with `auto` resolved as plan would resolve them, without git: the pins
of vLLM 0.33.0 (its PyPI sdist's requirements/cuda.txt) for the repo's build.yaml, and the smoke
fixture's pins for the smoke stack."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_build
from pipeline.config.auto import VllmFacts, apply
from pipeline.config.build import BuildSpec
from pipeline.core.ir import Stage
from pipeline.stages import all_stages
from tests.conftest import REPO

SPARK = REPO / "build.yaml"
SMOKE = REPO / "examples" / "smoke" / "build.yaml"
VLLM_0_33_0 = VllmFacts(
    commit="0" * 40,
    has_rust=True,
    pins={
        "torch": "2.14.0",
        "torchvision": "0.29.0",
        "torchaudio": "2.11.0",
        "flashinfer-python": "0.7.2.post1",
        "apache-tvm-ffi": "0.1.11",
        "nvidia-cutlass-dsl": "4.8.0",
    },
)
SMOKE_FIXTURE = VllmFacts(commit="1" * 40, has_rust=True, pins={"torch": "2.13.0", "flashinfer-python": "0.6.5"})


def effective(path: Path, **flags: str) -> BuildSpec:
    facts = SMOKE_FIXTURE if path == SMOKE else VLLM_0_33_0
    loaded = load_build(path, flags=flags)
    return apply(loaded.spec, facts, loaded.label).spec


def stages(path: Path, **flags: str) -> list[Stage]:
    return all_stages(effective(path, **flags))

"""The GPU arch asked for reaches every compiler in its own spelling, survives vLLM's CMake filter, and
is checked in the wheel: docker-contexts/vllm/cuda_archs.py, check_gpu_code.py and the spec's spellings."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.build import BuildSpec
from pipeline.config.types import NVCC_ARCHS
from pipeline.stages import all_stages

REPO = Path(__file__).resolve().parents[2]
CONTEXT = REPO / "docker-contexts" / "vllm"
FIXTURE = Path(__file__).parent / "fixtures" / "cmake" / "vllm-0.34.0-supported-archs.cmake"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, CONTEXT / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cuda_archs = script("cuda_archs")
check = script("check_gpu_code")


def lists(text: str) -> list[list[str]]:
    return [m.split(";") for m in re.findall(r'set\(CUDA_SUPPORTED_ARCHS "([^"]*)"', text)]


def test_vllm_034s_lists_for_cuda_13_get_12_1_and_older_lists_are_left_alone() -> None:
    text, changes = cuda_archs.patch(FIXTURE.read_text(), "12.1a")
    cuda134, cuda13, cuda128, old = lists(text)
    assert cuda134[-2:] == ["12.0", "12.1"] and cuda13[-2:] == ["12.0", "12.1"]
    assert cuda128 == lists(FIXTURE.read_text())[2]  # already had 12.1
    assert "12.1" not in old  # no 12.x at all: a CUDA that cannot compile sm_121
    assert len(changes) == 2 and all("+ 12.1" in c for c in changes)


def test_a_tree_that_supports_the_arch_gets_nothing() -> None:
    patched, _ = cuda_archs.patch(FIXTURE.read_text(), "12.1a")
    again, changes = cuda_archs.patch(patched, "12.1a")
    assert again == patched and changes == []
    _, changes = cuda_archs.patch(FIXTURE.read_text(), "12.0f")
    assert changes == []  # 12.0 is already supported


arch = st.sampled_from([a + s for a in NVCC_ARCHS for s in ("a", "f") if int(a.split(".")[0]) >= 10])


@given(st.lists(arch, min_size=1, max_size=4), st.sampled_from([";", " ", ";\n"]))
def test_every_requested_base_is_in_every_list_of_its_major(requested: list[str], sep: str) -> None:
    text, _ = cuda_archs.patch(FIXTURE.read_text(), sep.join(requested))
    for before, after in zip(lists(FIXTURE.read_text()), lists(text), strict=True):
        assert after[: len(before)] == before  # only appended
        majors = {a.split(".")[0] for a in before}
        for r in requested:
            base = r.rstrip("af")
            assert (base in after) == (base in before or base.split(".")[0] in majors)
    assert cuda_archs.patch(text, sep.join(requested))[1] == []


def test_the_wheel_check_refuses_code_filtered_down_and_names_the_library() -> None:
    libs = {"vllm/_C.abi3.so": ["sm_120", "sm_80"], "vllm/_moe_C.abi3.so": ["sm_120"]}
    found = check.problems(libs, check.requested("12.1a"))
    assert "no library holds sm_121a code" in found
    assert any(p.startswith("vllm/_C.abi3.so holds sm_120 but not sm_121a") for p in found)


def test_the_wheel_check_accepts_other_generations_run_from_ptx() -> None:
    libs = {"vllm/_C.abi3.so": ["sm_121a", "sm_80"], "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": ["sm_80"]}
    assert check.problems(libs, check.requested("12.1a")) == []
    # a family target is listed by cuobjdump without its f
    assert check.problems({"x.so": ["sm_121"]}, check.requested("12.1f")) == []
    assert check.archs_in("ELF file    1: k.1.sm_121a.cubin\nELF file    2: k.2.sm_120.cubin\n") == [
        "sm_120",
        "sm_121a",
    ]


def test_each_compiler_gets_its_own_spelling() -> None:
    spec = BuildSpec(gpu_arch="12.1a;12.0f")
    assert spec.compiler_archs() == {
        "vllm TORCH_CUDA_ARCH_LIST": "12.1a;12.0f",
        "flashinfer FLASHINFER_CUDA_ARCH_LIST": "12.1a 12.0f",  # FlashInfer splits on spaces
        "nccl NVCC_GENCODE": "-gencode=arch=compute_121,code=sm_121 -gencode=arch=compute_120,code=sm_120",
    }
    env = {s.name: dict(s.env) for s in all_stages(spec)}
    assert env["flashinfer"]["FLASHINFER_CUDA_ARCH_LIST"] == "12.1a 12.0f"
    assert env["vllm"]["TORCH_CUDA_ARCH_LIST"] == "12.1a;12.0f"


@given(st.lists(arch, min_size=1, max_size=4), st.sampled_from([";", " ", " ; ", "\t"]))
def test_flashinfer_never_sees_a_semicolon(requested: list[str], sep: str) -> None:
    spec = BuildSpec(gpu_arch=sep.join(requested))
    fi = spec.flashinfer_arch_list
    assert ";" not in fi and fi.split(" ") == requested
    assert spec.torch_arch_list.split(";") == requested


@pytest.mark.parametrize("plain", ["12.1", "12.0", "10.0", "12.1a;12.0"])
def test_a_plain_arch_from_10_0_is_refused_with_the_suffixes_explained(
    plain: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--offline", "-f", str(REPO / "build.yaml"), "--gpu-arch", plain])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "build.yaml:gpu_arch:" in err and "has no a/f suffix" in err and "a (code for this GPU only" in err


def test_plain_9_0_and_older_stay_valid() -> None:
    assert BuildSpec(gpu_arch="9.0").torch_arch_list == "9.0"
    assert BuildSpec(gpu_arch="8.9").torch_arch_list == "8.9"


def test_the_vllm_stage_checks_its_wheel_after_the_compile() -> None:
    vllm = next(s for s in all_stages(BuildSpec()) if s.name == "vllm")
    kinds = [s.kind for s in vllm.steps]
    assert kinds.index("gpu-code-check") == kinds.index("pip-wheel") + 1

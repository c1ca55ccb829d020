"""The plan-time resolution of the whole Python environment against PyPI's real metadata, for real vLLM
trees (PyPI sdists): vLLM 0.34.0's requirements with the build.yaml of before (a hand-pinned
cutlass-dsl) are a plan error naming both sides and where each comes from; the default build.yaml
resolves, with torch's exact nvshmem and vLLM's setuptools bound that per-step pinning broke. torch's
index is PyPI here (download.pytorch.org is out of reach); PyPI's aarch64 torch 2.14.0 is a CUDA 13 build."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version

from tests.conftest import REPO, run_cli
from tests.upstream import sdist_repo

BEFORE = "    - nvidia-cutlass-dsl[cu13]==4.7.0   # the hand pin build.yaml had before it followed vLLM\n"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("upstream")
    return {
        "vllm": sdist_repo("vllm", "0.34.0", root / "vllm"),
        "flashinfer": sdist_repo("flashinfer-python", "0.7.2.post1", root / "flashinfer"),
    }


def args(
    build_yaml: Path, trees: dict[str, Path], smoke: Path, flashinfer_ref: str | None = "v0.7.2.post1"
) -> list[str]:
    # vLLM 0.34.0 pins flashinfer-python 0.7.3, which PyPI does not have: the newest sdist stands in
    ref = ["--set", f"flashinfer.ref={flashinfer_ref}"] if flashinfer_ref else []
    return [
        "-f",
        str(build_yaml),
        "--vllm-repo",
        str(trees["vllm"]),
        "--vllm-ref",
        "v0.34.0",
        "--set",
        f"flashinfer.repo={trees['flashinfer']}",
        *ref,
        "--set",
        f"nccl.repo={smoke / 'repos/nccl'}",
        "--set",
        "nccl.ref=main",
        "--set",
        "base.torch.index=https://pypi.org/simple",
    ]


def test_the_build_yaml_of_before_names_the_clash_and_both_origins(
    trees: dict[str, Path], smoke: Path, tmp_path: Path
) -> None:
    text = (REPO / "build.yaml").read_text()
    line = next(ln for ln in text.splitlines(keepends=True) if "nvidia-cutlass-dsl" in ln)
    before = tmp_path / "build.yaml"
    before.write_text(text.replace(line, BEFORE))
    proc = run_cli("plan", *args(before, trees, smoke), check=2)
    err = " ".join(proc.stderr.split())
    assert "cannot be installed together" in err and "Python 3.12 on aarch64-manylinux_2_39" in err
    assert "nvidia-cutlass-dsl[cu13]==4.7.0 <- build.yaml base.pip_packages[1]" in err
    assert "nvidia-cutlass-dsl[cu13]==4.8.0 <- vLLM v0.34.0" in err and "requirements/cuda.txt:" in err
    assert "Traceback" not in proc.stderr


def test_the_default_build_yaml_resolves_for_the_spark(trees: dict[str, Path], smoke: Path, tmp_path: Path) -> None:
    proc = run_cli("plan", "--json", *args(REPO / "build.yaml", trees, smoke))
    plan = json.loads(proc.stdout)
    py = plan["python"]
    assert (py["platform"], py["python"]) == ("aarch64-manylinux_2_39", "3.12")
    pkgs = py["packages"]
    assert pkgs["torch"] == "2.14.0" and pkgs["nvidia-cutlass-dsl"] == "4.8.0"
    assert pkgs["nvidia-nvshmem-cu13"] == "3.4.5"  # torch 2.14.0's exact pin, not the newest (3.8.0)
    assert Version(pkgs["setuptools"]) < Version("81")  # vLLM's bound on Python 3.12
    assert "flashinfer-python" not in pkgs  # ours: the flashinfer stage builds it
    # FlashInfer's own build requirements (pyproject [build-system]: apache-tvm-ffi>=0.1.11,<0.2, packaging)
    # resolve with the rest: the flashinfer stage installs them from the set
    assert pkgs["apache-tvm-ffi"] == "0.1.11" and "packaging" in pkgs
    # FlashInfer's runtime requirements (its requirements.txt), which vLLM's do not name: in the set, and
    # downloaded with vLLM's, since the runtime installs FlashInfer's wheels --no-deps
    assert {"tabulate", "nccl4py", "nvidia-ml-py"} <= set(pkgs)
    base = next(s for s in plan["stages"] if s["stage"] == "base")
    assert base["facts"]["base.pip_packages nvidia-nvshmem-cu13"] == "nvidia-nvshmem-cu13==3.4.5"
    assert "python env (the resolved set)" in base["facts"]


def test_uv_is_what_resolves() -> None:
    from pipeline.sources.pyresolve import uv_bin

    assert subprocess.run([uv_bin(), "--version"], capture_output=True, text=True, check=True).stdout.startswith("uv ")


def test_a_ref_auto_derived_from_vllm_says_so_when_it_does_not_exist(trees: dict[str, Path], smoke: Path) -> None:
    proc = run_cli("plan", *args(REPO / "build.yaml", trees, smoke, flashinfer_ref=None), check=None)
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "v0.7.3" in err and "flashinfer.ref is auto" in err and "flashinfer-python==0.7.3" in err

"""The checks images run on themselves, run here as the image runs them, on installed-package metadata:
the runtime's kernel check (pipeline/stages/runtime.py KERNEL_CHECK: FlashInfer's kernel packages at
flashinfer-python's version, the condition vLLM checks before it asks for `vllm download-kernels`, which
an offline node cannot run), and the resolved-set check every pip stage ends with (python_env.SET_CHECK)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.stages.runtime import KERNEL_CHECK


def installed(root: Path, **versions: str) -> Path:
    for name, version in versions.items():
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return root


def check(site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK, "flashinfer-cubin", "flashinfer-jit-cache"],
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_matching_kernels_pass(tmp_path: Path) -> None:
    site = installed(
        tmp_path, **{"flashinfer-python": "0.7.2", "flashinfer-cubin": "0.7.2", "flashinfer-jit-cache": "0.7.2"}
    )
    proc = check(site)
    assert proc.returncode == 0 and "flashinfer-jit-cache 0.7.2 = flashinfer-python 0.7.2" in proc.stdout


@pytest.mark.parametrize("jit", ["0.7.1", None])
def test_missing_or_other_version_fails_naming_it(tmp_path: Path, jit: str | None) -> None:
    versions = {"flashinfer-python": "0.7.2", "flashinfer-cubin": "0.7.2"}
    if jit:
        versions["flashinfer-jit-cache"] = jit
    proc = check(installed(tmp_path, **versions))
    assert proc.returncode == 1
    assert f"flashinfer-jit-cache {jit or 'missing'} but flashinfer-python is 0.7.2" in proc.stderr


# --- the resolved-set check every pip stage ends with (pipeline/python_env.py SET_CHECK) ----------


def set_check(site: Path, constraints: str) -> subprocess.CompletedProcess[str]:
    from pipeline import python_env

    (site.parent / "constraints.txt").write_text(constraints)
    script = python_env.SET_CHECK.replace('"/usr/local/"', repr(str(site.parent)))  # the test's prefix
    return subprocess.run(
        [sys.executable, "-c", script, str(site.parent / "constraints.txt"), *python_env.OURS],
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_package_outside_the_set_or_at_another_version_is_refused(tmp_path: Path) -> None:
    site = installed(
        tmp_path / "site", torch="2.14.0+cu130", vllm="0.34.0", **{"nvidia-nvshmem-cu13": "3.8.0", "nixl-cu13": "1.3.1"}
    )
    proc = set_check(site, "torch==2.14.0\nnvidia-nvshmem-cu13==3.4.5\n")
    assert proc.returncode == 1
    assert "nixl-cu13 1.3.1 is not in the resolved set" in proc.stderr
    assert "nvidia-nvshmem-cu13 3.8.0, but the resolved set has 3.4.5" in proc.stderr
    assert "torch" not in proc.stderr and "vllm" not in proc.stderr  # local label ignored; ours allowed


def test_the_resolved_set_passes(tmp_path: Path) -> None:
    site = installed(tmp_path / "site", torch="2.14.0", **{"flashinfer-python": "0.7.2"})
    assert set_check(site, "torch==2.14.0\n").returncode == 0

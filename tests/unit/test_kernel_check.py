"""The runtime image's kernel check (pipeline/stages/runtime.py KERNEL_CHECK), run as the image runs it,
on installed-package metadata: FlashInfer's kernel packages must be there at flashinfer-python's version,
the condition vLLM checks before it asks for `vllm download-kernels`, which an offline node cannot run."""

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
    return subprocess.run([sys.executable, "-c", KERNEL_CHECK, "flashinfer-cubin", "flashinfer-jit-cache"],
                          env={"PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60)


def test_matching_kernels_pass(tmp_path: Path) -> None:
    site = installed(tmp_path, **{"flashinfer-python": "0.7.2", "flashinfer-cubin": "0.7.2",
                                  "flashinfer-jit-cache": "0.7.2"})
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

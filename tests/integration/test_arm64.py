"""The smoke stack built for linux/arm64 (the Spark's platform) under qemu on this x86_64 machine:
the bootstrap base image is made for arm64 (its own tag) and found locally by BuildKit (no registry
lookup: that image exists nowhere else, a lookup would fail), and the vLLM wheel holds an AArch64 host
library with sm_121a device code in it. About 5 minutes cold (the apt steps run emulated)."""

from __future__ import annotations

import json
import struct
import subprocess
import zipfile

import pytest

from pipeline.config import load_build
from pipeline.stages import all_stages
from tests.conftest import run_cli
from tests.integration.conftest import SmokeBuild
from tests.integration.dockerd import DOCKER
from tests.integration.elf import cubin_sms
from tests.integration.qemu import why_not

pytestmark = [pytest.mark.docker, pytest.mark.slow]
EM_AARCH64 = 183


def test_arm64_smoke_build_has_aarch64_code_with_sm_121a(smoke_build: SmokeBuild) -> None:
    why = why_not()
    if why:
        pytest.skip(why)
    proc = run_cli(
        "build",
        "--json",
        "-f",
        str(smoke_build.root / "build.yaml"),
        "--platform",
        "linux/arm64",
        "--tag",
        "vllm-node-smoke-arm64",
        env={**smoke_build.env(), "COLUMNS": "150"},
        check=None,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {r["stage"]: r for r in json.loads(proc.stdout)}
    stand_in = all_stages(load_build(smoke_build.root / "build.yaml", flags={"platform": "linux/arm64"}).spec)[0]
    assert "-arm64-" in stand_in.base.ref  # its own tag, not the amd64 image of the same recipe
    arch = subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{.Architecture}}", stand_in.base.ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert arch == "arm64"
    [whl] = (smoke_build.store / "vllm" / results["vllm"]["key"]).glob("vllm-*.whl")
    so = zipfile.ZipFile(whl).read("vllm/_C.so")
    assert so[:4] == b"\x7fELF" and struct.unpack_from("<H", so, 18)[0] == EM_AARCH64
    assert cubin_sms(so) == [121] and b"sm_121a" in so
    manifest = json.loads((smoke_build.store / "runtime" / results["runtime"]["key"] / "manifest.json").read_text())
    assert manifest["platform"] == "linux/arm64"

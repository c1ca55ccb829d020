"""Test-only: the deploy tests' image = the smoke stack's runtime + Ray (from PyPI) + the stand-in
`vllm serve` (tests/standin/vllm), built by our own BuildKit engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parents[1]
PATH = "/workspace/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def download_ray(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "any",
            "-d",
            str(dest),
            "ray[default]",
        ],
        check=True,
        capture_output=True,
    )
    return dest


def extra_args(smoke_root: Path, wheels: Path, tag: str) -> list[str]:
    """Put the stand-in into the smoke copy's runtime scripts; the `build` arguments that add Ray."""
    bin_dir = smoke_root / "docker-contexts" / "runtime" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "vllm", bin_dir / "vllm")
    return [
        "--tag",
        tag,
        "--set",
        'runtime.pip_packages=["ray[default]"]',
        "--set",
        f"runtime.pip_index={wheels}",
        "--set",
        f"runtime.env.PATH={PATH}",
    ]


def build(smoke_root: Path, wheels: Path, tag: str, env: dict[str, str]) -> None:
    argv = [
        sys.executable,
        "-m",
        "pipeline",
        "build",
        "-f",
        str(smoke_root / "build.yaml"),
        *extra_args(smoke_root, wheels, tag),
    ]
    subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=True, capture_output=True)

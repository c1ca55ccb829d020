"""Benchmark: the smoke stack built for linux/arm64 (the DGX Spark's platform) under qemu on an x86_64
machine, next to the same build for the machine's own platform, in one run. What it shows: the arm64
chain works here end to end (tests/integration/test_arm64.py checks the artifacts), and what
emulation costs.

    python bench/arm64.py          # needs root, Docker, qemu-user-static + binfmt-support
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import fixtures  # noqa: E402
from tests.integration.qemu import why_not  # noqa: E402


def build(build_yaml: Path, cache: Path, *extra: str) -> float:
    env = {**os.environ, "SPARK_PIPELINE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "-f", str(build_yaml), *extra],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()  # --help, before any work
    why = why_not()
    if why:
        sys.exit(why)
    with tempfile.TemporaryDirectory() as tmp:
        build_yaml = fixtures.generate(Path(tmp) / "smoke")
        native = build(build_yaml, Path(tmp) / "cache-amd64")
        arm = build(build_yaml, Path(tmp) / "cache-arm64", "--platform", "linux/arm64", "--tag", "bench-arm64")
        again = build(build_yaml, Path(tmp) / "cache-arm64", "--platform", "linux/arm64", "--tag", "bench-arm64")
    print(f"smoke build, linux/amd64 (native): {native:6.1f} s")
    print(f"smoke build, linux/arm64 (qemu):   {arm:6.1f} s  ({arm / native:.1f}×; base images made once per platform)")
    print(f"again, linux/arm64 (all cached):   {again:6.1f} s")


if __name__ == "__main__":
    main()

"""Each benchmark runs in its small mode, so that none can rot unseen (bench/build.py's toolkit-way
Dockerfile stopped parsing once, and no figure came out of it until someone tried). Figures are printed,
never asserted: speed targets live in the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.integration.dockerd import Daemon

pytestmark = pytest.mark.docker


def test_bench_build_runs_and_prints_both_ways(docker_daemon: Daemon) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/build.py", "--small"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(proc.stdout)
    rows = {line[:28].strip(): line[28:].split() for line in proc.stdout.splitlines() if line.endswith("×")}
    assert set(rows) == {"cold build", "warm, nothing changed", "vLLM changed"}, proc.stdout
    for ours, _, toolkit, _, speedup in rows.values():
        assert float(ours) > 0 and float(toolkit) > 0 and speedup.endswith("×")

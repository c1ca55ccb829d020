"""Each benchmark runs in its small mode, so that none can rot unseen (bench/build.py's toolkit-way
Dockerfile stopped parsing once, and no figure came out of it until someone tried). Figures are printed,
never asserted: speed targets live in the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import docker28
from tests.conftest import REPO
from tests.integration.dockerd import Daemon


def run_bench(*argv: str) -> str:
    proc = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(proc.stdout)
    return proc.stdout


@pytest.mark.docker
def test_bench_build_runs_and_prints_both_ways(docker_daemon: Daemon) -> None:
    out = run_bench("bench/build.py", "--small")
    rows = {line[:28].strip(): line[28:].split() for line in out.splitlines() if line.endswith("×")}
    assert set(rows) == {"cold build", "warm, nothing changed", "vLLM changed"}, out
    for ours, _, toolkit, _, speedup in rows.values():
        assert float(ours) > 0 and float(toolkit) > 0 and speedup.endswith("×")


def test_bench_plan_runs_and_prints_the_toolkits_way_beside() -> None:
    out = run_bench("bench/plan.py", "--runs", "1")
    assert "plan, warm mirror, whole CLI process" in out and "toolkit: git ls-remote" in out
    assert "git clone --filter=blob:none" in out  # the cold plan next to blob-less clones


def test_bench_cli_runs_and_prints_each_command_next_to_import_click() -> None:
    out = run_bench("bench/cli.py", "--runs", "1")
    for command in ("--help", "plan --help", "deploy --help"):
        assert f"python -m pipeline {command} " in out


@pytest.mark.docker
@pytest.mark.parametrize("docker", [[], ["--docker", "28", "--store", "containerd"]], ids=["host", "28-containerd"])
def test_bench_ship_runs_with_one_node_and_small_layers(docker_daemon: Daemon, docker: list[str]) -> None:
    if docker and docker28.why_not():
        pytest.skip(docker28.why_not())
    out = run_bench("bench/ship.py", "--nodes", "1", "--base-mb", "8", "--top-mb", "1", *docker)
    assert "toolkit" in out and "delta (top layer)" in out and "current" in out
    assert ("28.5, containerd image store" in out) == bool(docker)


@pytest.mark.docker
def test_bench_models_runs_with_a_small_model(docker_daemon: Daemon) -> None:
    out = run_bench("bench/models.py", "--mb", "4")
    assert "ours (rsync)" in out and "ours (tar)" in out and "toolkit" in out


def test_bench_store_pull_runs_with_one_runner() -> None:
    out = run_bench("bench/store_pull.py", "--mb", "4", "--runners", "1")
    assert "runners" in out and "MB/s" in out


def test_benches_that_the_suite_does_not_run_still_answer_help() -> None:
    """bench/deploy.py (about 2 min: its own image and 3 test hosts) and bench/arm64.py (qemu builds)."""
    for bench in ("bench/deploy.py", "bench/arm64.py"):
        assert "usage:" in run_bench(bench, "--help")

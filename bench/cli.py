"""Benchmark: how fast the command line starts, next to a bare `python -c "import click"` (target: at
most ~3× for `--help` and for `plan`'s start). Commands import what they use when they run, so help
and planning never pay for Fabric, paramiko or dagger-io.

    python bench/cli.py [--runs 7]

`plan` itself is also timed on the smoke fixtures with warm mirrors (what it costs to resolve refs and
hash inputs; it includes git), for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import fixtures  # noqa: E402


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        build = fixtures.generate(Path(tmp) / "smoke")
        env = {**os.environ, "SPARK_PIPELINE_CACHE": str(Path(tmp) / "cache"), "PYTHONPATH": str(REPO)}
        subprocess.run([py, "-m", "pipeline", "plan", "-f", str(build)], env=env, check=True, capture_output=True)
        base = timed([py, "-c", "import click"], env, args.runs)
        rows = [
            ("python -m pipeline --help", [py, "-m", "pipeline", "--help"]),
            ("python -m pipeline plan --help", [py, "-m", "pipeline", "plan", "--help"]),
            ("python -m pipeline deploy --help", [py, "-m", "pipeline", "deploy", "--help"]),
            (
                "python -m pipeline plan (smoke, warm mirrors)",
                [py, "-m", "pipeline", "plan", "--offline", "-f", str(build)],
            ),
        ]
        print(f"{'command':50} {'median':>8} {'× import click':>15}")
        label0 = 'python -c "import click"'
        print(f"{label0:50} {base * 1000:6.0f} ms {1.0:14.1f}×")
        for label, argv in rows:
            t = timed(argv, env, args.runs)
            print(f"{label:50} {t * 1000:6.0f} ms {t / base:14.1f}×")


if __name__ == "__main__":
    main()

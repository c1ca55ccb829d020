"""Benchmark: how long `plan` takes with a warm mirror (target ≤ 0.5 s), next to the toolkit's way of
finding out whether vLLM changed (a `git ls-remote` + a `docker build` that it cannot skip).

    python bench/plan.py [--runs 5]

Runs on the smoke fixtures (local repos), so it measures our planning, not the network.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build = fixtures.generate(root / "smoke")
        env = {**os.environ, "SPARK_PIPELINE_CACHE": str(root / "cache"), "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "pipeline", "plan", "--json", "-f", str(build)]
        subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm the mirrors

        def timed(argv: list[str]) -> float:
            t = time.perf_counter()
            subprocess.run(argv, env=env, check=True, capture_output=True)
            return time.perf_counter() - t

        cli = [timed(cmd) for _ in range(args.runs)]
        offline = [timed([*cmd, "--offline"]) for _ in range(args.runs)]
        sys.path.insert(0, str(REPO))
        from pipeline.builder import plan_build
        from pipeline.sources.mirror import Mirrors
        from pipeline.spec import load_build
        from pipeline.store import Store

        os.environ["SPARK_PIPELINE_CACHE"] = str(root / "cache")
        inproc = []
        for _ in range(args.runs):
            t = time.perf_counter()
            plan_build(load_build(build), Mirrors(root / "cache"), Store(root / "store"))
            inproc.append(time.perf_counter() - t)
        ls_remote = [timed(["git", "ls-remote", str(root / "smoke/repos" / r), "main"])
                     for r in ("nccl", "flashinfer", "vllm", "triton")]

    print(f"plan, warm mirror, whole CLI process (fetch 4 repos) : median {statistics.median(cli):.3f} s")
    print(f"plan --offline, whole CLI process                    : median {statistics.median(offline):.3f} s")
    print(f"plan in-process (resolve + keys + store lookup)       : median {statistics.median(inproc):.3f} s")
    print(f"toolkit: git ls-remote of the same 4 repos            : total  {sum(ls_remote):.3f} s "
          "(it then still runs docker build for every stage to learn nothing changed)")
    print("target: ≤ 0.5 s with a warm mirror")


if __name__ == "__main__":
    main()

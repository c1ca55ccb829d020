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
        from pipeline.config import load_build
        from pipeline.resolution import plan_build
        from pipeline.sources.mirror import Mirrors
        from pipeline.store import Store

        os.environ["SPARK_PIPELINE_CACHE"] = str(root / "cache")
        inproc = []
        for _ in range(args.runs):
            t = time.perf_counter()
            plan_build(load_build(build), Mirrors(root / "cache"), Store(root / "store"))
            inproc.append(time.perf_counter() - t)
        ls_remote = [
            timed(["git", "ls-remote", str(root / "smoke/repos" / r), "main"])
            for r in ("nccl", "flashinfer", "vllm", "triton")
        ]

    print(f"plan, warm mirror, whole CLI process (fetch 4 repos) : median {statistics.median(cli):.3f} s")
    print(f"plan --offline, whole CLI process                    : median {statistics.median(offline):.3f} s")
    print(f"plan in-process (resolve + keys + store lookup)       : median {statistics.median(inproc):.3f} s")
    print(
        f"toolkit: git ls-remote of the same 4 repos            : total  {sum(ls_remote):.3f} s "
        "(it then still runs docker build for every stage to learn nothing changed)"
    )
    print("target: ≤ 0.5 s with a warm mirror")
    cold_mirror(args.runs)


def big_repo(path: Path, commits: int = 4000, refs: int = 2000) -> None:
    """A repository with a long history (written with git fast-import) and ~2,000 refs besides main:
    branches, tags and GitHub's refs/pull/N/head, as vLLM's has many thousands."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    stream = []
    for i in range(1, commits + 1):
        blob = f"file {i % 50}: version {i}\n" * 20
        stream.append(
            f"commit refs/heads/main\nmark :{i}\ncommitter bench <b@b> {1700000000 + i} +0000\n"
            f"data {len(f'c{i}')}\nc{i}\n"
            + (f"from :{i - 1}\n" if i > 1 else "")
            + f"M 644 inline f{i % 50}.txt\ndata {len(blob)}\n{blob}\n"
        )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input="".join(stream).encode(), check=True)
    shas = subprocess.run(
        ["git", "rev-list", "main"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.split()
    lines = []
    for n in range(refs // 3):
        sha = shas[(n * 7) % len(shas)]
        lines += [
            f"create refs/heads/topic-{n} {sha}",
            f"create refs/tags/v0.{n} {sha}",
            f"create refs/pull/{n + 1}/head {sha}",
        ]
    subprocess.run(["git", "update-ref", "--stdin"], cwd=path, input="\n".join(lines) + "\n", text=True, check=True)
    subprocess.run(["git", "config", "uploadpack.allowFilter", "true"], cwd=path, check=True)


def cold_mirror(runs: int) -> None:
    """Our first fetch of a ref into a cold mirror, next to git's own partial single-branch clone."""
    from pipeline.sources.mirror import Mirrors, resolve_ref

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "big.git"
        big_repo(repo)
        url = f"file://{repo}"
        listing = subprocess.run(["git", "for-each-ref"], cwd=repo, capture_output=True, text=True).stdout
        nrefs = len(listing.splitlines())
        ours, clone = [], []
        for i in range(runs):
            t = time.perf_counter()
            resolve_ref(Mirrors(Path(tmp) / f"cache{i}"), "big", url, "main", "bench")
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(
                [
                    "git",
                    "clone",
                    "-q",
                    "--bare",
                    "--filter=blob:none",
                    "--single-branch",
                    "--branch",
                    "main",
                    url,
                    str(Path(tmp) / f"clone{i}"),
                ],
                check=True,
                capture_output=True,
            )
            clone.append(time.perf_counter() - t)
    o, c = statistics.median(ours), statistics.median(clone)
    print(
        f"cold mirror, {nrefs} refs, 4000 commits: ours {o:.3f} s; git clone --filter=blob:none --single-branch "
        f"{c:.3f} s; ratio {o / c:.2f}× (target ≤ 1.2×)"
    )


if __name__ == "__main__":
    main()

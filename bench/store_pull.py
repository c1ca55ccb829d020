"""Benchmark: many CI runners with empty caches pulling one store entry from the shared store (Debian's
docker-registry on loopback), each runner a separate `python -m pipeline store pull` with its own store,
all at once. What the registry serves is what the store's uplink would carry.

    python bench/store_pull.py [--mb 256] [--runners 1 2 3]

For scale: each runner gets the whole entry (the wheels a stage built), so the registry sends
runners × entry size; the wall time shows when serving, not the runners, becomes the limit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.remote_store import RemoteStore, parse_url  # noqa: E402
from pipeline.ship.registry import Registry  # noqa: E402
from pipeline.store import Store  # noqa: E402

PORT = 5097
URL = f"oci://127.0.0.1:{PORT}/bench-store"
KEY = "b" * 64


def make_entry(store: Store, mb: int) -> None:
    staging = store.staging_dir("vllm")
    (staging / "vllm-0.0.0-cp312-cp312-linux_aarch64.whl").write_bytes(os.urandom(mb << 20))
    store.commit("vllm", KEY, staging, {"engine": "bench"})


def pull_all(root: Path, runners: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "store",
                "pull",
                "--store",
                str(root / f"r{n}"),
                "--remote",
                URL,
                "vllm",
                KEY,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(runners)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--runners", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store(root / "builder")
        make_entry(store, args.mb)
        with Registry(root / "registry", PORT):
            t = time.perf_counter()
            RemoteStore(parse_url(URL)).push(store.get("vllm", KEY))  # type: ignore[arg-type]
            push = time.perf_counter() - t
            rows = [(n, pull_all(root / f"run{n}", n)) for n in args.runners]
    print(f"store entry: one {args.mb} MB wheel; push {push:.2f} s ({args.mb / push:.0f} MB/s)")
    print(f"{'runners':>8}{'wall':>9}{'served MB':>11}{'MB/s served':>13}{'MB/s per runner':>17}")
    for n, secs in rows:
        print(f"{n:>8}{secs:>8.2f}s{n * args.mb:>11}{n * args.mb / secs:>13.0f}{args.mb / secs:>17.0f}")


if __name__ == "__main__":
    main()

"""Benchmark: `deploy` on test hosts — command-to-ready time, and how long after the server first
answered the command returned — next to the toolkit's fixed waits (launch-cluster.sh sleeps 2 s after
starting a solo/no-Ray cluster and 5 s after Ray reports its nodes, and polls Ray every 2 s: ≥ 7 s of
sleeping, and it never checks that the server answers).

    python bench/deploy.py          # root; builds the test image, starts 3 test hosts, tears them down

Target: ready ≤ 1 s after the server answers. The image is shipped before timing (shipping has its own
benchmark, bench/ship.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import fixtures  # noqa: E402
from tests.integration.dockerd import Daemon  # noqa: E402
from tests.standin import image as test_image  # noqa: E402
from tests.testbed.testbed import Testbed  # noqa: E402

LIMITS = ["--gpus", "none", "--non-privileged", "--nofile", "16384", "--mem-limit-gb", "4", "--shm-size-gb", "1"]


def served_at(tb: Testbed, node: int = 0) -> float:
    """When the stand-in started serving, from the container log's own timestamps."""
    ran = tb.nodes[node].docker("logs", "-t", "vllm_node")
    out = ran.stdout + ran.stderr
    for line in out.splitlines():
        if "[standin] serving" in line:
            stamp = line.split()[0]
            return datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()
    raise RuntimeError("the server never started")


def main() -> None:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # --help, before any work
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        daemon = Daemon(root / "dockerd")
        daemon.start()
        env = {"SPARK_PIPELINE_CACHE": str(root / "cache"), "PYTHONPATH": str(REPO)}
        fixtures.generate(root / "smoke")
        test_image.build(root / "smoke", test_image.download_ray(root / "wheels"), "vllm-node-bench", env)
        tb = Testbed(root / "tb", count=3).setup()
        rows = []
        try:
            cf = root / "cluster.yaml"
            cf.write_text(yaml.safe_dump(tb.cluster(registry_port=5098, image="vllm-node-bench")))
            subprocess.run(
                [sys.executable, "-m", "pipeline", "ship", "--cluster", str(cf)],
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
            cases = [
                ("solo", ["--solo", "--", "vllm", "serve", "m", "--port", "8031"], 2.0),
                ("no-Ray, 3 nodes", ["--", "vllm", "serve", "m", "--port", "8032", "-pp", "3"], 2.0),
                (
                    "Ray, 3 nodes",
                    [
                        "--ray",
                        "--ray-num-cpus",
                        "1",
                        "--ray-object-store-bytes",
                        "100000000",
                        "--",
                        "vllm",
                        "serve",
                        "m",
                        "--port",
                        "8033",
                        "-tp",
                        "3",
                    ],
                    5.0 + 2.0,
                ),
            ]
            for name, args, toolkit_sleep in cases:
                t0 = time.time()
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pipeline",
                        "deploy",
                        "--cluster",
                        str(cf),
                        *LIMITS,
                        "--timeout",
                        "300",
                        *args,
                    ],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                )
                t1 = time.time()
                if proc.returncode != 0:
                    sys.exit(proc.stderr[-3000:])
                rows.append((name, t1 - t0, t1 - served_at(tb), toolkit_sleep))
                subprocess.run(
                    [sys.executable, "-m", "pipeline", "stop", "--cluster", str(cf)],
                    env={**os.environ, **env},
                    capture_output=True,
                )
        finally:
            tb.teardown()
            daemon.stop()
    print(f"{'case':18}{'command → ready':>17}{'ready after server answered':>30}{'toolkit fixed sleeps':>23}")
    for name, total, after, sleeps in rows:
        print(f"{name:18}{total:>15.2f} s{after:>28.2f} s{sleeps:>20.1f} s+")
    print("target: ready ≤ 1 s after the server answers")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()

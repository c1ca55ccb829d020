"""Benchmark: shipping an image to 3 test hosts — cold, delta (only the top layer changed), current —
our way (registry + SSH tunnel, only missing layers) next to the toolkit's (`docker save | ssh
docker load` to each node in parallel; since 2026 it skips nodes whose image ID matches).

    python bench/ship.py [--base-mb 200] [--top-mb 20]      # root; starts test hosts, tears them down

Bytes are what each node's network interface received. Targets: delta bytes ≤ 1.1 × the changed layer;
cold wall time no worse than the toolkit's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.deploy.hosts import Hosts  # noqa: E402
from pipeline.deploy.image import Shipper  # noqa: E402
from pipeline.engines.docker import Docker  # noqa: E402
from pipeline.spec.cluster import ClusterSpec  # noqa: E402
from tests.integration.dockerd import DOCKER, Daemon  # noqa: E402
from tests.testbed.testbed import Testbed  # noqa: E402

IMAGE = "bench-ship:current"


def make_images(d: Path, base_mb: int, top_mb: int) -> None:
    (d / "root").mkdir(parents=True)
    (d / "root" / "base.bin").write_bytes(os.urandom(base_mb << 20))
    tar = subprocess.run(["tar", "-C", str(d / "root"), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "import", "-", "bench-ship:v1"], input=tar, capture_output=True, check=True)
    (d / "ctx").mkdir()
    (d / "ctx" / "top.bin").write_bytes(os.urandom(top_mb << 20))
    (d / "ctx" / "Dockerfile").write_text("FROM bench-ship:v1\nCOPY top.bin /top.bin\n")
    subprocess.run([DOCKER, "build", "--network", "none", "-t", "bench-ship:v2", str(d / "ctx")],
                   capture_output=True, check=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})


def toolkit_ship(tb: Testbed) -> None:
    """build-and-copy.sh's copy: compare image IDs over ssh, then docker save | ssh docker load per node."""
    local = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Id}}", IMAGE], capture_output=True,
                           text=True).stdout.strip()

    def one(n):
        remote = subprocess.run(tb.ssh_argv(n, "docker", "image", "inspect", "-f", "{{.Id}}", IMAGE),
                                capture_output=True, text=True).stdout.strip()
        if remote == local:
            return
        save = subprocess.Popen([DOCKER, "save", IMAGE], stdout=subprocess.PIPE)
        subprocess.run(tb.ssh_argv(n, "docker", "load"), stdin=save.stdout, capture_output=True, check=True)
        save.wait()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(one, tb.nodes))


def measure(tb: Testbed, fn) -> tuple[float, list[int]]:
    before = [n.rx_bytes() for n in tb.nodes]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t, [n.rx_bytes() - b for n, b in zip(tb.nodes, before, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-mb", type=int, default=200)
    ap.add_argument("--top-mb", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        daemon = Daemon(root / "dockerd")
        daemon.start()
        make_images(root / "img", args.base_mb, args.top_mb)
        tb = Testbed(root / "tb", count=3).setup()
        rows = []
        try:
            cl = ClusterSpec.model_validate(tb.cluster(registry_port=5099))
            hosts = Hosts(cl)
            shipper = Shipper(hosts, Docker(), root / "ship", 5099)

            def ours() -> None:
                bad = [r for r in shipper.ship(IMAGE, cl.ordered()) if r.status == "failed"]
                assert not bad, bad

            def wipe() -> None:
                for n in tb.nodes:
                    n.docker("rmi", "-f", IMAGE, "bench-ship:v1", check=False)
                    n.docker("image", "prune", "-af", check=False)

            for who, fn in (("spark-pipeline", ours), ("toolkit", lambda: toolkit_ship(tb))):
                wipe()
                subprocess.run([DOCKER, "tag", "bench-ship:v1", IMAGE], check=True)
                rows.append((who, "cold", *measure(tb, fn)))
                subprocess.run([DOCKER, "tag", "bench-ship:v2", IMAGE], check=True)
                rows.append((who, "delta (top layer)", *measure(tb, fn)))
                rows.append((who, "current", *measure(tb, fn)))
            hosts.close()
        finally:
            tb.teardown()
            daemon.stop()
            subprocess.run([DOCKER, "rmi", "-f", IMAGE, "bench-ship:v1", "bench-ship:v2"], capture_output=True)
    print(f"image: {args.base_mb} MB base layer + {args.top_mb} MB top layer (random bytes), 3 nodes in parallel")
    print(f"{'way':16}{'case':20}{'wall':>9}{'MB received per node':>26}")
    for who, case, secs, rx in rows:
        print(f"{who:16}{case:20}{secs:>8.2f}s{'  ' + ' / '.join(f'{b / 1e6:.1f}' for b in rx):>26}")
    print(f"target: delta ≤ 1.1 × {args.top_mb} MB = {1.1 * args.top_mb * 1.048576:.1f} MB per node; "
          "cold no slower than the toolkit")


if __name__ == "__main__":
    main()

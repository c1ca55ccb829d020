"""Benchmark: shipping an image to N test hosts — cold, delta (only the top layer changed), current —
our way (the layers the loopback registry lacks pushed uncompressed from `docker save`, every node
pulling only what it lacks through an OpenSSH tunnel) next to the toolkit's (`docker save | ssh docker
load` to each node in parallel; since 2026 it skips nodes whose image ID matches).

    python bench/ship.py [--nodes 3] [--base-mb 200] [--top-mb 20]   # root; starts test hosts, tears them down
    python bench/ship.py --docker 28 --store containerd              # head and nodes on Docker 28.5, that store

Bytes: what each node's network interface received, and what left the head towards all of them (the
test bridge's transmit counter: the head's uplink). Targets: delta bytes ≤ 1.1 × the changed layer;
cold wall time no worse than the toolkit's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config.cluster import ClusterSpec  # noqa: E402
from pipeline.engines.docker import Docker  # noqa: E402
from pipeline.nodes.hosts import Hosts  # noqa: E402
from pipeline.ship.shipper import Shipper  # noqa: E402
from tests import docker28  # noqa: E402
from tests.integration.dockerd import DOCKER, Daemon  # noqa: E402
from tests.testbed.testbed import Node, Testbed  # noqa: E402

IMAGE = "bench-ship:current"


def make_images(d: Path, base_mb: int, top_mb: int) -> None:
    (d / "root").mkdir(parents=True)
    (d / "root" / "base.bin").write_bytes(os.urandom(base_mb << 20))
    tar = subprocess.run(["tar", "-C", str(d / "root"), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "import", "-", "bench-ship:v1"], input=tar, capture_output=True, check=True)
    (d / "ctx").mkdir()
    (d / "ctx" / "top.bin").write_bytes(os.urandom(top_mb << 20))
    (d / "ctx" / "Dockerfile").write_text("FROM bench-ship:v1\nCOPY top.bin /top.bin\n")
    subprocess.run(
        [DOCKER, "build", "--network", "none", "-t", "bench-ship:v2", str(d / "ctx")],
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )


def differing(tb: Testbed) -> list[Node]:
    """The toolkit's first step: the nodes whose image ID (over ssh) differs from the local one."""
    local = subprocess.run(
        [DOCKER, "image", "inspect", "-f", "{{.Id}}", IMAGE], capture_output=True, text=True
    ).stdout.strip()

    def remote(n: Node) -> str:
        return subprocess.run(
            tb.ssh_argv(n, "docker", "image", "inspect", "-f", "{{.Id}}", IMAGE), capture_output=True, text=True
        ).stdout.strip()

    with ThreadPoolExecutor(len(tb.nodes)) as pool:
        return [n for n, rid in zip(tb.nodes, pool.map(remote, tb.nodes), strict=True) if rid != local]


def toolkit_ship(tb: Testbed, tmp: Path) -> None:
    """build-and-copy.sh's copy today: IDs compared, one `docker save -o` to a temp file, then
    `cat tmp | ssh host docker load` to every differing host in parallel."""
    todo = differing(tb)
    if not todo:
        return
    saved = tmp / "vllm_image.tar"
    subprocess.run([DOCKER, "save", "-o", str(saved), IMAGE], check=True)
    try:

        def one(n: Node) -> None:
            with saved.open("rb") as f:
                subprocess.run(tb.ssh_argv(n, "docker", "load"), stdin=f, capture_output=True, check=True)

        with ThreadPoolExecutor(len(todo)) as pool:
            list(pool.map(one, todo))
    finally:
        saved.unlink()


def toolkit_streamed(tb: Testbed) -> None:
    """The toolkit's older variant: one `docker save | tee >(ssh h1 docker load) >(ssh h2 …)`."""
    todo = differing(tb)
    if not todo:
        return
    loads = [
        subprocess.Popen(tb.ssh_argv(n, "docker", "load"), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        for n in todo
    ]
    save = subprocess.Popen([DOCKER, "save", IMAGE], stdout=subprocess.PIPE)
    while chunk := save.stdout.read(1 << 20):  # type: ignore[union-attr]
        for p in loads:
            p.stdin.write(chunk)  # type: ignore[union-attr]
    for p in loads:
        p.stdin.close()  # type: ignore[union-attr]
        assert p.wait() == 0
    assert save.wait() == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uplink_bytes(tb: Testbed) -> int:
    return int(Path(f"/sys/class/net/{tb.bridge}/statistics/tx_bytes").read_text())


def measure(tb: Testbed, fn: Callable[[], None]) -> tuple[float, list[int], int]:
    before, up = [n.rx_bytes() for n in tb.nodes], uplink_bytes(tb)
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    return wall, [n.rx_bytes() - b for n, b in zip(tb.nodes, before, strict=True)], uplink_bytes(tb) - up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3, choices=(1, 2, 3))
    ap.add_argument("--base-mb", type=int, default=200)
    ap.add_argument("--top-mb", type=int, default=20)
    ap.add_argument("--docker", choices=("host", "28"), default="host", help="host: this machine's Docker (20.10)")
    ap.add_argument("--store", choices=("classic", "containerd"), default="classic", help="image store, with 28")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bin28 = docker28.install() if args.docker == "28" else None
        # the head: the host's daemon, or Docker 28 beside it (every docker call below then goes there)
        daemon: Daemon | docker28.Daemon28 = (
            docker28.Daemon28(root / "head28", args.store, bin28) if bin28 else Daemon(root / "dockerd")
        )
        daemon.start()
        if isinstance(daemon, docker28.Daemon28):
            os.environ.update(daemon.env())
        make_images(root / "img", args.base_mb, args.top_mb)
        tb = Testbed(root / "tb", count=args.nodes, docker28=bin28, store=args.store).setup()
        rows = []
        try:
            port = free_port()  # not a fixed one: a registry or another run may hold it
            cl = ClusterSpec.model_validate(tb.cluster(registry_port=port))
            hosts = Hosts(cl)
            shipper = Shipper(hosts, Docker(), root / "ship", port)

            def ours() -> None:
                bad = [r for r in shipper.ship(IMAGE, cl.ordered()) if r.status == "failed"]
                assert not bad, bad

            def wipe() -> None:
                for n in tb.nodes:
                    n.docker("rmi", "-f", IMAGE, "bench-ship:v1", check=False)
                    n.docker("image", "prune", "-af", check=False)

            ways = (
                ("spark-pipeline", ours),
                ("toolkit", lambda: toolkit_ship(tb, root)),
                ("toolkit, streamed", lambda: toolkit_streamed(tb)),
            )
            for who, fn in ways:
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
    print(
        f"image: {args.base_mb} MB base layer + {args.top_mb} MB top layer (random bytes), "
        f"{args.nodes} node(s) in parallel; Docker {'20.10 (host)' if args.docker == 'host' else '28.5'}, "
        f"{args.store} image store on head and nodes"
    )
    print(f"{'way':20}{'case':20}{'wall':>9}{'MB received per node':>26}{'head uplink MB':>16}")
    for who, case, secs, rx, up in rows:
        per_node = "  " + " / ".join(f"{b / 1e6:.1f}" for b in rx)
        print(f"{who:20}{case:20}{secs:>8.2f}s{per_node:>26}{up / 1e6:>16.1f}")
    print(
        f"target: delta ≤ 1.1 × {args.top_mb} MB = {1.1 * args.top_mb * 1.048576:.1f} MB per node; "
        "cold no slower than the toolkit"
    )


if __name__ == "__main__":
    main()

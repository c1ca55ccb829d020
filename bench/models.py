"""Benchmark: copying a downloaded model to 3 test hosts — cold (nodes have nothing), again (nodes have
everything), and after one node lost a file — our way (`model copy`: every node at once, only the
blobs each lacks; rsync where both ends have it, else a tar stream) next to the toolkit's
(hf-download.sh: `rsync -av --mkpath <model dir> host:~/.cache/huggingface/hub/` to each node in turn).

    python bench/models.py [--mb 256]        # root; starts 3 test hosts, tears them down

Bytes are what each node's network interface received (all protocols, SSH included). Targets: no slower
than the toolkit's way, and no byte sent twice (a node that has a file receives none of it again).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import models as smoke_models  # noqa: E402
from tests.standin.hf_hub import HubStandin  # noqa: E402
from tests.testbed.testbed import Testbed  # noqa: E402

REPO_ID = "bench/model"
FOLDER = "models--bench--model"


def node_repo(tb: Testbed, i: int) -> Path:
    return tb.nodes[i].dir / "fs/root/.cache/huggingface/hub" / FOLDER


def wipe(tb: Testbed) -> None:
    for i in range(len(tb.nodes)):
        shutil.rmtree(node_repo(tb, i), ignore_errors=True)


def timed(tb: Testbed, fn: object) -> tuple[float, list[int]]:
    before = [n.rx_bytes() for n in tb.nodes]
    t0 = time.monotonic()
    fn()  # type: ignore[operator]
    seconds = time.monotonic() - t0
    return seconds, [n.rx_bytes() - b for n, b in zip(tb.nodes, before, strict=True)]


def ours(cf: Path, env: dict[str, str], via: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pipeline", "model", "copy", REPO_ID, "--cluster", str(cf), "--via", via],
        env=env,
        check=True,
        capture_output=True,
    )


def toolkit(tb: Testbed, hub: Path) -> None:
    ssh = shlex.join(
        [
            "ssh",
            "-i",
            str(tb.key),
            "-o",
            f"UserKnownHostsFile={tb.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
        ]
    )
    for n in tb.nodes:  # hf-download.sh without --copy-parallel: one node after the other
        subprocess.run(
            [
                "rsync",
                "-a",
                "--mkpath",
                "-e",
                ssh,
                str(hub / FOLDER),
                f"root@{n.address}:/root/.cache/huggingface/hub/",
            ],
            check=True,
            capture_output=True,
        )


def damage(tb: Testbed) -> None:
    big = max((node_repo(tb, 1) / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    big.write_bytes(b"lost")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256, help="size of the model's weights file")
    mb = ap.parse_args().mb
    if not shutil.which("rsync"):
        sys.exit("the toolkit's way needs rsync (apt-get install rsync)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        smoke_models.write_model(root / "repos", REPO_ID, mb << 20)
        tb = Testbed(root / "tb", count=3).setup()
        rows: list[tuple[str, str, float, list[int]]] = []
        try:
            cf = root / "cluster.yaml"
            cf.write_text(yaml.safe_dump(tb.cluster()))
            env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(root / "hf")}
            with HubStandin(root / "repos") as hub:
                subprocess.run(
                    [sys.executable, "-m", "pipeline", "model", "download", REPO_ID],
                    env={**env, "HF_ENDPOINT": hub.url},
                    check=True,
                    capture_output=True,
                )
            ways = (
                ("ours (rsync)", lambda: ours(cf, env, "rsync")),
                ("ours (tar)", lambda: ours(cf, env, "tar")),
                ("toolkit", lambda: toolkit(tb, root / "hf" / "hub")),
            )
            for way, run in ways:
                wipe(tb)
                rows.append((way, "cold", *timed(tb, run)))
                rows.append((way, "again", *timed(tb, run)))
                damage(tb)
                rows.append((way, "h2 lost a file", *timed(tb, run)))
        finally:
            tb.teardown()
    print(f"model: {mb} MiB of weights + config/tokenizer; 3 test hosts\n")
    print(f"{'way':14}{'case':16}{'wall':>9}   received per node (MB)")
    for way, case, seconds, got in rows:
        print(f"{way:14}{case:16}{seconds:>7.2f} s   " + "  ".join(f"{b / 1e6:8.1f}" for b in got))
    cold = {w: s for w, c, s, _ in rows if c == "cold"}
    print(
        f"\ncold: ours (rsync) {cold['ours (rsync)']:.2f} s, ours (tar) {cold['ours (tar)']:.2f} s, toolkit "
        f"{cold['toolkit']:.2f} s ({cold['toolkit'] / cold['ours (rsync)']:.2f}x / "
        f"{cold['toolkit'] / cold['ours (tar)']:.2f}x)"
    )
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()

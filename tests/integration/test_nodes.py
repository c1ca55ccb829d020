"""Nodes over real SSH into real Docker engines on three test hosts: discovery and doctor, host-key
trust, dead nodes, and shipping only the layers a node lacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.engines.docker import Docker
from pipeline.engines.identity import FORMAT, content_id
from tests.conftest import run_cli
from tests.integration.dockerd import DOCKER
from tests.testbed.testbed import Testbed

pytestmark = pytest.mark.docker
IMAGE = "sp-ship-test:current"
TOP_LAYER = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def images(docker_daemon: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """v1: one 24 MB layer; v2: v1 plus a 4 MB layer of random bytes (what a vLLM bump looks like)."""
    d = tmp_path_factory.mktemp("images")
    (d / "root" / "data").mkdir(parents=True)
    (d / "root" / "data" / "base.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    tar = subprocess.run(["tar", "-C", str(d / "root"), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run([DOCKER, "import", "-", "sp-ship-test:v1"], input=tar, capture_output=True, check=True)
    (d / "ctx").mkdir()
    (d / "ctx" / "top.bin").write_bytes(os.urandom(TOP_LAYER))
    (d / "ctx" / "Dockerfile").write_text("FROM sp-ship-test:v1\nCOPY top.bin /data/top.bin\n")
    subprocess.run(
        [DOCKER, "build", "--network", "none", "-t", "sp-ship-test:v2", str(d / "ctx")],
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    return {v: Docker().content_id(f"sp-ship-test:{v}") or "" for v in ("v1", "v2")}


def cluster_file(tb: Testbed, tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(tb.cluster(registry_port=5077, **extra)))
    return path


def node_ids(tb: Testbed, image: str) -> list[str]:
    """Each node's image by content ID (engines/identity.py): a node's store may differ from this machine's."""
    return [content_id(n.docker("image", "inspect", "--format", FORMAT, image, check=False).stdout) for n in tb.nodes]


def ship(tb: Testbed, tmp_path: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    return run_cli("ship", "--json", "--cluster", str(cluster_file(tb, tmp_path)), *args, check=check)


def test_doctor_prints_the_table(testbed: Testbed, tmp_path: Path) -> None:
    cf = cluster_file(testbed, tmp_path)
    proc = run_cli("doctor", "--cluster", str(cf), "--no-gpu-ok", "--min-free-gb", "1", "--json")
    report = json.loads(proc.stdout)
    assert [n["hostname"] for n in report["nodes"]] == ["h1", "h2", "h3"]
    for n in report["nodes"]:
        assert n["reachable"] and n["docker"] and n["eth_if"] == "eth0" and n["ib_if"] == [] and n["gpus"] == []
    assert "doctor" in proc.stderr and "nvidia-smi not found" in proc.stderr
    # without --no-gpu-ok a node without a GPU blocks a deploy
    strict = run_cli("doctor", "--cluster", str(cf), "--min-free-gb", "1", check=1)
    assert "block a deploy on 3 node(s)" in strict.stderr


def test_ship_only_the_layers_a_node_lacks(testbed: Testbed, tmp_path: Path, images: dict[str, str]) -> None:
    subprocess.run([DOCKER, "tag", "sp-ship-test:v1", IMAGE], check=True)
    cold = json.loads(ship(testbed, tmp_path, IMAGE).stdout)
    assert [r["status"] for r in cold] == ["shipped"] * 3
    assert node_ids(testbed, IMAGE) == [images["v1"]] * 3

    subprocess.run([DOCKER, "tag", "sp-ship-test:v2", IMAGE], check=True)
    before = [n.rx_bytes() for n in testbed.nodes]
    delta = json.loads(ship(testbed, tmp_path, IMAGE).stdout)
    received = [n.rx_bytes() - b for n, b in zip(testbed.nodes, before, strict=True)]
    assert [r["status"] for r in delta] == ["shipped"] * 3
    assert node_ids(testbed, IMAGE) == [images["v2"]] * 3
    for r, on_wire in zip(delta, received, strict=True):
        assert r["bytes"] <= 1.1 * TOP_LAYER, r
        assert on_wire <= 1.1 * TOP_LAYER, (r["node"], on_wire)  # the node's own interface counter

    before = [n.rx_bytes() for n in testbed.nodes]
    again = ship(testbed, tmp_path, IMAGE)
    assert [(r["status"], r["bytes"]) for r in json.loads(again.stdout)] == [("skipped", 0)] * 3
    assert "skipped (same image)" in again.stderr
    assert all(n.rx_bytes() - b < 64 * 1024 for n, b in zip(testbed.nodes, before, strict=True))  # SSH only


def test_stream_fallback_ships_the_whole_image(testbed: Testbed, tmp_path: Path, images: dict[str, str]) -> None:
    subprocess.run([DOCKER, "tag", "sp-ship-test:v1", "sp-ship-test:stream"], check=True)
    results = json.loads(ship(testbed, tmp_path, "sp-ship-test:stream", "--ship", "stream").stdout)
    assert [r["status"] for r in results] == ["shipped"] * 3
    assert all(r["bytes"] > 24 * 1024 * 1024 for r in results)
    assert node_ids(testbed, "sp-ship-test:stream") == [images["v1"]] * 3


def test_without_a_system_ssh_the_pull_goes_through_paramiko(
    testbed: Testbed, tmp_path: Path, images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.config.cluster import ClusterSpec
    from pipeline.engines.docker import Docker
    from pipeline.nodes.hosts import Hosts
    from pipeline.ship.shipper import Shipper

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None if name == "ssh" else which(name, *a, **kw))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "other.bin").write_bytes(os.urandom(TOP_LAYER))
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM sp-ship-test:v1\nCOPY other.bin /data/other.bin\n")
    subprocess.run(
        [DOCKER, "build", "--network", "none", "-t", "sp-ship-test:paramiko", str(tmp_path / "ctx")],
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    cluster = ClusterSpec.model_validate(testbed.cluster(registry_port=5079))
    hosts = Hosts(cluster)
    try:
        results = Shipper(hosts, Docker(), tmp_path / "ship", 5079).ship("sp-ship-test:paramiko", cluster.ordered())
    finally:
        hosts.close()
    assert [r.status for r in results] == ["shipped"] * 3
    for r in results:  # the relay counts what crossed it: the new layer (the nodes have v1's) and HTTP
        assert TOP_LAYER < r.bytes < 1.1 * TOP_LAYER, r
    assert node_ids(testbed, "sp-ship-test:paramiko") == [Docker().content_id("sp-ship-test:paramiko")] * 3


def test_changed_host_key_is_refused_while_the_others_complete(
    testbed: Testbed, tmp_path: Path, images: dict[str, str]
) -> None:
    lines = testbed.known_hosts.read_text().splitlines()
    lines[1] = f"{testbed.nodes[1].address} {lines[0].split(' ', 1)[1]}"  # h2 now "has" h1's key
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    subprocess.run([DOCKER, "tag", "sp-ship-test:v1", "sp-ship-test:keys"], check=True)
    cf = cluster_file(testbed, tmp_path)
    proc = run_cli("ship", "--json", "--cluster", str(cf), "--known-hosts", str(kh), "sp-ship-test:keys", check=1)
    results = {r["node"]: r["status"] for r in json.loads(proc.stdout)}
    assert results == {"h1": "shipped", "h2": "failed", "h3": "shipped"}
    flat = " ".join(proc.stderr.split())
    assert f"ssh-keygen -f {kh} -R '{testbed.nodes[1].address}'" in flat
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in flat
    assert "shipping failed on 1 of 3 node(s): h2" in flat
    assert kh.read_text() == "\n".join(lines) + "\n"  # never rewritten
    # with the right key, --limit @failed ships to the failed node only
    retry = run_cli("ship", "--json", "--cluster", str(cf), "--limit", "@failed", "sp-ship-test:keys")
    assert [(r["node"], r["status"]) for r in json.loads(retry.stdout)] == [("h2", "shipped")]


def test_accept_new_appends_one_line_per_new_host(testbed: Testbed, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("# my hosts\n" + testbed.known_hosts.read_text().splitlines()[0] + "\n")
    cf = cluster_file(testbed, tmp_path)
    run_cli(
        "doctor", "--cluster", str(cf), "--known-hosts", str(kh), "--accept-new", "--no-gpu-ok", "--min-free-gb", "1"
    )
    lines = kh.read_text().splitlines()
    assert lines[0] == "# my hosts" and len(lines) == 4
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(n.address for n in testbed.nodes)


def test_dead_sshd_fails_within_the_deadline_and_is_named(testbed: Testbed, tmp_path: Path) -> None:
    testbed.kill_node("h3", "sshd")
    try:
        cf = cluster_file(testbed, tmp_path)
        start = time.monotonic()
        proc = run_cli(
            "doctor",
            "--cluster",
            str(cf),
            "--no-gpu-ok",
            "--min-free-gb",
            "1",
            "--connect-timeout",
            "3",
            "--json",
            check=1,
        )
        elapsed = time.monotonic() - start
        report = json.loads(proc.stdout)
        assert [n["reachable"] for n in report["nodes"]] == [True, True, False]
        assert any(p["node"] == "h3" and p["blocking"] for p in report["problems"])
        assert "h3" in proc.stderr and elapsed < 3 + 10  # the connect deadline, plus process start-up
    finally:
        testbed.restart_sshd("h3")


def test_unknown_host_without_accept_new_is_refused(testbed: Testbed, tmp_path: Path) -> None:
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    cf = cluster_file(testbed, tmp_path)
    proc = run_cli("doctor", "--cluster", str(cf), "--known-hosts", str(kh), "--no-gpu-ok", check=1)
    assert f"ssh-keyscan -p 22 {testbed.nodes[0].address} >> {kh}" in " ".join(proc.stderr.split())
    assert kh.read_text() == ""

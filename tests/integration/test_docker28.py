"""The Docker-facing tests on current Docker: Docker Engine 28.5 (tests/docker28.py) with the classic and
the containerd image store (the default of new Docker 29 installs), beside the host's 20.10.

- Shipping in every mix of head and nodes (20.10 classic, 28.5 classic, 28.5 containerd): cold, then a
  changed top layer (each node's own interface counter must show only that layer), then nothing (every
  node holds the same image, under another `.Id` than the head's when the stores differ).
- A moved tag on the containerd store, and the build's name by key that keeps the old build reusable.
- GPUs by CDI where the node's Docker has an NVIDIA CDI spec.
- The smoke stack built cold on 28.5 with each store; a deploy onto 28.5 test hosts and onto this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pipeline.engines.identity import FORMAT, content_id
from tests import docker28
from tests.conftest import run_cli
from tests.integration.conftest import SmokeBuild
from tests.integration.dockerd import DOCKER
from tests.integration.test_deploy import LIMITS, deploy
from tests.testbed.testbed import Testbed

pytestmark = [pytest.mark.docker, pytest.mark.docker28]
BASE_LAYER = 24 * 1024 * 1024
TOP_LAYER = 4 * 1024 * 1024
TAG = "vllm-node-smoke"  # the smoke build.yaml's runtime tag


@pytest.fixture(scope="module")
def docker28_bin() -> Path:
    why = docker28.why_not() or Testbed.why_not()
    if why:
        pytest.skip(why)
    return docker28.install()


@pytest.fixture(scope="module")
def nodes28(docker_daemon: object, docker28_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    tb = Testbed(tmp_path_factory.mktemp("testbed28"), count=3, docker28=docker28_bin, store="containerd").setup()
    yield tb
    left = tb.teardown()
    assert not left, f"testbed teardown left {left}"


@pytest.fixture(scope="module")
def nodes28_classic(
    docker_daemon: object, docker28_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Testbed]:
    tb = Testbed(tmp_path_factory.mktemp("testbed28k"), count=2, docker28=docker28_bin, store="classic").setup()
    yield tb
    left = tb.teardown()
    assert not left, f"testbed teardown left {left}"


@pytest.fixture(scope="module")
def heads28(docker28_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, docker28.Daemon28]]:
    """Docker 28.5 on this machine, one daemon per image store."""
    started: dict[str, docker28.Daemon28] = {}
    try:
        for store in ("classic", "containerd"):
            started[store] = docker28.Daemon28(tmp_path_factory.mktemp(f"head28-{store}"), store, docker28_bin).start()
        yield started
    finally:
        for d in started.values():
            d.stop()


@pytest.fixture(scope="module")
def layers(docker_daemon: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tarball with two images: v1 (one 24 MB layer), v2 (v1 plus a 4 MB layer of random bytes)."""
    d = tmp_path_factory.mktemp("images28")
    for name, size in (("base.bin", BASE_LAYER), ("top.bin", TOP_LAYER)):
        (d / name).write_bytes(os.urandom(size))
    (d / "Dockerfile").write_text("FROM scratch\nCOPY base.bin /data/\n")
    subprocess.run([DOCKER, "build", "-q", "-t", "sp28:v1", str(d)], check=True, capture_output=True)
    (d / "Dockerfile").write_text("FROM sp28:v1\nCOPY top.bin /data/\n")
    subprocess.run([DOCKER, "build", "-q", "-t", "sp28:v2", str(d)], check=True, capture_output=True)
    subprocess.run([DOCKER, "save", "-o", str(d / "images.tar"), "sp28:v1", "sp28:v2"], check=True)
    return d / "images.tar"


def ids(tb: Testbed, image: str) -> list[str]:
    return [content_id(n.docker("image", "inspect", "--format", FORMAT, image, check=False).stdout) for n in tb.nodes]


def ship_cold_delta_current(tb: Testbed, tmp_path: Path, retag: list[str], env: dict[str, str]) -> None:
    """`retag` is the head's docker client; each step points sp28:current at another version there."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(tb.cluster(registry_port=5078)))

    def ship(version: str) -> tuple[list[dict], list[int], str]:
        subprocess.run([*retag, "tag", f"sp28:{version}", "sp28:current"], check=True, env={**os.environ, **env})
        before = [n.rx_bytes() for n in tb.nodes]
        proc = run_cli("ship", "--json", "--cluster", str(cluster), "sp28:current", env=env)
        return json.loads(proc.stdout), [n.rx_bytes() - b for n, b in zip(tb.nodes, before, strict=True)], proc.stderr

    want = {v: _head_id(retag, env, f"sp28:{v}") for v in ("v1", "v2")}
    cold, _, _ = ship("v1")
    assert [r["status"] for r in cold] == ["shipped"] * len(tb.nodes), cold
    assert ids(tb, "sp28:current") == [want["v1"]] * len(tb.nodes)

    delta, received, _ = ship("v2")
    assert [r["status"] for r in delta] == ["shipped"] * len(tb.nodes), delta
    assert ids(tb, "sp28:current") == [want["v2"]] * len(tb.nodes)
    for r, on_wire in zip(delta, received, strict=True):
        assert on_wire <= 1.1 * TOP_LAYER + 256 * 1024, (r["node"], on_wire)  # the node's own counter

    again, received, err = ship("v2")
    assert [(r["status"], r["bytes"]) for r in again] == [("skipped", 0)] * len(tb.nodes)
    assert "skipped (same image)" in err
    assert all(b < 64 * 1024 for b in received)  # SSH only


def _head_id(docker: list[str], env: dict[str, str], image: str) -> str:
    out = subprocess.run(
        [*docker, "image", "inspect", "--format", FORMAT, image],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    ).stdout
    return content_id(out)


def test_head_on_docker_20_classic_ships_to_containerd_nodes(nodes28: Testbed, layers: Path, tmp_path: Path) -> None:
    subprocess.run([DOCKER, "load", "-q", "-i", str(layers)], check=True, capture_output=True)
    ship_cold_delta_current(nodes28, tmp_path, [DOCKER], {})
    forget(nodes28)


@pytest.mark.parametrize("store", ["containerd", "classic"])
def test_head_on_docker_28_ships_to_containerd_nodes(
    nodes28: Testbed, heads28: dict[str, docker28.Daemon28], layers: Path, tmp_path: Path, store: str
) -> None:
    head = heads28[store]
    on_containerd = "io.containerd.snapshotter" in head.docker("info", "--format", "{{json .DriverStatus}}").stdout
    assert on_containerd == (store == "containerd")
    ship_from(head, layers, nodes28, tmp_path)
    forget(nodes28)


def test_head_on_docker_28_containerd_ships_to_docker_28_classic_nodes(
    nodes28_classic: Testbed, heads28: dict[str, docker28.Daemon28], layers: Path, tmp_path: Path
) -> None:
    for n in nodes28_classic.nodes:
        assert "io.containerd.snapshotter" not in n.docker("info", "--format", "{{json .DriverStatus}}").stdout
    ship_from(heads28["containerd"], layers, nodes28_classic, tmp_path)


@pytest.mark.parametrize("store", ["containerd", "classic"])
def test_head_on_docker_28_ships_to_docker_20_nodes(
    testbed: Testbed, heads28: dict[str, docker28.Daemon28], layers: Path, tmp_path: Path, store: str
) -> None:
    ship_from(heads28[store], layers, testbed, tmp_path)
    forget(testbed)


def ship_from(head: docker28.Daemon28, layers: Path, tb: Testbed, tmp_path: Path) -> None:
    """Cold, delta and current from a Docker 28 head, with its own client."""
    head.docker("load", "-q", "-i", str(layers))
    ship_cold_delta_current(tb, tmp_path, [str(head.bin / "docker")], head.env())


def forget(tb: Testbed) -> None:
    """The next case starts cold on the nodes: the images and their layers go."""
    for n in tb.nodes:
        n.docker("rmi", "sp28:current", "sp28:v1", "sp28:v2", check=False)
        n.docker("image", "prune", "-af", check=False)


def test_a_moved_tag_leaves_the_previous_build_reusable_by_its_name_by_key(
    heads28: dict[str, docker28.Daemon28], layers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the containerd store an image no name points to is deleted: moving `sp28:current` from v1 to
    v2 takes v1 with it unless the build's name by key still holds it (a rebuild otherwise)."""
    from pipeline.engines.docker import LocalImages

    head = heads28["containerd"]
    head.docker("load", "-q", "-i", str(layers))
    for k, v in head.env().items():
        monkeypatch.setenv(k, v)
    local = LocalImages()
    head.docker("tag", "sp28:v1", "sp28:current")
    v1 = local.docker.image_id("sp28:current")
    assert v1 and local.reuse_image(v1, "sp28:current", "sp28:k1")  # what a build leaves: both names
    head.docker("rmi", "sp28:v1")
    head.docker("tag", "sp28:v2", "sp28:current")  # the next build moved the tag
    assert local.reuse_image(v1, "sp28:current", "sp28:k1")
    assert local.docker.image_id("sp28:current") == v1
    # without the name by key, the same move loses the image on this store
    head.docker("tag", "sp28:v2", "sp28:current")
    head.docker("rmi", "sp28:k1")
    assert not local.reuse_image(v1, "sp28:current")


CDI_SPEC = """cdiVersion: "0.5.0"
kind: nvidia.com/gpu
devices:
  - name: all
    containerEdits:
      env: ["SP_CDI_GPU=all"]
"""


def test_a_node_whose_docker_has_an_nvidia_cdi_spec_gets_the_gpu_by_cdi(nodes28: Testbed, tmp_path: Path) -> None:
    """A stand-in NVIDIA CDI spec (kind nvidia.com/gpu; its only edit is an env var, no device) in one
    node's CDI spec dir: discovery reads it from Docker 28 itself, the plan hands that node
    `--device nvidia.com/gpu=all`, and Docker 28 applies the spec when that argv runs."""
    from pipeline.config.cluster import ClusterSpec
    from pipeline.launch.plan import NodeInput, Options, plan
    from pipeline.nodes.discover import gather
    from pipeline.nodes.hosts import Hosts

    h1 = nodes28.nodes[0]
    (h1.dir / "cdi").mkdir(exist_ok=True)
    (h1.dir / "cdi" / "nvidia.yaml").write_text(CDI_SPEC)
    spec = ClusterSpec.model_validate(nodes28.cluster())
    hosts = Hosts(spec)
    try:
        facts = {f.node.label: f for f in gather(hosts, "sp28-sh")}
    finally:
        hosts.close()
    assert facts["h1"].gpu_access.cdi_gpu == (str(h1.dir / "cdi" / "nvidia.yaml"),)
    assert [facts[n].gpu_access.flag for n in ("h1", "h2", "h3")] == ["cdi", "gpus", "gpus"]
    assert facts["h2"].gpu_access.cdi_dirs == (str(nodes28.nodes[1].dir / "cdi"),)

    # a two-file image: dash and the libc it needs
    files = ["/usr/bin/dash", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
    tar = subprocess.run(["tar", "-chf", "-", *files], capture_output=True, check=True).stdout
    ran = subprocess.run([*nodes28.ssh_argv(h1, "docker", "import", "-", "sp28-sh")], input=tar, capture_output=True)
    assert ran.returncode == 0, ran.stderr
    node = NodeInput("h1", h1.address, "eth0", gpu_access=facts["h1"].gpu_access.flag)
    argv = list(plan([node], Options(image="sp28-sh", command=("x",), mode="solo")).head.run_argv)
    gpu = argv[argv.index("--device") : argv.index("--device") + 2]
    out = subprocess.run(
        nodes28.ssh_argv(h1, "docker", "run", "--rm", *gpu, "sp28-sh", "/usr/bin/dash", "-c", "'echo $SP_CDI_GPU'"),
        capture_output=True,
        text=True,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "all"), out.stderr


def test_the_smoke_stack_builds_on_docker_28_with_the_same_keys(
    smoke_build: SmokeBuild, docker28_bin: Path, tmp_path: Path
) -> None:
    """The smoke stack built cold on Docker 28.5 with each image store (its buildx client; apt through the
    proxy on its bridge): the bootstrap images, cache mounts, `--network none`, `--output type=local` and
    the runtime's import check all run there, and every key equals the one Docker 20.10 gave. A second
    build is a look-up, the runtime found by its name by key. Both stores build at once (two daemons, two
    processes): the builds wait on downloads as much as on the CPU."""

    def build(store: str) -> None:
        work = tmp_path / store
        # a short folder: containerd's sockets under it must stay within 104 bytes
        daemon = docker28.Daemon28(Path(tempfile.mkdtemp(prefix="sp28-")), store, docker28_bin, apt=True).start()
        try:
            root = smoke_build.copy(work / "src")
            env = {**smoke_build.env(), **daemon.env(), "SPARK_PIPELINE_CACHE": str(work / "cache")}
            argv = ["build", "--json", "-f", str(root / "build.yaml")]
            cold = {r["stage"]: r for r in json.loads(run_cli(*argv, env=env, subprocess=True).stdout)}
            assert {s: r["status"] for s, r in cold.items()} == dict.fromkeys(cold, "built"), store
            assert {s: r["key"] for s, r in cold.items()} == {r["stage"]: r["key"] for r in smoke_build.results}
            labels = json.loads(daemon.docker("image", "inspect", "--format", "{{json .Config.Labels}}", TAG).stdout)
            assert labels["io.spark-pipeline.key.runtime"] == cold["runtime"]["key"]
            by_key = f"{TAG}:{cold['runtime']['key'][:12]}"
            assert daemon.docker("image", "inspect", by_key, check=False).returncode == 0
            warm = {r["stage"]: r["status"] for r in json.loads(run_cli(*argv, env=env, subprocess=True).stdout)}
            assert warm == dict.fromkeys(cold, "cached"), store
        finally:
            daemon.stop()
            shutil.rmtree(daemon.dir, ignore_errors=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(build, ["containerd", "classic"]))  # re-raises the first failure


def test_deploy_from_docker_20_to_containerd_nodes_then_nothing_to_do(
    nodes28: Testbed, deploy_image: str, tmp_path: Path
) -> None:
    """The whole deploy onto Docker 28.5 test hosts on the containerd store, from this machine's 20.10:
    shipped, started on all three, answering; the same deploy again sees the same image on every node
    (by content ID, where `.Id` differs between the stores) and does nothing."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(nodes28.cluster(registry_port=5076, image=deploy_image)))
    cmd = ["--", "vllm", "serve", "test/model", "--port", "8031", "-pp", "3"]
    try:
        assert "ready in" in deploy(cluster, *cmd).stderr
        running = [n.docker("ps", "-q", "--filter", "name=vllm_node").stdout.strip() for n in nodes28.nodes]
        assert all(running)
        again = deploy(cluster, *cmd)
        assert "nothing to do" in again.stderr
        assert [n.docker("ps", "-q", "--filter", "name=vllm_node").stdout.strip() for n in nodes28.nodes] == running
    finally:
        run_cli("stop", "--cluster", str(cluster), check=None)


def test_solo_deploy_on_this_machine_when_its_docker_is_28_with_the_containerd_store(
    heads28: dict[str, docker28.Daemon28], deploy_image: str, tmp_path: Path
) -> None:
    """`deploy --solo` where this machine's own Docker is 28.5 on the containerd store: started, answering,
    then nothing to do (the image's content ID read here, as a remote node's would be)."""
    head = heads28["containerd"]
    save = subprocess.Popen([DOCKER, "save", deploy_image], stdout=subprocess.PIPE)
    head.docker("load", "-q", input_stream=save.stdout)
    assert save.wait() == 0
    home = tmp_path / "home"
    home.mkdir()
    env = {**head.env(), "HOME": str(home)}
    name = ["--name", "spark_pipeline_local28"]
    argv = ["deploy", "--solo", "--image", deploy_image, *name, *LIMITS, "--timeout", "120"]
    cmd = ["--", "vllm", "serve", "test/model", "--port", "8033"]
    try:
        proc = run_cli(*argv, *cmd, cwd=tmp_path, env=env)
        assert "ready in" in proc.stderr and "http://127.0.0.1:8033/v1" in proc.stderr
        [row] = json.loads(run_cli("status", *name, "--port", "8033", "--json", cwd=tmp_path, env=env).stdout)
        assert row["container"] == "true" and row["health"].startswith("ok")
        assert head.docker("ps", "-q", "--filter", "name=spark_pipeline_local28").stdout.strip()
        assert "nothing to do" in run_cli(*argv, *cmd, cwd=tmp_path, env=env).stderr
    finally:
        run_cli("stop", *name, cwd=tmp_path, env=env, check=None)

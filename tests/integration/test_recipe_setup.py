"""`recipe run --setup` on three test hosts, from nothing to a served, benchmarked model: the image is
found (or built) by its build key, the models the command loads come from a Hugging Face endpoint on
loopback (tests/standin/hf_hub.py serving the smoke fixture's model and draft model), each node gets
only the files it lacks, the deploy answers, and `bench` measures it with llama-benchy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import yaml

from examples.smoke import models as smoke_models
from pipeline import paths
from pipeline.launch.apply import http_ok
from tests.conftest import REPO, run_cli
from tests.integration.conftest import SmokeBuild
from tests.standin.hf_hub import HubStandin
from tests.testbed.testbed import Testbed

pytestmark = pytest.mark.docker
LIMITS = ["--gpus", "none", "--non-privileged", "--nofile", "16384", "--mem-limit-gb", "4", "--shm-size-gb", "1"]
MODEL, DRAFT = "spark-pipeline/smoke-tiny", "spark-pipeline/smoke-tiny-draft"
TAG = "vllm-node-setup-test"
# huggingface_hub writes a download in 10 MiB pieces: weights of 24 MiB leave a partial file to resume
WEIGHTS = 24 << 20


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubStandin]:
    root = tmp_path_factory.mktemp("hub")
    smoke_models.write_model(root, MODEL, WEIGHTS)
    smoke_models.write_model(root, DRAFT, 1 << 20)
    with HubStandin(root, rate=4e6) as h:  # 6 s for the weights: time to kill the download half-way
        yield h


@pytest.fixture(scope="module")
def setup_env(smoke_build: SmokeBuild, hub: HubStandin, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **smoke_build.env(),
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


@pytest.fixture(scope="module")
def recipe(smoke_build: SmokeBuild, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke recipe with its own image tag and a build_arg (a profile of the smoke build.yaml that
    merges PR 101): an image this session has not built yet."""
    data = yaml.safe_load((smoke_build.root / "smoke.yaml").read_text())
    data.update(name="smoke-setup", container=TAG, build_args=["--exp-pr101"])
    subprocess.run(["/usr/bin/docker", "rmi", "-f", TAG], capture_output=True, check=False)  # a fresh start
    path = smoke_build.root / "smoke-setup.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cluster(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("setup-cluster") / "cluster.yaml"
    path.write_text(yaml.safe_dump(testbed.cluster(registry_port=5081)))
    yield path
    run_cli("stop", "--cluster", str(path), check=None)


def setup_argv(recipe: Path, cluster: Path, smoke_build: SmokeBuild, *extra: str) -> list[str]:
    return [
        "recipe",
        "run",
        str(recipe),
        "--setup",
        "--build-file",
        str(smoke_build.root / "build.yaml"),
        "--cluster",
        str(cluster),
        "--tp",
        "3",
        *LIMITS,
        "--timeout",
        "180",
        *extra,
    ]


def node_blobs(testbed: Testbed, repo: str) -> dict[str, list[str]]:
    out = {}
    for n in testbed.nodes:
        d = n.dir / "fs/root/.cache/huggingface/hub" / f"models--{repo.replace('/', '--')}" / "blobs"
        out[n.name] = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    return out


def size(path: Path) -> int:
    """A partial file's size; 0 when it is gone (a small file finished and was renamed since the glob)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def kill_during_download(argv: list[str], env: dict[str, str]) -> None:
    """Start the setup and SIGKILL it once the weights are partly downloaded."""
    blobs = Path(env["HF_HOME"]) / "hub" / f"models--{MODEL.replace('/', '--')}" / "blobs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            part = [p for p in blobs.glob("*.incomplete") if size(p) >= 10 << 20] if blobs.is_dir() else []
            if part:
                break
            assert proc.poll() is None, "the setup ended before its download could be interrupted"
            time.sleep(0.05)
        else:
            raise AssertionError("the weights never started downloading")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_setup_builds_downloads_copies_deploys_and_a_second_run_sends_nothing(
    testbed: Testbed,
    smoke_build: SmokeBuild,
    hub: HubStandin,
    setup_env: dict[str, str],
    recipe: Path,
    cluster: Path,
    tmp_path: Path,
) -> None:
    argv = setup_argv(recipe, cluster, smoke_build, "--api-key", "auto")  # the server wants a key: all use it
    dry = run_cli(*argv, "--dry-run", env=setup_env)
    assert "would build" in dry.stderr and f"model {MODEL}: not in this machine's cache: would download" in dry.stderr
    assert f"model {DRAFT}: not in this machine's cache" in dry.stderr  # named only in --speculative-config
    assert hub.state.sent_bytes() == 0 and node_blobs(testbed, MODEL) == {"h1": [], "h2": [], "h3": []}

    kill_during_download(argv, setup_env)

    first = run_cli(*argv, env=setup_env)
    assert f"model {MODEL}: continued the partial files of an interrupted download" in first.stderr
    # the killed run had built the image before its download: found now by its build key
    assert "image vllm-node-setup-test is build" in first.stderr and "(profiles: exp-pr101): up to date" in first.stderr
    weights = [
        h
        for h in hub.state.hits
        if h.method == "GET" and h.path.startswith(f"/{MODEL}/resolve/") and h.path.endswith("/model.safetensors")
    ]
    assert weights[-1].range is not None, "the second download did not resume the partial file"
    weights_sent = sum(h.sent for h in weights)
    assert weights_sent < WEIGHTS + (4 << 20), weights_sent  # what arrived before the kill was not fetched again
    for repo in (MODEL, DRAFT):
        assert all(len(b) == 6 for b in node_blobs(testbed, repo).values()), node_blobs(testbed, repo)
    assert "ready in" in first.stderr

    head = testbed.nodes[0].address
    with mock.patch.dict(os.environ, setup_env):
        key = paths.api_key_file("vllm_node").read_text().strip()
    assert not http_ok(f"http://{head}:8000/v1/models")[0]  # without the key: refused
    request = urllib.request.Request(f"http://{head}:8000/v1/models", headers={"Authorization": f"Bearer {key}"})
    models = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert models["data"][0]["id"] == MODEL
    log = run_cli("logs", "--cluster", str(cluster), "--node", "h2").stdout
    assert "model files: /root/.cache/huggingface/hub/models--spark-pipeline--smoke-tiny/snapshots/" in log

    served = hub.state.sent_bytes()
    again = run_cli(*argv, env=setup_env)
    assert "is build" in again.stderr and "up to date" in again.stderr
    assert "sent h1: 0 bytes, h2: 0 bytes, h3: 0 bytes" in again.stderr
    assert "nothing to do" in again.stderr
    assert hub.state.sent_bytes() == served  # nothing downloaded either

    out = tmp_path / "bench"
    proc = run_cli(
        "bench",
        "run",
        str(recipe),
        "--url",
        f"http://{head}:8000/v1",
        "--nodes",
        "3",
        "--results",
        str(out),
        "--json",
        env=setup_env,
    )
    rec = json.loads(proc.stdout)
    assert rec["recipe"] == "smoke-setup" and rec["nodes"] == 3 and rec["profile"] == "quick"
    assert [(r["depth"], r["concurrency"]) for r in rec["rows"]] == [(0, 1), (4096, 1)]
    assert all(r["tg_tps"] and r["pp_tps"] for r in rec["rows"])
    d = Path(rec["dir"])
    assert (d / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 4096 | 1 |" in (d / "table.md").read_text()
    # beside the throughput: how long the deployment took to answer, per startup phase (from the deploy)
    assert rec["startup"]["ready_seconds"] > 0 and rec["startup"]["url"].endswith(":8000/v1")
    assert "starting the API server" in rec["startup"]["phases"]  # the smoke server's phases pass at once
    assert "Ready " in (d / "table.md").read_text()
    assert json.loads((d / "record.json").read_text())["build_key"] == rec["build_key"] != "unknown"


@pytest.mark.parametrize("via", ["tar", "rsync"])
def test_copy_sends_each_node_only_what_it_lacks(
    testbed: Testbed, hub: HubStandin, setup_env: dict[str, str], cluster: Path, tmp_path: Path, via: str
) -> None:
    if via == "rsync" and not shutil.which("rsync"):
        pytest.skip("rsync is not installed here")
    env = {**setup_env, "HF_HOME": str(tmp_path / "hf")}
    run_cli("model", "download", DRAFT, env=env)
    for n in testbed.nodes:  # the nodes start without the draft
        shutil.rmtree(
            n.dir / "fs/root/.cache/huggingface/hub" / f"models--{DRAFT.replace('/', '--')}", ignore_errors=True
        )
    first = json.loads(
        run_cli("model", "copy", DRAFT, "--cluster", str(cluster), "--via", via, "--json", env=env).stdout
    )
    assert [r["node"] for r in first] == ["h1", "h2", "h3"] and all(r["sent_bytes"] >= 1 << 20 for r in first)
    assert all(r["note"] == ("rsync" if via == "rsync" else "") for r in first)
    blob = max(
        (
            testbed.nodes[1].dir / "fs/root/.cache/huggingface/hub" / f"models--{DRAFT.replace('/', '--')}" / "blobs"
        ).iterdir(),
        key=lambda p: p.stat().st_size,
    )
    blob.write_bytes(b"truncated")  # h2's copy of the weights is damaged
    again = json.loads(
        run_cli("model", "copy", DRAFT, "--cluster", str(cluster), "--via", via, "--json", env=env).stdout
    )
    sent = {r["node"]: r["sent_bytes"] for r in again}
    assert sent["h1"] == sent["h3"] == 0
    assert sent["h2"] >= 1 << 20 if via == "tar" else sent["h2"] > 0  # rsync sends only the damaged part
    assert blob.stat().st_size == 1 << 20
    listed = json.loads(run_cli("model", "ls", "--cluster", str(cluster), "--json", env=env).stdout)
    assert {r["machine"] for r in listed if r["repo"] == DRAFT} == {"this machine", "h1", "h2", "h3"}

"""`python -m pipeline build --engine dagger`, whole, against the stand-in Dagger session
(tests/standin/dagger_session.py): the real dagger-io client sends every stage of the smoke stack and of
the repo's build.yaml, the stand-in validates each query against the real 0.21 schema and loads an
(empty) image into the local Docker for each exportImage. And `--push` for real on BuildKit, to Debian's
docker-registry on loopback.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.contract import STAGES
from pipeline.core.ir import toolchain_tag
from pipeline.ship.registry import Registry
from tests.conftest import REPO, run_cli
from tests.integration.conftest import SmokeBuild, statuses
from tests.standin.dagger_session import Session
from tests.upstream import sdist_repo

pytestmark = pytest.mark.docker

# Keys of their own: the stand-in's empty images must never take a tag a real build made.
OWN_KEYS = ("--set", "base.env.SPARK_PIPELINE_TEST=dagger-standin")


@pytest.fixture
def session(docker_daemon: object) -> Iterator[Session]:
    s = Session()
    yield s
    s.close()


def build(session: Session, build_yaml: Path, cache: Path, *args: str, check: int = 0) -> tuple[list[dict], str]:
    proc = run_cli(
        "build",
        "--json",
        "--engine",
        "dagger",
        "-f",
        str(build_yaml),
        *OWN_KEYS,
        *args,
        check=check,
        env={**session.env(), "SPARK_PIPELINE_CACHE": str(cache)},
    )
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    return (json.loads(proc.stdout) if proc.returncode == 0 else []), proc.stderr


def check_sent(session: Session, results: list[dict], cache: Path, image_tag: str) -> None:
    """What every Dagger build must send: valid queries, one export per wheel stage, the toolchain and
    the runtime image loaded into the local Docker, cache volumes, and a log per stage."""
    assert session.invalid == []
    assert statuses(results) == dict.fromkeys(STAGES, "built")
    keys = {r["stage"]: r["key"] for r in results}
    exported = [e.args["path"] for e in session.sent("Directory.export")]
    assert len(exported) == len(STAGES) - 1  # every stage but the runtime image exports its output
    loaded = [e.args["name"] for e in session.sent("Container.exportImage")]
    platform = json.loads((cache / "store" / "base" / keys["base"] / "manifest.json").read_text())["platform"]
    assert loaded == [toolchain_tag(platform, keys["base"]), image_tag]
    assert "Query.cacheVolume" in session.fields() and "Host.containerImage" in session.fields()
    for stage, key in keys.items():
        manifest = json.loads((cache / "store" / stage / key / "manifest.json").read_text())
        assert manifest["engine"] == "dagger"
        assert "== step 1/" in (cache / "logs" / stage / key[:16] / "build.log").read_text()


def test_smoke_stack_on_dagger_sends_every_stage(smoke_build: SmokeBuild, session: Session, tmp_path: Path) -> None:
    root = smoke_build.copy(tmp_path / "src")  # the build writes build.lock beside build.yaml
    cache = tmp_path / "cache"
    # network: false cannot be enforced on Dagger: the smoke stack's offline stages are refused...
    _, refused = build(session, root / "build.yaml", cache, check=2)
    assert "network: false" in refused and "--engine buildkit" in refused and not session.effects
    # ...and built with network
    results, stderr = build(
        session,
        root / "build.yaml",
        cache,
        "--set",
        "network=true",
        "--tag",
        "spark-pipeline-standin-smoke",
        "--push",
        "127.0.0.1:5999/standin:smoke",
    )
    check_sent(session, results, cache, "spark-pipeline-standin-smoke")
    [published] = session.sent("Container.publish")
    assert published.args["address"] == "127.0.0.1:5999/standin:smoke"
    assert "pushed 127.0.0.1:5999/standin:smoke@sha256:" in stderr


def test_repo_build_yaml_on_dagger_sends_every_stage(smoke_build: SmokeBuild, session: Session, tmp_path: Path) -> None:
    vllm = sdist_repo("vllm", "0.33.0", tmp_path / "vllm")
    flashinfer = sdist_repo("flashinfer-python", "0.7.2.post1", tmp_path / "flashinfer")
    (tmp_path / "spark").mkdir()
    build_yaml = tmp_path / "spark" / "build.yaml"
    build_yaml.write_text((REPO / "build.yaml").read_text())
    cache = tmp_path / "cache"
    smoke = smoke_build.root
    results, _ = build(
        session,
        build_yaml,
        cache,
        "--vllm-repo",
        str(vllm),
        "--vllm-ref",
        "v0.33.0",
        "--set",
        f"flashinfer.repo={flashinfer}",
        "--set",
        f"nccl.repo={smoke / 'repos/nccl'}",
        "--set",
        "nccl.ref=main",
        "--set",
        "base.torch.index=https://pypi.org/simple",
        "--tag",
        "spark-pipeline-standin-spark",
    )
    check_sent(session, results, cache, "spark-pipeline-standin-spark")
    base = next(
        e.node
        for e in session.sent("Directory.export")
        if any(a.get("address", "").startswith("nvidia/cuda:") for n, a in e.node.chain if n == "from")
    )
    assert base.chain[0] == ("container", {"platform": "linux/arm64"})
    assert (tmp_path / "spark" / "build.lock").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_buildkit_push_to_a_registry_on_loopback(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    port = free_port()
    with Registry(tmp_path / "registry", port):
        ref = f"127.0.0.1:{port}/vllm-node-smoke:pushed"
        proc = run_cli(
            "build",
            "-f",
            str(smoke_build.root / "build.yaml"),
            "--engine",
            "buildkit",
            "--push",
            ref,
            env=smoke_build.env(),
        )
        m = re.search(rf"pushed {re.escape(ref)}@(sha256:[0-9a-f]{{64}})", " ".join(proc.stderr.split()))
        assert m, proc.stderr
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/vllm-node-smoke/manifests/pushed",
            method="HEAD",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as r:
            assert r.headers["Docker-Content-Digest"] == m[1]

"""Integration fixtures: a Docker daemon (started here when none runs) and one cold smoke build per
session that the other tests build on (store entries are immutable, so sharing them is safe)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from examples.smoke import fixtures
from tests.conftest import run_cli
from tests.integration.dockerd import Daemon, make_room
from tests.testbed.testbed import Testbed


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("dockerd"))
    why = daemon.why_not()
    if why:
        pytest.skip(why)
    daemon.start()
    print(f"\ndisk: {make_room(Path(str(tmp_path_factory.getbasetemp())))}")
    yield daemon
    if not (request.config.getoption("--keep-testbed") and request.session.testsfailed):
        daemon.stop()


@pytest.fixture(scope="session")
def testbed(
    docker_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Testbed]:
    """Three test hosts (network namespaces with sshd + dockerd); torn down and verified at the end,
    kept for debugging with --keep-testbed when a test failed."""
    why = Testbed.why_not()
    if why:
        pytest.skip(why)
    tb = Testbed(tmp_path_factory.mktemp("testbed"), count=3).setup()
    yield tb
    if request.config.getoption("--keep-testbed") and request.session.testsfailed:
        print(f"\nkeeping the testbed in {tb.root} (nodes {[n.address for n in tb.nodes]})")
        return
    left = tb.teardown()
    assert not left, f"testbed teardown left {left}"


DEPLOY_IMAGE = "vllm-node-test"


@dataclass
class SmokeBuild:
    root: Path  # fixture sources + build.yaml
    cache: Path  # SPARK_PIPELINE_CACHE (mirrors, store, logs)
    results: list[dict]
    namespace: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")

    @property
    def store(self) -> Path:
        return self.cache / "store"

    def env(self) -> dict[str, str]:
        # A namespace per session: BuildKit's cache volumes outlive the daemon, and these builds must be cold.
        return {"SPARK_PIPELINE_CACHE": str(self.cache), "SPARK_PIPELINE_CACHE_NAMESPACE": self.namespace}

    def build(self, root: Path | None = None, *args: str, check: int | None = 0) -> list[dict]:
        proc = run_cli(
            "build", "--json", "-f", str((root or self.root) / "build.yaml"), *args, env=self.env(), check=check
        )
        return json.loads(proc.stdout) if proc.returncode == 0 else []

    def copy(self, dest: Path) -> Path:
        """Own copy of the fixture sources: same commits, so the same keys and store entries."""
        shutil.copytree(self.root, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def smoke_build(docker_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> SmokeBuild:
    root = tmp_path_factory.mktemp("smoke-src")
    fixtures.generate(root)
    sb = SmokeBuild(root=root, cache=tmp_path_factory.mktemp("smoke-cache"), results=[])
    sb.results = sb.build()
    return sb


@pytest.fixture(scope="session")
def deploy_image(smoke_build: SmokeBuild, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smoke runtime plus (for tests only) Ray from PyPI and the stand-in `vllm serve`."""
    from tests.standin import image as test_image

    root = smoke_build.copy(tmp_path_factory.mktemp("deploy") / "src")
    wheels = test_image.download_ray(tmp_path_factory.mktemp("ray-wheels"))
    smoke_build.build(root, *test_image.extra_args(root, wheels, DEPLOY_IMAGE))
    return DEPLOY_IMAGE


def statuses(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in results}

"""ENGINE_TESTS × engines: for every stage of the repo's build.yaml and of the smoke stack, what the
engine would run (steps, env, mounts, inputs, caches, exported path) equals what the IR says.

BuildKit answers by its generated Dockerfile (also kept as a snapshot under tests/unit/snapshots/, a
record of change: UPDATE_SNAPSHOTS=1 rewrites it), Dagger by the chain dagger-io builds lazily. Whether
each Dagger call is one the engine's API has, and whether each stage ends in the right export, is
tested through the real client in test_dagger_session.py. The BuildKit engine also runs for real in
tests/integration.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.core.ir import Stage, with_toolchain
from pipeline.engines import cache_id
from tests.conftest import REPO
from tests.engine_views import VIEWS, View, buildkit_dockerfile, chain, dagger_chain, expected
from tests.specs import stages as effective_stages

SNAPSHOTS = Path(__file__).parent / "snapshots"
STACKS = {"spark": REPO / "build.yaml", "smoke": REPO / "examples" / "smoke" / "build.yaml"}


def stages_of(stack: str, **flags: str) -> list[Stage]:
    """The stages as the builder hands them to an engine (a toolchain base tagged by a fixed key)."""
    return [with_toolchain(s, "0" * 64) for s in effective_stages(STACKS[stack], **flags)]


CASES = [(stack, s.name) for stack in STACKS for s in stages_of(stack)]


def stage(stack: str, name: str, **flags: str) -> Stage:
    return next(s for s in stages_of(stack, **flags) if s.name == name)


def check_steps(view: View, want: View) -> None:
    assert view.steps == want.steps


def check_env(view: View, want: View) -> None:
    assert view.env == want.env
    # build jobs reach the build, but never as part of what defines the result
    assert dict(view.build_env) == dict(want.build_env)
    assert not set(dict(view.env)) & set(dict(want.build_env))


def check_inputs(view: View, want: View) -> None:
    assert view.copies == want.copies
    assert view.caches == want.caches


def check_base_platform_export(view: View, want: View) -> None:
    assert (view.base, view.platform, view.export) == (want.base, want.platform, want.export)


ENGINE_TESTS: list[Callable[[View, View], None]] = [check_steps, check_env, check_inputs, check_base_platform_export]


@pytest.mark.parametrize("engine", list(VIEWS))
@pytest.mark.parametrize(("stack", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
@pytest.mark.parametrize("check", ENGINE_TESTS, ids=[t.__name__ for t in ENGINE_TESTS])
def test_engine_runs_what_the_ir_says(engine: str, stack: str, name: str, check: Callable[[View, View], None]) -> None:
    s = stage(stack, name)
    check(VIEWS[engine](s), expected(s))


@pytest.mark.parametrize("engine", list(VIEWS))
@pytest.mark.parametrize("arch", ["12.1a", "12.0f"])
def test_gpu_arch_reaches_every_compiler(engine: str, arch: str) -> None:
    num = re.sub(r"[af]$", "", arch).replace(".", "")
    views = {s.name: VIEWS[engine](s) for s in stages_of("spark", gpu_arch=arch, **{"triton.source": "git"})}
    for name in ("base", "triton", "flashinfer", "vllm"):
        assert dict(views[name].env)["TORCH_CUDA_ARCH_LIST"] == arch
    assert dict(views["flashinfer"].env)["FLASHINFER_CUDA_ARCH_LIST"] == arch
    gencode = f"NVCC_GENCODE=-gencode=arch=compute_{num},code=sm_{num}"
    nccl_steps = [argv for argv, _, _ in views["base"].steps if argv[0] == "make"]
    assert nccl_steps and all(gencode in argv for argv in nccl_steps)
    runtime_env = dict(expected(stage("spark", "runtime", gpu_arch=arch)).env)
    assert "TORCH_CUDA_ARCH_LIST" not in runtime_env  # set on the image itself, last (Output.env)


@pytest.mark.parametrize(("stack", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_both_engines_name_cache_volumes_by_one_rule(stack: str, name: str) -> None:
    """The BuildKit mount id and the Dagger volume key of each cache are the same name, with the
    platform in it once: a volume made by one engine's run is the volume of the other's."""
    s = stage(stack, name)
    arch = s.platform.split("/")[-1]
    mount_ids = re.findall(r"--mount=type=cache,id=([^,]+),", buildkit_dockerfile(s))
    volume_keys = re.findall(
        r'"field": "cacheVolume", "args": \{"key": "([^"]+)"', json.dumps(chain(dagger_chain(s)), default=str)
    )
    assert sorted(set(mount_ids)) == sorted(set(volume_keys)) == sorted(cache_id(s, c) for c in s.caches)
    assert all(k.count(arch) == 1 and k.startswith(f"spark-pipeline-{arch}-") for k in volume_keys)


def test_dagger_rejects_non_string_argv_elements() -> None:
    from pipeline.engines.dagger import _args

    with pytest.raises(TypeError):
        _args(("make", 1))  # type: ignore[arg-type]


def test_dagger_chain_never_asks_for_a_gpu() -> None:
    for stack, name in CASES:
        fields = {sel["field"] for sel in chain(dagger_chain(stage(stack, name)))}
        assert not {f for f in fields if "gpu" in f.lower()}


def test_buildkit_dockerfile_never_contacts_a_registry() -> None:
    for stack, name in CASES:
        text = buildkit_dockerfile(stage(stack, name))
        assert "# syntax" not in text and "--pull" not in text


@pytest.mark.parametrize(("stack", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_dockerfile_snapshots(stack: str, name: str) -> None:
    s = stage(stack, name)
    path = SNAPSHOTS / stack / f"{name}.Dockerfile"
    text = buildkit_dockerfile(s)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with UPDATE_SNAPSHOTS=1 and check it in"
    assert path.read_text() == text, f"{path} differs; UPDATE_SNAPSHOTS=1 after checking the change"


@pytest.mark.parametrize("docker", ["20", "28"])
def test_a_failed_step_is_named_on_each_docker(docker: str) -> None:
    """Real plain-progress output of one failing RUN, from Docker 20.10 (BuildKit built in) and from
    Docker 28.5 (buildx), whose failure lines read differently."""
    from pipeline.engines.buildkit import failed_step

    text = (Path(__file__).parent / "fixtures" / "buildkit" / f"failed-step-docker{docker}.txt").read_text()
    assert failed_step(text) == "[2/3] RUN echo step one (exit code: 1)"


def test_a_failure_before_any_step_says_what_failed() -> None:
    from pipeline.engines.buildkit import failed_step

    text = "#2 ERROR: docker.io/library/nope:1: not found\nERROR: failed to build: failed to solve: nope:1: not found\n"
    assert failed_step(text) == "ERROR: failed to build: failed to solve: nope:1: not found"
    assert failed_step("") == ""


def fake_docker(where: Path, version: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "docker"
    path.write_text(f"#!/bin/sh\necho 'Docker version {version}, build 1234567'\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("path_version", "buildx", "chosen"),
    [
        ("28.5.2", False, "debian"),  # a bare 28 client first on PATH cannot run BuildKit builds
        ("28.5.2", True, "path"),  # docker-ce 28 with buildx, as on a Spark
        ("20.10.24+dfsg1", False, "path"),  # BuildKit built in
    ],
)
def test_the_docker_client_is_chosen_by_what_it_can_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_version: str, buildx: bool, chosen: str
) -> None:
    from pipeline.engines import docker

    on_path = fake_docker(tmp_path / "path", path_version)
    debian = fake_docker(tmp_path / "usr-bin", "20.10.24+dfsg1")
    config = tmp_path / "docker-config"
    if buildx:
        fake_docker(config / "cli-plugins", "0").rename(config / "cli-plugins" / "docker-buildx")
    monkeypatch.setenv("PATH", f"{on_path.parent}:/usr/bin:/bin")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("SPARK_PIPELINE_DOCKER", raising=False)
    monkeypatch.setattr(docker, "DEBIAN_DOCKER", str(debian))
    monkeypatch.setattr(docker, "PLUGIN_DIRS", ())
    docker._detected.cache_clear()
    assert docker.docker_binary() == str(on_path if chosen == "path" else debian)
    monkeypatch.setenv("SPARK_PIPELINE_DOCKER", str(debian))
    assert docker.docker_binary() == str(debian)  # the user's choice wins
    docker._detected.cache_clear()

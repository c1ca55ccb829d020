"""The Dagger engine through the real dagger-io client (its connection, transport, blocking portal and
error payloads) against the stand-in session (tests/standin/dagger_session.py), which validates every
query against the real Dagger 0.21 schema. No Docker here: the stand-in loads no image, and the engine's
local-image lookups answer from a test double. tests/integration/test_dagger_session.py runs the whole
`build --engine dagger` against the same stand-in with Docker.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import anyio
import dagger
import pytest
from beartype.roar import BeartypeCallHintReturnViolation

from pipeline.core.ir import Stage, toolchain_tag
from pipeline.engines import EXCLUDED, StageRun, cache_id
from pipeline.engines.buildkit import BuildKitEngine, _link_tree
from pipeline.engines.dagger import DaggerEngine
from pipeline.errors import EngineUnavailable, StageError, StepFailed
from tests.conftest import REPO, run_cli
from tests.standin.dagger_session import EXPORT_RECORD, Fault, Node, Session
from tests.unit.test_engines import CASES, stage

IMAGE_ID = "sha256:" + "f" * 64


class LocalDocker:
    """Test double for the local Docker the engine reads image IDs from (the stand-in loads nothing)."""

    def image_id(self, ref: str) -> str | None:
        return IMAGE_ID


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    s = Session(docker=None)
    for name, value in s.env().items():  # what `dagger run` sets for its child
        monkeypatch.setenv(name, value)
    yield s
    s.close()


def engine(tmp_path: Path) -> DaggerEngine:
    e = DaggerEngine(tmp_path / "cache")
    e._docker = LocalDocker()  # type: ignore[assignment]
    return e


def a_run(tmp_path: Path, s: Stage) -> StageRun:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return StageRun(
        stage=s,
        key="k" * 64,
        inputs={i.name: tmp_path / "inputs" / i.name for i in s.inputs},
        log=tmp_path / "logs" / f"{s.name}.log",
        build_env=s.build_env,
    )


def build(tmp_path: Path, s: Stage, e: DaggerEngine | None = None) -> DaggerEngine:
    """Run the stage the way the builder does: wheels exported (a toolchain also loaded), images loaded."""
    e = e or engine(tmp_path)
    run = a_run(tmp_path, s)
    try:
        if s.output.kind == "image":
            e.build_image(run, {"io.spark-pipeline.test": "1"}, "{}", "spark-pipeline-test:latest")
        else:
            e.run_stage(run, tmp_path / "out")
            if s.output.kind == "toolchain":
                e.build_toolchain(run, toolchain_tag(s.platform, run.key))
    finally:
        e.close()
    return e


def execs(node: Node) -> list[list[str]]:
    return [list(a["args"]) for n, a in node.chain if n == "withExec"]


@pytest.mark.parametrize(("stack", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_each_stage_sends_valid_queries_and_the_right_export(
    session: Session, tmp_path: Path, stack: str, name: str
) -> None:
    s = stage(stack, name, network=True)
    build(tmp_path, s)
    assert session.invalid == []
    steps = [list(step.argv) for step in s.steps]
    if s.output.kind == "image":
        [image] = session.sent("Container.exportImage")
        assert image.args["name"] == "spark-pipeline-test:latest"
        assert execs(image.node) == steps
        labels = [(a["name"], a["value"]) for n, a in image.node.chain if n == "withLabel"]
        assert labels == [("io.spark-pipeline.test", "1")]
        assert [a["path"] for n, a in image.node.chain if n == "withNewFile"] == [s.output.path]
        assert not session.sent("Directory.export")
    else:
        [out] = session.sent("Directory.export")
        assert out.node.chain[-1][0] == "directory" and out.node.chain[-1][1]["path"] == s.output.path
        assert out.args["path"] == str(tmp_path / "out")
        assert execs(out.node) == steps
        assert json.loads((tmp_path / "out" / EXPORT_RECORD).read_text())["type"] == "Directory"
        loaded = [e.args["name"] for e in session.sent("Container.exportImage")]
        assert loaded == ([toolchain_tag(s.platform, "k" * 64)] if s.output.kind == "toolchain" else [])
    volumes = {a["key"] for e in session.effects for a in _calls(e.node, "cacheVolume")}
    assert volumes == {cache_id(s, c) for c in s.caches}


def _calls(node: Node, name: str) -> list[dict[str, object]]:
    out = [a for n, a in node.chain if n == name]
    for _, args in node.chain:
        for v in args.values():
            if isinstance(v, Node):
                out += _calls(v, name)
    return out


def test_secrets_are_mounted_from_the_environment_never_sent(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    s = dataclasses.replace(stage("spark", "vllm"), secrets=("HF_TOKEN",))
    build(tmp_path, s)
    [export] = session.sent("Directory.export")
    out = export.node
    assert {"uri": "env://HF_TOKEN", "cacheKey": "HF_TOKEN"} in _calls(out, "secret")
    assert [a["path"] for a in _calls(out, "withMountedSecret")] == ["/run/secrets/HF_TOKEN"]
    assert not any("hf_secret_value" in q for q in session.queries)


def test_sdk_export_image_still_needs_the_workaround(session: Session) -> None:
    """dagger-io 0.21.11's export_image raises after the engine loaded the image (see
    DaggerEngine._export_image). When this test fails, dagger-io is fixed: remove the workaround."""

    async def export() -> None:
        async with dagger.connection():
            await dagger.dag.container().from_("debian:bookworm").export_image("spark-pipeline-test:sdk")

    with pytest.raises(BeartypeCallHintReturnViolation, match=r"export_image\(\) return \"None\""):
        anyio.run(export)
    assert session.images == ["spark-pipeline-test:sdk"]  # the engine did load it


def test_each_step_and_its_output_is_in_the_stage_log(session: Session, tmp_path: Path) -> None:
    s = stage("spark", "flashinfer")
    build(tmp_path, s)
    log = (tmp_path / "logs" / "flashinfer.log").read_text()
    for i, step in enumerate(s.steps, 1):
        assert f"== step {i}/{len(s.steps)}: {shlex.join(step.argv)}\n" in log
        assert f"(stand-in combinedOutput of: {' '.join(step.argv)})" in log


def test_older_engine_exits_2_naming_the_versions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = Session(version="v0.21.3", drop_fields=("Container.withVolatileVariable",), docker=None)
    for name, value in old.env().items():
        monkeypatch.setenv(name, value)
    try:
        with pytest.raises(EngineUnavailable) as info:
            engine(tmp_path).check()
        assert info.value.exit_code == 2
        assert "v0.21.3" in str(info.value) and "0.21.4 or newer" in str(info.value) and "0.21.11" in str(info.value)
        proc = run_cli(
            "build", "--engine", "dagger", "--offline", "-f", str(REPO / "build.yaml"), check=2, env=old.env()
        )
        assert "needs engine 0.21.4 or newer" in proc.stderr and "Traceback" not in proc.stderr
        # and why: this schema refuses what every compiling stage sends
        assert old.execute('{ container { withVolatileVariable(name: "A", value: "1") { id } } }', {})["errors"]
    finally:
        old.close()


def test_failing_step_is_a_located_stage_error(session: Session, tmp_path: Path) -> None:
    s = stage("spark", "vllm")
    last = list(s.steps[-1].argv)
    session.faults.append(
        Fault(
            "exec",
            " ".join(last),
            exit_code=3,
            stderr="\n".join(f"line {i}" for i in range(50)) + "\nerror: nvcc failed",
        )
    )
    with pytest.raises(StageError) as info:
        build(tmp_path, s)
    err = info.value
    assert err.stage == "vllm" and err.step_exit_code == 3 and err.step == shlex.join(last)
    assert err.log_tail.splitlines()[-1] == "error: nvcc failed" and len(err.log_tail.splitlines()) == 20
    assert "line 0\n" in (tmp_path / "logs" / "vllm.log").read_text()  # the whole output is in the log


def test_exec_error_without_its_fields_still_names_the_stage(session: Session, tmp_path: Path) -> None:
    s = stage("spark", "triton")
    session.faults.append(Fault("exec", " ".join(s.steps[0].argv), detail=False))
    with pytest.raises(StageError) as info:
        build(tmp_path, s)
    assert info.value.stage == "triton" and "the engine did not say which" in str(info.value)


def test_pull_failure_names_the_image(session: Session, tmp_path: Path) -> None:
    s = stage("spark", "base")
    session.faults.append(Fault("pull", s.base.ref, stderr="pull access denied"))
    with pytest.raises(StageError) as info:
        build(tmp_path, s)
    assert f"cannot get its base image {s.base.ref} from its registry" in str(info.value)
    assert "pull access denied" in str(info.value)


def test_lost_connection_is_not_a_step_failure(session: Session, tmp_path: Path) -> None:
    import dagger

    session.faults.append(Fault("lost-connection", "export"))
    e = engine(tmp_path)
    e.retry = dagger.Retry(execute=False)  # what follows dagger-io's retries, without their 10 s of backoff
    with pytest.raises(StepFailed) as info:
        build(tmp_path, stage("spark", "triton"), e)
    assert not isinstance(info.value, StageError)
    assert "lost the connection to the Dagger engine during stage triton" in str(info.value)


def test_push_goes_through_publish(session: Session, tmp_path: Path) -> None:
    e = engine(tmp_path)
    s = stage("spark", "runtime")
    e.build_image(a_run(tmp_path, s), {}, "{}", "spark-pipeline-test:latest")
    pushed = e.push_image("spark-pipeline-test:latest", "127.0.0.1:5999/vllm-node:test")
    e.close()
    assert pushed == "127.0.0.1:5999/vllm-node:test@sha256:" + "0" * 64
    [published] = session.sent("Container.publish")
    assert published.args["address"] == "127.0.0.1:5999/vllm-node:test"
    assert execs(published.node) == [list(step.argv) for step in s.steps]


def test_network_false_is_refused_by_dagger_only(tmp_path: Path) -> None:
    offline = stage("smoke", "vllm")
    assert not offline.network
    why = DaggerEngine(tmp_path).refuses(offline)
    assert why and "network: false" in why and "--engine buildkit" in why
    assert DaggerEngine(tmp_path).refuses(stage("smoke", "vllm", network=True)) is None
    assert BuildKitEngine(tmp_path).refuses(offline) is None


def test_both_engines_exclude_the_same_inputs(session: Session, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for rel in ("a/.git/HEAD", "a/b.py", ".complete", ".git/config", "sub/.complete", "sub/c.txt"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    _link_tree(tree, tmp_path / "ctx")
    assert sorted(str(p.relative_to(tmp_path / "ctx")) for p in (tmp_path / "ctx").rglob("*") if p.is_file()) == [
        "a/b.py",
        "sub/c.txt",
    ]
    build(tmp_path, stage("spark", "triton"))
    [out] = session.sent("Directory.export")
    assert {tuple(a["exclude"]) for a in _calls(out.node, "directory") if "exclude" in a} == {
        tuple(f"**/{name}" for name in EXCLUDED)
    }


def test_no_engine_message_gives_the_complete_settings(tmp_path: Path) -> None:
    """For real, through the CLI: no session and no runnable CLI here."""
    proc = run_cli(
        "build",
        "--engine",
        "dagger",
        "--offline",
        "-f",
        str(REPO / "build.yaml"),
        check=2,
        env={
            "_EXPERIMENTAL_DAGGER_CLI_BIN": str(tmp_path / "no-such-dagger"),
            "DAGGER_SESSION_PORT": "",
            "DAGGER_SESSION_TOKEN": "",
        },
    )
    assert "cannot use a Dagger engine" in proc.stderr and "--engine buildkit" in proc.stderr
    flat = " ".join(proc.stderr.split())
    assert "_EXPERIMENTAL_DAGGER_RUNNER_HOST=tcp://HOST:PORT" in flat
    assert "_EXPERIMENTAL_DAGGER_RUNNER_IMAGESTORE=docker-image" in flat
    assert "Traceback" not in proc.stderr


def test_auto_picks_dagger_only_inside_a_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.engines import choose

    monkeypatch.delenv("DAGGER_SESSION_PORT", raising=False)
    assert choose("auto") == "buildkit"
    monkeypatch.setenv("DAGGER_SESSION_PORT", "4242")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    assert choose("auto") == "dagger"
    assert choose("buildkit") == "buildkit"


def test_a_missing_secret_stops_the_build_before_its_first_stage(session: Session, smoke: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "build",
        "--engine",
        "dagger",
        "-f",
        str(smoke / "build.yaml"),
        "--set",
        "network=true",
        "--set",
        "secrets=[SPARK_PIPELINE_TEST_SECRET]",
        check=2,
        env={**session.env(), "SPARK_PIPELINE_CACHE": str(tmp_path / "cache")},
    )
    assert "secrets: SPARK_PIPELINE_TEST_SECRET is not set in the environment (stage base needs it)" in proc.stderr
    assert not session.effects and "Traceback" not in proc.stderr  # nothing was built

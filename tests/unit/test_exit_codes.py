"""One error contract: every error class, raised inside a command, reaches the exit code the contract
in pipeline/errors.py gives (2: the user must fix something; 1: a step or node failed; 70: our bug;
130: interrupted), through the real `main`, with a located message and no traceback unless it is a bug."""

from __future__ import annotations

import click
import pytest

from pipeline import cli
from pipeline.errors import (
    ConfigError,
    DockerError,
    EngineUnavailable,
    HostError,
    LaunchFailed,
    NodesFailed,
    SourceError,
    StageError,
    StepFailed,
    StoreError,
    ToolMissing,
)

RAISE: list[BaseException] = []


@click.command()
def boom() -> None:
    """Raises what the test put in RAISE."""
    raise RAISE[0]


CASES: list[tuple[BaseException, int]] = [
    (ConfigError("build.yaml:vllm.ref: expected a branch, tag or 40-hex SHA, got 12"), 2),
    (SourceError("vllm: 'nope' is not a branch, tag or commit of /repo"), 2),
    (ToolMissing("shipping through a registry needs docker-registry (apt-get install docker-registry)"), 2),
    (EngineUnavailable("cannot use a Dagger engine"), 2),
    (StepFailed("debootstrap failed"), 1),
    (StoreError("store entry vllm/abc is unreadable"), 1),
    (DockerError("docker push failed"), 1),
    (StageError("vllm", "docker build exited 1", step="RUN pip wheel", exit_code=1), 1),
    (HostError("spark2", "command failed", remote_status=0), 1),  # a remote status never becomes ours
    (HostError("spark2", "command failed", remote_status=2), 1),
    (HostError("spark2", "command failed", remote_status=70), 1),
    (NodesFailed("status failed on spark2", {"spark2": "unreachable"}), 1),
    (LaunchFailed("spark2: its process exited with status 1", {"spark2": "exited"}), 1),
    (ValueError("a bug in spark-pipeline"), 70),
    (KeyError("another bug"), 70),
    (KeyboardInterrupt(), 130),
]


@pytest.mark.parametrize(("error", "code"), CASES, ids=[f"{type(e).__name__}-{c}" for e, c in CASES])
def test_each_error_class_reaches_its_exit_code(
    error: BaseException, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "boom", (__name__, "boom", "raises"))
    monkeypatch.delenv("SPARK_PIPELINE_DEBUG", raising=False)
    RAISE[:] = [error]
    with pytest.raises(SystemExit) as info:
        cli.main(["boom"])
    assert info.value.code == code
    err = capsys.readouterr().err
    if code == 70:
        assert "Traceback" in err and "internal error" in err
    elif code == 130:
        assert "interrupted" in err
    else:
        assert "Traceback" not in err and err.startswith("error: ")
        assert str(error).splitlines()[0] in " ".join(err.split())


def test_click_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["plan", "--no-such-flag"])
    assert info.value.code == 2 and "No such option" in capsys.readouterr().err


def test_no_bare_base_class_is_raised() -> None:
    """Every raise names what went wrong by its class: a bare PipelineError, UserError or StepFailed
    carries no exit-code decision of its own, and a 'missing tool' raised as one exits 1 instead of 2."""
    import ast
    from pathlib import Path

    bare = {"PipelineError", "UserError", "StepFailed"}
    found = []
    for path in sorted((Path(__file__).resolve().parents[2] / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                fn = node.exc.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                if name in bare:
                    found.append(f"{path.name}:{node.lineno} raise {name}(…)")
    assert not found, found


def test_a_missing_docker_registry_exits_2_at_its_raise_site(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.errors import exit_code
    from pipeline.ship.registry import Registry, collect

    with pytest.raises(ToolMissing) as info:
        Registry(tmp_path, 5999, binary=str(tmp_path / "no-docker-registry")).__enter__()
    assert exit_code(info.value) == 2 and "apt-get install docker-registry" in str(info.value)
    (tmp_path / "storage").mkdir()
    with pytest.raises(ToolMissing):
        collect(tmp_path, binary=str(tmp_path / "no-docker-registry"))

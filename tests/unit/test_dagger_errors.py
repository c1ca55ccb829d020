"""The Dagger engine's error handling. Only the transport is replaced (no engine exists here): a
failing step becomes our StageError with stage, step, exit code and stderr tail; provisioning and
transport failures are told apart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cattrs
import dagger
import pytest
from dagger._exceptions import QueryErrorValue
from dagger.client._core import Context
from gql import GraphQLRequest

from pipeline.engines import StageRun
from pipeline.engines.dagger import DaggerEngine
from pipeline.errors import EngineUnavailable, PipelineError, StageError
from tests.conftest import REPO
from tests.specs import stages as effective_stages


def exec_error(cmd: list[str], code: int, stderr: str) -> dagger.ExecError:
    errors = cattrs.structure([{"message": "process did not complete successfully", "locations": None,
                                "path": None, "extensions": {"_type": "EXEC_ERROR", "cmd": cmd, "exitCode": code,
                                                             "stdout": "", "stderr": stderr}}],
                              list[QueryErrorValue])
    err = dagger.QueryError(errors, GraphQLRequest("query { x }"))
    assert isinstance(err, dagger.ExecError)
    return err


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace the session (no engine needed) and make every query raise what the test sets."""
    state: dict[str, Any] = {"raise": None, "connect": None}

    @contextlib.asynccontextmanager
    async def connection(config: Any = None) -> AsyncIterator[None]:
        if state["connect"] is not None:
            raise state["connect"]
        yield None

    async def execute(self: Context, return_type: Any = None) -> Any:
        raise state["raise"]

    monkeypatch.setattr(dagger, "connection", connection)
    monkeypatch.setattr(Context, "execute", execute)
    return state


def a_run(tmp_path: Path) -> StageRun:
    stage = next(s for s in effective_stages(REPO / "build.yaml") if s.name == "vllm")
    return StageRun(stage=stage, key="k" * 64, inputs={i.name: tmp_path for i in stage.inputs},
                    log=tmp_path / "build.log")


def test_failing_step_becomes_a_stage_error(transport: dict[str, Any], tmp_path: Path) -> None:
    transport["raise"] = exec_error(["python3", "-m", "pip", "wheel", "/src/vllm"], 1,
                                    "\n".join(f"line {i}" for i in range(50)) + "\nerror: nvcc failed")
    engine = DaggerEngine(tmp_path)
    with pytest.raises(StageError) as info:
        engine.run_stage(a_run(tmp_path), tmp_path / "out")
    engine.close()
    err = info.value
    assert err.stage == "vllm" and err.step_exit_code == 1
    assert err.step == "python3 -m pip wheel /src/vllm"
    assert err.log_tail.splitlines()[-1] == "error: nvcc failed" and len(err.log_tail.splitlines()) == 20


def test_lost_transport_is_not_a_stage_failure(transport: dict[str, Any], tmp_path: Path) -> None:
    transport["raise"] = dagger.TransportError("Connection to engine has been closed")
    engine = DaggerEngine(tmp_path)
    with pytest.raises(PipelineError) as info:
        engine.run_stage(a_run(tmp_path), tmp_path / "out")
    engine.close()
    assert not isinstance(info.value, StageError)
    assert "lost the connection to the Dagger engine during stage vllm" in str(info.value)


def test_provisioning_failure_says_what_to_install(transport: dict[str, Any], tmp_path: Path) -> None:
    transport["connect"] = dagger.ProvisionError("Failed to download the Dagger CLI")
    engine = DaggerEngine(tmp_path)
    with pytest.raises(EngineUnavailable) as info:
        engine.check()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "Failed to download the Dagger CLI" in message
    assert "dagger run" in message and "_EXPERIMENTAL_DAGGER_RUNNER_HOST" in message and "0.21.11" in message


def test_engine_dagger_without_any_engine_exits_2(tmp_path: Path) -> None:
    """For real, through the CLI: no session and no downloadable CLI here."""
    from tests.conftest import run_cli

    bad_bin = tmp_path / "no-such-dagger"
    proc = run_cli("build", "--engine", "dagger", "--offline", "-f", str(REPO / "build.yaml"), check=2,
                   env={"_EXPERIMENTAL_DAGGER_CLI_BIN": str(bad_bin), "DAGGER_SESSION_PORT": "",
                        "DAGGER_SESSION_TOKEN": ""})
    assert "cannot use a Dagger engine" in proc.stderr and "--engine buildkit" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_auto_picks_dagger_only_inside_a_session(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.engines import choose

    monkeypatch.delenv("DAGGER_SESSION_PORT", raising=False)
    assert choose("auto") == "buildkit"
    monkeypatch.setenv("DAGGER_SESSION_PORT", "4242")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    assert choose("auto") == "dagger"
    assert choose("buildkit") == "buildkit"

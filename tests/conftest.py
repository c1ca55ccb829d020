"""Shared fixtures. Every test gets its own cache dir (mirrors, store) so nothing leaks between tests
or from the user's ~/.cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess as _subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import fixtures  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--keep-testbed", action="store_true", help="Keep docker daemons/test hosts of a failed run.")


@pytest.fixture(scope="session")
def uv_answers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """uv's answers over local wheel directories, kept under their content's digest (pipeline/sources/
    pyresolve.py): a function of that content only, so one test's answer serves every test asking the same."""
    return tmp_path_factory.mktemp("pyresolve")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, uv_answers: Path) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    (cache / "pyresolve").symlink_to(uv_answers)
    monkeypatch.setenv("SPARK_PIPELINE_CACHE", str(cache))
    monkeypatch.delenv("SPARK_PIPELINE_STORE", raising=False)
    monkeypatch.delenv("SPARK_PIPELINE_DEBUG", raising=False)
    return cache


@pytest.fixture(scope="session")
def smoke_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixture sources generated once per session; tests copy them before changing anything."""
    root = tmp_path_factory.mktemp("smoke-template")
    fixtures.generate(root)
    return root


@pytest.fixture
def smoke(tmp_path: Path, smoke_template: Path) -> Path:
    """A private copy of the smoke fixtures (repos, torch index, build.yaml)."""
    dest = tmp_path / "smoke"
    shutil.copytree(smoke_template, dest, symlinks=True)
    return dest


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: int | None = 0,
    subprocess: bool = False,
) -> _subprocess.CompletedProcess[str]:
    """Run the command line with ARGS the way a user does; returns stdout/stderr/returncode.

    In this process by default (pipeline.cli.main with its own cwd, environment, stdout and stderr: a
    tenth of a subprocess's cost); `subprocess=True` starts `python -m pipeline` for the few tests that
    are about the process itself (start-up, signals, imports)."""
    proc = _run_subprocess(args, cwd, env) if subprocess else _run_in_process(args, cwd, env)
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"exit {proc.returncode} (wanted {check}) for {args}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def _run_subprocess(
    args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None
) -> _subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    return _subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _run_in_process(
    args: tuple[str, ...], cwd: Path | None, env: dict[str, str] | None
) -> _subprocess.CompletedProcess[str]:
    import contextlib
    import io
    import traceback

    from pipeline.cli import main
    from pipeline.cli.console import console

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_size = dict(os.environ), os.getcwd(), (console._width, console._height)
    os.environ.update({**(env or {}), "COLUMNS": "200"})
    console._width, console._height = 200, 50  # both: rich ignores a width alone on a TERM=dumb terminal (CI)
    code = 0
    try:
        os.chdir(cwd or REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # what an uncaught exception does to a real process
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        console._width, console._height = saved_size
    return _subprocess.CompletedProcess(["python", "-m", "pipeline", *args], code, out.getvalue(), err.getvalue())


def plan_json(*args: str, **kw: Any) -> dict[str, Any]:
    proc = run_cli("plan", "--json", *args, **kw)
    return json.loads(proc.stdout)


@pytest.fixture
def cli() -> Iterator[Any]:
    yield run_cli

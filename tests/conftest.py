"""Shared fixtures. Every test gets its own cache dir (mirrors, store) so nothing leaks between tests
or from the user's ~/.cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
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


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ARGS` the way a user does; returns stdout/stderr/returncode."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"exit {proc.returncode} (wanted {check}) for {args}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def plan_json(*args: str, **kw: Any) -> dict[str, Any]:
    proc = run_cli("plan", "--json", *args, **kw)
    return json.loads(proc.stdout)


@pytest.fixture
def cli() -> Iterator[Any]:
    yield run_cli

"""The package installs: a wheel built from the checkout, installed into a fresh venv, works from any
directory without the checkout: the recipes, the default build.yaml, the mods and the docker-contexts
travel inside it (package data), and what the working directory holds still wins."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the wheel (its dependencies come from this interpreter's site-packages, so the
    test needs no second download of dagger-io, fabric and the rest); returns the venv's bin/."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(root / "dist")],
        check=True,
        timeout=600,
        cwd=root,
    )
    [wheel] = list((root / "dist").glob("spark_pipeline-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root / "venv")], check=True)
    subprocess.run(
        [str(root / "venv/bin/python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300
    )
    return root / "venv" / "bin"


def tool(bin_dir: Path, *args: str, cwd: Path, check: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(bin_dir / "spark-pipeline"), *args],
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == check, f"exit {proc.returncode} for {args}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_installed_tool_runs_without_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import pipeline; print(pipeline.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert str(REPO) not in where and "site-packages" in where

    recipes = json.loads(tool(installed, "recipe", "list", "--json", cwd=tmp_path).stdout)
    assert len(recipes) >= 10 and all(str(REPO) not in r["file"] for r in recipes)
    assert {r["name"] for r in recipes} >= {p.stem for p in (REPO / "recipes").glob("*.yaml")}

    stages = json.loads(tool(installed, "stages", "--json", cwd=tmp_path).stdout)
    assert [s["stage"] for s in stages] == ["base", "triton", "flashinfer", "vllm", "runtime"]

    # plan with no -f takes the tool's own build.yaml: offline and with no mirror, it stops at the first
    # source it lacks (not at a missing build.yaml)
    proc = tool(installed, "plan", "--offline", cwd=tmp_path, check=2)
    assert "vllm: no mirror of https://github.com/vllm-project/vllm.git" in proc.stderr


def test_the_installed_tool_plans_with_its_own_docker_contexts(installed: Path, smoke: Path, tmp_path: Path) -> None:
    """The smoke build.yaml's folder has no docker-contexts/vllm: the installed tool's packaged one is
    used, with the same content (the same keys) as the checkout's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    got = json.loads(tool(installed, "plan", "--json", "-f", str(smoke / "build.yaml"), cwd=elsewhere).stdout)
    want = json.loads(run_cli("plan", "--json", "-f", str(smoke / "build.yaml")).stdout)
    assert [(s["stage"], s["key"]) for s in got["stages"]] == [(s["stage"], s["key"]) for s in want["stages"]]


def test_the_working_directory_wins(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    shutil.copy(REPO / "recipes" / "qwen3-8b.yaml", tmp_path / "recipes" / "mine.yaml")
    names = {r["name"] for r in json.loads(tool(installed, "recipe", "list", "--json", cwd=tmp_path).stdout)}
    assert "mine" in names and "qwen3-8b" in names
    (tmp_path / "build.yaml").write_text("gpu_ach: 12.1a\n")
    proc = tool(installed, "plan", "--offline", cwd=tmp_path, check=2)
    assert "build.yaml:gpu_ach: unknown key" in proc.stderr

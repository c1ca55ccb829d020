"""Every example in the tool's `--help` texts parses as the command it claims to be (a flag after `--`
goes to vLLM, not to us: an example meant as a dry run must be one), and the deploy examples run, as
dry runs planned from saved facts, for the parse-only addresses they name, opening no connection."""

from __future__ import annotations

import json
import re
import shlex
import socket
from pathlib import Path

import click
import pytest
import yaml

from pipeline.cli import cli, main
from tests.conftest import REPO

LAYOUT = REPO / "tests" / "unit" / "fixtures" / "layouts" / "twins-one-subnet.json"
PREFIX = re.compile(r"^\s*(?:dagger run )?python -m pipeline (.*?)(?:\s+#.*)?$")


def help_texts() -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(cmd: click.Command, ctx: click.Context, path: str) -> None:
        out[path] = cmd.get_help(ctx)
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk(sub, click.Context(sub, info_name=name, parent=ctx), f"{path} {name}".strip())

    walk(cli, click.Context(cli, info_name="pipeline"), "")
    return out


EXAMPLES = sorted({m[1] for text in help_texts().values() for line in text.splitlines() if (m := PREFIX.match(line))})


def parse(args: list[str]) -> tuple[str, click.Context]:
    cmd: click.Command = cli
    ctx = cli.make_context("pipeline", list(args))
    name = "pipeline"
    while isinstance(cmd, click.Group):
        sub_name, sub, rest = cmd.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])
        assert sub is not None and sub_name is not None
        cmd, name = sub, sub_name
        ctx = sub.make_context(sub_name, rest, parent=ctx)
    return name, ctx


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 6 and any(e.startswith("deploy ") for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_parses_as_meant(example: str) -> None:
    name, ctx = parse(shlex.split(example))
    if "--dry-run" in example:
        assert ctx.params.get("dry_run") is True, f"--dry-run in {example!r} does not reach {name}"
    for flag in re.findall(r"(?<=\s)--?[a-z][\w-]*", example.split(" -- ")[0]):
        assert flag in {o for p in ctx.command.params for o in p.opts}, (example, flag)


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.startswith(("deploy ", "recipe run "))])
def test_deploy_example_runs_as_a_dry_run(
    example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = json.loads(LAYOUT.read_text())
    facts = case["facts"]
    for entry, address in zip(facts["nodes"], ("192.168.100.10", "192.168.100.11"), strict=True):
        entry["node"] = entry["address"] = address  # the addresses the examples name (never contacted)
    (tmp_path / "cluster.yaml").write_text(
        yaml.safe_dump({"nodes": [{"address": "192.168.100.10"}, {"address": "192.168.100.11"}]})
    )
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARK_PIPELINE_CACHE", str(tmp_path / "cache"))

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"the example opened a connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    args = shlex.split(example)
    cut = args.index("--") if "--" in args else len(args)
    extra = ["--facts", "facts.json"] + ([] if "--dry-run" in args else ["--dry-run"])
    try:
        main([*args[:cut], *extra, *args[cut:]])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err
    assert "deploy plan" in capsys.readouterr().err

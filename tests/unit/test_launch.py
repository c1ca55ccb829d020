"""The launch plan, one fixture file per case; and argv quoting of hostile values (hypothesis)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.launch.plan import NodeInput, Options, parallelism, plan

CASES = sorted((Path(__file__).parent / "fixtures" / "launch").glob("*.json"))


def load(case: dict) -> tuple[list[NodeInput], Options]:
    nodes = [
        NodeInput(
            name=n["name"],
            address=n["address"],
            eth_if=n["eth_if"],
            ib_if=tuple(n["ib_if"]),
            ip=n.get("ip"),
            home=n.get("home", "/root"),
        )
        for n in case["nodes"]
    ]
    o = dict(case["options"])
    o["command"] = tuple(o["command"])
    if "env" in o:
        o["env"] = tuple(tuple(kv) for kv in o["env"])
    return nodes, Options(**o)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_launch_plan(path: Path) -> None:
    case = json.loads(path.read_text())
    nodes, opts = load(case)
    want = case["expect"]
    if "error" in want:
        with pytest.raises(ConfigError, match=want["error"].replace("(", r"\(").replace(")", r"\)")):
            plan(nodes, opts)
        return
    p = plan(nodes, opts)
    assert p.mode == want["mode"]
    assert list(p.notes) == want.get("notes", [])
    if "port" in want:
        assert p.port == want["port"]
    assert len(p.nodes) == len(want["nodes"])
    for got, exp in zip(p.nodes, want["nodes"], strict=True):
        assert (got.role, got.rank) == (exp["role"], exp["rank"])
        env = dict(got.env)
        for k, v in exp.get("env_has", {}).items():
            assert env.get(k) == v, (k, env.get(k))
            assert f"{k}={v}" in got.run_argv
        for item in exp.get("run_has", []):
            assert any(item in a for a in got.run_argv), item
        for item in exp.get("run_lacks", []):
            assert item not in got.run_argv
        if "start" in exp:
            assert [list(s) for s in got.start] == exp["start"]
        assert got.run_argv[-3:] == (opts.image, "sleep", "infinity")
        assert any(a.startswith("io.spark-pipeline.deploy=") for a in got.run_argv)


def test_deploy_hash_follows_the_image_and_the_plan() -> None:
    nodes = [NodeInput(name="a", address="10.0.0.1", eth_if="eth0")]
    base = Options(image="vllm-node", command=("vllm", "serve", "m"), image_id="sha256:1")
    h = plan(nodes, base).head.deploy_hash
    assert plan(nodes, base).head.deploy_hash == h
    assert plan(nodes, Options(**{**base.__dict__, "image_id": "sha256:2"})).head.deploy_hash != h
    assert plan(nodes, Options(**{**base.__dict__, "command": ("vllm", "serve", "n")})).head.deploy_hash != h


@pytest.mark.parametrize(
    ("cmd", "want"),
    [
        (("vllm", "serve", "m"), None),
        (("vllm", "serve", "m", "-tp", "2", "-pp", "2"), 4),
        (("vllm", "serve", "m", "--tensor-parallel-size=2", "--data-parallel-size", "3"), 6),
    ],
)
def test_parallelism(cmd: tuple[str, ...], want: int | None) -> None:
    assert parallelism(cmd) == want


hostile = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(model=hostile.filter(lambda m: not m.startswith("-")), value=hostile)  # "-dp" is a flag, refused
def test_hostile_values_survive_shlex_quoting(model: str, value: str) -> None:
    """What reaches the remote shell is shlex.join(argv): splitting it back gives the same argv."""
    nodes = [NodeInput(name="a", address="10.0.0.1", eth_if="eth0")]
    p = plan(nodes, Options(image="vllm-node", command=("vllm", "serve", model), env=(("X", value),)))
    for argv in (p.head.run_argv, *p.head.start):
        assert shlex.split(shlex.join(argv)) == list(argv)
    assert f"X={value}" in p.head.run_argv and model in p.head.start[0]


def test_command_of_shows_what_runs_in_the_container() -> None:
    from pipeline.launch.plan import command_of

    p = plan(
        [NodeInput(name="a", address="10.0.0.1", eth_if="eth0")],
        Options(image="vllm-node", command=("vllm", "serve", "m")),
    )
    assert command_of(p.head.start[0]) == ("vllm", "serve", "m")


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_each_node_gets_its_own_cache_folder_whatever_its_name(a: str, b: str) -> None:
    """Compile caches are mounted per node (launch/plan.py cache_dirs): two nodes sharing a home never share
    a file; the folder is one path part."""
    from pipeline.launch.plan import node_folder

    fa, fb = node_folder(a), node_folder(b)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", fa) and fa not in (".", "..")
    assert (fa == fb) == (a == b)

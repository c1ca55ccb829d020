"""Golden output (the Ray launcher's way): what a user reads from `plan`, from `deploy --dry-run` and
from `build`'s closing table is pinned in tests/golden/, with keys and SHAs normalized; and the README
shows the same text. A golden file records change; each test also asserts what the text must say.

UPDATE_GOLDEN=1 rewrites the files (check the diff before committing it).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from rich.console import Console

from examples.smoke import fixtures
from pipeline.launch.plan import NodeInput, Options, plan
from pipeline.launch.steps import Inputs, ModRef, StepFacts, steps
from pipeline.store import Store
from tests.conftest import run_cli
from tests.golden_text import check, readme_blocks


def test_plan_says_why_each_stage_must_build(smoke: Path, isolated_cache: Path) -> None:
    build = str(smoke / "build.yaml")
    run_cli("plan", "--write-lock", "-f", build)
    keys = {s["stage"]: s["key"] for s in json.loads(run_cli("plan", "--json", "-f", build).stdout)["stages"]}
    store = Store(isolated_cache / "store")
    for stage in ("base", "triton", "flashinfer"):  # as if a build had stored them
        staging = store.staging_dir(stage)
        (staging / "stand-in.whl").write_text("test entry\n")
        store.commit(stage, keys[stage], staging, {"engine": "test"})
    fixtures.commit(smoke / "repos" / "vllm", {"vllm/new.py": "X = 1\n"}, "vllm moved")
    out = run_cli("plan", "-f", build, env={"COLUMNS": "120"}).stderr
    got = check("plan-after-vllm-moved.txt", out)
    assert re.search(r"│ 4 │ vllm +│ <key> │ build +│ vllm\.ref main: <sha> → <sha> │", got)
    assert re.search(r"│ 5 │ runtime +│ <key> │ build +│ upstream vllm rebuilt", got)
    assert got.count("cached") == 3 and "2 of 5 stages to build" in got
    assert got in readme_blocks(), "README.md must show this plan output as it is"


def dry_run_text() -> str:
    from pipeline.cli.launching import plan_table

    nodes = [
        NodeInput(
            name=f"spark{i}",
            address=f"192.168.100.1{i}",
            eth_if="enp1s0f1np1",
            ib_if=("rocep1s0f1", "roceP2p1s0f1"),
            ip=f"192.168.100.1{i}",
            home="/home/me",
        )
        for i in (1, 2)
    ]
    p = plan(
        nodes,
        Options(
            image="vllm-node",
            command=("vllm", "serve", "org/model", "-tp", "2"),
            image_id="sha256:" + "a" * 64,
            mods=("drop-caches:0123456789abcdef",),
        ),
    )
    facts = {"spark1": StepFacts(home="/home/me", image_id="sha256:" + "a" * 64), "spark2": StepFacts(home="/home/me")}
    todo = steps(
        p,
        Inputs(
            image="vllm-node",
            local_image_id="sha256:" + "a" * 64,
            facts=facts,
            mods=(ModRef("drop-caches", "mods/drop-caches", "0123456789abcdef"),),
        ),
    )
    out = io.StringIO()
    Console(file=out, width=140, highlight=False).print(plan_table(p))
    return out.getvalue() + "\n".join(todo.lines())


def test_deploy_dry_run_lists_every_command_per_node() -> None:
    got = check("deploy-dry-run.txt", dry_run_text())
    assert "spark1: nothing to do, because it has vllm-node" in got
    assert "spark2: ship vllm-node (registry)" in got
    for node in ("spark1", "spark2"):
        for what in (
            "mkdir -p /home/me/.cache/huggingface",
            "docker rm -f vllm_node",
            "docker run -d --pull=never",
            "upload mods/drop-caches -> /home/me/.spark-pipeline/mods/drop-caches-0123456789abcdef",
            "docker cp",
            "rm -rf /home/me/.spark-pipeline/mods/drop-caches-0123456789abcdef",
        ):
            assert f"{node}: {what}" in got, (node, what)
    order = [line.split("] ", 1)[1] for line in got.splitlines() if line.startswith("[")]
    assert order == [
        "ship vllm-node to the nodes that lack it",
        "start the vllm_node containers (noray)",
        "mods: drop-caches",
        "check that every worker reaches the master address 192.168.100.11:29501",
        "start the worker ranks (headless) before rank 0",
        "start the command",
        "wait for http://192.168.100.11:8000/health",
    ]
    assert got in readme_blocks(), "README.md must show this dry-run output as it is"

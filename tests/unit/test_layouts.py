"""Interface layouts Spark owners run, planned offline from saved facts (the format `doctor
--save-facts` writes, read by `deploy --dry-run --facts`): one fixture per layout under
fixtures/layouts/, with the per-node environment expected or the error that names the node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.cluster import ClusterSpec
from pipeline.deploy.service import Deployer, DeployRequest
from pipeline.errors import LaunchFailed
from pipeline.launch.secrets import Secrets
from pipeline.nodes.factsfile import from_json
from pipeline.report import ListReporter

CASES = sorted((Path(__file__).parent / "fixtures" / "layouts").glob("*.json"))


class LocalDocker:
    def content_id(self, ref: str) -> str:
        return "sha256:" + "a" * 64


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_layout(path: Path) -> None:
    case = json.loads(path.read_text())
    spec = ClusterSpec.model_validate(case["cluster"])
    facts = from_json(case["facts"], spec, path.name)
    deployer = Deployer(spec, reporter=ListReporter(), docker=LocalDocker())  # type: ignore[arg-type]
    request = DeployRequest(command=tuple(case["command"]))
    want = case["expect"]
    if "error" in want:
        with pytest.raises(LaunchFailed) as info:
            deployer.plan(request, [], Secrets(), facts)
        for line in want["error"]:
            assert line in str(info.value), (path.stem, str(info.value))
        assert set(info.value.failures) == {line.split(":", 1)[0] for line in want["error"]}
        return
    dp = deployer.plan(request, [], Secrets(), facts)
    assert dp.launch.head.ip == want["master"]
    for w in want.get("warnings", []):
        assert any(got.startswith(w) for got in dp.warnings), (w, dp.warnings)
    for node in dp.launch.nodes:
        env = dict(node.env)
        for key, value in want["nodes"].get(node.name, {}).items():
            assert env.get(key) == value, (path.stem, node.name, key, env.get(key))
    if len(dp.launch.nodes) > 1 and dp.launch.mode == "noray":
        for node in dp.launch.nodes:
            starts = " ".join(" ".join(s) for s in node.start)
            assert f"--master-addr {want['master']} " in starts, starts


def test_facts_round_trip_through_the_saved_format() -> None:
    """What doctor saves is what deploy --facts reads back: the same facts, parsed the same way."""
    from pipeline.nodes.factsfile import to_json

    case = json.loads(CASES[0].read_text())
    spec = ClusterSpec.model_validate(case["cluster"])
    facts = from_json(case["facts"], spec, "x")
    again = from_json(json.loads(json.dumps(to_json(facts))), spec, "y")
    assert [(f.ifaces, f.links, f.gpus, f.image_id, f.home) for f in again] == [
        (f.ifaces, f.links, f.gpus, f.image_id, f.home) for f in facts
    ]


def test_dry_run_from_saved_facts_contacts_no_node(tmp_path: Path) -> None:
    """For real, through the CLI, in a process where every network connection fails and is logged."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    case = json.loads((CASES[0].parent / "twins-one-subnet.json").read_text())
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(case["cluster"]))
    (tmp_path / "facts.json").write_text(json.dumps(case["facts"]))
    log = tmp_path / "connections.log"
    env = {
        **os.environ,
        "NO_NETWORK_LOG": str(log),
        "PYTHONPATH": f"{REPO / 'tests' / 'standin' / 'no_network'}:{REPO}",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "deploy",
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--facts",
            str(tmp_path / "facts.json"),
            "--dry-run",
            "--json",
            "--",
            *case["command"],
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [n["env"]["NCCL_SOCKET_IFNAME"] for n in plan["nodes"]] == ["enp1s0f1np1", "enp1s0f1np1"]
    assert not log.exists(), log.read_text()
    # and the guard works: the same without --facts tries the nodes, and is refused
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "deploy",
            "--cluster",
            str(tmp_path / "cluster.yaml"),
            "--connect-timeout",
            "2",
            "--dry-run",
            "--",
            *case["command"],
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert "192.168.1.10" in log.read_text()

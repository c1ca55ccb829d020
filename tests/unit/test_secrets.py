"""Secrets from every place a user can set them (this environment, -e, cluster.yaml container_env, a
node's env; HF_TOKEN, HUGGING_FACE_HUB_TOKEN and names listed under cluster.yaml `secrets`) reach the
containers only through each node's 0600 env file: the scan finds no value in any argv, the dry-run
listing, the --json plan or the deploy hashes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config.cluster import ClusterSpec
from pipeline.deploy.service import Deployer, DeployRequest
from pipeline.nodes.factsfile import from_json
from pipeline.report import ListReporter
from tests.conftest import REPO

LAYOUT = Path(__file__).parent / "fixtures" / "layouts" / "twins-one-subnet.json"
VALUES = {
    "env": "hf_from_environment_1111",
    "container_env": "hf_from_container_env_2222",
    "flag": "hf_from_dash_e_3333",
    "node": "node_only_secret_4444",
}


class LocalDocker:
    def content_id(self, ref: str) -> str:
        return "sha256:" + "a" * 64


def cluster() -> dict[str, object]:
    data = json.loads(LAYOUT.read_text())["cluster"]
    data["container_env"] = {"HUGGING_FACE_HUB_TOKEN": VALUES["container_env"], "PLAIN": "shown"}
    data["nodes"][1]["env"] = {"WANDB_API_KEY": VALUES["node"]}
    data["secrets"] = ["WANDB_API_KEY"]
    return data


def test_secrets_from_every_source_reach_only_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", VALUES["env"])
    spec = ClusterSpec.model_validate(cluster())
    case = json.loads(LAYOUT.read_text())
    request = DeployRequest(command=tuple(case["command"]), env=(f"HF_TOKEN={VALUES['flag']}",))
    secrets = request.secrets(spec)
    assert secrets.for_node("spark1") == {"HF_TOKEN": VALUES["flag"], "HUGGING_FACE_HUB_TOKEN": VALUES["container_env"]}
    assert secrets.for_node("spark2")["WANDB_API_KEY"] == VALUES["node"]
    dp = Deployer(spec, reporter=ListReporter(), docker=LocalDocker()).plan(  # type: ignore[arg-type]
        request, [], secrets, from_json(case["facts"], spec, "facts")
    )
    shown = json.dumps({**dp.launch.to_json(), "steps": dp.steps.to_json()}) + "\n".join(dp.steps.lines())
    shown += " ".join(n.deploy_hash for n in dp.launch.nodes)
    for value in VALUES.values():
        assert value not in shown
    assert "-e PLAIN=shown" in shown  # ordinary variables stay in argv
    writes = [c for ph in dp.steps.phases for ns in ph.nodes for c in ns.commands if c.kind == "write-secrets"]
    assert {c.names for c in writes} == {("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")}


def test_cli_dry_run_shows_no_secret_value(tmp_path: Path) -> None:
    case = json.loads(LAYOUT.read_text())
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster()))
    (tmp_path / "facts.json").write_text(json.dumps(case["facts"]))
    env = {**os.environ, "HF_TOKEN": VALUES["env"], "PYTHONPATH": str(REPO)}
    for extra in ([], ["--json"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "deploy",
                "--cluster",
                "cluster.yaml",
                "--facts",
                "facts.json",
                "--dry-run",
                *extra,
                "-e",
                f"HF_TOKEN={VALUES['flag']}",
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
        for value in VALUES.values():
            assert value not in proc.stdout + proc.stderr

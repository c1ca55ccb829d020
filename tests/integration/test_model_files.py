"""Models on the three test hosts, from the stand-in hub on loopback: `model download` fetches, and
`model copy` sends, only the shards and the small files of a repository that also holds `original/` and
a `.bin` set; `model verify` names a node whose shard was damaged (same size: every byte is read) and one
whose shard was cut short; `deploy` refuses both before any rank starts (the short one from its listing,
the damaged one from the last verify's record); `model copy --verify` repairs both by resending that
shard only, and deploy plans again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.modelrepo import LEFT, REPO, SHARDS, write_repo
from tests.standin.hf_hub import HubStandin
from tests.testbed.testbed import Testbed

pytestmark = pytest.mark.docker
SHARD = "model-00002-of-00003.safetensors"


def node_repo(testbed: Testbed, i: int) -> Path:
    return testbed.nodes[i].dir / "fs/root/.cache/huggingface/hub" / f"models--{REPO.replace('/', '--')}"


def test_only_what_vllm_loads_is_moved_verified_and_repaired(testbed: Testbed, tmp_path: Path) -> None:
    write_repo(tmp_path / "repos")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(testbed.cluster()))
    with HubStandin(tmp_path / "repos") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        env["SPARK_PIPELINE_CACHE"] = str(tmp_path / "cache")
        got = json.loads(
            run_cli("model", "download", REPO, "--cluster", str(cluster), "--json", env=env, subprocess=True).stdout
        )
        fetched = hub.state.sent_bytes()
    shards = sum(SHARDS.values())
    assert shards <= fetched < shards + (64 << 10) and got["left_out_bytes"] > sum(LEFT.values())
    assert [c["node"] for c in got["copies"]] == ["h1", "h2", "h3"]
    # each node gets the shards and the small files (rsync adds its protocol's few KB)
    assert all(got["bytes"] <= c["sent_bytes"] < shards + (64 << 10) for c in got["copies"])
    for i in range(3):
        held = {p.name for p in node_repo(testbed, i).glob("snapshots/*/**/*")}
        assert SHARD in held and not held & {"original", *(n.split("/")[-1] for n in LEFT)}

    damaged = next(node_repo(testbed, 1).glob(f"snapshots/*/{SHARD}")).resolve()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))  # h2: same size, one byte changed
    short = next(node_repo(testbed, 2).glob(f"snapshots/*/{SHARD}")).resolve()
    short.write_bytes(short.read_bytes()[: 1 << 20])  # h3: cut short
    verify = ["model", "verify", REPO, "--cluster", str(cluster), "--json"]
    bad = run_cli(*verify, env=env, subprocess=True, check=1)
    assert {r["node"]: (r["missing"], r["damaged"]) for r in json.loads(bad.stdout)} == {
        "h1": ([], []),
        "h2": ([], [SHARD]),
        "h3": ([SHARD], []),
    }

    deploy = ["deploy", "--dry-run", "--cluster", str(cluster), "--", "vllm", "serve", REPO, "-tp", "3"]
    refused = run_cli(*deploy, env=env, subprocess=True, check=1)
    assert f"h3: model {REPO}: 1 file(s) missing, partial or of another revision: {SHARD}" in refused.stderr
    # h2's damage has h2's size: the listing cannot see it, the last verify's record can
    assert f"h2: model {REPO}: `model verify` found 1 damaged file(s): {SHARD}" in refused.stderr
    assert "h1: model" not in refused.stderr

    fixed = json.loads(
        run_cli(
            "model",
            "copy",
            REPO,
            "--verify",
            "--via",
            "tar",
            "--cluster",
            str(cluster),
            "--json",
            env=env,
            subprocess=True,
        ).stdout
    )
    assert {r["node"]: (r["repaired"], r["sent_bytes"]) for r in fixed} == {
        "h1": (0, 0),
        "h2": (1, SHARDS[SHARD]),
        "h3": (0, SHARDS[SHARD]),
    }
    assert all(
        not r["missing"] and not r["damaged"] for r in json.loads(run_cli(*verify, env=env, subprocess=True).stdout)
    )
    assert "deploy plan" in run_cli(*deploy, env=env, subprocess=True).stderr

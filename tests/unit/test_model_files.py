"""`model download` fetches, and `model copy` sends, only the files vLLM loads (pipeline/model/select.py),
against the stand-in hub on loopback: a repository with safetensors shards and their index, Meta's
`original/` checkpoint and a `.bin` set beside them, as many hub repositories hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli as _run_cli
from tests.modelrepo import LEFT, REPO, SHARDS, SMALL, write_repo
from tests.standin.hf_hub import HubStandin


def run_cli(*args: str, **kw: Any) -> Any:
    return _run_cli(*args, subprocess=True, **kw)  # huggingface_hub reads HF_* once, at import


@pytest.fixture
def hub(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_repo(tmp_path / "repos")
    with HubStandin(tmp_path / "repos") as h:
        yield h


def env_for(hub: HubStandin, tmp_path: Path) -> dict[str, str]:
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HOME": str(tmp_path / "node-home"),
        "SPARK_PIPELINE_CACHE": str(tmp_path / "cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": "",
    }


def test_download_and_copy_move_only_the_shards_and_the_small_files(hub: HubStandin, tmp_path: Path) -> None:
    env = env_for(hub, tmp_path)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - address: 127.0.0.1\n    name: here\n    transport: local\n")
    got = json.loads(run_cli("model", "download", REPO, "--cluster", str(cluster), "--json", env=env).stdout)
    left = {e["path"] for e in got["left_out"]}
    assert left == {*LEFT, "original/params.json", "pytorch_model.bin.index.json"}
    assert got["weights"] == "safetensors by model.safetensors.index.json (3 files)"
    assert (
        got["left_out_bytes"]
        == sum(LEFT.values())
        + len('{"dim": 4096}')
        + (tmp_path / "repos" / REPO / "pytorch_model.bin.index.json").stat().st_size
    )
    shards = sum(SHARDS.values())
    # the hub sent the shards and the small files, nothing of original/ or the .bin set
    assert shards <= hub.state.sent_bytes() < shards + 64 * 1024
    assert not [h.path for h in hub.state.hits if "/resolve/" in h.path and ("original" in h.path or ".bin" in h.path)]
    snap = Path(got["path"])
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == sorted(
        [*SHARDS, *SMALL, "model.safetensors.index.json"]
    )
    assert got["copies"][0]["sent_bytes"] == got["bytes"] and shards <= got["bytes"] < shards + 64 * 1024
    listed = json.loads(run_cli("model", "ls", "--json", env=env).stdout)
    assert [r["left_out_bytes"] for r in listed if r["repo"] == REPO] == [got["left_out_bytes"]]
    ls = run_cli("model", "ls", env={**env, "COLUMNS": "200"})
    text = ls.stdout + ls.stderr
    assert "left out 5 file(s)" in text and "original/" in text

    # --all-files fetches the rest; a later copy still sends only what vLLM loads
    every = json.loads(run_cli("model", "download", REPO, "--all-files", "--json", env=env).stdout)
    assert every["files"] == len(SHARDS) + len(SMALL) + len(LEFT) + 3 and every["left_out"] == []
    again = json.loads(run_cli("model", "copy", REPO, "--cluster", str(cluster), "--json", env=env).stdout)
    assert again[0]["sent_bytes"] == 0
    node = tmp_path / "node-home/.cache/huggingface/hub" / f"models--{REPO.replace('/', '--')}"
    assert not list(node.glob("snapshots/*/original")) and not list(node.glob("snapshots/*/*.bin"))
    full = json.loads(
        run_cli("model", "copy", REPO, "--all-files", "--cluster", str(cluster), "--json", env=env).stdout
    )
    assert full[0]["sent_bytes"] >= sum(LEFT.values())


def test_a_gguf_repository_needs_the_file_named(hub: HubStandin, tmp_path: Path) -> None:
    d = tmp_path / "repos" / "spark-pipeline/gguf"
    d.mkdir(parents=True)
    for q in ("Q4_K_M", "Q8_0"):
        (d / f"tiny-{q}.gguf").write_bytes(q.encode() * 1000)
    env = env_for(hub, tmp_path)
    refused = run_cli("model", "download", "spark-pipeline/gguf", env=env, check=2)
    assert "--gguf" in refused.stderr and "tiny-Q4_K_M.gguf" in refused.stderr and "Traceback" not in refused.stderr
    got = json.loads(
        run_cli("model", "download", "spark-pipeline/gguf", "--gguf", "tiny-Q8_0.gguf", "--json", env=env).stdout
    )
    assert got["files"] == 1 and [e["path"] for e in got["left_out"]] == ["tiny-Q4_K_M.gguf"]
    missing = run_cli("model", "download", "spark-pipeline/gguf", "--gguf", "nope.gguf", env=env, check=2)
    assert "no such file" in missing.stderr


def test_verify_names_the_damaged_shard_and_copy_verify_sends_only_it(hub: HubStandin, tmp_path: Path) -> None:
    env = env_for(hub, tmp_path)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes:\n  - address: 127.0.0.1\n    name: here\n    transport: local\n")
    run_cli("model", "download", REPO, "--copy-to", "127.0.0.1", "--cluster", str(cluster), env=env)
    ok = json.loads(run_cli("model", "verify", REPO, "--cluster", str(cluster), "--json", env=env).stdout)
    assert [(r["node"], r["missing"], r["damaged"], r["files"]) for r in ok] == [("here", [], [], 7)]

    node = tmp_path / "node-home/.cache/huggingface/hub" / f"models--{REPO.replace('/', '--')}"
    shard = next(node.glob("snapshots/*/model-00002-of-00003.safetensors")).resolve()
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte: same size, so only a read of every byte finds it
    shard.write_bytes(bytes(data))
    next(node.glob("snapshots/*/tokenizer.json")).unlink()
    bad = run_cli("model", "verify", REPO, "--cluster", str(cluster), "--json", env=env, check=1)
    assert [(r["missing"], r["damaged"]) for r in json.loads(bad.stdout)] == [
        (["tokenizer.json"], ["model-00002-of-00003.safetensors"])
    ]
    assert "here" in bad.stderr and "model-00002-of-00003.safetensors" in bad.stderr and "--verify" in bad.stderr

    plain = json.loads(run_cli("model", "copy", REPO, "--cluster", str(cluster), "--json", env=env).stdout)
    assert plain[0]["sent_files"] == 1 and plain[0]["repaired"] == 0  # the link only: sizes cannot see damage
    fixed = json.loads(run_cli("model", "copy", REPO, "--verify", "--cluster", str(cluster), "--json", env=env).stdout)
    assert fixed[0]["repaired"] == 1 and fixed[0]["sent_bytes"] == SHARDS["model-00002-of-00003.safetensors"]
    again = json.loads(run_cli("model", "verify", REPO, "--cluster", str(cluster), "--json", env=env).stdout)
    assert again[0]["missing"] == [] and again[0]["damaged"] == []


def test_deploy_refuses_a_node_whose_copy_lacks_a_shard(hub: HubStandin, tmp_path: Path) -> None:
    """A dry run from saved facts (tests/unit/fixtures/layouts): discovery's listing of each node's copy
    is compared with this machine's snapshot before any rank starts."""
    import subprocess

    from pipeline.contract import LIST_FORMAT

    env = env_for(hub, tmp_path)
    run_cli("model", "download", REPO, env=env)
    local = tmp_path / "hf/hub" / f"models--{REPO.replace('/', '--')}"
    listing = subprocess.run(["find", str(local), "-printf", LIST_FORMAT], capture_output=True, text=True).stdout
    shard = next(local.glob("snapshots/*/model-00003-of-00003.safetensors")).resolve().name
    case = json.loads((Path(__file__).parent / "fixtures/layouts/twins-one-subnet.json").read_text())
    facts = case["facts"]
    whole, lacking = facts["nodes"]
    whole["answers"][f"model models--{REPO.replace('/', '--')}"] = listing
    lacking["answers"][f"model models--{REPO.replace('/', '--')}"] = "\n".join(
        line for line in listing.splitlines() if shard not in line.split("\t")[0]
    )
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    (tmp_path / "cluster.yaml").write_text(json.dumps(case["cluster"]))
    argv = ["deploy", "--dry-run", "--facts", str(tmp_path / "facts.json"), "--cluster", str(tmp_path / "cluster.yaml")]
    refused = run_cli(*argv, "--", "vllm", "serve", REPO, "-tp", "2", env=env, check=1)
    problems = [line.strip() for line in refused.stderr.splitlines() if line.startswith("    ")]
    assert problems == [
        f"spark2: model {REPO}: 1 file(s) missing, partial or of another revision: "
        f"model-00003-of-00003.safetensors (`python -m pipeline model copy {REPO}` sends them)"
    ]
    facts["nodes"][1]["answers"][f"model models--{REPO.replace('/', '--')}"] = listing
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    ok = run_cli(*argv, "--", "vllm", "serve", REPO, "-tp", "2", env=env)
    assert "deploy plan" in ok.stderr
    for node in facts["nodes"]:  # the memory estimate counts the weights this machine holds, split over the ranks
        node["answers"]["meminfo"] = "MemTotal: 124142312 kB\nMemAvailable: 121000000 kB"
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    plan = json.loads(run_cli(*argv, "--json", "--", "vllm", "serve", REPO, "-tp", "2", env=env).stdout)
    assert [m["weights"] for m in plan["memory"]] == [sum(SHARDS.values()) // 2] * 2


def test_the_damage_record_round_trips_and_trusts_nothing_malformed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.model import damage

    monkeypatch.setenv("SPARK_PIPELINE_CACHE", str(tmp_path))
    damage.record("h2", REPO, "c" * 40, ["b.safetensors", "a.safetensors"])
    damage.record("h3", REPO, "c" * 40, [])
    assert damage.load() == {"h2": {f"{REPO}@{'c' * 40}": ["a.safetensors", "b.safetensors"]}}
    damage.record("h2", REPO, "c" * 40, [])  # repaired: the node is whole again
    assert damage.load() == {}
    for text in ("[1, 2]", '{"h1": "x"}', '{"h1": {"r@c": "notalist"}}', "{", ""):
        damage.damage_file().write_text(text)
        assert damage.load() == {}


def test_a_file_that_arrived_short_or_swapped_never_passes_as_the_model(tmp_path: Path) -> None:
    from pipeline.errors import RemoteError
    from pipeline.model.hub import Snapshot, check_arrived

    blob = tmp_path / "blobs" / ("a" * 64)
    blob.parent.mkdir()
    blob.write_bytes(b"abc")
    snap_dir = tmp_path / "snapshots" / ("c" * 40)
    snap_dir.mkdir(parents=True)
    (snap_dir / "model.safetensors").symlink_to(blob)
    snap = Snapshot(REPO, "c" * 40, snap_dir, 1, 3)
    check_arrived(snap, {"model.safetensors": 3}, {"model.safetensors": "a" * 64})
    with pytest.raises(RemoteError, match="has 3 bytes, the hub lists 5"):
        check_arrived(snap, {"model.safetensors": 5}, {})
    with pytest.raises(RemoteError, match="not the file the hub lists"):
        check_arrived(snap, {"model.safetensors": 3}, {"model.safetensors": "b" * 64})
    with pytest.raises(RemoteError, match=r"config\.json did not arrive"):
        check_arrived(snap, {"config.json": 2}, {})

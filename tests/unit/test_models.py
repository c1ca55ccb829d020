"""Models: which ones a recipe's command loads, what a node lacks of a snapshot (from a listing of its
cache), leftovers of a killed download, hub errors worded for a user, and a copy to this machine's
other cache that sends only what is missing and leaves nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from examples.smoke import models as smoke_models
from pipeline.config.render import models_named, profiles_for
from pipeline.errors import ConfigError
from pipeline.model.manifest import Entry, parse_listing, snapshots_of, todo, verify
from pipeline.model.resume import leftovers
from tests.conftest import run_cli as _run_cli
from tests.standin.hf_hub import HubStandin


def run_cli(*args: str, **kw: Any) -> Any:
    """huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is imported: each run
    that talks to the stand-in hub gets a process of its own."""
    return _run_cli(*args, subprocess=True, **kw)


SHA = "4d5117fdf8be2cad90f099efd7d1d3d6778a42170b2b620945c22879f7dc57b8"


def test_models_named_finds_the_draft_and_tokenizer_and_skips_paths() -> None:
    argv = [
        "vllm",
        "serve",
        "Qwen/Qwen3-8B",
        "--tokenizer",
        "Qwen/Qwen3-8B",
        "--speculative-config",
        '{"model": "RedHatAI/Qwen3-8B-speculator.eagle3", "num_speculative_tokens": 3}',
        "--speculative-model=/models/local-draft",
    ]
    assert models_named(argv, "Qwen/Qwen3-8B") == ["Qwen/Qwen3-8B", "RedHatAI/Qwen3-8B-speculator.eagle3"]
    assert models_named(["vllm", "serve", "./local", "--speculative-config", "not json"], None) == []


def test_build_args_map_to_profiles() -> None:
    assert profiles_for(["--exp-b12x", "--pre-tf"], "r.yaml") == ("exp-b12x", "tf5")
    with pytest.raises(ConfigError, match=r"r.yaml:build_args: .x=1. is not a build flag"):
        profiles_for(["x=1"], "r.yaml")


def test_a_profile_build_yaml_lacks_is_a_located_error(tmp_path: Path) -> None:
    proc = run_cli("plan", "-f", "build.yaml", "--profile", "exp-nothing", "--offline", check=2)
    assert "build.yaml:profiles: no profile 'exp-nothing' (it has: exp-b12x, tf5)" in proc.stderr


BLOB = Entry(f"blobs/{SHA}", "blob", 100, sha256=SHA)
SMALL = Entry("blobs/8e5c68fb4fd0ee9b30c61bfa556473ae40a2eb79", "blob", 10, sha256="ab" * 32)
LINK = Entry("snapshots/c1/model.safetensors", "link", target=f"../../blobs/{SHA}")
REF = Entry("refs/main", "ref", 2, target="c1")


def test_todo_sends_what_is_missing_and_checks_whole_partials() -> None:
    have = parse_listing(
        f"d 4096 blobs\t\nf 100 blobs/{SHA}.incomplete\t\nf 10 {SMALL.path}\t\n"
        f"l 52 snapshots/c1/model.safetensors\t../../blobs/{SHA}\n"
    )
    work = todo([BLOB, SMALL, LINK, REF], have)
    assert work.send == (REF,) and work.check == (BLOB,) and work.nbytes == 0
    fresh = todo([BLOB, SMALL, LINK, REF], parse_listing(f"f 40 blobs/{SHA}.incomplete\t\n"))
    assert fresh.send == (BLOB, SMALL, LINK, REF) and fresh.nbytes == 110  # a short partial is sent again
    assert (
        todo(
            [BLOB, SMALL, LINK, REF],
            parse_listing(
                f"f 100 blobs/{SHA}\t\nf 10 {SMALL.path}\t\nl 1 {LINK.path}\t{LINK.target}\nf 2 refs/main\t\n"
            ),
        ).send
        == ()
    )


def test_verify_names_blobs_whose_hash_differs() -> None:
    out = f"{SHA}  blobs/{SHA}.incomplete\n{'00' * 32}  {SMALL.path}.incomplete\n"
    assert verify((BLOB, SMALL), out) == [SMALL.path]


def test_snapshots_of_a_node_cache_listing() -> None:
    listing = (
        "d 4096 models--Qwen--Qwen3-8B\t\nd 4096 models--Qwen--Qwen3-8B/snapshots/abc\t\n"
        "f 1000 models--Qwen--Qwen3-8B/blobs/x\t\nf 5 models--Qwen--Qwen3-8B/blobs/y.incomplete\t\n"
        "d 4096 datasets--a--b/snapshots/z\t\n"
    )
    assert snapshots_of(listing) == [("Qwen/Qwen3-8B", "abc", 1000)]


def test_leftovers_keep_the_largest_partial_per_blob(tmp_path: Path) -> None:
    for name, size in ((f"{SHA}.aaaa0001.incomplete", 10), (f"{SHA}.bbbb0002.incomplete", 30), ("x.cc.incomplete", 1)):
        (tmp_path / name).write_bytes(b"0" * size)
    best = leftovers(tmp_path)
    assert best[SHA].name == f"{SHA}.bbbb0002.incomplete" and sorted(os.listdir(tmp_path)) == sorted(
        [f"{SHA}.bbbb0002.incomplete", "x.cc.incomplete"]
    )


@pytest.fixture
def hub(tmp_path: Path):  # type: ignore[no-untyped-def]
    smoke_models.write_model(tmp_path / "repos", smoke_models.MODEL, 2 << 20)
    smoke_models.write_model(tmp_path / "repos", smoke_models.DRAFT, 1 << 10)
    with HubStandin(tmp_path / "repos", gated={smoke_models.DRAFT: "hf_secret_token"}) as h:
        yield h


def test_download_copy_and_a_gated_model(hub: HubStandin, tmp_path: Path) -> None:
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "HOME": str(tmp_path / "node-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": "",
    }
    gated = run_cli("model", "download", smoke_models.DRAFT, env=env, check=2)
    assert "gated" in gated.stderr and "HF_TOKEN" in gated.stderr and "Traceback" not in gated.stderr
    ok = run_cli("model", "download", smoke_models.DRAFT, "--json", env={**env, "HF_TOKEN": "hf_secret_token"})
    assert json.loads(ok.stdout)["files"] == 6 and "hf_secret_token" not in ok.stdout + ok.stderr
    missing = run_cli("model", "download", "nobody/nothing", env=env, check=2)
    assert "not found on the hub" in missing.stderr

    first = json.loads(
        run_cli(
            "model",
            "download",
            smoke_models.MODEL,
            "--copy-to",
            "127.0.0.1",
            "--json",
            "--cluster",
            str(_local_cluster(tmp_path)),
            env=env,
        ).stdout
    )
    assert first["copies"][0]["sent_bytes"] == first["bytes"] > 2 << 20
    node = tmp_path / "node-home/.cache/huggingface/hub/models--spark-pipeline--smoke-tiny"
    assert not list(node.rglob("*.incomplete"))
    weights = next(node.glob("snapshots/*/model.safetensors"))
    assert weights.read_bytes() == (tmp_path / "repos" / smoke_models.MODEL / "model.safetensors").read_bytes()
    weights.resolve().write_bytes(b"damaged")  # a node's copy shrank: only that file goes again
    again = json.loads(
        run_cli(
            "model", "copy", smoke_models.MODEL, "--cluster", str(_local_cluster(tmp_path)), "--json", env=env
        ).stdout
    )
    assert again[0]["sent_bytes"] == 2 << 20 and again[0]["sent_files"] == 1
    listed = json.loads(run_cli("model", "ls", "--json", env=env).stdout)
    assert {r["repo"] for r in listed} == {smoke_models.MODEL, smoke_models.DRAFT}


def _local_cluster(tmp_path: Path) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text("nodes:\n  - address: 127.0.0.1\n    name: here\n    transport: local\n")
    return p


def test_rsync_uses_cluster_yaml_s_trust_and_never_a_shell_for_the_path() -> None:
    from pipeline.config.cluster import NodeSpec, SshSpec
    from pipeline.model.copy import rsync_argv, rsync_progress

    node = NodeSpec(address="fe80::1", port=2222, user="me", key="~/k")
    argv = rsync_argv(node, SshSpec(known_hosts="/kh", host_keys="strict"), Path("/c/models--a--b"), "/home/me/x y")
    assert argv[:2] == ["rsync", "-a"] and "--protect-args" in argv and "--partial-dir=.rsync-partial" in argv
    ssh = argv[argv.index("-e") + 1]
    assert "-p 2222" in ssh and "UserKnownHostsFile=/kh" in ssh and "StrictHostKeyChecking=yes" in ssh
    assert "-i " + os.path.expanduser("~/k") in ssh
    assert argv[-2:] == ["/c/models--a--b/", "me@[fe80::1]:/home/me/x y/"]
    assert rsync_progress("     12,345,678  47%   11.53MB/s    0:00:01 (xfr#1, to-chk=0/1)") == 12345678
    assert rsync_progress("Number of files: 1") is None

"""The shared store on an OCI registry (Debian's docker-registry on loopback): a machine with an empty
cache builds the smoke stack after another one built it and pulls every wheel stage, building none; a
corrupted artifact is refused, that stage is built, and the good entry replaces the bad one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pipeline.remote_store import RemoteStore, parse_url
from pipeline.ship.registry import Registry
from pipeline.store import Store
from tests.conftest import run_cli
from tests.integration.conftest import SmokeBuild

pytestmark = pytest.mark.docker
WHEEL_STAGES = ("base", "triton", "flashinfer", "vllm")


def build(root: Path, cache: Path, smoke_build: SmokeBuild, url: str) -> dict[str, str]:
    env = {**smoke_build.env(), "SPARK_PIPELINE_CACHE": str(cache)}
    proc = run_cli("build", "--json", "-f", str(root / "build.yaml"), "--remote-store", url, env=env)
    return {r["stage"]: r["status"] for r in json.loads(proc.stdout)} | {"_stderr": proc.stderr}


def test_an_empty_cache_pulls_every_wheel_stage_and_refuses_a_corrupt_one(
    smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry", 5093):
        url = "oci://127.0.0.1:5093/spark-pipeline"
        pushed = run_cli("store", "push", "--store", str(smoke_build.store), "--remote", url)
        n = int(re.search(r"(\d+) entries pushed", pushed.stderr)[1])  # type: ignore[index]
        assert n >= 4 and pushed.stderr.count("pushed 127.0.0.1:5093/spark-pipeline/") == n  # other tests' too
        assert "manifest unknown" not in pushed.stderr  # no library noise
        again = run_cli("store", "push", "--store", str(smoke_build.store), "--remote", url)
        assert "0 entries pushed" in again.stderr and "the remote store has it" in again.stderr
        listed = json.loads(run_cli("store", "ls", "--remote", url, "--json").stdout)
        assert sorted({r["stage"] for r in listed}) == sorted(WHEEL_STAGES)

        root = smoke_build.copy(tmp_path / "src")
        fresh = build(root, tmp_path / "cache-b", smoke_build, url)
        assert {s: fresh[s] for s in WHEEL_STAGES} == dict.fromkeys(WHEEL_STAGES, "pulled"), fresh["_stderr"]
        assert fresh["runtime"] in ("built", "cached")
        assert (
            Store(tmp_path / "cache-b" / "store").verify(
                "vllm", next(r["key"] for r in smoke_build.results if r["stage"] == "vllm")
            )[0]
            is not None
        )

        # a tampered triton artifact under the same key: its wheel no longer matches its manifest
        key = next(r["key"] for r in smoke_build.results if r["stage"] == "triton")
        bad = tmp_path / "bad-entry"
        shutil.copytree(smoke_build.store / "triton" / key, bad)
        wheel = next(p for p in bad.rglob("*.whl"))
        wheel.write_bytes(wheel.read_bytes()[:-10] + b"0123456789")
        entry = Store(smoke_build.store).get("triton", key)
        assert entry is not None
        RemoteStore(parse_url(url)).push(type(entry)(stage="triton", key=key, path=bad, manifest=entry.manifest))

        third = build(smoke_build.copy(tmp_path / "src-c"), tmp_path / "cache-c", smoke_build, url)
        assert third["triton"] == "built" and "is corrupt" in third["_stderr"] and "refused" in third["_stderr"]
        assert all(third[s] == "pulled" for s in ("base", "flashinfer", "vllm"))
        fourth = build(smoke_build.copy(tmp_path / "src-d"), tmp_path / "cache-d", smoke_build, url)
        assert fourth["triton"] == "pulled"  # the rebuilt entry replaced the bad one

"""The smoke stack on a real Dagger engine, compared with the BuildKit build of the same stack.

Runs only inside a Dagger session (a Spark runner: `dagger run python -m pytest -m dagger`); our CI
machines cannot download the Dagger CLI or its engine image, so here it is skipped with that reason.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipeline.contract import STAGES
from pipeline.engines import dagger_session
from tests.conftest import run_cli
from tests.integration.conftest import SmokeBuild, statuses
from tests.integration.elf import cubin_sms

pytestmark = [
    pytest.mark.dagger,
    pytest.mark.skipif(
        not dagger_session(),
        reason="no Dagger session (DAGGER_SESSION_PORT unset): run `dagger run python -m pytest "
        "-m dagger` where the Dagger CLI 0.21.11 and Docker are available",
    ),
]


def test_smoke_stack_on_dagger_gives_what_buildkit_gives(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    # Both with network (Dagger refuses network: false stages), the reference explicitly on BuildKit:
    # under `dagger run`, `engine: auto` would pick Dagger and compare Dagger with Dagger.
    root = smoke_build.copy(tmp_path / "src")
    built = {}
    for engine in ("buildkit", "dagger"):
        cache = tmp_path / f"cache-{engine}"
        proc = run_cli(
            "build",
            "--json",
            "--engine",
            engine,
            "-f",
            str(root / "build.yaml"),
            "--set",
            "network=true",
            "--tag",
            f"vllm-node-smoke-{engine}",
            env={"SPARK_PIPELINE_CACHE": str(cache)},
        )
        results = json.loads(proc.stdout)
        assert statuses(results) == dict.fromkeys(STAGES, "built")
        built[engine] = (cache / "store", {r["stage"]: r["key"] for r in results})
    (bk_store, bk_keys), (dg_store, dg_keys) = built["buildkit"], built["dagger"]
    assert dg_keys == bk_keys  # keys do not depend on the engine
    for stage, key in bk_keys.items():
        ours = json.loads((dg_store / stage / key / "manifest.json").read_text())
        theirs = json.loads((bk_store / stage / key / "manifest.json").read_text())
        assert (ours["engine"], theirs["engine"]) == ("dagger", "buildkit")
        assert sorted(f["path"] for f in ours["files"] if f["path"] != "image.json") == sorted(
            f["path"] for f in theirs["files"] if f["path"] != "image.json"
        )
    [whl] = (dg_store / "vllm" / bk_keys["vllm"]).glob("vllm-*.whl")
    assert cubin_sms(zipfile.ZipFile(whl).read("vllm/_kernels.fatbin")) == [121]

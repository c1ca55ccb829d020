"""The smoke stack on a real Dagger engine, compared with the BuildKit build of the same stack.

Runs only inside a Dagger session (a Spark runner: `dagger run python -m pytest -m dagger`); our CI
machines cannot download the Dagger CLI or its engine image, so here it is skipped with that reason.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipeline.engines import dagger_session
from pipeline.spec.build import STAGES
from tests.conftest import run_cli
from tests.integration.conftest import SmokeBuild, statuses
from tests.integration.elf import cubin_sms

pytestmark = [
    pytest.mark.dagger,
    pytest.mark.skipif(not dagger_session(),
                       reason="no Dagger session (DAGGER_SESSION_PORT unset): run `dagger run python -m pytest "
                              "-m dagger` where the Dagger CLI 0.21.11 and Docker are available"),
]


def test_smoke_stack_on_dagger_gives_what_buildkit_gives(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    proc = run_cli("build", "--json", "--engine", "dagger", "-f", str(smoke_build.root / "build.yaml"),
                   "--tag", "vllm-node-smoke-dagger", env={"SPARK_PIPELINE_CACHE": str(cache)})
    results = json.loads(proc.stdout)
    assert statuses(results) == dict.fromkeys(STAGES, "built")
    bk_keys = {r["stage"]: r["key"] for r in smoke_build.results}
    assert {r["stage"]: r["key"] for r in results} == bk_keys  # keys do not depend on the engine
    for stage, key in bk_keys.items():
        ours = json.loads((cache / "store" / stage / key / "manifest.json").read_text())
        theirs = json.loads((smoke_build.store / stage / key / "manifest.json").read_text())
        assert ours["engine"] == "dagger"
        assert sorted(f["path"] for f in ours["files"] if f["path"] != "image.json") == \
            sorted(f["path"] for f in theirs["files"] if f["path"] != "image.json")
    [whl] = (cache / "store" / "vllm" / bk_keys["vllm"]).glob("vllm-*.whl")
    assert cubin_sms(zipfile.ZipFile(whl).read("vllm/_kernels.fatbin")) == [121]

"""Content keys: stable across processes, working directories, HOME and machines; sensitive to every
input that defines a stage and to nothing else."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.ir import Cache, Image, Input, Output, Stage, Step
from pipeline.core.keys import Resolved, base_digest, compute_keys, stage_key
from tests.conftest import REPO
from tests.specs import stages as effective_stages

KEYS_SCRIPT = """
import json, sys
from pathlib import Path
from pipeline.resolution import resolve
from pipeline.core.keys import compute_keys
from pipeline.sources.mirror import Mirrors
from pipeline.config import load_build
b = load_build(Path(sys.argv[1]))
res = resolve(b, Mirrors(Path(sys.argv[2])))
print(json.dumps(compute_keys(res.stages, res.inputs)))
"""


def keys_in_process(build_yaml: Path, cwd: Path, home: Path, cache: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "PYTHONHASHSEED": "random",
        "SPARK_PIPELINE_CACHE": str(cache),
    }
    out = subprocess.run(
        [sys.executable, "-c", KEYS_SCRIPT, str(build_yaml), str(cache)],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def test_keys_identical_across_processes_cwd_home_and_copies(tmp_path: Path, smoke: Path) -> None:
    import shutil

    other = tmp_path / "elsewhere" / "deeper" / "smoke-copy"
    shutil.copytree(smoke, other, symlinks=True)  # another absolute path: as on another machine
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = keys_in_process(smoke / "build.yaml", tmp_path / "a", tmp_path / "a", tmp_path / "cache1")
    second = keys_in_process(other / "build.yaml", tmp_path / "b", tmp_path / "b", tmp_path / "cache2")
    assert first == second
    assert len(set(first.values())) == 5


def fake_resolved(stages: list[Stage], salt: str = "") -> dict[tuple[str, str], Resolved]:
    out = {}
    for s in stages:
        for i in s.inputs:
            if i.kind != "stage":
                out[(i.kind, i.ref)] = Resolved(digest=f"{i.kind}:{i.ref}{salt}")
    return out


def test_cache_paths_secrets_and_build_env_are_not_in_the_key() -> None:
    stages = effective_stages(REPO / "build.yaml")
    resolved = fake_resolved(stages)
    base = compute_keys(stages, resolved)
    changed = [
        dataclasses.replace(
            s, caches=(Cache("ccache", "/elsewhere"),), secrets=("HF_TOKEN",), build_env=(("MAX_JOBS", "1"),)
        )
        for s in stages
    ]
    assert compute_keys(changed, resolved) == base


def test_input_digests_feed_their_stage_and_downstream() -> None:
    stages = effective_stages(REPO / "build.yaml")
    resolved = fake_resolved(stages)
    base = compute_keys(stages, resolved)
    resolved[("source", "flashinfer")] = Resolved(digest="another commit")
    after = compute_keys(stages, resolved)
    assert [n for n in base if base[n] != after[n]] == ["flashinfer", "vllm", "runtime"]


def simple_stage(**kw: object) -> Stage:
    fields = {
        "name": "x",
        "doc": "",
        "platform": "linux/arm64",
        "base": Image(ref="debian:bookworm"),
        "steps": (Step(argv=("true",)),),
        "output": Output(kind="wheels"),
    }
    fields.update(kw)
    return Stage(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"platform": "linux/amd64"},
        {"env": (("A", "1"),)},
        {"steps": (Step(argv=("false",)),)},
        {"steps": (Step(argv=("true",), workdir="/src"),)},
        {"network": False},
        {"base": Image(ref="debian:trixie")},
        {"output": Output(kind="wheels", path="/dist")},
    ],
)
def test_every_defining_field_changes_the_key(change: dict[str, object]) -> None:
    assert stage_key(simple_stage(), {}) != stage_key(simple_stage(**change), {})


def test_knob_labels_and_docs_are_not_in_the_key() -> None:
    assert stage_key(simple_stage(), {}) == stage_key(simple_stage(doc="other", knobs=(("a", "b"),)), {})


def test_pinned_base_uses_the_digest_and_a_tag_warns() -> None:
    digest = "sha256:" + "a" * 64
    assert base_digest(Image(ref=f"nvidia/cuda:13.0.2-devel-ubuntu24.04@{digest}")) == (digest, None)
    # The same digest under another tag is the same content: same key.
    assert base_digest(Image(ref=f"nvidia/cuda:other@{digest}"))[0] == digest
    ref, warning = base_digest(Image(ref="nvidia/cuda:13.0.2-devel-ubuntu24.04"))
    assert ref == "nvidia/cuda:13.0.2-devel-ubuntu24.04"
    assert warning and "RepoDigests" in warning and "@sha256" in warning


def test_bootstrap_image_keyed_by_recipe() -> None:
    a = Image(ref="x", bootstrap=(("suite", '"bookworm"'),))
    b = Image(ref="y", bootstrap=(("suite", '"bookworm"'),))
    c = Image(ref="x", bootstrap=(("suite", '"trixie"'),))
    assert base_digest(a) == base_digest(b) != base_digest(c)


def test_step_argv_must_be_strings() -> None:
    with pytest.raises(TypeError):
        Step(argv=("make", 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Step(argv=())


def test_stage_validate_catches_unknown_mounts() -> None:
    bad = simple_stage(
        steps=(Step(argv=("ls",), mounts=("nope",)),), inputs=(Input(name="a", kind="dir", ref="d", path="/a"),)
    )
    with pytest.raises(ValueError, match="unknown inputs"):
        bad.validate()

"""`plan` on the repo's build.yaml with its repositories pointed at local fixture repos: keys, cached or
not, and the reason each stage must rebuild. Changing one input marks exactly that stage and every
stage downstream of it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from examples.smoke import fixtures
from pipeline.contract import STAGES
from tests.conftest import REPO, plan_json, run_cli
from tests.standin import pins_index

DOWNSTREAM = {
    "base": list(STAGES),
    "triton": ["triton", "flashinfer", "vllm", "runtime"],
    "flashinfer": ["flashinfer", "vllm", "runtime"],
    "vllm": ["vllm", "runtime"],
    "runtime": ["runtime"],
}


@pytest.fixture
def spark(tmp_path: Path, smoke: Path) -> tuple[Path, list[str]]:
    """The repo's own build.yaml in a fresh dir, its repos and torch index pointed at the fixtures."""
    d = tmp_path / "spark"
    d.mkdir()
    shutil.copyfile(REPO / "build.yaml", d / "build.yaml")
    args = [
        "-f",
        str(d / "build.yaml"),
        "--set",
        f"nccl.repo={smoke / 'repos/nccl'}",
        "--set",
        "nccl.ref=main",
        "--set",
        f"flashinfer.repo={smoke / 'repos/flashinfer'}",
        # the repo's FlashInfer patch targets the real downloader, which the fixture does not have
        "--set",
        "flashinfer.patches=[]",
        "--vllm-repo",
        str(smoke / "repos/vllm"),
        "--set",
        f"base.torch.index={smoke / 'torch-index'}",
        # the Python environment resolves against local wheels, not PyPI
        "--set",
        f"runtime.pip_index={pins_index.write(d / 'pins-index', smoke)}",
        "--set",
        f"vllm.deps_index={d / 'pins-index'}",
    ]
    return d, args


def mark_built(plan: dict, store: Path) -> None:
    """Test stand-in for builds that already happened: a manifest per planned key."""
    for s in plan["stages"]:
        entry = store / s["stage"] / s["key"]
        entry.mkdir(parents=True, exist_ok=True)
        (entry / "manifest.json").write_text(json.dumps({"stage": s["stage"], "key": s["key"], "files": []}))


def test_plan_lists_five_stages_with_keys(spark: tuple[Path, list[str]]) -> None:
    _, args = spark
    plan = plan_json(*args)
    assert [s["stage"] for s in plan["stages"]] == list(STAGES)
    assert all(len(s["key"]) == 64 and not s["cached"] for s in plan["stages"])
    assert all(s["reasons"] == ["no build.lock entry"] for s in plan["stages"])
    # The base image is a tag, not a digest: the plan warns and says how to pin it.
    assert any("not pinned by digest" in w and "@sha256" in w for w in plan["warnings"])


def test_human_plan_goes_to_stderr_only(spark: tuple[Path, list[str]]) -> None:
    _, args = spark
    proc = run_cli("plan", *args)
    assert proc.stdout == ""
    for name in STAGES:
        assert name in proc.stderr
    assert "5 of 5 stages to build" in proc.stderr


def commit_to(repo: str) -> Callable[[Path, Path], list[str]]:
    def change(smoke: Path, _: Path) -> list[str]:
        fixtures.commit(smoke / "repos" / repo, {"CHANGELOG": "moved on\n"}, "upstream moved")
        return []

    return change


def flashinfer_release_moved(smoke: Path, _: Path) -> list[str]:
    """flashinfer.ref: auto follows vLLM's pin (v0.6.5): the tag is moved to a new commit."""
    fixtures.release(smoke / "repos" / "flashinfer", {"CHANGELOG": "moved on\n"}, "v0.6.5")
    return []


def add_patch(smoke: Path, spark_dir: Path) -> list[str]:
    p = spark_dir / "docker-contexts" / "vllm" / "patches"
    p.mkdir(parents=True)
    (p / "0001-fix.patch").write_text("--- a/x\n+++ b/x\n@@ -0,0 +1 @@\n+fix\n")
    return []


def runtime_script(smoke: Path, spark_dir: Path) -> list[str]:
    p = spark_dir / "docker-contexts" / "runtime"
    p.mkdir(parents=True)
    (p / "entry.sh").write_text("#!/bin/sh\n")
    return []


CHANGES: list[tuple[str, Callable[[Path, Path], list[str]], str, str]] = [
    ("vllm-ref-moved", commit_to("vllm"), "vllm", "vllm.ref main: "),
    ("flashinfer-ref-moved", flashinfer_release_moved, "flashinfer", "flashinfer.ref v0.6.5: "),
    ("nccl-ref-moved", commit_to("nccl"), "base", "nccl.ref main: "),
    ("gpu-arch", lambda s, d: ["--gpu-arch", "12.0f"], "base", "gpu_arch: 12.1a → 12.0f"),
    ("vllm-pr", lambda s, d: ["--apply-vllm-pr", "101"], "vllm", "vllm.prs #101: added"),
    ("vllm-patch", add_patch, "vllm", "vllm.patches 0001-fix.patch: added"),
    (
        "flashinfer-arch-list",
        lambda s, d: ["--set", "flashinfer.arch_list=12.0f"],
        "flashinfer",
        "flashinfer.arch_list: 12.1a → 12.0f",
    ),
    (
        "torch-version",
        lambda s, d: [fixtures.torch_index(s / "torch-index", "2.13.1"), "--torch-version", "2.13.1"][1:],
        "base",
        "base.torch.version: 2.13.0 → 2.13.1",
    ),
    (
        "triton-from-source",
        lambda s, d: [
            "--set",
            f"triton.repo={s / 'repos/triton'}",
            "--set",
            "triton.source=git",
            "--set",
            "triton.ref=main",
        ],
        "triton",
        "triton.source: pip → git",
    ),
    ("runtime-env", lambda s, d: ["--set", "runtime.env.FOO=bar"], "runtime", "runtime.env.FOO: added (bar)"),
    (
        "vllm-env",
        lambda s, d: ["--set", "vllm.env.VLLM_REQUIRE_RUST_FRONTEND=0"],
        "vllm",
        "vllm.env.VLLM_REQUIRE_RUST_FRONTEND: 1 → 0",
    ),
    ("runtime-scripts", runtime_script, "runtime", "dir docker-contexts/runtime: "),
    (
        "base-image",
        lambda s, d: ["--set", "base.image=nvidia/cuda:13.0.1-devel-ubuntu24.04"],
        "base",
        "base image: nvidia/cuda:13.0.2-devel-ubuntu24.04 → nvidia/cuda:13.0.1-devel-ubuntu24.04",
    ),
    (
        "runtime-image",
        lambda s, d: ["--set", "runtime.image=nvidia/cuda:13.0.1-runtime-ubuntu24.04"],
        "runtime",
        "base image: ",
    ),
    (
        "vllm-prepare",
        lambda s, d: ["--set", "vllm.prepare=[[python3, use_existing_torch.py]]"],
        "vllm",
        "vllm.prepare python3 use_existing_torch.py: added",
    ),
    ("base-apt", lambda s, d: ["--set", "base.apt_packages=[libnuma1]"], "base", "base.apt_packages libnuma1: added"),
    (
        "runtime-apt",
        lambda s, d: ["--set", "runtime.apt_packages=[libnuma1]"],
        "runtime",
        "runtime.apt_packages libnuma1: added",
    ),
    # vLLM main's requirements move often: the resolved set grows, yet only what installs them rebuilds
    (
        "vllm-requirements",
        lambda s, d: [
            fixtures.commit(
                s / "repos" / "vllm",
                {"requirements/common.txt": "smoke-runtime-dep>=1.0\nsmoke-extra\n"},
                "a new requirement",
            ),
        ][:0],
        "vllm",
        "python env (the resolved set): ",
    ),
]


@pytest.mark.parametrize(("change", "first", "reason"), [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_each_input_marks_its_stage_and_downstream(
    spark: tuple[Path, list[str]],
    smoke: Path,
    isolated_cache: Path,
    change: Callable[[Path, Path], list[str]],
    first: str,
    reason: str,
) -> None:
    spark_dir, args = spark
    run_cli("plan", "--write-lock", *args)
    before = plan_json(*args)
    mark_built(before, isolated_cache / "store")
    assert plan_json(*args)["stages"][0]["cached"]

    extra = change(smoke, spark_dir)
    after = plan_json(*args, *extra)
    rebuilt = [s["stage"] for s in after["stages"] if not s["cached"]]
    assert rebuilt == DOWNSTREAM[first]
    by_name = {s["stage"]: s for s in after["stages"]}
    assert any(r.startswith(reason) for r in by_name[first]["reasons"]), by_name[first]["reasons"]
    for name in DOWNSTREAM[first][1:]:
        assert any(r.startswith("upstream ") and r.endswith(" rebuilt") for r in by_name[name]["reasons"])
    for s in after["stages"]:
        if s["stage"] not in rebuilt:
            assert s["key"] == next(b["key"] for b in before["stages"] if b["stage"] == s["stage"])


@pytest.mark.parametrize(
    "extra",
    [
        ["--build-jobs", "3"],
        ["--set", "flashinfer.cubin_cache=false"],
        ["--set", "secrets=[GH_TOKEN]"],
        ["--set", f"ca_bundle={REPO / 'README.md'}"],  # a file the steps trust: not what they build
    ],
    ids=["build-jobs", "cubin-cache-off", "secret", "ca-bundle"],
)
def test_caches_jobs_and_secrets_change_no_key(spark: tuple[Path, list[str]], extra: list[str]) -> None:
    _, args = spark
    before = [s["key"] for s in plan_json(*args)["stages"]]
    after = [s["key"] for s in plan_json(*args, *extra, env={"GH_TOKEN": "s3cret"})["stages"]]
    assert before == after


def test_lock_is_sorted_and_stable(spark: tuple[Path, list[str]]) -> None:
    spark_dir, args = spark
    run_cli("plan", "--write-lock", *args)
    first = (spark_dir / "build.lock").read_text()
    run_cli("plan", "--write-lock", *args)
    assert (spark_dir / "build.lock").read_text() == first
    data = json.loads(first)
    assert list(data["stages"]) == sorted(data["stages"])
    assert data["sources"]["vllm"]["commit"] == fixtures.git(
        Path(args[args.index("--vllm-repo") + 1]), "rev-parse", "main"
    )
    assert not list(spark_dir.glob(".build.lock.*")), "temp files left behind"


def test_same_key_not_in_store_says_so(spark: tuple[Path, list[str]]) -> None:
    _, args = spark
    run_cli("plan", "--write-lock", *args)
    plan = plan_json(*args)
    assert all(s["reasons"] == ["not in the store"] for s in plan["stages"])


def test_offline_plan_uses_the_warm_mirror(spark: tuple[Path, list[str]]) -> None:
    from tests.conftest import run_cli

    _, args = spark
    run_cli("plan", "--write-lock", *args)
    online = plan_json(*args)
    offline = plan_json(*args, "--offline")
    assert offline["stages"] == online["stages"] and offline["versions"] == online["versions"]
    # the Python environment comes from build.lock: the same set, so the same keys, with no resolver run
    assert offline["python"] == online["python"] and online["python"]["packages"]


def test_plan_names_a_conflicting_pr_with_builds_message(smoke: Path) -> None:
    from examples.smoke import fixtures
    from tests.conftest import run_cli

    fixtures.commit(smoke / "repos" / "vllm", {"vllm/pr101.py": "FEATURE = 'main has its own'\n"}, "clash")
    proc = run_cli("plan", "-f", str(smoke / "build.yaml"), "--apply-vllm-pr", "101", check=2)
    assert (
        "error: vllm: PR #101 conflicts in vllm/pr101.py; rebase the PR, pick another vllm.ref, or drop it "
        "from vllm.prs" in " ".join(proc.stderr.split())
    )
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_plan_shows_fetch_progress_on_stderr_only(smoke: Path) -> None:
    from tests.conftest import run_cli

    proc = run_cli("plan", "--json", "-f", str(smoke / "build.yaml"))
    assert "vllm: cloning main from" in " ".join(proc.stderr.split())
    json.loads(proc.stdout)  # stdout is the plan, nothing else


def test_a_patch_that_does_not_apply_fails_plan_naming_it(spark: tuple[Path, list[str]]) -> None:
    """Found at plan time, not when the vllm stage starts after base, triton and flashinfer were built."""
    spark_dir, args = spark
    p = spark_dir / "docker-contexts" / "vllm" / "patches"
    p.mkdir(parents=True)
    (p / "0002-stale.patch").write_text(
        "--- a/vllm/__init__.py\n+++ b/vllm/__init__.py\n@@ -1 +1 @@\n-this line is not in the tree\n+replaced\n"
    )
    proc = run_cli("plan", *args, check=2)
    err = " ".join(proc.stderr.split())
    assert "vllm: patch 0002-stale.patch does not apply to vllm main (" in err
    assert "vllm.patches in build.yaml" in err and "Traceback" not in proc.stderr


def test_the_image_tag_is_in_no_key(spark: tuple[Path, list[str]]) -> None:
    """runtime.tag (and build --tag, recipe run --setup's tag) names the result: one build, one runtime key
    (bench results keyed by it stay together), whatever it is called."""
    _, args = spark
    before = {s["stage"]: s["key"] for s in plan_json(*args)["stages"]}
    after = {s["stage"]: s["key"] for s in plan_json(*args, "--set", "runtime.tag=vllm-node:other")["stages"]}
    assert before == after

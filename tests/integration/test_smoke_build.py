"""The smoke stack built for real on BuildKit through Docker, end to end: store entries, the sm_121a
device code in the vLLM artifact, no-op rebuilds, targeted rebuilds, the cubin cache, interrupted
builds and concurrent builds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from examples.smoke import fixtures
from pipeline.contract import STAGES
from tests.conftest import REPO, run_cli
from tests.golden_text import check, readme_blocks
from tests.integration.conftest import SmokeBuild, statuses
from tests.integration.dockerd import DOCKER
from tests.integration.elf import cubin_sms

pytestmark = pytest.mark.docker


def entries(store: Path, stage: str) -> list[Path]:
    d = store / stage
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def wheel(store: Path, stage: str, key: str, prefix: str) -> zipfile.ZipFile:
    [path] = (store / stage / key).glob(f"{prefix}-*.whl")
    return zipfile.ZipFile(path)


def keys(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["key"] for r in results}


def test_cold_build_makes_the_image_and_one_entry_per_stage(smoke_build: SmokeBuild) -> None:
    assert statuses(smoke_build.results) == dict.fromkeys(STAGES, "built")
    for stage, key in keys(smoke_build.results).items():
        manifest = json.loads((smoke_build.store / stage / key / "manifest.json").read_text())
        assert manifest["stage"] == stage and manifest["key"] == key and manifest["engine"] == "buildkit"
        assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in manifest["files"])
    out = subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            "--pull=never",
            "--network",
            "none",
            "vllm-node-smoke",
            "python3",
            "-c",
            "import vllm, torch, flashinfer, flashinfer_cubin, triton; "
            "print(torch.__version__, open('/workspace/build-metadata.json').read())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    meta = json.loads(out.stdout.split(" ", 1)[1])
    assert meta["stage_keys"] == keys(smoke_build.results)
    assert meta["gpu_arch"] == "12.1a"


def test_vllm_artifact_holds_sm_121a_device_code(smoke_build: SmokeBuild) -> None:
    k = keys(smoke_build.results)
    whl = wheel(smoke_build.store, "vllm", k["vllm"], "vllm")
    fatbin = whl.read("vllm/_kernels.fatbin")
    assert cubin_sms(fatbin) == [121]
    assert b"sm_121a" in fatbin
    info = json.loads(whl.read("vllm/_build_info.json"))
    assert info["TORCH_CUDA_ARCH_LIST"] == "12.1a" and info["MAX_JOBS"] == "2"
    fi = json.loads(
        wheel(smoke_build.store, "flashinfer", k["flashinfer"], "flashinfer_python").read("flashinfer/_build_info.json")
    )
    assert fi["FLASHINFER_CUDA_ARCH_LIST"] == "12.1a"


def test_nccl_is_compiled_for_the_derived_gencode(smoke_build: SmokeBuild) -> None:
    import tarfile

    [txz] = (smoke_build.store / "base" / keys(smoke_build.results)["base"] / "nccl").glob("*.txz")
    with tarfile.open(txz) as t:
        gencode = t.extractfile("nccl/lib/gencode.txt").read().decode()  # type: ignore[union-attr]
        fatbin = t.extractfile("nccl/lib/libnccl_kernels.fatbin").read()  # type: ignore[union-attr]
    assert gencode.strip() == "-gencode=arch=compute_121,code=sm_121"
    assert cubin_sms(fatbin) == [121]


def test_second_build_runs_no_stage(smoke_build: SmokeBuild) -> None:
    proc = run_cli(
        "build", "--json", "-f", str(smoke_build.root / "build.yaml"), env={**smoke_build.env(), "COLUMNS": "120"}
    )
    again = json.loads(proc.stdout)
    assert statuses(again) == dict.fromkeys(STAGES, "cached")
    assert keys(again) == keys(smoke_build.results)
    got = check("build-cached.txt", proc.stderr)  # what a user reads: every stage cached, nothing ran
    assert [line.split()[1] for line in got.splitlines() if line.startswith("[")] == list(STAGES)
    assert got.count("cached") == 2 * len(STAGES) and "building" not in got
    assert got in readme_blocks(), "README.md must show this build output as it is"


def test_vllm_change_rebuilds_only_vllm_and_runtime(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"vllm/new.py": "X = 1\n"}, "vllm moved")
    result = statuses(smoke_build.build(root))
    assert result == {"base": "cached", "triton": "cached", "flashinfer": "cached", "vllm": "built", "runtime": "built"}


def test_flashinfer_rebuild_does_not_fetch_cubins_again(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    first = keys(smoke_build.results)["flashinfer"]
    log = json.loads(
        wheel(smoke_build.store, "flashinfer", first, "flashinfer_cubin").read("flashinfer_cubin/_fetch_log.json")
    )
    assert len(log["downloaded"]) == 3  # the cold build fetched them
    root = smoke_build.copy(tmp_path / "src")
    # flashinfer.ref is auto: the release vLLM pins (v0.6.5) moves to a new commit
    fixtures.release(root / "repos" / "flashinfer", {"flashinfer/new.py": "Y = 2\n"}, "v0.6.5")
    results = smoke_build.build(root)
    assert statuses(results)["flashinfer"] == "built"
    log = json.loads(
        wheel(smoke_build.store, "flashinfer", keys(results)["flashinfer"], "flashinfer_cubin").read(
            "flashinfer_cubin/_fetch_log.json"
        )
    )
    assert log == {"downloaded": [], "reused": sorted(log["reused"])} and len(log["reused"]) == 3


def test_gpu_arch_120f_gives_other_device_code_and_keys(smoke_build: SmokeBuild) -> None:
    results = smoke_build.build(None, "--gpu-arch", "12.0f")
    assert statuses(results) == dict.fromkeys(STAGES, "built")
    assert not set(keys(results).values()) & set(keys(smoke_build.results).values())
    fatbin = wheel(smoke_build.store, "vllm", keys(results)["vllm"], "vllm").read("vllm/_kernels.fatbin")
    assert cubin_sms(fatbin) == [120]
    assert b"sm_120f" in fatbin and b"sm_121" not in fatbin


def test_corrupt_store_entry_is_reported_and_rebuilt(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(smoke_build.cache / "store", cache / "store")
    key = keys(smoke_build.results)["triton"]
    [whl] = (cache / "store" / "triton" / key).glob("*.whl")
    data = bytearray(whl.read_bytes())
    data[-10] ^= 0xFF
    whl.write_bytes(bytes(data))
    proc = _build(smoke_build.root, cache)
    assert proc.returncode == 0, proc.stderr
    assert "is corrupt" in proc.stderr
    assert statuses(json.loads(proc.stdout))["triton"] == "built"


def _build(
    root: Path, cache: Path, *extra: str, wrapper: list[str] | None = None, namespace: str = "", **popen: object
) -> subprocess.CompletedProcess[str]:
    argv = [*(wrapper or [sys.executable, "-m", "pipeline"]), "build", "--json", "-f", str(root / "build.yaml"), *extra]
    env = {
        **os.environ,
        "SPARK_PIPELINE_CACHE": str(cache),
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
        "SPARK_PIPELINE_CACHE_NAMESPACE": namespace,
    }
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, **popen)  # type: ignore[call-overload]


def _plan(root: Path, cache: Path, cached: bool = False) -> dict[str, object]:
    env = {**os.environ, "SPARK_PIPELINE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "plan", "--json", "-f", str(root / "build.yaml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {s["stage"]: (s["cached"] if cached else s["key"]) for s in json.loads(out)["stages"]}


@pytest.mark.parametrize("point", ["stage", "export", "rename"])
def test_sigkill_leaves_no_partial_entry(smoke_build: SmokeBuild, tmp_path: Path, point: str) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(smoke_build.cache / "store", cache / "store")
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"vllm/killed.py": f"POINT = {point!r}\n"}, "vllm moved")
    plan = _plan(root, cache)
    new_key = plan["vllm"]
    assert new_key != keys(smoke_build.results)["vllm"]
    killer = [sys.executable, str(REPO / "tests" / "integration" / "kill_at.py"), point, "vllm", "--"]
    proc = _build(root, cache, wrapper=killer, start_new_session=True, namespace=smoke_build.namespace)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    assert not (cache / "store" / "vllm" / new_key).exists()  # no partial entry under the real key
    assert _plan(root, cache, cached=True)["vllm"] is False
    again = _build(root, cache, namespace=smoke_build.namespace)
    assert again.returncode == 0, again.stderr[-3000:]
    result = statuses(json.loads(again.stdout))
    assert result["vllm"] == "built" and result["flashinfer"] == "cached"
    assert not [p for p in (cache / "store" / "vllm").iterdir() if p.name.startswith(".tmp-")]


def test_two_concurrent_builds_both_succeed_with_identical_content(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(smoke_build.cache / "store", cache / "store")
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"vllm/race.py": "R = 1\n"}, "vllm moved")
    env = {**os.environ, "SPARK_PIPELINE_CACHE": str(cache), "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    argv = [sys.executable, "-m", "pipeline", "build", "--json", "-f", str(root / "build.yaml")]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    k = [keys(json.loads(out)) for out, _ in outs]
    # both logs on a mismatch: a race shows only under load, and the next run may not repeat it
    assert k[0] == k[1], "\n---\n".join(err[-4000:] for _out, err in outs)
    entry = cache / "store" / "vllm" / k[0]["vllm"]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert [p.name for p in entries(cache / "store", "vllm")].count(k[0]["vllm"]) == 1
    for f in manifest["files"]:
        from pipeline.fsutil import file_sha256

        assert file_sha256(entry / f["path"]) == f["sha256"]


def test_export_writes_a_loadable_tarball(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    dest = tmp_path / "image.tar"
    results = smoke_build.build(None, "--export", str(dest))
    assert statuses(results)["runtime"] == "cached"
    with __import__("tarfile").open(dest) as t:
        assert "manifest.json" in t.getnames()


def test_failing_stage_shows_its_log_and_keeps_finished_stages(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(smoke_build.cache / "store", cache / "store")
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"csrc/kernel.cu": "this is not CUDA\n"}, "broken kernel")
    fixtures.release(root / "repos" / "flashinfer", {"flashinfer/ok.py": "Z = 3\n"}, "v0.6.5")
    new = _plan(root, cache)
    proc = _build(root, cache)
    assert proc.returncode == 1
    assert "stage vllm failed" in proc.stderr and "last lines of" in proc.stderr
    assert "Traceback" not in proc.stderr
    # flashinfer finished before vllm failed: it stays in the store
    assert (cache / "store" / "flashinfer" / str(new["flashinfer"]) / "manifest.json").is_file()
    assert not (cache / "store" / "vllm" / str(new["vllm"])).exists()


def docker_sh(image: str, script: str) -> str:
    return subprocess.run(
        [DOCKER, "run", "--rm", "--pull=never", "--network", "none", "--entrypoint", "sh", image, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_the_cuda_stand_in_lacks_python_and_the_toolchain_has_it(smoke_build: SmokeBuild) -> None:
    from pipeline.config import load_build
    from pipeline.core.ir import toolchain_tag
    from pipeline.stages import all_stages

    stand_in = all_stages(load_build(smoke_build.root / "build.yaml").spec)[0].base.ref
    probe = "for t in python3 pip3 g++ gcc nvcc; do command -v $t >/dev/null && echo $t; done; true"
    assert docker_sh(stand_in, probe).split() == ["nvcc"]  # what NVIDIA's devel image has, nothing more
    toolchain = toolchain_tag("linux/amd64", keys(smoke_build.results)["base"])
    assert docker_sh(toolchain, probe).split() == ["python3", "pip3", "g++", "gcc", "nvcc"]
    assert docker_sh(toolchain, "python3 -c 'import torch; print(torch.__version__)'") == "2.13.0"


def test_tools_only_the_base_stage_installs_are_used_by_the_vllm_build(smoke_build: SmokeBuild) -> None:
    whl = wheel(smoke_build.store, "vllm", keys(smoke_build.results)["vllm"], "vllm")
    tools = json.loads(whl.read("vllm/_toolchain.json"))
    assert tools["cargo"] == "cargo 1.91.1 (smoke-stack stand-in)"  # rustup's (stand-in) install, from base
    assert tools["protoc"].startswith("libprotoc ") and tools["cxx"].startswith("g++ (Debian")  # apt, in base
    meta = whl.read(next(n for n in whl.namelist() if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: smoke-runtime-dep" in meta  # prepare kept the runtime requirement …
    assert "torch" not in meta.lower() and "flashinfer" not in meta.lower()  # … and dropped these pins
    assert whl.read("vllm/_smoke_patch.py") == b"PATCHED = True\n"  # the local patch, as the real build's


def test_runtime_has_vllms_requirements_and_passed_its_import_check(smoke_build: SmokeBuild) -> None:
    entry = smoke_build.store / "vllm" / keys(smoke_build.results)["vllm"]
    assert (entry / "deps" / "requirements.txt").read_text().replace("_", "-") == "smoke-runtime-dep==1.0\n"
    assert list((entry / "deps").glob("smoke_runtime_dep-1.0-*.whl"))
    log = next((smoke_build.cache / "logs" / "runtime").glob("*/build.log")).read_text()
    assert "import check: torch 2.13.0 vllm 0.16.1" in log
    # what vLLM checks before telling a node to run `vllm download-kernels`: the kernels are in the image
    assert "kernels: flashinfer-cubin 0.6.5, flashinfer-jit-cache 0.6.5 = flashinfer-python 0.6.5" in log
    assert docker_sh("vllm-node-smoke", "python3 -c 'import smoke_runtime_dep, smoke_extra; print(1)'") == "1"


def test_a_runtime_that_fails_its_import_check_is_never_tagged(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"vllm/__init__.py": "import no_such_module\n"}, "broken import")
    proc = _build(root, smoke_build.cache, "--tag", "vllm-node-broken", namespace=smoke_build.namespace)
    assert proc.returncode == 1 and "stage runtime failed" in proc.stderr
    assert "No module named 'no_such_module'" in proc.stderr
    assert subprocess.run([DOCKER, "image", "inspect", "vllm-node-broken"], capture_output=True).returncode != 0


def test_a_lost_toolchain_image_is_made_again_without_rebuilding_base(smoke_build: SmokeBuild, tmp_path: Path) -> None:
    from pipeline.core.ir import toolchain_tag

    tag = toolchain_tag("linux/amd64", keys(smoke_build.results)["base"])
    subprocess.run([DOCKER, "rmi", tag], check=True, capture_output=True)
    root = smoke_build.copy(tmp_path / "src")
    fixtures.commit(root / "repos" / "vllm", {"vllm/again.py": "A = 1\n"}, "vllm moved")
    proc = _build(root, smoke_build.cache, namespace=smoke_build.namespace)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert statuses(json.loads(proc.stdout))["base"] == "cached"
    assert f"toolchain image {tag} is not in the local Docker: making it again" in " ".join(proc.stderr.split())
    assert subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True).returncode == 0


def test_a_submodules_content_is_in_the_built_wheel(smoke_build: SmokeBuild) -> None:
    whl = wheel(smoke_build.store, "flashinfer", keys(smoke_build.results)["flashinfer"], "flashinfer_python")
    assert whl.read("flashinfer/data/include/cutlass/cutlass.h") == b"#define CUTLASS_SMOKE 1\n"


def test_triton_from_source_gets_its_build_requirements_through_the_ca_bundle(
    smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    """triton.source: git installs what Triton's pyproject names (pybind11 from PyPI) before building;
    behind a TLS-inspecting proxy (this sandbox, CI) the build steps trust build.yaml's ca_bundle,
    which never reaches an image."""
    import os

    from pipeline.core.ir import CA_BUNDLE, toolchain_tag

    root = smoke_build.copy(tmp_path / "src")
    args = ["--set", "triton.source=git", "--set", "network=true"]
    ca = os.environ.get("SSL_CERT_FILE")
    if ca:
        args += ["--set", f"ca_bundle={ca}"]
    proc = _build(root, smoke_build.cache, *args, namespace=smoke_build.namespace)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert statuses(results)["triton"] == "built"
    whl = wheel(smoke_build.store, "triton", keys(results)["triton"], "triton")
    assert json.loads(whl.read("triton/_pybind11.json"))["pybind11"]
    toolchain = toolchain_tag("linux/amd64", keys(results)["base"])
    assert docker_sh(toolchain, f"test -e {CA_BUNDLE} && echo present || echo absent") == "absent"


def test_every_pip_installs_the_plans_resolved_set(smoke_build: SmokeBuild) -> None:
    """The fixture torch pins smoke-cross==1.0 while 2.0 exists (torch 2.14.0 and nvshmem 3.4.5 vs 3.8.0):
    the toolchain and the runtime image hold 1.0, and every pip of the toolchain is held to the set."""
    from pipeline.core.ir import toolchain_tag

    toolchain = toolchain_tag("linux/amd64", keys(smoke_build.results)["base"])
    version = "python3 -c 'import smoke_cross; print(smoke_cross.VERSION)'"
    assert docker_sh(toolchain, version) == "1.0"
    assert docker_sh("vllm-node-smoke", version) == "1.0"
    held = docker_sh(toolchain, 'cat "$PIP_CONSTRAINT"').split()
    # the toolchain's part of the set: what base installs, not vLLM's runtime requirements (their changes
    # must not rebuild the toolchain)
    assert set(held) == {"smoke-cross==1.0", "torch==2.13.0", "triton==3.6.0"}
    log = next((smoke_build.cache / "logs" / "base").glob("*/build.log")).read_text()
    assert "python env: every installed package is in the resolved set" in log

"""Real upstream trees (PyPI sdists of vLLM 0.11.0, 0.20.2 and 0.33.0, and flashinfer-python
0.7.2.post1) through the tool's real code paths: the versions `auto` reads from each layout, plan on
the 0.33.0 tree, vLLM's prepare steps in the toolchain image, and FlashInfer's own cubin downloader
with our cache patch against an artifactory on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.sources.mirror import Mirrors, resolve_ref
from pipeline.sources.upstream import vllm_facts
from tests.conftest import REPO, run_cli
from tests.integration.conftest import SmokeBuild
from tests.upstream import sdist, sdist_repo

LAYOUTS = {  # version: (torch pin, flashinfer-python pin, has rust/)
    "0.11.0": ("2.8.0", "0.3.1", False),  # root use_existing_torch.py, requirements/build.txt
    "0.20.2": ("2.11.0", "0.6.8.post1", False),  # requirements/build/cuda.txt (2026-05)
    "0.33.0": ("2.14.0", "0.7.2.post1", True),  # tools/use_existing_torch.py, build/rust.txt, rust/
}


@pytest.fixture(scope="module")
def vllm_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-sdists")
    return {v: sdist_repo("vllm", v, root / f"vllm-{v}") for v in LAYOUTS}


@pytest.mark.parametrize("version", list(LAYOUTS))
def test_auto_reads_each_layouts_pins(vllm_trees: dict[str, Path], tmp_path: Path, version: str) -> None:
    mirror, commit = resolve_ref(Mirrors(tmp_path / "cache"), "vllm", str(vllm_trees[version]), f"v{version}", "x")
    facts = vllm_facts(mirror, commit)
    torch, flashinfer, rust = LAYOUTS[version]
    assert (facts.pins["torch"], facts.pins["flashinfer-python"], facts.has_rust) == (torch, flashinfer, rust)


def test_plan_on_vllm_0_33_0_follows_its_pins(vllm_trees: dict[str, Path], smoke: Path, tmp_path: Path) -> None:
    flashinfer = sdist_repo("flashinfer-python", "0.7.2.post1", tmp_path / "flashinfer")
    args = [
        "-f",
        str(REPO / "build.yaml"),
        "--vllm-repo",
        str(vllm_trees["0.33.0"]),
        "--vllm-ref",
        "v0.33.0",
        "--set",
        f"flashinfer.repo={flashinfer}",
        "--set",
        f"nccl.repo={smoke / 'repos/nccl'}",
        # the Python environment resolves against PyPI's real metadata (download.pytorch.org is out of reach)
        "--set",
        "nccl.ref=main",
        "--set",
        "base.torch.index=https://pypi.org/simple",
    ]
    proc = run_cli("plan", "--json", *args)
    plan = json.loads(proc.stdout)
    assert plan["versions"]["torch"] == "2.14.0" and plan["versions"]["flashinfer-python"] == "0.7.2.post1"
    facts = {s["stage"]: s["facts"] for s in plan["stages"]}
    assert facts["base"]["base.torch.version"] == "2.14.0" and facts["base"]["base.torch.torchvision"] == "0.29.0"
    assert facts["base"]["base.rust"] == "1.95"  # vLLM 0.33.0 has rust/ and its rust-toolchain.toml names 1.95
    assert facts["flashinfer"]["flashinfer.ref v0.7.2.post1"]
    assert "versions from vLLM" in proc.stderr and "torch 2.14.0" in proc.stderr
    # cutlass-dsl follows vLLM's own pin (a hand pin clashed with it at install time)
    assert plan["versions"]["nvidia-cutlass-dsl"] == "4.8.0"
    # an explicit torch that vLLM's torchvision pin cannot go with: both sides named, the auto one as such
    clash = " ".join(run_cli("plan", *args, "--torch-version", "2.13.0", check=2).stderr.split())
    assert "torch==2.13.0 <- build.yaml base.torch.version" in clash
    assert "torchvision==0.29.0 <- build.yaml base.torch.torchvision (auto: vLLM v0.33.0" in clash
    explicit = run_cli(
        "plan",
        *args,
        "--torch-version",
        "2.13.0",
        "--set",
        "base.torch.torchvision=none",
        "--set",
        "base.torch.torchaudio=none",
    ).stderr
    assert "base.torch.version is 2.13.0 but vLLM" in explicit and "pins torch==2.14.0" in explicit


@pytest.mark.docker
@pytest.mark.parametrize("version", list(LAYOUTS))
def test_vllm_prepare_runs_on_each_layout_in_the_toolchain(
    vllm_trees: dict[str, Path], smoke_build: SmokeBuild, tmp_path: Path, version: str
) -> None:
    """The vllm stage's own prepare steps, in the toolchain image the stage runs in, on the real tree:
    torch and FlashInfer pins gone from every requirements file, the build requirements installed."""
    from pipeline.core.ir import toolchain_tag
    from tests.integration.dockerd import DOCKER
    from tests.specs import SPARK, stages

    tree = tmp_path / "vllm"
    shutil.copytree(vllm_trees[version], tree, ignore=shutil.ignore_patterns(".git"))
    vllm = next(s for s in stages(SPARK) if s.name == "vllm")
    prepare = [step.argv for step in vllm.steps if step.kind == "prepare"]
    toolchain = toolchain_tag("linux/amd64", {r["stage"]: r["key"] for r in smoke_build.results}["base"])
    pip_cache = smoke_build.cache / "test-pip-cache"  # shared by the three layouts: downloads once
    script = " && ".join(" ".join(argv) for argv in prepare) + " && python3 -m pip list --format=freeze"
    context = REPO / "docker-contexts" / "vllm"
    # Where PyPI is reached through a TLS-inspecting proxy (this sandbox), pip needs the host's CA bundle.
    ca = os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT")
    ca_args = ["-v", f"{ca}:/etc/ssl/host-ca.crt:ro", "-e", "PIP_CERT=/etc/ssl/host-ca.crt"] if ca else []
    proc = subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            "--pull=never",
            "-v",
            f"{tree}:/src/vllm",
            *ca_args,
            "-v",
            f"{context}:/inputs/context:ro",
            "-v",
            f"{pip_cache}:/root/.cache/pip",
            "-e",
            "PIP_BREAK_SYSTEM_PACKAGES=1",
            "-w",
            "/src/vllm",
            toolchain,
            "sh",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in [*tree.glob("requirements/**/*.txt"), tree / "pyproject.toml"]:
        for line in f.read_text().splitlines():
            assert not re.match(r'^\s*"?(torch|torchvision|torchaudio)\s*[=<>~]', line), (f, line)
            assert not re.match(r"^\s*flashinfer", line), (f, line)
    installed = {line.split("==")[0].lower() for line in proc.stdout.splitlines() if "==" in line}
    assert {"cmake", "ninja", "setuptools-scm", "jinja2"} <= installed
    if version == "0.33.0":
        assert "setuptools-rust" in installed  # requirements/build/rust.txt
    assert "torch==2.13.0" in proc.stdout  # the toolchain's torch stayed


class Artifactory:
    """A test stand-in for NVIDIA's cubin artifactory, on loopback: directory listings as FlashInfer
    parses them, each pin's checksums.txt, and a log of every request."""

    def __init__(self, root: Path):
        import http.server
        import threading

        self.root = root
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: object, **k: object) -> None:
                super().__init__(*a, directory=str(root), **k)  # type: ignore[arg-type]

            def list_directory(self, path: str) -> object:  # FlashInfer reads <a href="…"> links
                import io

                entries = sorted(Path(path).iterdir())
                body = "".join(f'<a href="{p.name}{"/" if p.is_dir() else ""}">{p.name}</a>\n' for p in entries)
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return io.BytesIO(data)

            def log_message(self, *args: object) -> None:
                log.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def downloads(self) -> list[str]:
        return [p for p in self.requests if not p.endswith("/")]


PIN_DIRS = {
    "TRTLLM_GEN_FMHA": "fmha/trtllm-gen/",
    "TRTLLM_GEN_BMM": "batched_gemm/",
    "TRTLLM_GEN_GEMM": "gemm/",
    "DEEPGEMM": "deep-gemm/",
    "DSL_FMHA": "fmha/cute-dsl/",
}
META = {
    "TRTLLM_GEN_FMHA": "flashInferMetaInfo.h",
    "TRTLLM_GEN_BMM": "flashinferMetaInfo.h",
    "TRTLLM_GEN_GEMM": "flashinferMetaInfo.h",
}


def publish(root: Path, pin: str) -> dict[str, str]:
    """One pin of every artifact directory FlashInfer 0.7.2.post1 downloads: a few cubins, the meta
    headers, checksums.txt; returns each checksums.txt's path -> sha256 (FlashInfer's CheckSumHash)."""
    import hashlib
    import platform

    dirs = [f"{pin}/{d}" for k, d in PIN_DIRS.items() if k != "DSL_FMHA"]
    dirs.append(f"{pin}/{PIN_DIRS['DSL_FMHA']}{platform.machine()}/sm_100a/")
    manifests = {}
    for d in dirs:
        files = {f"k{i}.cubin": f"{d} kernel {i}\n".encode() * 100 for i in range(2)}
        meta = next((META[k] for k, v in PIN_DIRS.items() if d.endswith(v) and k in META), None)
        if meta:
            files[f"include/{meta}"] = f"// {d} meta\n".encode()
        for rel, data in files.items():
            (root / d / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / d / rel).write_bytes(data)
        manifest = "".join(f"{hashlib.sha256(b).hexdigest()} {rel}\n" for rel, b in sorted(files.items()))
        (root / d / "checksums.txt").write_text(manifest)
        manifests[f"{d}checksums.txt"] = hashlib.sha256(manifest.encode()).hexdigest()
    return manifests


DOWNLOAD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from fi_downloader import artifacts
pin, manifests = sys.argv[2], json.loads(sys.argv[3])
class ArtifactPath:  # the pins this test's artifactory publishes (FlashInfer's code reads them at call time)
    TRTLLM_GEN_FMHA = pin + "/fmha/trtllm-gen/"; TRTLLM_GEN_BMM = pin + "/batched_gemm/"
    TRTLLM_GEN_GEMM = pin + "/gemm/"; DEEPGEMM = pin + "/deep-gemm/"; DSL_FMHA = pin + "/fmha/cute-dsl/"
    DSL_FMHA_ARCHS = ("sm_100a",)
class CheckSumHash:
    map_checksums = manifests
artifacts.ArtifactPath, artifacts.CheckSumHash = ArtifactPath, CheckSumHash
artifacts.download_artifacts()
"""


def downloader(src: Path, dest: Path, patched: bool) -> Path:
    """FlashInfer's artifacts.py and jit/cubin_loader.py from the sdist (with our patch applied, the
    way checkout applies docker-contexts/flashinfer/patches/), as a package of their own: the real
    flashinfer package imports torch. Its `core.logger` and `env.FLASHINFER_CUBIN_DIR` are given here."""
    tree = dest / "tree"
    shutil.copytree(src, tree, ignore=shutil.ignore_patterns("3rdparty", "csrc", "include", "tests"))
    if patched:
        for patch in sorted((REPO / "docker-contexts/flashinfer/patches").glob("*.patch")):
            subprocess.run(["git", "apply", str(patch)], cwd=tree, check=True)
    pkg = dest / "fi_downloader"
    (pkg / "jit").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "jit" / "__init__.py").write_text("")
    shutil.copy(tree / "flashinfer/artifacts.py", pkg / "artifacts.py")
    shutil.copy(tree / "flashinfer/jit/cubin_loader.py", pkg / "jit/cubin_loader.py")
    (pkg / "jit" / "core.py").write_text("import logging\nlogger = logging.getLogger('flashinfer')\n")
    (pkg / "jit" / "env.py").write_text(
        "import os, pathlib\nFLASHINFER_CUBIN_DIR = pathlib.Path(os.environ['FLASHINFER_CUBIN_DIR'])\n"
    )
    return dest


@pytest.mark.parametrize("patched", [True, False], ids=["with-our-patch", "upstream-as-is"])
def test_flashinfers_downloader_reuses_the_cubin_cache(tmp_path: Path, patched: bool) -> None:
    import os
    import sys
    import tarfile

    with tarfile.open(sdist("flashinfer-python", "0.7.2.post1")) as t:
        members = [m for m in t.getmembers() if "/flashinfer/" in m.name and m.name.endswith(".py")]
        t.extractall(tmp_path / "sdist", members=members, filter="data")
    [src] = (tmp_path / "sdist").iterdir()
    code = downloader(src, tmp_path / "code", patched)
    art = tmp_path / "artifactory"
    old = publish(art, "0ld0pin")
    new = publish(art, "n3wpin")
    server = Artifactory(art)
    cache = tmp_path / "cubins"  # the persistent cache volume the flashinfer stage mounts

    def build(pin: str, manifests: dict[str, str]) -> list[str]:
        server.requests.clear()
        env = {
            **os.environ,
            "FLASHINFER_CUBIN_DIR": str(cache),
            "FLASHINFER_CUBINS_REPOSITORY": server.url,
            "no_proxy": "127.0.0.1",
            "NO_PROXY": "127.0.0.1",
        }
        subprocess.run(
            [sys.executable, "-c", DOWNLOAD, str(code), pin, json.dumps(manifests)],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        return server.downloads()

    build("0ld0pin", old)  # an older FlashInfer pin left its files in the cache
    first = build("n3wpin", new)
    published = {f"/{p.relative_to(art).as_posix()}" for p in (art / "n3wpin").rglob("*") if p.is_file()}
    assert set(first) == published  # every cubin, meta header and manifest of the new pin, nothing else
    files = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert files and all(f.startswith("n3wpin/") for f in files)  # what the wheel packs: no stale pin …
    assert not [f for f in files if f.endswith(".lock")]  # … and no lock file
    second = build("n3wpin", new)
    if patched:
        assert second == []  # the second build downloads nothing
    else:
        assert second and all(p.endswith("checksums.txt") for p in second)  # upstream re-fetches manifests
    server.server.shutdown()

"""Generate the smoke stack's fixture sources: tiny git repositories shaped like NCCL, Triton,
FlashInfer and vLLM, a local wheel index with a torch stand-in, and the smoke build.yaml.

    python -m examples.smoke.fixtures DIR      # then: python -m pipeline build -f DIR/build.yaml

The fixtures go through the same stage definitions as the real build; their builds record what they
saw (arch lists, job counts) in the wheels, and the vLLM fixture compiles a real CUDA kernel with nvcc
for the arch list it is given, so tests can check that `--gpu-arch` reached the compiler.
Commits use fixed dates and identities, so the same fixtures give the same SHAs (and keys) every time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from examples.smoke import models as smoke_models

HERE = Path(__file__).parent
GIT_ENV = {
    "GIT_AUTHOR_NAME": "smoke",
    "GIT_AUTHOR_EMAIL": "smoke@example.invalid",
    "GIT_COMMITTER_NAME": "smoke",
    "GIT_COMMITTER_EMAIL": "smoke@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}

# A setup.py fragment every fixture uses: record the build environment inside the package.
BUILD_INFO = """
import json, os
from pathlib import Path
from setuptools import setup
from setuptools.command.build_py import build_py

KEYS = ("TORCH_CUDA_ARCH_LIST", "FLASHINFER_CUDA_ARCH_LIST", "MAX_JOBS", "NCCL_NVCC_GENCODE")


class BuildInfo(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / PKG / "_build_info.json"
        target.write_text(json.dumps({k: os.environ.get(k) for k in KEYS}, sort_keys=True))
        extra(Path(self.build_lib) / PKG)
"""


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def make_repo(path: Path, files: dict[str, str], message: str = "initial") -> str:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write(path, files)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def commit(path: Path, files: dict[str, str], message: str) -> str:
    write(path, files)
    git(path, "add", "--", *files)  # not -A: a submodule's gitlink has no checkout here and must stay
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


def release(path: Path, files: dict[str, str], tag: str) -> str:
    """A new commit that the release tag `tag` then names (what a moved pin looks like)."""
    sha = commit(path, files, f"release {tag}")
    git(path, "tag", "-f", tag)
    return sha


def add_submodule(path: Path, sub_path: str, url: str, sha: str) -> str:
    """Record a submodule the way `git submodule add` does (.gitmodules + a gitlink), without cloning."""
    write(path, {".gitmodules": f'[submodule "{sub_path}"]\n\tpath = {sub_path}\n\turl = {url}\n'})
    git(path, "update-index", "--add", "--cacheinfo", f"160000,{sha},{sub_path}")
    git(path, "add", ".gitmodules")
    git(path, "commit", "-q", "-m", f"add submodule {sub_path}")
    return git(path, "rev-parse", "HEAD")


def make_pr(path: Path, number: int, files: dict[str, str], base: str = "main") -> str:
    """A PR the GitHub way: a branch whose head is also published as refs/pull/N/head."""
    git(path, "checkout", "-q", "-b", f"pr-{number}", base)
    sha = commit(path, files, f"PR #{number}")
    git(path, "update-ref", f"refs/pull/{number}/head", sha)
    git(path, "checkout", "-q", "main")
    git(path, "branch", "-q", "-D", f"pr-{number}")
    return sha


REQUIRES = '''

def requires(path):
    """Like vLLM's get_requirements(): lines of a requirements file, following -r includes."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out += requires(Path(path).parent / line[3:].strip())
        elif line:
            out.append(line)
    return out
'''


def setup_py(
    pkg: str,
    name: str,
    version: str,
    extra: str = "def extra(pkg_dir):\n    pass\n",
    requires_from: str = "",
    scripts: str = "",
) -> str:
    install = f", install_requires=requires({requires_from!r})" if requires_from else ""
    if scripts:
        install += f", entry_points={{'console_scripts': [{scripts!r}]}}"
    data = "['*.fatbin', '*.so', '*.json', 'cubins/*', 'data/include/**/*']"
    return (
        f"PKG = {pkg!r}\n" + BUILD_INFO + REQUIRES + "\n" + extra + "\n\n"
        f"setup(name={name!r}, version={version!r}, packages=[PKG], cmdclass={{'build_py': BuildInfo}}{install},\n"
        f"      include_package_data=True, package_data={{PKG: {data}}})\n"
    )


# --- the torch stand-in wheel --------------------------------------------------------------------


def write_wheel(dest: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A minimal valid py3-none-any wheel (PEP 427), written directly."""
    dist = f"{name}-{version}"
    info = f"{dist}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: smoke-fixtures\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for rel, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    contents[f"{info}/RECORD"] = "\n".join(record) + "\n"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for rel in sorted(contents):
            zi = zipfile.ZipInfo(rel, date_time=(2026, 1, 1, 0, 0, 0))
            z.writestr(zi, contents[rel])
    return path


def torch_index(dest: Path, version: str = "2.13.0") -> None:
    """Stand-ins for download.pytorch.org: torch, pinning the Triton it was built with (as real torch does),
    and an exact pin on a library that has a newer release (as torch 2.14.0 pins nvidia-nvshmem-cu13
    3.4.5 while 3.8.0 exists): the smoke base's unpinned `smoke-cross` must resolve to 1.0, not 2.0."""
    write_wheel(
        dest,
        "torch",
        version,
        {
            "torch/__init__.py": f'__version__ = "{version}"\nSTAND_IN = True  # smoke-stack stand-in for PyTorch\n',
        },
        requires=("triton==3.6.0", "smoke-cross==1.0"),
    )
    write_wheel(dest, "triton", "3.6.0", {"triton/__init__.py": '"""smoke-stack stand-in for Triton"""\n'})
    for v in ("1.0", "2.0"):
        write_wheel(dest, "smoke_cross", v, {"smoke_cross/__init__.py": f'VERSION = "{v}"\n'})


# --- source repositories -------------------------------------------------------------------------

KERNEL = """extern "C" __global__ void add_one(float *x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
"""

VLLM_EXTRA = '''
import re, subprocess


def supported():
    """CUDA_SUPPORTED_ARCHS from CMakeLists.txt, as vLLM's CMake sets it (the list for CUDA >= 13)."""
    return re.search(r'set\\(CUDA_SUPPORTED_ARCHS "([^"]*)"', open("CMakeLists.txt").read())[1].split(";")


def filtered(arch):
    """vLLM's cuda_archs_loose_intersection, for one requested arch: kept (with its suffix) when its
    base is supported, else the highest supported base of the same major below it, suffix dropped."""
    base = arch.rstrip("af")
    if base in supported():
        return arch
    lower = [s for s in supported() if s.split(".")[0] == base.split(".")[0] and float(s) <= float(base)]
    return max(lower, key=float) if lower else None


def gencodes(arch_list):
    """TORCH_CUDA_ARCH_LIST (e.g. "12.1a;12.0f") -> nvcc -gencode flags, after vLLM's arch filter."""
    out = []
    for arch in re.split(r"[;\\s]+", arch_list.strip()):
        kept = filtered(arch)
        if kept:
            num = kept.replace(".", "")
            out += ["-gencode", f"arch=compute_{num},code=sm_{num}"]
    return out


def tool(*argv):
    """What a tool the toolchain (base stage) installed says about itself."""
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[0]


def extra(pkg_dir):
    arches = os.environ["TORCH_CUDA_ARCH_LIST"]
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    subprocess.run([nvcc, "-fatbin", *gencodes(arches), "-o", str(pkg_dir / "_kernels.fatbin"),
                    "csrc/kernel.cu"], check=True)
    # Like vLLM's _C.abi3.so: host code for the build's platform (an AArch64 ELF on a Spark) with the
    # device code embedded.
    subprocess.run([nvcc, "-c", "-Xcompiler", "-fPIC", *gencodes(arches), "-o", "build/kernel.o", "csrc/kernel.cu"],
                   check=True)
    subprocess.run(["g++", "-shared", "-o", str(pkg_dir / "_C.so"), "build/kernel.o"], check=True)
    # vLLM >= 0.26 builds a Rust frontend: cargo and protoc must come from the toolchain image.
    (pkg_dir / "_toolchain.json").write_text(json.dumps({
        "cargo": tool("cargo", "--version"), "protoc": tool("protoc", "--version"),
        "cxx": tool("g++", "--version")}, sort_keys=True))
'''

TRITON_EXTRA = """
import pybind11


def extra(pkg_dir):
    (pkg_dir / "_pybind11.json").write_text(json.dumps({"pybind11": pybind11.__version__}))
"""

FLASHINFER_EXTRA = '''
import shutil


def extra(pkg_dir):
    """Like flashinfer-python: the submodules' headers go into the wheel (the JIT compiles with them)."""
    shutil.copytree("3rdparty/cutlass/include", pkg_dir / "data" / "include")
'''

CUBIN_EXTRA = '''
import hashlib, shutil
from urllib.parse import urlparse


def extra(pkg_dir):
    """Fetch cubins listed in checksums.txt from FLASHINFER_CUBINS_REPOSITORY, skipping files that are
    already present with a valid checksum (what makes the cubin cache work)."""
    repo = urlparse(os.environ["FLASHINFER_CUBINS_REPOSITORY"]).path
    cache = Path("flashinfer_cubin/cubins")
    cache.mkdir(parents=True, exist_ok=True)
    log = {"downloaded": [], "reused": []}
    for line in Path("checksums.txt").read_text().split("\\n"):
        if not line.strip():
            continue
        digest, name = line.split()
        have = cache / name
        if have.exists() and hashlib.sha256(have.read_bytes()).hexdigest() == digest:
            log["reused"].append(name)
        else:
            shutil.copyfile(os.path.join(repo, name), have)
            log["downloaded"].append(name)
        (pkg_dir / "cubins").mkdir(exist_ok=True)
        shutil.copyfile(have, pkg_dir / "cubins" / name)
    (pkg_dir / "_fetch_log.json").write_text(json.dumps(log, sort_keys=True))
'''

NCCL_MAKEFILE = """# Shaped like NCCL's: `make src.build NVCC_GENCODE=...` then `make pkg.txz.build`.
CUDA_HOME ?= /usr/local/cuda
NVCC_GENCODE ?= -gencode=arch=compute_90,code=sm_90

src.build:
\tmkdir -p build/lib build/include
\t$(CUDA_HOME)/bin/nvcc -fatbin $(NVCC_GENCODE) -o build/lib/libnccl_kernels.fatbin src/collectives.cu
\techo '$(NVCC_GENCODE)' > build/lib/gencode.txt
\tcp src/nccl.h build/include/

pkg.txz.build: src.build
\tmkdir -p build/pkg/txz
\ttar -C build -cJf build/pkg/txz/nccl_2.30.1-1+cuda13.0_smoke.txz --transform 's,^,nccl/,' lib include
"""


def make_sources(root: Path) -> dict[str, str]:
    """Create every fixture repository under root/repos; returns name -> HEAD sha of main."""
    repos = root / "repos"
    heads = {}
    heads["nccl"] = make_repo(
        repos / "nccl",
        {
            "Makefile": NCCL_MAKEFILE,
            "src/collectives.cu": KERNEL.replace("add_one", "nccl_all_reduce_stub"),
            "src/nccl.h": "#define NCCL_MAJOR 2\n",
        },
    )
    heads["triton"] = make_repo(
        repos / "triton",
        {
            "setup.py": setup_py("triton", "triton", "3.6.0", TRITON_EXTRA),
            # as Triton's: its setup.py imports pybind11, a build requirement --no-build-isolation does not install
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=40.8.0", "wheel", "pybind11>=2.13.1"]\n',
            "triton/__init__.py": '"""smoke-stack stand-in for Triton"""\n',
        },
    )
    cubins = {f"gemm_sm121_{i}.cubin": f"cubin payload {i}\n" * 64 for i in range(3)}
    checksums = "".join(f"{hashlib.sha256(t.encode()).hexdigest()} {n}\n" for n, t in sorted(cubins.items()))
    # FlashInfer's 3rdparty/ are submodules (cutlass, spdlog, …): its wheel ships their headers.
    heads["cutlass"] = make_repo(repos / "cutlass", {"include/cutlass/cutlass.h": "#define CUTLASS_SMOKE 1\n"})
    heads["flashinfer"] = make_repo(
        repos / "flashinfer",
        {
            "setup.py": setup_py("flashinfer", "flashinfer-python", "0.6.5", FLASHINFER_EXTRA),
            "flashinfer/__init__.py": '"""smoke-stack stand-in for FlashInfer"""\n',
            "flashinfer-cubin/setup.py": setup_py("flashinfer_cubin", "flashinfer-cubin", "0.6.5", CUBIN_EXTRA),
            "flashinfer-cubin/flashinfer_cubin/__init__.py": "",
            "flashinfer-cubin/checksums.txt": checksums,
            **{f"third_party/cubin-artifactory/{n}": t for n, t in cubins.items()},
            "flashinfer-jit-cache/setup.py": setup_py("flashinfer_jit_cache", "flashinfer-jit-cache", "0.6.5"),
            "flashinfer-jit-cache/flashinfer_jit_cache/__init__.py": "",
        },
    )
    heads["flashinfer"] = add_submodule(repos / "flashinfer", "3rdparty/cutlass", "../cutlass", heads["cutlass"])
    git(repos / "flashinfer", "tag", "v0.6.5")  # the release the vLLM fixture pins (flashinfer.ref: auto)
    heads["vllm"] = make_repo(
        repos / "vllm",
        {
            "setup.py": setup_py(
                "vllm",
                "vllm",
                "0.16.1",
                VLLM_EXTRA,
                requires_from="requirements/cuda.txt",
                scripts="vllm=vllm.serve:main",
            ),
            # `vllm serve` that speaks the OpenAI API (deterministic, no model: see the file's docstring)
            "vllm/serve.py": (HERE / "vllm_serve.py").read_text(),
            "vllm/__init__.py": (
                '"""smoke-stack stand-in for vLLM"""\n__version__ = "0.16.1"\nimport smoke_runtime_dep\n'
            ),
            "csrc/kernel.cu": KERNEL,
            # vLLM's tree has a .dockerignore of its own (dist, vllm/*.so, vllm/vllm_flash_attn/*, lib/, ...). A
            # buildx named build context would apply it to the source; ours must not (engines/buildkit.py).
            ".dockerignore": "# smoke stand-in: a build context that honoured this would hold nothing\n*\n",
            # vLLM 0.33/0.34's list for CUDA >= 13: without docker-contexts/vllm/cuda_archs.py, 12.1a -> 12.0
            "CMakeLists.txt": 'set(CUDA_SUPPORTED_ARCHS "7.5;8.0;8.6;8.7;8.9;9.0;10.0;11.0;12.0")\n',
            # The newest layout (2026-10): the script under tools/, build requirements under requirements/build/.
            "tools/use_existing_torch.py": (
                "import glob\n"
                "for f in glob.glob('requirements/**/*.txt', recursive=True):\n"
                "    lines = open(f).readlines()\n"
                "    open(f, 'w').writelines(l for l in lines if 'torch' not in l)\n"
            ),
            "requirements/common.txt": "smoke-runtime-dep>=1.0\n",
            "requirements/cuda.txt": "-r common.txt\ntorch==2.13.0\nflashinfer-python==0.6.5\n",
            # the torch pin must not survive prepare (it would replace the toolchain's torch)
            "requirements/build/cuda.txt": "# build requirements of the smoke fixture\ntorch==2.13.0\n",
            "rust/Cargo.toml": '[workspace]\nmembers = []\n\n[workspace.package]\nedition = "2024"\n',
            "rust-toolchain.toml": '[toolchain]\nchannel = "1.91.1"\n',  # what base.rust.toolchain: auto installs
            "docs/index.md": "# vLLM smoke fixture\n",
        },
    )
    # PRs: one touching python code, one touching only docs (vLLM tolerates doc conflicts).
    make_pr(repos / "vllm", 101, {"vllm/pr101.py": "FEATURE = 'from PR 101'\n"})
    make_pr(repos / "vllm", 102, {"docs/index.md": "# vLLM smoke fixture (PR 102)\n"})
    # A PR that touches CUDA code: fine for a build, refused as a launch-time patch.
    make_pr(repos / "vllm", 103, {"csrc/kernel.cu": KERNEL.replace("1.0f", "2.0f"), "vllm/pr103.py": "X = 1\n"})
    return heads


RUSTUP_STAND_IN = """#!/bin/sh
# smoke-stack stand-in for rustup's installer (https://sh.rustup.rs), which needs the internet: it
# installs `rustc` and `cargo` that only say which toolchain they stand in for.
set -eu
toolchain=stable
while [ $# -gt 0 ]; do case "$1" in --default-toolchain) toolchain=$2; shift 2;; *) shift;; esac; done
mkdir -p "$CARGO_HOME/bin" "$RUSTUP_HOME"
for tool in rustc cargo; do
  printf '#!/bin/sh\\necho "%s %s (smoke-stack stand-in)"\\n' "$tool" "$toolchain" > "$CARGO_HOME/bin/$tool"
  chmod +x "$CARGO_HOME/bin/$tool"
done
"""


# A local patch on the vLLM tree, as the real build carries docker-contexts/*/patches/: plan applies it to
# the mirror's tree first, checkout applies it, and the wheel holds its file.
VLLM_PATCH = """diff --git a/vllm/_smoke_patch.py b/vllm/_smoke_patch.py
new file mode 100644
--- /dev/null
+++ b/vllm/_smoke_patch.py
@@ -0,0 +1 @@
+PATCHED = True
"""


def generate(root: Path) -> Path:
    """Fixture sources, the wheel indexes and build.yaml under `root`; returns the build.yaml path."""
    root.mkdir(parents=True, exist_ok=True)
    make_sources(root)
    torch_index(root / "torch-index")
    write_wheel(
        root / "wheel-index",
        "smoke_runtime_dep",
        "1.0",
        {"smoke_runtime_dep/__init__.py": '"""smoke-stack stand-in for a vLLM runtime requirement"""\n'},
    )
    write_wheel(
        root / "wheel-index",
        "smoke_extra",
        "1.0",
        {"smoke_extra/__init__.py": '"""smoke-stack stand-in for a runtime extra (ray, fastsafetensors, …)"""\n'},
    )
    write(root, {"rustup/rustup-init.sh": RUSTUP_STAND_IN, "patches/vllm-0001-smoke.patch": VLLM_PATCH})
    shutil.copyfile(HERE / "build.yaml", root / "build.yaml")
    ctx = root / "docker-contexts" / "runtime"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "README.smoke").write_text("scripts copied into /workspace by the runtime stage\n")
    smoke_models.generate(root)
    return root / "build.yaml"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m examples.smoke.fixtures DIR")
    print(generate(Path(sys.argv[1]).resolve()))

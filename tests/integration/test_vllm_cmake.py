"""Real vLLM trees through their own CMake: the 0.34.0 and 0.33.0 sdists from PyPI go through our
prepare step (docker-contexts/vllm/prepare.py, which runs cuda_archs.py) and then CMake's configure and
generate with the flags vLLM's setup.py passes and the environment our vllm stage sets. Every SM12x
object in build.ninja must then carry compute_121a,code=sm_121a; one object compiled with those flags
must hold an sm_121a cubin (cuobjdump, from PyPI's nvidia-cuda-cuobjdump wheel), and the wheel check
must accept it. Without the prepare step the same tree gives no sm_121a at all (what vLLM ships).

What stands in, and why (none of it decides which arches CMake picks):
- the third-party trees vLLM's CMake fetches from GitHub (CUTLASS, FlashAttention, DeepGEMM, …):
  directories with the few files configure reads, created empty as CMake asks for them;
- a stub libcuda.so (the driver, which a machine without a GPU has not) for CUDA::cuda_driver;
- clang 16 as the host compiler: vLLM's CMake refuses Debian 12's GCC 12 (it needs 13, as Ubuntu
  24.04 has on a Spark); configure and generate compile no host code of vLLM's.
Inputs: nvcc 13.0 (on this machine), the CUDA build of torch 2.14.1 in a cached venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTEXT = REPO / "docker-contexts" / "vllm"
CACHE = Path(os.environ.get("SPARK_PIPELINE_TEST_CACHE", Path.home() / ".cache" / "spark-pipeline-tests"))
CUDA = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda-13.0"))
CLANG = shutil.which("clang++-16")
VENV_PACKAGES = (
    "torch==2.14.1",
    "cmake>=3.26.1",
    "ninja",
    "packaging",
    "setuptools>=78.1.1,<81",
    "setuptools-scm",
    "wheel",
    "jinja2",
    "regex",
)
CUOBJDUMP_WHEEL = "nvidia-cuda-cuobjdump==13.2.78"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CUDA / "bin" / "nvcc").exists(), reason=f"no nvcc 13 at {CUDA}"),
    pytest.mark.skipif(CLANG is None, reason="clang++-16 is not installed (.ci/run installs it)"),
]


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def python() -> Path:
    """A venv with the CUDA build of torch (pip takes it from this machine's disk) and CMake >= 3.26."""
    where = CACHE / "vllm-cmake-venv"
    py = where / "bin" / "python"
    stamp = where / "packages.txt"
    if not (py.exists() and stamp.exists() and stamp.read_text() == "\n".join(VENV_PACKAGES)):
        shutil.rmtree(where, ignore_errors=True)
        venv.create(where, with_pip=True)
        run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *VENV_PACKAGES])
        stamp.write_text("\n".join(VENV_PACKAGES))
    return py


def pypi_file(name: str) -> Path:
    """One file from PyPI (simple API, JSON form), cached."""
    dest = CACHE / "pypi" / name
    if dest.exists():
        return dest
    project = re.split(r"-\d", name, maxsplit=1)[0].replace("_", "-")
    req = urllib.request.Request(
        f"https://pypi.org/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        url = next(f["url"] for f in json.load(r)["files"] if f["filename"] == name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as r, tmp.open("wb") as out:
        shutil.copyfileobj(r, out)
    tmp.rename(dest)
    return dest


@pytest.fixture(scope="module")
def cuobjdump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = CUOBJDUMP_WHEEL.split("==")[1]
    wheel = pypi_file(f"nvidia_cuda_cuobjdump-{version}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    where = tmp_path_factory.mktemp("cuobjdump")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("nvidia/cu13/bin/cuobjdump", where)
    tool = where / "nvidia" / "cu13" / "bin" / "cuobjdump"
    tool.chmod(0o755)
    return tool


def sdist_tree(version: str, dest: Path) -> Path:
    with tarfile.open(pypi_file(f"vllm-{version}.tar.gz")) as tf:
        tf.extractall(dest, filter="data")
    return dest / f"vllm-{version}"


def third_party(tree: Path) -> tuple[set[str], set[str]]:
    """What the tree's CMake would fetch: FetchContent names and the *_SRC_DIR variables that replace them."""
    text = "\n".join(p.read_text() for p in [tree / "CMakeLists.txt", *tree.glob("cmake/**/*.cmake")])
    names = set(re.findall(r"FetchContent_Declare\(\s*([A-Za-z0-9_-]+)", text))
    env = {m.removesuffix("_SRC_DIR") for m in re.findall(r"ENV\{([A-Z0-9_]+_SRC_DIR)\}", text)}
    return names, env


def configure(tree: Path, py: Path, stand_ins: Path, arch: str) -> str:
    """CMake configure + generate as setup.py runs them; the stand-in files configure asks for are made
    as it names them. Returns build.ninja."""
    stub = stand_ins / "stub" / "libcuda.so"
    if not stub.exists():
        stub.parent.mkdir(parents=True)
        run(["gcc", "-shared", "-x", "c", "-", "-o", str(stub)], input="")
    lib = next((py.parents[1] / "lib").glob("python3*/site-packages/nvidia/cu13/lib"))
    env = {
        **os.environ,
        "PATH": f"{py.parent}:{os.environ['PATH']}",
        "CUDA_HOME": str(CUDA),
        "TORCH_CUDA_ARCH_LIST": arch,
        "VLLM_TARGET_DEVICE": "cuda",
    }
    args = [
        f"-DCMAKE_CUDA_COMPILER={CUDA}/bin/nvcc",
        f"-DCUDA_TOOLKIT_ROOT_DIR={CUDA}",
        f"-DCMAKE_CXX_COMPILER={CLANG}",
        f"-DCUDA_cuda_driver_LIBRARY={stub}",
        f"-DCUDA_nvrtc_LIBRARY={lib}/libnvrtc.so.13",
    ]
    fetched, src_env = third_party(tree)
    for name in fetched:
        (stand_ins / name).mkdir(parents=True, exist_ok=True)
        (stand_ins / name / "README").write_text("stand-in: no GitHub here\n")
        args.append(f"-DFETCHCONTENT_SOURCE_DIR_{name.upper().replace('-', '_')}={stand_ins / name}")
    for var in src_env:
        (stand_ins / var).mkdir(parents=True, exist_ok=True)
        (stand_ins / var / "README").write_text("stand-in: no GitHub here\n")
        env[f"{var}_SRC_DIR"] = str(stand_ins / var)
    for cutlass in (stand_ins / "cutlass", stand_ins / "VLLM_CUTLASS"):  # QuTLASS looks for CUTLASS's headers
        for header in ("include/cutlass/cutlass.h", "tools/util/include/cutlass/util/packed_stride.hpp"):
            (cutlass / header).parent.mkdir(parents=True, exist_ok=True)
            (cutlass / header).write_text("")
    args.append(f"-DCUTLASS_INCLUDE_DIR={stand_ins / 'cutlass' / 'include'}")
    build = tree / "build"
    for _ in range(40):
        shutil.rmtree(build, ignore_errors=True)
        proc = subprocess.run(
            [
                "cmake",
                "-S",
                str(tree),
                "-B",
                str(build),
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DVLLM_TARGET_DEVICE=cuda",
                f"-DVLLM_PYTHON_EXECUTABLE={py}",
                *args,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode == 0:
            return (build / "build.ninja").read_text()
        out = proc.stdout + proc.stderr
        m = re.search(
            r"(?:file failed to open for reading \(No such file or directory\):|Cannot find source file:)"
            r"\s+(/\S+)",
            out,
        )
        if not m or not m[1].startswith(str(stand_ins)):
            pytest.fail(f"vLLM's CMake configure failed:\n{out[-4000:]}")
        Path(m[1]).parent.mkdir(parents=True, exist_ok=True)
        Path(m[1]).write_text("")
    pytest.fail("configure kept asking for stand-in files")


def sm12x_objects(ninja: str) -> dict[str, set[str]]:
    """CUDA object -> the codes nvcc is told to make, for objects compiled for any SM12x code."""
    out: dict[str, set[str]] = {}
    for block in ninja.split("\nbuild ")[1:]:
        if "CUDA_COMPILER" not in block.split("\n", 1)[0]:
            continue
        codes = set(re.findall(r"arch=compute_(\w+),code=(sm_\w+)", block))
        if any(code.startswith("sm_12") for _, code in codes):
            out[block.split(":", 1)[0]] = {f"compute_{a},code={c}" for a, c in codes}
    return out


@pytest.mark.parametrize("version", ["0.34.0", "0.33.0"])
def test_every_sm12x_object_of_real_vllm_gets_sm_121a(
    version: str, python: Path, cuobjdump: Path, tmp_path: Path
) -> None:
    tree = sdist_tree(version, tmp_path)
    pristine = sm12x_objects(configure(tree, python, tmp_path / "stand-ins", "12.1a"))
    assert pristine and not any("sm_121a" in c for codes in pristine.values() for c in codes), (
        "vLLM's own CMake no longer filters 12.1a: cuda_archs.py has nothing to do for this ref"
    )

    # Our prepare step, as the vllm stage runs it (it also installs vLLM's build requirements).
    prepare = subprocess.run(
        [str(python), str(CONTEXT / "prepare.py")],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "TORCH_CUDA_ARCH_LIST": "12.1a", "PATH": f"{python.parent}:{os.environ['PATH']}"},
        timeout=900,
    )
    assert prepare.returncode == 0, prepare.stdout[-3000:] + prepare.stderr[-3000:]
    assert "cuda_archs: CMakeLists.txt line" in prepare.stdout and "+ 12.1" in prepare.stdout

    objects = sm12x_objects(configure(tree, python, tmp_path / "stand-ins", "12.1a"))
    assert len(objects) >= 50, f"only {len(objects)} SM12x objects"
    lacking = sorted(o for o, codes in objects.items() if "compute_121a,code=sm_121a" not in codes)
    assert not lacking, f"{len(lacking)} of {len(objects)} SM12x objects without sm_121a: {lacking[:5]}"
    assert not any(c.endswith(("sm_120", "sm_120f")) for codes in objects.values() for c in codes)
    print(f"vLLM {version}: {len(objects)} SM12x objects, all compute_121a,code=sm_121a")

    # One object compiled with the flags build.ninja gives, read back the way the vllm stage reads its wheel.
    kernel = tmp_path / "k.cu"
    kernel.write_text('extern "C" __global__ void k(float *x) { x[0] += 1.0f; }\n')
    obj = tmp_path / "k.o"
    run(
        [
            str(CUDA / "bin" / "nvcc"),
            "-c",
            "-Xcompiler",
            "-fPIC",
            "-gencode",
            "arch=compute_121a,code=sm_121a",
            "-o",
            str(obj),
            str(kernel),
        ]
    )
    run(["g++", "-shared", "-o", str(tmp_path / "_C.abi3.so"), str(obj)])
    listing = run([str(cuobjdump), "--list-elf", str(tmp_path / "_C.abi3.so")]).stdout
    assert "sm_121a.cubin" in listing
    wheels = tmp_path / "out"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / f"vllm-{version}-cp38-abi3-linux_x86_64.whl", "w") as zf:
        zf.write(tmp_path / "_C.abi3.so", "vllm/_C.abi3.so")
    ok = subprocess.run(
        [sys.executable, str(CONTEXT / "check_gpu_code.py"), str(wheels)],
        capture_output=True,
        text=True,
        env={**os.environ, "TORCH_CUDA_ARCH_LIST": "12.1a", "CUOBJDUMP": str(cuobjdump)},
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads((wheels / "gpu-code.json").read_text())["libraries"] == {"vllm/_C.abi3.so": ["sm_121a"]}


def test_the_wheel_check_refuses_a_wheel_filtered_down_to_sm_120(cuobjdump: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "k.cu"
    kernel.write_text('extern "C" __global__ void k(float *x) { x[0] += 1.0f; }\n')
    run(
        [
            str(CUDA / "bin" / "nvcc"),
            "-c",
            "-Xcompiler",
            "-fPIC",
            "-gencode",
            "arch=compute_120f,code=sm_120f",
            "-o",
            str(tmp_path / "k.o"),
            str(kernel),
        ]
    )
    run(["g++", "-shared", "-o", str(tmp_path / "_C.abi3.so"), str(tmp_path / "k.o")])
    wheels = tmp_path / "out"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "vllm-0.34.0-cp38-abi3-linux_x86_64.whl", "w") as zf:
        zf.write(tmp_path / "_C.abi3.so", "vllm/_C.abi3.so")
    bad = subprocess.run(
        [sys.executable, str(CONTEXT / "check_gpu_code.py"), str(wheels)],
        capture_output=True,
        text=True,
        env={**os.environ, "TORCH_CUDA_ARCH_LIST": "12.1a", "CUOBJDUMP": str(cuobjdump)},
    )
    assert bad.returncode == 1
    assert "vllm/_C.abi3.so holds sm_120 but not sm_121a" in bad.stderr and "refused" in bad.stderr

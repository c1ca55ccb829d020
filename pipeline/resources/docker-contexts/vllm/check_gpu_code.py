"""Read the GPU code the vLLM wheel really holds, and fail when the arch we built for is not in it.

A CMake change upstream (an arch filter, a new kernel family list) can turn `12.1a` into sm_120 without
any error: the wheel still builds and imports, and only runs slower or without FP4 on GB10. So after
the compile every shared library in the wheel is read with cuobjdump (`--list-elf`: one cubin per arch
compiled), and the vllm stage fails when

- no library holds code for a requested arch, or
- a library holds code of a requested arch's generation (sm_12x for 12.1a) but not that arch itself:
  the signature of the arch having been filtered down (sm_120, sm_120f instead of sm_121a).

Libraries compiled only for another generation (Marlin and FA2 ship sm_80 plus PTX, which the driver
JIT-compiles for any newer GPU) are reported, not refused. What was found goes to OUT/gpu-code.json,
which the runtime image's labels carry.

    python3 check_gpu_code.py OUT        # arches from TORCH_CUDA_ARCH_LIST; cuobjdump from CUOBJDUMP,
                                         # PATH, $CUDA_HOME/bin or /usr/local/cuda/bin

Standard library only: it runs in the build container from docker-contexts/vllm/ (in the key).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CUBIN = re.compile(r"\bsm_(\d+)([af]?)\.cubin\b")


def requested(arch_list: str) -> list[str]:
    """`12.1a;12.0f` -> ['sm_121a', 'sm_120f']."""
    out = []
    for arch in re.split(r"[;,\s]+", arch_list.strip()):
        m = re.fullmatch(r"(\d+)\.(\d+)([af]?)(\+PTX)?", arch, flags=re.I)
        if m:
            out.append(f"sm_{m[1]}{m[2]}{m[3]}")
    return out


def archs_in(listing: str) -> list[str]:
    """cuobjdump --list-elf output -> the archs of its cubins (a family cubin is listed as sm_120)."""
    return sorted({f"sm_{m[1]}{m[2]}" for m in CUBIN.finditer(listing)})


def holds(found: list[str], want: str) -> bool:
    """Whether a library's cubins include `want`. A family target (sm_120f) is listed without its f."""
    return want in found or (want.endswith("f") and want[:-1] in found)


def generation(sm: str) -> str:
    """sm_121a -> '12' (sm_ + major + one minor digit, as CUDA names them)."""
    return re.sub(r"[af]$", "", sm)[3:-1]


def problems(libraries: dict[str, list[str]], wanted: list[str]) -> list[str]:
    out = []
    for want in wanted:
        if not any(holds(found, want) for found in libraries.values()):
            out.append(f"no library holds {want} code")
        for lib, found in sorted(libraries.items()):
            same_gen = [a for a in found if generation(a) == generation(want)]
            if same_gen and not holds(found, want):
                out.append(
                    f"{lib} holds {', '.join(same_gen)} but not {want}: the arch was filtered down "
                    "(vLLM's CUDA_SUPPORTED_ARCHS; see docker-contexts/vllm/cuda_archs.py)"
                )
    return out


def find_cuobjdump() -> str:
    for cand in (
        os.environ.get("CUOBJDUMP"),
        shutil.which("cuobjdump"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump"),
        "/usr/local/cuda/bin/cuobjdump",
    ):
        if cand and os.access(cand, os.X_OK):
            return cand
    sys.exit(
        "check_gpu_code: cuobjdump not found (CUDA's devel image has it in /usr/local/cuda/bin; "
        "elsewhere PyPI's nvidia-cuda-cuobjdump wheel has it): cannot check the wheel's GPU code"
    )


def read_wheels(out: Path, cuobjdump: str) -> dict[str, list[str]]:
    libraries: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in sorted(out.glob("*.whl")):
            with zipfile.ZipFile(wheel) as zf:
                for name in zf.namelist():
                    if not re.search(r"\.so(\.\d+)*$", name):
                        continue
                    path = Path(zf.extract(name, tmp))
                    # vLLM's _C.abi3.so is hundreds of MB: minutes at most, never a hang
                    r = subprocess.run(
                        [cuobjdump, "--list-elf", str(path)], capture_output=True, text=True, timeout=900
                    )
                    found = archs_in(r.stdout)
                    if found:
                        libraries[name] = found
    return libraries


def main(out: Path) -> int:
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    wanted = requested(arch_list)
    libraries = read_wheels(out, find_cuobjdump())
    for lib, found in sorted(libraries.items()):
        print(f"check_gpu_code: {lib}: {' '.join(found)}")
    report = {
        "requested": arch_list,
        "wanted": wanted,
        "libraries": libraries,
        "archs": sorted({a for found in libraries.values() for a in found}),
    }
    (out / "gpu-code.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    bad = problems(libraries, wanted)
    for p in bad:
        print(f"check_gpu_code: {p}", file=sys.stderr)
    if bad:
        print(f"check_gpu_code: the wheel lacks GPU code for {arch_list}: refused", file=sys.stderr)
        return 1
    with_it = sum(any(holds(found, w) for w in wanted) for found in libraries.values())
    print(f"check_gpu_code: {', '.join(wanted)} present in {with_it} of {len(libraries)} libraries with GPU code")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

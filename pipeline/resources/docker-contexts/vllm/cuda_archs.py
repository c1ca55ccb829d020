"""Make the GPU arch we build for survive vLLM's own CMake filter.

vLLM's CMakeLists.txt intersects TORCH_CUDA_ARCH_LIST with a hard-coded CUDA_SUPPORTED_ARCHS per CUDA
version, and `cuda_archs_loose_intersection` maps what is missing to the nearest lower arch of the same
major. vLLM 0.33/0.34's list for CUDA >= 13 stops at 12.0, so `12.1a` (GB10) becomes `12.0`: generic
kernels get sm_120, the SM12x families sm_120f, and no object gets sm_121a.

This adds each requested arch's base (12.1 for 12.1a or 12.1f) to every CUDA_SUPPORTED_ARCHS list that
already holds an arch of the same major but not that one. A list with no arch of that major (an old
CUDA's) is left alone, and a vLLM whose lists already have it gets nothing: the tree decides. With 12.1
in the list, the loose intersection keeps the suffix asked for (12.1a -> compute_121a,code=sm_121a).

    python3 cuda_archs.py [TREE]      # arches from TORCH_CUDA_ARCH_LIST; TREE defaults to .

Standard library only: it runs in the build container, from docker-contexts/vllm/ (its content is in
the vllm stage's key). prepare.py calls it before the build requirements are installed.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SUPPORTED = re.compile(r'(set\(\s*CUDA_SUPPORTED_ARCHS\s+")([^"]*)(")')


def bases(arch_list: str) -> list[str]:
    """`12.1a;12.0f` -> ['12.1', '12.0']: the numbers vLLM's lists are written in."""
    out = []
    for arch in re.split(r"[;,\s]+", arch_list.strip()):
        base = re.sub(r"(\+PTX)?$", "", arch, flags=re.I).rstrip("af")
        if re.fullmatch(r"\d+\.\d+", base) and base not in out:
            out.append(base)
    return out


def patch(text: str, arch_list: str) -> tuple[str, list[str]]:
    """The CMake text with the requested bases added where a list of the same major lacks them, and
    one line per change saying what was added to which list."""
    wanted = bases(arch_list)
    changes: list[str] = []

    def add(m: re.Match[str]) -> str:
        listed = [a for a in m[2].split(";") if a]
        majors = {a.split(".")[0] for a in listed}
        extra = [b for b in wanted if b not in listed and b.split(".")[0] in majors]
        if not extra:
            return m[0]
        line = text.count("\n", 0, m.start()) + 1
        changes.append(f"line {line}: CUDA_SUPPORTED_ARCHS {m[2]} + {';'.join(extra)}")
        return f"{m[1]}{';'.join(listed + extra)}{m[3]}"

    return SUPPORTED.sub(add, text), changes


def main(tree: Path) -> int:
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    cmake = tree / "CMakeLists.txt"
    if not arch_list or not cmake.is_file():
        print(
            f"cuda_archs: nothing to do (TORCH_CUDA_ARCH_LIST={arch_list!r}, {cmake} "
            f"{'found' if cmake.is_file() else 'missing'})"
        )
        return 0
    text, changes = patch(cmake.read_text(), arch_list)
    for change in changes:
        print(f"cuda_archs: {cmake.name} {change} (so {arch_list} is not filtered down to a lower arch)")
    if changes:
        cmake.write_text(text)
    else:
        print(f"cuda_archs: {cmake.name} already supports {';'.join(bases(arch_list))}: unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))

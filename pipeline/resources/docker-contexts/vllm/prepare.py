"""vLLM's requirement preparation before its wheel is built in the toolchain image (the toolkit's steps),
for every source layout vLLM has had. Run in the vLLM source tree:

    python3 /inputs/context/prepare.py [PIP ARGS…]      # e.g. --no-index --find-links DIR (offline)

1. Keep the torch family the toolchain has: run vLLM's own use_existing_torch.py wherever the ref
   keeps it (tools/ since 2026-10, the tree's root before), then strip any torch, torchvision,
   torchaudio or torchcodec pin it left: before vLLM #39793 the script did not look into
   requirements/ subfolders, so requirements/build/cuda.txt kept `torch==…` and pip replaced the
   toolchain's torch.
2. Take FlashInfer from our own flashinfer stage: drop vLLM's flashinfer-* pins.
3. Keep the GPU arch asked for: cuda_archs.py adds it to vLLM's CUDA_SUPPORTED_ARCHS where the tree's
   CMake would filter it down (12.1a -> 12.0 in vLLM 0.33/0.34); a tree that supports it is unchanged.
4. Install the build requirements: requirements/build/cuda.txt (+ build/rust.txt) since vLLM #39024
   (2026-04), requirements/build.txt before.

Prints what it changed; exits non-zero with the reason when the tree has none of the known layouts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cuda_archs  # beside this file in docker-contexts/vllm/ (the script's directory is on sys.path)

TORCH_PIN = re.compile(r"^\s*(torch|torchvision|torchaudio|torchcodec)\s*(==|>=|~=|<=|<|>|$|;|\[)", re.I)
TORCH_TOML = re.compile(r'^\s*"(torch|torchvision|torchaudio|torchcodec)\s*(==|>=|~=|<=|<|>|")', re.I)
FLASHINFER = re.compile(r"^\s*flashinfer(-python|-cubin|-jit-cache)?\s*(==|>=|~=|<=|<|>|$|;|\[)", re.I)


def requirement_files(tree: Path) -> list[Path]:
    return sorted([*tree.glob("requirements/**/*.txt"), *tree.glob("requirements/**/*.in")])


def strip(path: Path, pattern: re.Pattern[str], why: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not pattern.match(line)]
    for line in lines:
        if pattern.match(line):
            print(f"prepare: {path}: removed {line.strip()!r} ({why})")
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def use_existing_torch(tree: Path) -> None:
    script = next(
        (p for p in (tree / "tools" / "use_existing_torch.py", tree / "use_existing_torch.py") if p.is_file()), None
    )
    if script is None:
        print("prepare: this vLLM has no use_existing_torch.py; stripping torch pins ourselves")
    else:
        print(f"prepare: running {script.relative_to(tree)}")
        subprocess.run([sys.executable, str(script)], cwd=tree, check=True)
    for f in requirement_files(tree):
        strip(f, TORCH_PIN, "the toolchain's torch is kept")
    if (tree / "pyproject.toml").is_file():
        strip(tree / "pyproject.toml", TORCH_TOML, "the toolchain's torch is kept")


def build_requirements(tree: Path) -> list[Path]:
    new = tree / "requirements" / "build" / "cuda.txt"
    if new.is_file():
        return [p for p in (new, tree / "requirements" / "build" / "rust.txt") if p.is_file()]
    old = tree / "requirements" / "build.txt"
    if old.is_file():
        return [old]
    sys.exit(
        f"prepare: {tree} has neither requirements/build/cuda.txt nor requirements/build.txt: "
        "not a vLLM source tree this script knows"
    )


def main(pip_args: list[str]) -> None:
    tree = Path.cwd()
    use_existing_torch(tree)
    for f in requirement_files(tree):
        strip(f, FLASHINFER, "FlashInfer comes from the flashinfer stage")
    cuda_archs.main(tree)
    for req in build_requirements(tree):
        print(f"prepare: installing {req.relative_to(tree)}")
        subprocess.run([sys.executable, "-m", "pip", "install", *pip_args, "-r", str(req)], cwd=tree, check=True)


if __name__ == "__main__":
    main(sys.argv[1:])

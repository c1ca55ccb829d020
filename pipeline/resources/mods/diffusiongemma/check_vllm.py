"""Does the installed vLLM serve DiffusionGemma? Looks for the model class, its registry entry and its
config in the package's files (nothing is imported: this runs before vLLM ever starts). Exit 0 and say
so, or exit 1 naming what is missing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NEEDED = {
    "model_executor/models/diffusion_gemma.py": "class DiffusionGemmaForConditionalGeneration",
    "model_executor/models/registry.py": "DiffusionGemma",
    "transformers_utils/config.py": "diffusion_gemma",
}


def missing(vllm_dir: Path) -> list[str]:
    out = []
    for rel, marker in NEEDED.items():
        f = vllm_dir / rel
        if not f.is_file() or marker not in f.read_text(errors="replace"):
            out.append(f"{rel} ({marker})")
    return out


def main() -> int:
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        print("diffusiongemma: vLLM is not installed in this container's python3", file=sys.stderr)
        return 1
    lacking = missing(Path(spec.origin).parent)
    if lacking:
        print(
            "diffusiongemma: this vLLM has no DiffusionGemma support (missing: " + "; ".join(lacking) + "). "
            "Build a vLLM that has it (build.yaml vllm.ref, or the upstream PR in vllm.prs): this mod does "
            "not patch vLLM's model code.",
            file=sys.stderr,
        )
        return 1
    print(f"diffusiongemma: vLLM at {Path(spec.origin).parent} serves DiffusionGemma")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Triton kernels that need scratch memory (TMA descriptors, as Qwen3-Coder-Next's FLA kernels use) fail
on GB10 with Triton's default NullAllocator ("Kernel requires a runtime memory allocation, but no
allocator was set"; vLLM issue #33857). This gives Triton PyTorch's CUDA caching allocator as soon as
triton is imported, so those kernels get their memory from the same pool as the rest of vLLM.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import spark_posthook


def torch_alloc(size: int, alignment: int, stream: Any) -> Any:
    import torch

    return torch.empty(size, dtype=torch.int8, device="cuda")


def patch(mod: ModuleType) -> None:
    if hasattr(mod, "set_allocator"):  # older Triton has no allocator hook, and no such kernels
        mod.set_allocator(torch_alloc)


spark_posthook.after_import("triton", patch)

"""`vllm serve --gpu-memory-utilization-gb N`: reserve N GiB instead of a fraction of the GPU's memory.

On GB10 the GPU's memory is the machine's unified memory: what a fraction means changes with what the
OS and other processes hold, and co-located servers are easier to budget in GiB. The flag is turned
into the fraction vLLM already understands (N GiB / the device's total memory) when the arguments are
read, so every later vLLM code path is unchanged.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import spark_posthook

GIB = 1 << 30
FLAG = "--gpu-memory-utilization-gb"


def total_bytes() -> int:
    if os.environ.get("SPARK_GPU_TOTAL_BYTES"):  # fixed by the tests, or by a user who knows better
        return int(os.environ["SPARK_GPU_TOTAL_BYTES"])
    import torch

    return int(torch.cuda.mem_get_info()[1])


def fraction(gib: float, total: int) -> float:
    if gib <= 0:
        raise ValueError(f"{FLAG} must be positive (got {gib})")
    f = gib * GIB / total
    if f >= 1:
        raise ValueError(f"{FLAG} {gib} is more than the device's {total / GIB:.1f} GiB")
    return round(f, 6)


def patch(mod: ModuleType) -> None:
    cls: Any = mod.EngineArgs
    add = cls.add_cli_args  # a staticmethod: the plain function
    from_cli = cls.__dict__["from_cli_args"].__func__

    def add_cli_args(parser: Any, *a: Any, **kw: Any) -> Any:
        parser = add(parser, *a, **kw) or parser
        if FLAG not in getattr(parser, "_option_string_actions", {}):  # a vLLM that has it natively wins
            parser.add_argument(
                FLAG,
                type=float,
                default=None,
                dest="gpu_memory_utilization_gb",
                help="GiB of GPU memory to reserve (spark-pipeline mod gpu-mem-util-gb); "
                "replaces --gpu-memory-utilization",
            )
        return parser

    def from_cli_args(c: Any, args: Any, *a: Any, **kw: Any) -> Any:
        gib = getattr(args, "gpu_memory_utilization_gb", None)
        if gib is not None and "gpu_memory_utilization_gb" not in getattr(c, "__dataclass_fields__", {}):
            args.gpu_memory_utilization = fraction(gib, total_bytes())
            print(f"[gpu-mem-util-gb] {gib} GiB -> --gpu-memory-utilization {args.gpu_memory_utilization}", flush=True)
        return from_cli(c, args, *a, **kw)

    cls.add_cli_args = staticmethod(add_cli_args)
    cls.from_cli_args = classmethod(from_cli_args)


spark_posthook.after_import("vllm.engine.arg_utils", patch)

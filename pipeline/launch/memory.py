"""Will the model fit? Per node, before any rank starts. Pure.

On GB10 the GPU's memory is the machine's unified memory: vLLM claims `--gpu-memory-utilization` (0.9 by
default) of MemTotal for weights, activations and KV cache, or N GiB with the gpu-memory-utilization-gb
mod. The OS, the page cache it cannot drop and other containers live in what is left. So per node with a
GPU:

- the weights it holds (the selected weight files, split over tp × pp ranks, one rank per node) must be
  below vLLM's claim, or no KV cache is left;
- the claim plus headroom for the OS must fit in MemAvailable (MemTotal when our own container runs
  there: a redeploy replaces it and its memory comes back).

A node without a GB10 (no GPU, or a discrete one) or without memory facts is not estimated: vLLM's claim
is not in its RAM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config.vllm_args import flag_value, parallel_sizes
from pipeline.errors import ConfigError

GIB = 1 << 30
DEFAULT_UTILIZATION = 0.9  # vLLM's default --gpu-memory-utilization
HEADROOM = 4 * GIB  # for the OS, sshd, Docker and the page cache a Spark keeps busy


@dataclass(frozen=True)
class Claim:
    """What the command asks vLLM to take: a fraction of MemTotal or a fixed size; and its split."""

    fraction: float = DEFAULT_UTILIZATION
    fixed: int = 0  # bytes (--gpu-memory-utilization-gb)
    ranks: int = 1  # tp × pp: the ranks the weights are split over

    def of(self, total: int) -> int:
        return self.fixed or int(self.fraction * total)

    def words(self, total: int) -> str:
        if self.fixed:
            return f"--gpu-memory-utilization-gb {self.fixed / GIB:g}"
        return f"{self.fraction:g} × {total / GIB:.1f} GiB"


def claim_of(command: tuple[str, ...]) -> Claim:
    """The claim a vLLM command makes (its flags are checked: a bad value is a located exit-2 error)."""
    sizes = parallel_sizes(command)
    ranks = sizes.get("tp", 1) * sizes.get("pp", 1)
    gb = flag_value(command, ("--gpu-memory-utilization-gb",))
    if gb is not None:
        if not re.fullmatch(r"[0-9]{1,4}(\.[0-9]{1,3})?", gb) or float(gb) <= 0:
            raise ConfigError(f"command: --gpu-memory-utilization-gb expects GiB > 0, got {gb!r}")
        return Claim(fixed=int(float(gb) * GIB), ranks=ranks)
    frac = flag_value(command, ("--gpu-memory-utilization",))
    if frac is None:
        return Claim(ranks=ranks)
    if not re.fullmatch(r"0?\.[0-9]{1,4}|1(\.0{1,4})?", frac) or float(frac) <= 0:
        raise ConfigError(f"command: --gpu-memory-utilization expects a fraction in (0, 1], got {frac!r}")
    return Claim(fraction=float(frac), ranks=ranks)


@dataclass(frozen=True)
class NodeMemory:
    node: str
    total: int  # MemTotal, bytes (0: unknown)
    available: int  # MemAvailable, bytes
    gpu: bool  # a GPU whose memory is the node's (GB10's unified memory)
    ours_running: bool  # our deploy container runs there (a redeploy frees what it holds)


@dataclass(frozen=True)
class Estimate:
    node: str
    weights: int  # this node's share of the weights
    claim: int
    claim_words: str
    headroom: int
    free: int  # what the node can give: MemAvailable, or MemTotal under our own container
    problems: tuple[str, ...]

    def line(self) -> str:
        g = GIB
        return (
            f"memory {self.node}: weights {self.weights / g:.1f} GiB within vLLM's {self.claim / g:.1f} GiB "
            f"({self.claim_words}); that + {self.headroom / g:.0f} GiB for the OS against {self.free / g:.1f} GiB "
            f"free: {'fits' if not self.problems else 'does not fit'}"
        )


def estimate(nodes: list[NodeMemory], weights: int, claim: Claim, headroom: int = HEADROOM) -> list[Estimate]:
    """One estimate per node with a GPU and known memory. `weights`: the served model's selected weight
    files, bytes (0 when this machine does not hold the model)."""
    share = weights // max(1, min(claim.ranks, len(nodes)))
    out = []
    for n in nodes:
        if not n.gpu or not n.total:
            continue
        take, free = claim.of(n.total), n.total if n.ours_running else n.available
        problems = []
        if share >= take:
            problems.append(
                f"the weights ({share / GIB:.1f} GiB on this node) do not fit in vLLM's {take / GIB:.1f} GiB "
                f"({claim.words(n.total)}): raise it, or split the model over more nodes (-tp/-pp)"
            )
        if take + headroom > free:
            problems.append(
                f"vLLM's {take / GIB:.1f} GiB ({claim.words(n.total)}) + {headroom / GIB:.0f} GiB for the OS "
                f"exceed the {free / GIB:.1f} GiB available: lower --gpu-memory-utilization, or free memory "
                "(stop other containers; the drop-caches mod)"
            )
        out.append(Estimate(n.node, share, take, claim.words(n.total), headroom, free, tuple(problems)))
    return out

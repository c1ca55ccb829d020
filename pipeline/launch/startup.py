"""Where a vLLM start is, from the head's server log, and how long each phase may take. Pure.

A cold start of a 100B+ model on a Spark spends minutes loading weights and tens of minutes compiling
(torch.compile, FlashInfer autotune, CUDA graph capture) before the API answers. One deadline for all
of it either cuts a healthy start or waits an hour on a hung one. So the wait follows the phases vLLM
logs, each with its own deadline, and says what it last saw:

  start    the container runs, vLLM has not begun loading the model (imports, Ray, NCCL rendezvous)
  weights  "Starting to load model", "Loading safetensors checkpoint shards: 40% | 2/5"
  compile  torch.compile, "Capturing CUDA graphs", autotuning, "init engine (profile, create kv cache..."
  serve    "Starting vLLM API server", until /health and /v1/models answer
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import ConfigError

PHASES = ("start", "weights", "compile", "serve")
LABELS = {
    "start": "starting",
    "weights": "loading weights",
    "compile": "compiling and capturing graphs",
    "serve": "starting the API server",
}
# Sized for a cold 100B+ start on a Spark (the toolkit's users report 40 minutes for a 27B model's first
# start with FlashInfer autotune): a hung phase still fails long before --timeout's whole.
DEFAULT_DEADLINES = {"start": 900.0, "weights": 3600.0, "compile": 3600.0, "serve": 900.0}
MARKERS = {
    "weights": re.compile(r"Starting to load model|Loading (safetensors|pt|gguf)? ?checkpoint shards|Loading weights"),
    "compile": re.compile(
        r"torch\.compile|Dynamo bytecode transform|Compiling a graph|Capturing CUDA graph|[Aa]utotun|"
        r"init engine \(profile|Memory profiling|KV cache"
    ),
    "serve": re.compile(r"Starting vLLM API server|Uvicorn running on|Application startup complete|Available routes"),
}
SHARDS = re.compile(r"checkpoint shards:\s*(\d+)% Completed \| (\d+)/(\d+)")


@dataclass(frozen=True)
class Seen:
    phase: str
    detail: str  # the shard count, or the log's last line, for a person


def progress(log: str, at_least: str = "start") -> Seen:
    """The furthest phase the log shows (never before `at_least`: a log tail that scrolled past a marker
    does not move the start back), and what it last says."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", log) if ln.strip()]
    phase = at_least
    for line in lines:
        for name, rx in MARKERS.items():
            if PHASES.index(name) > PHASES.index(phase) and rx.search(line):
                phase = name
    shards = [m for ln in lines if (m := SHARDS.search(ln))]
    if phase == "weights" and shards:
        return Seen(phase, f"{shards[-1][2]}/{shards[-1][3]} shards")
    return Seen(phase, lines[-1][-160:] if lines else "no output yet")


def parse_deadlines(items: tuple[str, ...]) -> dict[str, float]:
    """`--phase-timeout PHASE=SECONDS` (repeatable) over the defaults."""
    out = dict(DEFAULT_DEADLINES)
    for item in items:
        name, _, value = item.partition("=")
        if name not in PHASES or not re.fullmatch(r"[0-9]{1,6}", value) or int(value) < 1:
            raise ConfigError(
                f"--phase-timeout {item!r}: expected PHASE=SECONDS with PHASE one of {', '.join(PHASES)} "
                "and whole seconds ≥ 1"
            )
        out[name] = float(value)
    return out

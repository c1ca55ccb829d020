"""Benchmark results: llama-benchy's JSON reduced to one row per (depth, concurrency), the record we
keep, and the comparison of two records. Pure.

A record is keyed by what was measured: the build key (the runtime stage's key, which hashes every
stage below it), the recipe and the node count. Its directory under the results root says the same:
`<recipe>/<nodes>n/<build key[:12]>/<UTC time>/`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel


class Row(BaseModel):
    depth: int
    concurrency: int
    pp_tps: float | None = None  # prompt processing, tokens/s (total over concurrent requests)
    tg_tps: float | None = None  # generation, tokens/s (total)
    ttfr_ms: float | None = None  # time to first response


class Startup(BaseModel):
    """How the deployment measured came up (`deploy` writes it): seconds to ready and per startup phase."""

    url: str
    ready_seconds: float
    phases: dict[str, float]
    deployed: str


class Record(BaseModel):
    build_key: str
    recipe: str
    nodes: int
    model: str
    profile: str
    endpoint: str
    started: str
    seconds: float
    llama_benchy: str
    rows: list[Row]
    startup: Startup | None = None

    @property
    def label(self) -> str:
        return f"{self.recipe} {self.nodes}n {self.build_key[:12]}"

    def dirname(self) -> str:
        """<recipe>/<nodes>n/<key12>/<time>: each part one folder name, whatever the recipe is called."""
        return "/".join(folder_name(p) for p in (self.recipe, f"{self.nodes}n", self.build_key[:12], self.started))


def folder_name(text: str) -> str:
    """One path component made from any text: `..`, `/` and control characters never climb or split."""
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", text)[:128]
    return name if name.strip(".") else "_"


def _mean(metric: Any) -> float | None:
    return float(metric["mean"]) if isinstance(metric, dict) and metric.get("mean") is not None else None


def _avg(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def rows_of(report: dict[str, Any]) -> list[Row]:
    """llama-benchy's `benchmarks` (one entry per pp x tg x depth x concurrency) -> a row per (depth,
    concurrency), averaged over pp/tg sizes; context-prefill phases are left out (they measure loading
    the context, not serving at that depth)."""
    groups: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for b in report.get("benchmarks") or []:
        if b.get("is_context_prefill_phase"):
            continue
        g = groups[(int(b.get("context_size") or 0), int(b.get("concurrency") or 1))]
        for src, dst in (("pp_throughput", "pp"), ("tg_throughput", "tg"), ("ttfr", "ttfr")):
            v = _mean(b.get(src))
            if v is not None:
                g[dst].append(v)
    return [
        Row(depth=d, concurrency=c, pp_tps=_avg(g["pp"]), tg_tps=_avg(g["tg"]), ttfr_ms=_avg(g["ttfr"]))
        for (d, c), g in sorted(groups.items())
    ]


def fmt(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def table_md(record: Record) -> str:
    head = f"# {record.model} — {record.label} — profile {record.profile}\n\n"
    lines = ["| depth | concurrency | pp t/s | tg t/s | ttfr ms |", "|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r.depth} | {r.concurrency} | {fmt(r.pp_tps)} | {fmt(r.tg_tps)} | {fmt(r.ttfr_ms)} |" for r in record.rows
    ]
    started = ""
    if record.startup is not None:
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in record.startup.phases.items())
        started = f"Ready {record.startup.ready_seconds:.0f} s after the deploy began ({phases}).\n\n"
    return head + started + "\n".join(lines) + "\n"


class Delta(BaseModel):
    depth: int
    concurrency: int
    a: Row | None
    b: Row | None

    def ratio(self, field: str) -> float | None:
        va = getattr(self.a, field) if self.a else None
        vb = getattr(self.b, field) if self.b else None
        return vb / va if va and vb is not None else None


def compare(a: Record, b: Record) -> list[Delta]:
    """Rows of A and B side by side, matched on (depth, concurrency); a point one lacks stays empty."""
    ra = {(r.depth, r.concurrency): r for r in a.rows}
    rb = {(r.depth, r.concurrency): r for r in b.rows}
    return [Delta(depth=d, concurrency=c, a=ra.get((d, c)), b=rb.get((d, c))) for d, c in sorted({*ra, *rb})]

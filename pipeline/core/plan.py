"""The plan: each stage's key, whether the store has it, and why it must rebuild. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.ir import Stage
from pipeline.core.keys import Resolved, base_digest, compute_keys, input_id
from pipeline.core.lockfile import Lock, LockedStage

_HEX = re.compile(r"^(sha256:)?[0-9a-f]{40,64}$")
UPSTREAM = "upstream "


@dataclass(frozen=True)
class StagePlan:
    name: str
    key: str
    cached: bool
    reasons: tuple[str, ...]
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def short_key(self) -> str:
        return self.key[:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.name,
            "key": self.key,
            "cached": self.cached,
            "reasons": list(self.reasons),
            "facts": dict(sorted(self.facts.items())),
        }


@dataclass(frozen=True)
class Plan:
    stages: tuple[StagePlan, ...]
    warnings: tuple[str, ...] = ()

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    @property
    def to_build(self) -> list[str]:
        return [s.name for s in self.stages if not s.cached]

    def to_json(self) -> dict[str, Any]:
        return {"stages": [s.to_json() for s in self.stages], "warnings": list(self.warnings)}


def short(value: str) -> str:
    if _HEX.match(value):
        return value.removeprefix("sha256:")[:7]
    return value


def stage_facts(stage: Stage, resolved: Mapping[tuple[str, str], Resolved], keys: Mapping[str, str]) -> dict[str, str]:
    """Everything a user would name as a reason for a rebuild, label -> value."""
    facts = dict(stage.knobs)
    facts["base image"] = base_digest(stage.base)[0]
    for inp in stage.inputs:
        if inp.kind == "stage":
            facts[UPSTREAM + inp.ref] = keys[inp.ref]
        else:
            facts.update(resolved[input_id(inp)].facts)
    return facts


def explain(old: LockedStage | None, key: str, facts: Mapping[str, str]) -> tuple[str, ...]:
    if old is None:
        return ("no build.lock entry",)
    if old.key == key:
        return ("not in the store",)
    reasons: list[str] = []
    upstream: list[str] = []
    for label in sorted(set(old.facts) | set(facts)):
        before, after = old.facts.get(label), facts.get(label)
        if before == after:
            continue
        if label.startswith(UPSTREAM):
            if after is not None:
                upstream.append(f"{label} rebuilt")
        elif before is None:
            reasons.append(f"{label}: added ({short(after or '')})")
        elif after is None:
            reasons.append(f"{label}: removed")
        else:
            reasons.append(f"{label}: {short(before)} → {short(after)}")
    return tuple(reasons + upstream) or ("the stage's own steps changed (another spark-pipeline version)",)


def make_plan(
    stages: list[Stage],
    resolved: Mapping[tuple[str, str], Resolved],
    in_store: Callable[[str, str], bool],
    lock: Lock | None,
) -> Plan:
    keys = compute_keys(stages, resolved)
    warnings: list[str] = []
    out: list[StagePlan] = []
    for stage in stages:
        warn = base_digest(stage.base)[1]
        if warn and warn not in warnings:
            warnings.append(warn)
        key = keys[stage.name]
        facts = stage_facts(stage, resolved, keys)
        cached = in_store(stage.name, key)
        reasons = () if cached else explain(lock.stages.get(stage.name) if lock else None, key, facts)
        out.append(StagePlan(name=stage.name, key=key, cached=cached, reasons=reasons, facts=facts))
    return Plan(stages=tuple(out), warnings=tuple(warnings))


def lock_of(plan: Plan, sources: Mapping[str, dict[str, Any]], python: Mapping[str, Any] | None = None) -> Lock:
    return Lock(
        stages={s.name: LockedStage(key=s.key, facts=s.facts) for s in plan.stages},
        sources=dict(sources),
        python=dict(python or {}),
    )

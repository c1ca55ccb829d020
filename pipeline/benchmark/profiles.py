"""Benchmark profiles and the llama-benchy command line they make. Pure.

A profile is a set of llama-benchy arguments. `quick` answers "does it serve, and how fast" in about a
minute on a Spark; `sweep` has the 28-point shape of the spark-arena sweep sparkrun publishes (pp2048,
tg32 at 7 context depths x 4 concurrency levels), so its numbers line up with the ones posted there.
A recipe's `benchmark` block (v2) and `-b KEY=VALUE` layer on top: profile < recipe < command line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.contract import is_inner_path
from pipeline.errors import ConfigError

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"pp": [2048], "tg": [32], "depth": [0, 4096], "concurrency": [1], "runs": 3},
    "sweep": {
        "pp": [2048],
        "tg": [32],
        "depth": [0, 2048, 4096, 8192, 16384, 32768, 65536],
        "concurrency": [1, 2, 5, 10],
        "runs": 3,
        "enable_prefix_caching": True,
    },
}
LIST_ARGS = ("pp", "tg", "depth", "concurrency")
INT_ARGS = ("runs",)
FLAG_ARGS = (
    "no_cache",
    "enable_prefix_caching",
    "no_warmup",
    "skip_coherence",
    "exact_tg",
    "adapt_prompt",
    "no_adapt_prompt",
)
# Data options only, each value from a fixed list: llama-benchy's own post_run_cmd runs a shell command
# (shell=True), and recipes are files people share, so nothing here may name a command.
CHOICE_ARGS: dict[str, tuple[str, ...]] = {"latency_mode": ("api", "generation", "none")}
STR_ARGS = tuple(CHOICE_ARGS)
# Ours, not llama-benchy's: resolved to local files before it runs (it would otherwise download both).
OWN_ARGS = ("tokenizer", "corpus")
ALIASES = {"prefix_caching": "enable_prefix_caching"}
KNOWN = (*LIST_ARGS, *INT_ARGS, *FLAG_ARGS, *STR_ARGS, *OWN_ARGS)


@dataclass(frozen=True)
class BenchArgs:
    profile: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> int:
        n = 1
        for k in LIST_ARGS:
            n *= len(self.values.get(k, [0]))
        return n

    def get(self, key: str) -> Any:
        return self.values.get(key)


def _numbers(key: str, value: Any, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    try:
        out = [int(v) for v in items]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} expects whole numbers such as 0,4096 (got {value!r})") from None
    if not out or any(v < 0 for v in out) or (key != "depth" and 0 in out):
        raise ConfigError(
            f"{where}: {key} expects {'non-negative' if key == 'depth' else 'positive'} numbers (got {value!r})"
        )
    return out


def _flag(key: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes", "on"):
        return True
    if str(value).lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{where}: {key} expects true or false (got {value!r})")


def coerce(key: str, value: Any, where: str) -> Any:
    """One argument checked and normalised; `where` names its source in errors."""
    key = ALIASES.get(key, key)
    if key not in KNOWN:
        raise ConfigError(f"{where}: unknown benchmark argument {key!r} (expected one of {', '.join(KNOWN)})")
    if key in LIST_ARGS:
        return _numbers(key, value, where)
    if key in FLAG_ARGS:
        return _flag(key, value, where)
    if key in INT_ARGS:
        if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,6}", str(value)) or int(value) < 1:
            raise ConfigError(f"{where}: {key} expects a whole number from 1 to 999999 (got {value!r})")
        return int(value)
    if key in OWN_ARGS:
        if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
            raise ConfigError(f"{where}: {key} expects a path (got {value!r})")
        return value
    if value not in CHOICE_ARGS[key]:
        raise ConfigError(f"{where}: {key} expects one of {', '.join(CHOICE_ARGS[key])} (got {value!r})")
    return value


def parse_sets(sets: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sets:
        key, eq, value = s.partition("=")
        if not eq or not key:
            raise ConfigError(f"-b {s}: expected KEY=VALUE, such as depth=0,4096")
        out[ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))] = coerce(key.replace("-", "_"), value, f"-b {s}")
    return out


def resolve(
    profile: str | None,
    recipe_profile: str | None,
    recipe_args: Mapping[str, Any],
    sets: Mapping[str, Any],
    label: str = "recipe",
) -> BenchArgs:
    name = profile or recipe_profile or "quick"
    if name not in PROFILES:
        raise ConfigError(f"profile {name!r}: unknown (expected one of {', '.join(PROFILES)})")
    values = dict(PROFILES[name])
    for k, v in recipe_args.items():
        # a recipe may bring its own files (beside it), nothing else of this machine
        if k in OWN_ARGS and not (isinstance(v, str) and is_inner_path(v)):
            raise ConfigError(
                f"{label}:benchmark.args.{k}: a recipe names files beside it only (a relative path without "
                f"`..`), got {v!r}; for another file give it on the command line (-b {k}=PATH)"
            )
        values[ALIASES.get(k, k)] = coerce(k, v, f"{label}:benchmark.args.{k}")
    values.update(sets)
    return BenchArgs(name, values)


def llama_benchy_argv(
    args: BenchArgs, *, base_url: str, model: str, served_name: str, tokenizer: str, book_url: str, result_file: str
) -> list[str]:
    """The llama-benchy command line (run as `python -m llama_benchy`)."""
    argv = [
        "--base-url",
        base_url,
        "--model",
        model,
        "--served-model-name",
        served_name,
        "--tokenizer",
        tokenizer,
        "--book-url",
        book_url,
        "--save-result",
        result_file,
        "--format",
        "json",
    ]
    for k in LIST_ARGS:
        if k in args.values:
            argv += [f"--{k}", *(str(v) for v in args.values[k])]
    for k in INT_ARGS:
        if k in args.values:
            argv += [f"--{k}", str(args.values[k])]
    for k in STR_ARGS:
        if k in args.values:
            argv += [f"--{k.replace('_', '-')}", str(args.values[k])]
    argv += [f"--{k.replace('_', '-')}" for k in FLAG_ARGS if args.values.get(k) is True]
    return argv

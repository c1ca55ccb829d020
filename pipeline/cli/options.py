"""Options shared by the build commands. Each flag's help names the build.yaml key it overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported where used: `--help` must not pay for pydantic and git
    from pipeline.config import LoadedBuild
    from pipeline.sources.mirror import Mirrors
    from pipeline.store import Store

F = Callable[..., Any]

# (flag, build.yaml key, help, click kwargs)
_OVERRIDES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("--gpu-arch", "gpu_arch", "CUDA arch list, e.g. 12.1a (DGX Spark) or 12.0f.", {}),
    ("--platform", "platform", "Target platform: linux/arm64 (Spark) or linux/amd64.", {}),
    (
        "--build-jobs",
        "build_jobs",
        "Parallel compile jobs (MAX_JOBS); never part of a key.",
        {"type": click.IntRange(min=1)},
    ),
    ("--torch-version", "base.torch.version", "torch version.", {}),
    ("--triton-ref", "triton.ref", "Triton git ref (with triton.source: git).", {}),
    ("--flashinfer-ref", "flashinfer.ref", "FlashInfer branch, tag or SHA.", {}),
    ("--vllm-repo", "vllm.repo", "vLLM repository (a fork, a file:// URL or a local path).", {}),
    ("--vllm-ref", "vllm.ref", "vLLM branch, tag or SHA.", {}),
    ("--vllm-source-dir", "vllm.source_dir", "Build a clean local vLLM checkout at its HEAD.", {}),
    (
        "--engine",
        "engine",
        "Build engine: auto (dagger under `dagger run`, else buildkit), dagger, buildkit.",
        {"type": click.Choice(["auto", "dagger", "buildkit"])},
    ),
]
_LISTS: list[tuple[str, str, str]] = [
    ("--apply-vllm-pr", "vllm.prs", "Apply a vLLM PR (number or https://github.com/O/R/pull/N); repeatable; added to"),
    ("--apply-flashinfer-pr", "flashinfer.prs", "Apply a FlashInfer PR; repeatable; added to"),
]


def build_options(f: F) -> F:
    for flag, key, help_, kw in reversed(_OVERRIDES):
        f = click.option(flag, key.replace(".", "__"), default=None, help=f"{help_} Overrides `{key}`.", **kw)(f)
    for flag, key, help_ in reversed(_LISTS):
        f = click.option(flag, key.replace(".", "__"), multiple=True, help=f"{help_} `{key}`.")(f)
    f = click.option(
        "--profile",
        "profiles",
        multiple=True,
        metavar="NAME",
        help="Apply a named profile of build.yaml's `profiles` (sets of overrides); repeatable.",
    )(f)
    f = click.option(
        "--set",
        "sets",
        multiple=True,
        metavar="KEY.PATH=VALUE",
        help="Override any build.yaml key, e.g. --set vllm.ref=v0.11.0 --set flashinfer.cubin_cache=false; repeatable.",
    )(f)
    f = click.option(
        "-f",
        "--file",
        "build_file",
        type=click.Path(path_type=Path),
        default=None,
        help="The build description [default: ./build.yaml, else the tool's own].",
    )(f)
    f = click.option(
        "--store",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Artifact store directory [default: $SPARK_PIPELINE_STORE or the user cache].",
    )(f)
    f = click.option("--offline", is_flag=True, help="Do not fetch sources; resolve refs from the local mirrors only.")(
        f
    )
    return f


def load_from_options(opts: dict[str, Any]) -> LoadedBuild:
    from pipeline.config import load_build
    from pipeline.paths import default_build_file

    flags: dict[str, Any] = {}
    for _, key, _, _ in _OVERRIDES:
        flags[key] = opts.pop(key.replace(".", "__"), None)
    build = opts["build_file"] or default_build_file()
    lists: dict[str, list[Any]] = {}
    for _, key, _ in _LISTS:
        values = list(opts.pop(key.replace(".", "__"), ()) or ())
        if values:
            lists[key] = values
    profiles = tuple(opts.get("profiles", ()) or ())
    loaded = load_build(build, opts.get("sets", ()), flags, profiles)
    if lists:
        # List flags add to what build.yaml says rather than replace it.
        extra = {}
        for key, values in lists.items():
            section, field = key.split(".")
            current = getattr(getattr(loaded.spec, section), field)
            extra[key] = [*current, *values]
        loaded = load_build(build, opts.get("sets", ()), {**flags, **extra}, profiles)
    return loaded


def store_from(opts: dict[str, Any]) -> Store:
    from pipeline.paths import default_store
    from pipeline.store import Store

    return Store(opts.get("store") or default_store())


def mirrors_from(opts: dict[str, Any]) -> Mirrors:
    """The source mirrors: a line per fetch on stderr (stdout stays data only), and git's own progress
    too when stderr is a terminal."""
    from pipeline.cli.console import console, say
    from pipeline.paths import cache_root
    from pipeline.sources.mirror import Mirrors

    detail = (lambda line: say(line, "note")) if console.is_terminal else None
    return Mirrors(
        cache_root(), offline=bool(opts.get("offline")), progress=lambda line: say(line, "note"), detail=detail
    )

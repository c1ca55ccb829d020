"""`plan` and `stages`: what would be built, and what each stage is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from pipeline.build.lock import write_lock as save_lock
from pipeline.build.plan import Plan, lock_of
from pipeline.build.resolve import plan_build
from pipeline.cli.options import build_options, load_from_options, mirrors_from, store_from
from pipeline.errors import StageError
from pipeline.spec.build import BuildSpec
from pipeline.stages import MODULES, all_stages
from pipeline.ui import console, emit_json


def plan_table(plan: Plan) -> Table:
    table = Table(title="plan", title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("stage")
    table.add_column("key")
    table.add_column("status")
    table.add_column("why it must build")
    for i, s in enumerate(plan.stages, 1):
        status = "[green]cached[/green]" if s.cached else "[yellow]build[/yellow]"
        table.add_row(str(i), s.name, s.short_key, status, "\n".join(s.reasons) or "-")
    return table


@click.command()
@build_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON on stdout (nothing else).")
@click.option("--write-lock", is_flag=True, help="Write build.lock (resolved SHAs, keys, input facts).")
def plan(as_json: bool, write_lock: bool, **opts: Any) -> None:
    """Show each stage, its key, whether the store has it, and why it must rebuild.

    Moving refs (a branch, a PR) are resolved to commit SHAs; the reasons compare every input
    with build.lock (e.g. `vllm.ref main: 1a2b3c4 → 4d5e6f7`, `upstream flashinfer rebuilt`).
    Runs nothing.
    """
    build = load_from_options(opts)
    store = store_from(opts)
    res, the_plan, _ = plan_build(build, mirrors_from(opts), store)
    for w in the_plan.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", soft_wrap=True)
    if as_json:
        emit_json({**the_plan.to_json(), "store": str(store.root), "build_file": str(build.path)})
    else:
        console.print(plan_table(the_plan))
        n = len(the_plan.to_build)
        console.print(f"{n} of {len(the_plan.stages)} stages to build; store: {store.root}")
    if write_lock:
        path = build.root / "build.lock"
        save_lock(path, lock_of(the_plan, res.lock_sources()))
        console.print(f"wrote {path}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print stages as JSON (name, doc, steps) on stdout.")
@click.argument("names", nargs=-1)
def stages(as_json: bool, names: tuple[str, ...]) -> None:
    """What each stage produces and which build.yaml knobs change its key."""
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise click.BadParameter(f"unknown stage {unknown[0]!r}; stages are: {', '.join(MODULES)}")
    spec = BuildSpec()
    chosen = [s for s in all_stages(spec) if not names or s.name in names]
    if as_json:
        emit_json([{"stage": s.name, "doc": (s.doc or "").strip(), "upstream": list(s.upstream),
                    "steps": [list(st.argv) for st in s.steps]} for s in chosen])
        return
    for i, s in enumerate(chosen, 1):
        console.rule(f"[bold][{i}/{len(chosen)}] {s.name}[/bold]")
        console.print((s.doc or "").strip(), soft_wrap=True)
        if s.upstream:
            console.print(f"[dim]consumes: {', '.join(s.upstream)}[/dim]")




def results_table(results: list) -> Table:  # list[StageResult]
    table = Table(title="build", title_justify="left")
    table.add_column("stage")
    table.add_column("key")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("")
    for r in results:
        color = {"built": "yellow", "cached": "green", "failed": "red"}[r.status]
        table.add_row(r.name, r.key[:12], f"[{color}]{r.status}[/{color}]", f"{r.seconds:.1f} s", r.note)
    return table


@click.command()
@build_options
@click.option("--tag", default=None, help="Image name for the runtime image. Overrides `runtime.tag`.")
@click.option("--export", "export", type=click.Path(path_type=Path), default=None,
              help="Also write the runtime image as a tarball (docker save format) to this path.")
@click.option("--push", "push", default=None, metavar="REF",
              help="Also push the runtime image to a registry reference (Dagger: publish).")
@click.option("--json", "as_json", is_flag=True, help="Print stage results as JSON on stdout.")
def build(tag: str | None, export: Path | None, push: str | None, as_json: bool, **opts: Any) -> None:
    """Build the stages the store lacks, then the runtime image, and load it into the local Docker.

    \b
    Each stage runs on the chosen engine (--engine / `engine`: BuildKit through Docker, or Dagger
    under `dagger run`), exports its wheels to the store (<store>/<stage>/<key>/) and is never run
    again while its key is there. Progress goes to stderr; each stage has a log (shown on failure).
    Examples:
      python -m pipeline build --gpu-arch 12.1a
      python -m pipeline build --vllm-ref v0.11.0 --apply-vllm-pr 12345 --tag vllm-node:pr
      dagger run python -m pipeline build --gpu-arch 12.1a
    """
    from pipeline.build.run import Builder
    from pipeline.build.store import cache_root
    from pipeline.engines import make_engine

    loaded = load_from_options(opts)
    engine = make_engine(loaded.spec.engine, cache_root())
    builder = Builder(loaded, engine, store_from(opts), mirrors_from(opts))
    console.print(f"engine: {engine.name}; store: {builder.store.root}")
    started = time.monotonic()
    try:
        _, results = builder.run(tag=tag, export=export, push=push)
    except StageError as e:
        console.print(results_table(builder.results))
        if e.log_tail:
            console.rule(f"last lines of {e.log_path}")
            console.print(escape(e.log_tail), soft_wrap=True)
        raise
    console.print(results_table(results))
    console.print(f"done in {time.monotonic() - started:.1f} s")
    if as_json:
        emit_json([{"stage": r.name, "key": r.key, "status": r.status, "seconds": round(r.seconds, 3)}
                   for r in results])


def register(group: click.Group) -> None:
    group.add_command(plan)
    group.add_command(build)
    group.add_command(stages)

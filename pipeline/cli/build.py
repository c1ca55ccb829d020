"""`plan` and `stages`: what would be built, and what each stage is."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from pipeline.build.lock import write_lock as save_lock
from pipeline.build.plan import Plan, lock_of
from pipeline.build.resolve import plan_build
from pipeline.cli.options import build_options, load_from_options, mirrors_from, store_from
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


def register(group: click.Group) -> None:
    group.add_command(plan)
    group.add_command(stages)

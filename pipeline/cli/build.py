"""`plan`, `build` and `stages`: what would be built, building it, and what each stage is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.options import build_options, load_from_options, mirrors_from, store_from
from pipeline.cli.tables import results_table
from pipeline.cli.types import ImageRef

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.core.plan import Plan
    from pipeline.remote_store import RemoteStore


def plan_table(plan: Plan) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="plan", title_justify="left", show_lines=False)
    for col in ("#", "stage", "key", "status", "why it must build"):
        table.add_column(col, justify="right" if col == "#" else "left")
    for i, s in enumerate(plan.stages, 1):
        status = "[green]cached[/green]" if s.cached else "[yellow]build[/yellow]"
        table.add_row(str(i), s.name, s.short_key, status, escape("\n".join(s.reasons) or "-"))
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
    from pipeline import python_env
    from pipeline.cli.console import console, emit_json, say
    from pipeline.core.plan import lock_of
    from pipeline.resolution import plan_build
    from pipeline.resolution import write_lock as save_lock

    build = load_from_options(opts)
    store = store_from(opts)
    res, the_plan, lock = plan_build(build, mirrors_from(opts), store)
    for w in the_plan.warnings:
        say(w, "warn")
    if res.versions:
        say(
            f"versions from vLLM {res.sources['vllm'].commit[:12]} (auto): "
            + ", ".join(f"{k} {v}" for k, v in res.versions.items())
        )
    env = res.python
    moved = python_env.changes(lock, env) if env else []
    if env and not as_json:
        say(
            f"python: {len(env.packages)} packages resolved together for {env.target.platform}, Python "
            f"{env.target.python} (every stage's pip is held to them; build.lock keeps them with hashes)"
        )
        if moved:
            say("python: changed since build.lock: " + ", ".join(moved))
    if as_json:
        emit_json(
            {
                **the_plan.to_json(),
                "store": str(store.root),
                "build_file": str(build.path),
                "versions": res.versions,
                "vllm_commit": res.sources["vllm"].commit,
                "compiler_archs": res.spec.compiler_archs(),
                "python": {
                    "platform": env.target.platform,
                    "python": env.target.python,
                    "packages": {n: p.version for n, p in sorted(env.packages.items())},
                    "changed": moved,
                }
                if env
                else None,
            }
        )
    else:
        console.print(plan_table(the_plan))
        say("gpu_arch per compiler: " + "; ".join(f"{k}={v}" for k, v in res.spec.compiler_archs().items()))
        say(f"{len(the_plan.to_build)} of {len(the_plan.stages)} stages to build; store: {store.root}")
    if write_lock:
        path = build.root / "build.lock"
        save_lock(path, lock_of(the_plan, res.lock_sources(), res.lock_python()))
        say(f"wrote {path}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print stages as JSON (name, doc, steps) on stdout.")
@click.argument("names", nargs=-1)
def stages(as_json: bool, names: tuple[str, ...]) -> None:
    """What each stage produces and which build.yaml knobs change its key."""
    from pipeline.cli.console import console, emit_json, say
    from pipeline.config.build import BuildSpec
    from pipeline.contract import STAGES
    from pipeline.stages import all_stages

    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise click.BadParameter(f"unknown stage {unknown[0]!r}; stages are: {', '.join(STAGES)}")
    spec = BuildSpec()
    chosen = [s for s in all_stages(spec) if not names or s.name in names]
    compiles = {"base": "nccl", "flashinfer": "flashinfer", "vllm": "vllm"}  # the stage that runs each compiler
    archs = {
        s.name: {k: v for k, v in spec.compiler_archs().items() if k.split()[0] == compiles.get(s.name)} for s in chosen
    }
    if as_json:
        emit_json(
            [
                {
                    "stage": s.name,
                    "doc": (s.doc or "").strip(),
                    "upstream": list(s.upstream),
                    "steps": [list(st.argv) for st in s.steps],
                    "compiler_archs": archs[s.name],
                    "reads": list(s.reads),
                    "inputs": [i.name for i in s.inputs],
                }
                for s in chosen
            ]
        )
        return
    for i, s in enumerate(chosen, 1):
        console.rule(f"[bold][{i}/{len(chosen)}] {s.name}[/bold]")
        say((s.doc or "").strip())
        if s.upstream:
            say(f"consumes: {', '.join(s.upstream)}")
        say(f"key reads: {', '.join(s.reads)}; inputs: {', '.join(i.name for i in s.inputs)}")
        for k, v in archs[s.name].items():
            say(f"gpu_arch {spec.gpu_arch} reaches its compiler as {k.split()[1]}={v}")


def remote_from(url: str | None, where: str) -> RemoteStore | None:
    if not url:
        return None
    from pipeline.remote_store import RemoteStore, parse_url

    return RemoteStore(parse_url(url, where))


@click.command()
@build_options
@click.option("--tag", type=ImageRef(), default=None, help="Image name for the runtime image. Overrides `runtime.tag`.")
@click.option(
    "--export",
    "export",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the runtime image as a tarball (docker save format) to this path.",
)
@click.option(
    "--push",
    "push",
    type=ImageRef(),
    default=None,
    metavar="REF",
    help="Also push the runtime image to a registry reference (Dagger: publish).",
)
@click.option(
    "--remote-store",
    "remote_store",
    default=None,
    metavar="oci://HOST[:PORT]/REPO",
    help="A shared store on an OCI registry: pull every stage entry the local store lacks before "
    "building it, push what was built. Overrides `remote_store`.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print stage results as JSON on stdout (status: built, cached, pulled)."
)
def build(
    tag: str | None, export: Path | None, push: str | None, remote_store: str | None, as_json: bool, **opts: Any
) -> None:
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
    from rich.markup import escape

    from pipeline.builder import Builder
    from pipeline.cli.console import ConsoleReporter, console, emit_json, say
    from pipeline.engines import make_engine
    from pipeline.errors import StageError
    from pipeline.paths import cache_root

    loaded = load_from_options(opts)
    remote = remote_from(
        remote_store or loaded.spec.remote_store, "--remote-store" if remote_store else f"{loaded.label}:remote_store"
    )
    engine = make_engine(loaded.spec.engine, cache_root())
    builder = Builder(loaded, engine, store_from(opts), mirrors_from(opts), ConsoleReporter(), remote)
    say(
        f"engine: {engine.name}; store: {builder.store.root}"
        + (f"; remote store: {remote.spec.host}/{remote.spec.repo}" if remote else "")
    )
    started = time.monotonic()
    try:
        _, results = builder.run(tag=tag, export=export, push=push)
    except StageError as e:
        console.print(results_table(builder.results))
        if e.log_tail:
            console.rule(f"last lines of {escape(e.log_path)}")
            console.print(escape(e.log_tail), soft_wrap=True)
        raise
    console.print(results_table(results))
    say(f"done in {time.monotonic() - started:.1f} s")
    if as_json:
        emit_json([r.to_json() for r in results])

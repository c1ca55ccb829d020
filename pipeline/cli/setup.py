"""`recipe run --setup`, rendered: the use case (pipeline.deploy.setup) plans, this prints the plan
(`--dry-run` stops there) or applies it with live transfer progress and prints the results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.config.render import Rendered


def setup(r: Rendered, spec: RecipeSpec, label: str, o: dict[str, Any]) -> None:
    from pipeline.cli.console import console, say, transfer_progress
    from pipeline.cli.nodeopts import cluster_from
    from pipeline.cli.options import mirrors_from, store_from
    from pipeline.cli.tables import copy_table, results_table
    from pipeline.config.render import flag_value, models_named, profiles_for
    from pipeline.deploy.setup import Setup, SetupRequest
    from pipeline.paths import default_build_file

    names = models_named(r.command, r.model)
    request = SetupRequest(
        build_file=o.get("build_file") or default_build_file(),
        profiles=profiles_for(spec.build_args, label),
        tag=r.image,
        models=tuple((m, spec.model_revision if m == r.model else None) for m in names),
        cluster=cluster_from(o),
        load_format=flag_value(r.command, ("--load-format",)) or "auto",
    )
    with transfer_progress() as reporter:
        use = Setup(store_from({}), mirrors_from({}), reporter)
        sp = use.plan(request)
        if o.get("dry_run"):
            for line in sp.lines(dry_run=True):
                say(line)
            return
        result = use.apply(sp)
    if result.built:
        console.print(results_table(result.built))
    if result.copies:
        console.print(copy_table(result.copies))
        per_node: dict[str, int] = {}
        for res in result.copies:
            per_node[res.node] = per_node.get(res.node, 0) + res.sent_bytes
        say("[setup 3/3] sent " + ", ".join(f"{n}: {b} bytes" for n, b in per_node.items()), "ok")

"""`recipe run --setup`: everything a recipe needs before its deploy, each step skipped when it is done.

1. image: the recipe's image tag must hold the image whose *build key* (the runtime stage's key, which
   hashes every stage below it) matches build.yaml with the recipe's build_args as profiles; a tag that
   holds another build is rebuilt (stages in the store are reused). Deploy then ships it to every node
   that lacks that image.
2. models: the served model and every other model the command loads (a draft model, a tokenizer) are
   downloaded into this machine's cache when it lacks them.
3. copy: each node gets the files of those models it lacks.
With --dry-run each step says what it would do and nothing runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.contract import KEY_LABEL

if TYPE_CHECKING:
    from pipeline.config.recipe import RecipeSpec
    from pipeline.config.render import Rendered
    from pipeline.model.hub import Snapshot





def ensure_image(build_file: Path, profiles: tuple[str, ...], tag: str, dry_run: bool) -> str:
    """The runtime key for this build; builds when the local tag holds another one."""
    from pipeline.builder import Builder
    from pipeline.cli.build import results_table
    from pipeline.cli.console import ConsoleReporter, console, say
    from pipeline.cli.options import mirrors_from, store_from
    from pipeline.config import load_build
    from pipeline.engines import make_engine
    from pipeline.engines.docker import Docker
    from pipeline.paths import cache_root
    from pipeline.resolution import plan_build

    loaded = load_build(build_file, (), {"runtime.tag": tag}, profiles)
    store = store_from({})
    _, plan, _ = plan_build(loaded, mirrors_from({}), store)
    key = plan.stages[-1].key
    have = Docker().image_labels(tag).get(KEY_LABEL, "")
    via = f" (profiles: {', '.join(profiles)})" if profiles else ""
    if have == key:
        say(f"[setup 1/3] image {tag} is build {key[:12]} of {build_file}{via}: up to date")
        return key
    why = f"holds build {have[:12]}" if have else "is not on this machine"
    if dry_run:
        say(f"[setup 1/3] image {tag} {why}: would build {key[:12]} from {build_file}{via} "
            f"({len(plan.to_build)} of {len(plan.stages)} stages not in the store)")
        return key
    say(f"[setup 1/3] image {tag} {why}: building {key[:12]} from {build_file}{via}")
    builder = Builder(loaded, make_engine(loaded.spec.engine, cache_root()), store, mirrors_from({}),
                      ConsoleReporter())
    _, results = builder.run(tag=tag)
    console.print(results_table(results))
    return key


def ensure_models(repos: list[tuple[str, str | None]], dry_run: bool) -> list[Snapshot]:
    from pipeline.cli.console import say
    from pipeline.cli.model import resumed_note
    from pipeline.model.hub import download, local_snapshot

    snaps = []
    for repo, revision in repos:
        snap = local_snapshot(repo, revision)
        if snap is not None:
            say(f"[setup 2/3] model {repo}: in this machine's cache ({snap.size / 1e6:.1f} MB, {snap.commit[:12]})")
        elif dry_run:
            say(f"[setup 2/3] model {repo}: not in this machine's cache: would download it"
                + (f" at {revision}" if revision else ""))
            continue
        else:
            say(f"[setup 2/3] model {repo}: downloading")
            snap = download(repo, revision, resumed_note(repo, "[setup 2/3] "))
            say(f"[setup 2/3] model {repo}: {snap.files} file(s), {snap.size / 1e6:.1f} MB", "ok")
        snaps.append(snap)
    return snaps


def setup(r: Rendered, spec: RecipeSpec, label: str, o: dict[str, Any]) -> None:
    from pipeline.cli.console import console, say
    from pipeline.cli.model import copy_all, copy_table
    from pipeline.cli.nodes import cluster_from
    from pipeline.config.render import models_named, profiles_for

    dry_run = bool(o.get("dry_run"))
    from pipeline.paths import default_build_file

    ensure_image(o.get("build_file") or default_build_file(), profiles_for(spec.build_args, label), r.image, dry_run)
    names = models_named(r.command, r.model)
    snaps = ensure_models([(m, spec.model_revision if m == r.model else None) for m in names], dry_run)
    cluster = cluster_from(o)
    nodes = ", ".join(n.label for n in cluster.ordered())
    if dry_run:
        say(f"[setup 3/3] would copy to {nodes} the files of {', '.join(names) or 'no model'} each lacks "
            "(checked by size and sha256)")
        return
    if snaps:
        say(f"[setup 3/3] copying {', '.join(s.repo for s in snaps)} to {nodes} (only what each lacks)")
        results = copy_all(cluster, snaps)
        console.print(copy_table(results))
        per_node: dict[str, int] = {}
        for res in results:
            per_node[res.node] = per_node.get(res.node, 0) + res.sent_bytes
        say("[setup 3/3] sent " + ", ".join(f"{n}: {b} bytes" for n, b in per_node.items()), "ok")

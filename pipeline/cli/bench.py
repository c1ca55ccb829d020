"""`bench run | ls | compare`: llama-benchy against a served endpoint; results keyed by build key, recipe
and node count, kept as a table, JSON and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.types import KeyPrefix
from pipeline.contract import KEY_LABEL

if TYPE_CHECKING:
    from pipeline.benchmark.results import Delta, Record
    from pipeline.config.recipe import RecipeSpec


def results_root(given: Path | None) -> Path:
    from pipeline.paths import cache_root

    return given or cache_root() / "bench"


RESULTS = click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=None,
    help="Results directory [default: ~/.cache/spark-pipeline/bench].",
)


@click.group()
def bench() -> None:
    """Benchmark a served model with llama-benchy; list and compare results."""


def _recipe(name: str | None) -> tuple[RecipeSpec | None, Path | None]:
    if name is None:
        return None, None
    from pipeline.config.recipe import find_recipe, load_recipe

    path = find_recipe(name)
    return load_recipe(path, str(path)), path


def _build_key(given: str | None, image: str | None) -> str:
    if given:
        return given
    if image:
        from pipeline.engines.docker import Docker

        try:
            key = Docker().image_labels(image).get(KEY_LABEL, "")
        except Exception:  # no Docker here: the key is simply unknown
            key = ""
        if key:
            return key
    from pipeline.cli.console import say

    say(
        f"no build key for image {image or '(none)'} on this machine: results are filed under 'unknown' "
        "(give --build-key)",
        "warn",
    )
    return "unknown"


def _local(path: str | None, base: Path | None) -> Path | None:
    """A path from -b (as given) or from the recipe (`base`: the recipe's folder, which it must not leave,
    through a link either)."""
    if path is None:
        return None
    if base is None:
        return Path(path).expanduser()
    p = base / path
    if not p.resolve().is_relative_to(base.resolve()):
        from pipeline.errors import ConfigError

        raise ConfigError(f"benchmark.args: {path} leads out of the recipe's folder {base}")
    return p


@bench.command("run")
@click.argument("recipe_name", metavar="[RECIPE]", required=False)
@click.option(
    "--url", default=None, help="The OpenAI endpoint [default: http://127.0.0.1:PORT/v1, PORT from the recipe or 8000]."
)
@click.option("--profile", default=None, help="quick (default) or sweep (28 points, spark-arena's shape).")
@click.option(
    "-b",
    "--bench-arg",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A llama-benchy argument (pp, tg, depth, concurrency, runs, tokenizer, corpus, …); "
    "lists as 0,4096. Repeatable.",
)
@click.option("--model", default=None, help="The model (Hugging Face id) [default: the recipe's].")
@click.option("--served-model-name", default=None, help="The name the endpoint serves [default: --model].")
@click.option(
    "--build-key",
    type=KeyPrefix(),
    default=None,
    help="File results under this build key [default: the runtime key label of the recipe's image on this machine].",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Node count the endpoint runs on (part of the result's key).",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds before llama-benchy is stopped [default: the recipe's benchmark.timeout or 3600].",
)
@RESULTS
@click.option("--json", "as_json", is_flag=True, help="The result record as JSON on stdout.")
def run(
    recipe_name: str | None,
    url: str | None,
    profile: str | None,
    sets: tuple[str, ...],
    model: str | None,
    served_model_name: str | None,
    build_key: str | None,
    nodes: int,
    timeout: int | None,
    results: Path | None,
    as_json: bool,
) -> None:
    """Benchmark the endpoint serving RECIPE (a name or file) or --model.

    \b
    Examples:
      python -m pipeline bench run qwen3-8b
      python -m pipeline bench run qwen3-8b --profile sweep --nodes 2 --url http://127.0.0.1:8000/v1
      python -m pipeline bench run --model Qwen/Qwen3-8B -b depth=0,8192 -b concurrency=1,4
    """
    from pipeline.benchmark.profiles import parse_sets, resolve
    from pipeline.benchmark.run import benchmark, last_startup, local_tokenizer
    from pipeline.cli.console import console, emit_json, say
    from pipeline.errors import ConfigError

    spec, path = _recipe(recipe_name)
    block = spec.benchmark if spec else None
    if block is not None and not block.enabled:
        say(f"{path}: benchmark.enabled is false; running it anyway, as asked", "warn")
    model = model or (spec.model if spec else None)
    if not model:
        raise ConfigError("bench run: which model? give a RECIPE or --model")
    args = resolve(
        profile,
        block.profile if block else None,
        block.args if block else {},
        parse_sets(sets),
        str(path) if path else "recipe",
    )
    base = path.parent if path else None
    in_recipe = block.args if block else {}
    given = {k: args.get(k) for k in ("tokenizer", "corpus")}
    tok = _local(given["tokenizer"], base if given["tokenizer"] == in_recipe.get("tokenizer") else None)
    corpus = _local(given["corpus"], base if given["corpus"] == in_recipe.get("corpus") else None)
    port = (spec.defaults.get("port") if spec else None) or 8000
    base_url = (url or f"http://127.0.0.1:{port}/v1").rstrip("/")
    name = recipe_name and (spec.name if spec and spec.name else Path(recipe_name).stem)
    key: dict[str, str | int] = {
        "build_key": _build_key(build_key, spec.container if spec else None),
        "recipe": name or model,
        "nodes": nodes,
    }
    say(f"llama-benchy, profile {args.profile} ({args.points} point(s)) against {base_url}")
    record, dest = benchmark(
        args,
        base_url=base_url,
        model=model,
        served_name=served_model_name or (block.model if block and block.model else model),
        tokenizer=local_tokenizer(model, tok),
        corpus=corpus,
        results=results_root(results),
        key=key,
        timeout=timeout or (block.timeout if block and block.timeout else 3600),
        on_line=lambda line: console.print(f"  [dim]{_esc(line)}[/dim]", soft_wrap=True),
        startup=last_startup(base_url),
    )
    for r in record.rows:
        if r.pp_tps is None and r.tg_tps is None:
            say(
                f"depth {r.depth}, concurrency {r.concurrency}: no numbers (its requests failed: is the depth "
                "beyond the server's --max-model-len? see llama-benchy's output above)",
                "warn",
            )
    if as_json:
        emit_json({**record.model_dump(), "dir": str(dest)})
        return
    console.print(_table(record))
    say(f"results: {dest} (table.md, record.json, chart.png)", "ok")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _table(record: Record) -> Any:
    from rich.table import Table

    from pipeline.benchmark.results import fmt

    t = Table(title=f"{_esc(record.model)} — {_esc(record.label)} — {record.profile}")
    for col in ("depth", "concurrency", "pp t/s", "tg t/s", "ttfr ms"):
        t.add_column(col, justify="right")
    for r in record.rows:
        t.add_row(str(r.depth), str(r.concurrency), fmt(r.pp_tps), fmt(r.tg_tps), fmt(r.ttfr_ms))
    return t


@bench.command("ls")
@RESULTS
@click.option("--json", "as_json", is_flag=True, help="The records as JSON on stdout.")
def ls(results: Path | None, as_json: bool) -> None:
    """Every kept result: recipe, nodes, build key, profile, when."""
    from rich.table import Table

    from pipeline.benchmark.run import load_records
    from pipeline.cli.console import console, emit_json

    recs = load_records(results_root(results))
    if as_json:
        emit_json([{**r.model_dump(exclude={"rows"}), "dir": str(d)} for r, d in recs])
        return
    t = Table()
    for col in ("recipe", "nodes", "build key", "profile", "started", "dir"):
        t.add_column(col)
    for r, d in recs:
        t.add_row(_esc(r.recipe), str(r.nodes), r.build_key[:12], r.profile, r.started, _esc(str(d)))
    console.print(t)


@bench.command("compare")
@click.argument("a")
@click.argument("b")
@RESULTS
@click.option("--json", "as_json", is_flag=True, help="The comparison as JSON on stdout.")
def compare(a: str, b: str, results: Path | None, as_json: bool) -> None:
    """Two results side by side (B / A per point). A and B: a result directory, a build key prefix or a
    recipe name (its newest result).

    \b
    Examples:
      python -m pipeline bench compare 7355da4242d1 a78a05b64f5d
    """
    from pipeline.benchmark.results import compare as pair
    from pipeline.benchmark.run import find_record
    from pipeline.cli.console import console, emit_json

    root = results_root(results)
    (ra, _), (rb, _) = find_record(root, a), find_record(root, b)
    deltas = pair(ra, rb)
    if as_json:
        emit_json(
            {
                "a": ra.model_dump(exclude={"rows"}),
                "b": rb.model_dump(exclude={"rows"}),
                "points": [
                    {
                        "depth": d.depth,
                        "concurrency": d.concurrency,
                        "a": d.a.model_dump() if d.a else None,
                        "b": d.b.model_dump() if d.b else None,
                        "tg_ratio": d.ratio("tg_tps"),
                        "pp_ratio": d.ratio("pp_tps"),
                    }
                    for d in deltas
                ],
            }
        )
        return
    console.print(_compare_table(ra, rb, deltas))


def _compare_table(ra: Record, rb: Record, deltas: list[Delta]) -> Any:
    from rich.table import Table

    from pipeline.benchmark.results import fmt

    t = Table(title=f"A = {_esc(ra.label)}   B = {_esc(rb.label)}")
    for col in ("depth", "conc", "tg A", "tg B", "tg B/A", "pp A", "pp B", "pp B/A"):
        t.add_column(col, justify="right")
    for d in deltas:
        tg, pp = d.ratio("tg_tps"), d.ratio("pp_tps")
        t.add_row(
            str(d.depth),
            str(d.concurrency),
            fmt(d.a.tg_tps if d.a else None),
            fmt(d.b.tg_tps if d.b else None),
            fmt(tg, 2) + ("×" if tg else ""),
            fmt(d.a.pp_tps if d.a else None),
            fmt(d.b.pp_tps if d.b else None),
            fmt(pp, 2) + ("×" if pp else ""),
        )
    return t

"""`recipe list | show | run`: model presets (the toolkit's recipes and sparkrun's v2), rendered into a
deploy. `show` contacts nothing; `run` is `deploy` with the recipe's command, env and mods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.types import PORT
from pipeline.contract import IMAGE

if TYPE_CHECKING:
    from pipeline.config.render import Rendered

F = Any


NODE_OPTIONS = [
    click.option("--solo", is_flag=True, help="One node (tensor_parallel becomes 1 unless --tp is given)."),
    click.option("-n", "--nodes", default=None, metavar="HOST[,HOST…]", help="Nodes, head first."),
    click.option(
        "--cluster",
        "cluster_file",
        type=click.Path(path_type=Path),
        default=None,
        help="Cluster file [default: ./cluster.yaml].",
    ),
    click.option("--ray/--no-ray", "ray", default=None, help="Ray (the command gets the Ray backend) or not."),
]


def override_options(f: F, with_nodes: bool = True) -> F:
    opts = [
        *(NODE_OPTIONS if with_nodes else []),
        click.option("--port", type=PORT, default=None, help="Fills {port}."),
        click.option("--host", default=None, help="Fills {host}."),
        click.option(
            "--tp", "--tensor-parallel", "tp", type=click.IntRange(min=1), default=None, help="Fills {tensor_parallel}."
        ),
        click.option(
            "--gpu-mem",
            "--gpu-memory-utilization",
            "gpu_mem",
            type=click.FloatRange(0, 1, min_open=True),
            default=None,
            help="Fills {gpu_memory_utilization}.",
        ),
        click.option("--max-model-len", type=click.IntRange(min=1), default=None, help="Fills {max_model_len}."),
        click.option(
            "-o",
            "--override",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Fill any placeholder (value read as YAML: numbers stay numbers); repeatable.",
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@click.group()
def recipe() -> None:
    """Model presets: list them, show what one runs, run one."""


@recipe.command("list")
@click.option("--json", "as_json", is_flag=True, help="The recipes as JSON on stdout.")
def list_(as_json: bool) -> None:
    """Every recipe (subfolders included): model, nodes, image, file."""
    from rich.markup import escape
    from rich.table import Table

    from pipeline.cli.console import console, emit_json
    from pipeline.config.recipe import all_recipes, load_recipe

    rows = []
    for name, path in all_recipes():
        r = load_recipe(path, str(path))
        lo, hi = r.node_range()
        nodes = f"{lo}.." if hi is None else (str(lo) if lo == hi else f"{lo}..{hi}")
        rows.append(
            {"name": name, "model": r.model or "", "nodes": nodes, "image": r.container or IMAGE, "file": str(path)}
        )
    if as_json:
        emit_json(rows)
        return
    table = Table(title="recipes", title_justify="left")
    for col in ("name", "model", "nodes", "image", "file"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(row[c]) for c in ("name", "model", "nodes", "image", "file")))
    console.print(table)


def rendered(name: str, o: dict[str, Any], extra: tuple[str, ...], image: str | None = None) -> Rendered:
    """The recipe rendered for the nodes the flags name (nothing is contacted)."""
    import os

    from pipeline.config.clusterfile import load_cluster
    from pipeline.config.load import parse_override
    from pipeline.config.recipe import find_recipe, load_recipe
    from pipeline.config.render import OVERRIDE_KEYS, render

    path = find_recipe(name)
    spec = load_recipe(path, str(path))
    overrides: dict[str, Any] = {OVERRIDE_KEYS[k]: o[k] for k in OVERRIDE_KEYS if o.get(k) is not None}
    for item in o.get("sets", ()):
        keys, value = parse_override(item)
        overrides[".".join(keys)] = value
    nodes = 1 if o.get("solo") else len(load_cluster(o.get("cluster_file"), o.get("nodes")).nodes)
    return render(
        spec,
        str(path),
        nodes=nodes,
        ray=bool(o.get("ray")),
        image=image,
        overrides=overrides,
        extra=extra,
        environ=os.environ,
    )


def missing_mods(mods: tuple[str, ...]) -> list[str]:
    from pipeline.paths import mod_dirs

    return [m for m in mods if not any((d / m / "run.sh").is_file() for d in mod_dirs())]


@recipe.command("show")
@click.argument("name")
@override_options
@click.option("--image", default=None, help="Image to run instead of the recipe's container.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='{"name", "model", "image", "command", "env", "mods", "nodes"} on stdout, nothing else.',
)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def show(name: str, image: str | None, as_json: bool, extra: tuple[str, ...], **o: Any) -> None:
    """What recipe NAME (or a recipe FILE) runs: the vLLM argv, env, mods, image and node count.
    Arguments after -- are appended to the command. Contacts no node.

    \b
    Examples:
      python -m pipeline recipe show qwen3.5-35b-a3b-fp8 --solo
      python -m pipeline recipe show openai-gpt-oss-120b -n 192.168.100.10,192.168.100.11 --ray --json
    """
    import shlex

    from rich.markup import escape

    from pipeline.cli.console import console, emit_json, say

    r = rendered(name, o, extra, image)
    for w in r.warnings:
        say(w, "warn")
    for m in missing_mods(r.mods):
        say(f"mod {m} is not in mods/: `recipe run` would stop here", "warn")
    if as_json:
        emit_json(r.to_json())
        return
    console.print(
        f"[bold]{escape(r.name)}[/bold]: {escape(r.model or '')} on {r.nodes} node(s), image {escape(r.image)}",
        soft_wrap=True,
    )
    shown = r.to_json()
    say(f"command: {shlex.join(shown['command'])}")
    for k, v in shown["env"].items():
        say(f"env: {k}={v}")
    if r.mods:
        say(f"mods: {', '.join(r.mods)}")


def _run(recipe_name: str, extra: tuple[str, ...], **o: Any) -> None:
    from pipeline.cli.console import say
    from pipeline.cli.launching import run_deploy
    from pipeline.errors import ConfigError

    r = rendered(recipe_name, o, extra, o.get("image"))
    for w in r.warnings:
        say(w, "warn")
    lacking = missing_mods(r.mods)
    if lacking:
        raise ConfigError(
            f"recipe {recipe_name}: mod {lacking[0]} is not in mods/ (looked in ./mods and the tool's mods/)"
        )
    if o.pop("setup", False):
        from pipeline.cli.setup import setup
        from pipeline.config.recipe import find_recipe, load_recipe

        path = find_recipe(recipe_name)
        setup(r, load_recipe(path, str(path)), str(path), o)
    o.pop("build_file", None)
    o = {
        **o,
        "image": r.image,
        "env": (*(f"{k}={v}" for k, v in r.env.items()), *o["env"]),
        "mods": (*r.mods, *o["mods"]),
    }
    run_deploy(r.command, o)


def _run_command() -> click.Command:
    """`deploy`'s flags (defined once, there), the recipe's overrides, NAME and the extra vLLM args."""
    from pipeline.cli.launching import deploy_options

    params = list(getattr(deploy_options(lambda **kw: None), "__click_params__", []))
    holder = override_options(lambda **kw: None, with_nodes=False)
    setup_opts = [
        click.Option(
            ["--setup"],
            is_flag=True,
            help="First build the image if this machine's tag lacks the build whose key matches (build_args "
            "-> build.yaml profiles), download the models the command loads if missing, copy to each "
            "node what it lacks; with --dry-run, say what it would do.",
        ),
        click.Option(
            ["--build-file"],
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="build.yaml for --setup [default: ./build.yaml, else the tool's].",
        ),
    ]
    return click.Command(
        "run",
        callback=_run,
        params=[
            click.Argument(["recipe_name"], metavar="NAME"),
            *setup_opts,
            *params,
            *getattr(holder, "__click_params__", []),
            click.Argument(["extra"], nargs=-1, type=click.UNPROCESSED),
        ],
        help="Deploy recipe NAME (or a recipe FILE) with every `deploy` flag; arguments after -- are appended "
        "to its command.\n\n\b\nExamples:\n  python -m pipeline recipe run qwen3-8b --solo\n"
        "  python -m pipeline recipe run openai-gpt-oss-120b -n 192.168.100.10,192.168.100.11 --dry-run",
    )


recipe.add_command(_run_command())

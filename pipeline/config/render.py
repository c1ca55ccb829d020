"""A recipe rendered for a deploy: the final vLLM argv, env, mods, image and node count. Pure.

The toolkit's rules (run-recipe.py), kept: placeholders are `str.format` fields filled from `defaults`,
then overrides (`--port`, `--host`, `--tp`, `--gpu-mem`, `--max-model-len`, `-o key=value`); `{{`/`}}`
are literal braces; solo sets tensor_parallel to 1 unless --tp is given; `--distributed-executor-backend`
is removed unless Ray runs, and with Ray it is `ray`; arguments after `--` are appended.
Its bugs, left out: env values reach the container as they are (no `export K="V"` that breaks on
quotes), a name never silently falls back to another folder's recipe, and subfolders are listed.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.recipe import RecipeSpec
from pipeline.config.vllm_args import BACKEND, SECRET_FLAGS, flag_value, without_flag
from pipeline.contract import ENV_REFERENCE, IMAGE, MASK, looks_secret
from pipeline.errors import ConfigError

# The toolkit's override flags -> the placeholder each fills.
OVERRIDE_KEYS = {
    "port": "port",
    "host": "host",
    "tp": "tensor_parallel",
    "gpu_mem": "gpu_memory_utilization",
    "max_model_len": "max_model_len",
}
# A v2 recipe without `command`: its model served with these defaults, the rest as --flags.
V2_BASE = {"host": "0.0.0.0", "port": 8000, "tensor_parallel": 1}


@dataclass(frozen=True)
class Rendered:
    name: str
    model: str | None
    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    mods: tuple[str, ...]
    nodes: int
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """What `recipe show` prints: secret values (env names that are or look like secrets, vLLM's
        --api-key and --hf-token) masked, whether the recipe wrote them or ${VAR} filled them in."""
        command = list(self.command)
        for i, arg in enumerate(command):
            flag = arg.split("=", 1)[0]
            if flag in SECRET_FLAGS:
                command[i] = f"{flag}={MASK}" if "=" in arg else arg
                if "=" not in arg and i + 1 < len(command):
                    command[i + 1] = MASK
        return {
            "name": self.name,
            "model": self.model,
            "image": self.image,
            "command": command,
            "env": {k: MASK if looks_secret(k) else v for k, v in self.env.items()},
            "mods": list(self.mods),
            "nodes": self.nodes,
        }


def recipe_name(path: Path, root: Path | None) -> str:
    """How `recipe list` names a recipe: its path under recipes/, without .yaml."""
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return str(rel.with_suffix(""))


def check_nodes(recipe: RecipeSpec, label: str, nodes: int) -> None:
    lo, hi = recipe.node_range()
    if nodes < lo:
        raise ConfigError(
            f"{label}: needs at least {lo} nodes (min_nodes/cluster_only), this deploy has {nodes}; "
            "give -n HOST,HOST or a cluster.yaml"
        )
    if hi is not None and nodes > hi:
        raise ConfigError(
            f"{label}: runs on at most {hi} node(s) (max_nodes/solo_only), this deploy has {nodes}; use --solo"
        )


def values_for(recipe: RecipeSpec, overrides: Mapping[str, Any], solo: bool) -> dict[str, Any]:
    values: dict[str, Any] = {**(V2_BASE if recipe.command is None else {}), **recipe.defaults}
    if solo and "tensor_parallel" not in overrides:
        values["tensor_parallel"] = 1
    values.update(overrides)
    if recipe.model is not None:
        values.setdefault("model", recipe.model)
    return values


def template_of(recipe: RecipeSpec, values: Mapping[str, Any]) -> str:
    if recipe.command is not None:
        return recipe.command
    flags = " ".join(
        f"--{k.replace('_', '-')} {{{k}}}" for k in values if k not in ("model", "host", "port", "tensor_parallel")
    )
    return f"vllm serve {{model}} --host {{host}} --port {{port}} -tp {{tensor_parallel}} {flags}".strip()


MAX_COMMAND = 16 << 10  # a vLLM command line is a few hundred characters; more is a mistake (or an attack)


def fill(template: str, values: Mapping[str, Any], label: str) -> str:
    """The toolkit's `str.format` placeholders, filled. Only plain `{name}` fields: a format spec
    (`{port:>4000000000}` asks for 4 GB), a conversion or an attribute (`{port.__class__}`) is refused."""
    if len(template) > MAX_COMMAND:
        raise ConfigError(f"{label}:command: over {MAX_COMMAND // 1024} KiB; expected a vLLM command line")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{label}:command: not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    out: list[str] = []
    for literal, name, spec, conversion in parts:
        out.append(literal)
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or spec or conversion:
            raise ConfigError(
                f"{label}:command: placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not a plain {{name}}"
            )
        if name not in values:
            raise ConfigError(f"{label}:command: uses {{{name}}}, which neither defaults nor an override sets")
        out.append(_text(values[name]))
    filled = "".join(out)
    if len(filled) > MAX_COMMAND:
        raise ConfigError(f"{label}:command: over {MAX_COMMAND // 1024} KiB once filled; expected a vLLM command line")
    return filled


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def argv_of(text: str, label: str) -> list[str]:
    try:
        return shlex.split(re.sub(r"\\\r?\n", " ", text))
    except ValueError as e:
        raise ConfigError(f"{label}:command: {e} (after filling the placeholders)") from None


def with_backend(argv: list[str], ray: bool) -> list[str]:
    out = list(without_flag(tuple(argv), BACKEND))
    return [*out, *BACKEND, "ray"] if ray else out


def expand_env(env: Mapping[str, str], environ: Mapping[str, str], label: str) -> dict[str, str]:
    """v2's `${VAR}` in env values, from this environment; an unset one is an error, not an empty value."""
    out = {}
    for k, v in env.items():
        for var in ENV_REFERENCE.findall(v):
            if var not in environ:
                raise ConfigError(f"{label}:env.{k}: uses ${{{var}}}, which is not set in this environment")
        out[k] = ENV_REFERENCE.sub(lambda m: environ[m[1]], v)
    return out


def render(
    recipe: RecipeSpec,
    label: str,
    *,
    nodes: int,
    ray: bool = False,
    image: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    extra: tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Rendered:
    check_nodes(recipe, label, nodes)
    given = dict(overrides or {})
    values = values_for(recipe, given, solo=nodes == 1)
    argv = with_backend(argv_of(fill(template_of(recipe, values), values, label), label), ray)
    warnings = [
        f"{a} is also set by the recipe's command; vLLM takes the last one (yours)"
        for a in extra
        if a.startswith("--") and a.split("=")[0] in argv
    ]
    mods = tuple(m.removeprefix("mods/").rstrip("/") for m in recipe.mods)
    return Rendered(
        name=recipe.name or Path(label).stem,
        model=recipe.model,
        image=image or recipe.container or IMAGE,
        command=(*argv, *extra),
        env=expand_env(recipe.env, environ or {}, label),
        mods=mods,
        nodes=nodes,
        warnings=(*recipe.load_warnings, *warnings),
    )


HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# vLLM flags whose value is another model the server loads (besides the one it serves)
MODEL_FLAGS = ("--tokenizer", "--speculative-model", "--draft-model")


def models_named(argv: tuple[str, ...] | list[str], model: str | None) -> list[str]:
    """Every Hugging Face model the command loads: the one it serves, then a draft model in
    --speculative-config (JSON), --tokenizer and the like. Local paths are not models to download."""
    import json

    argv = list(argv)
    found: list[str] = [model] if model else []
    if len(argv) > 2 and argv[:2] == ["vllm", "serve"] and not argv[2].startswith("-"):
        found.append(argv[2])
    # the value vLLM takes for each flag: the last one given
    found += [v for flag in MODEL_FLAGS if (v := flag_value(argv, (flag,))) is not None]
    try:
        cfg = json.loads(flag_value(argv, ("--speculative-config",)) or "null")
    except ValueError:
        cfg = None  # not JSON: vLLM refuses it itself
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), str):
        found.append(cfg["model"])
    out: list[str] = []
    for m in found:
        if HF_ID.fullmatch(m) and not m.startswith((".", "/")) and m not in out:
            out.append(m)
    return out


def profiles_for(build_args: list[str], label: str) -> tuple[str, ...]:
    """The toolkit's build-script flags (build_args) -> build.yaml profile names (`--exp-b12x` ->
    `exp-b12x`; its long aliases too). Only flags: a value-taking flag has no profile to map to."""
    aliases = {
        "--experimental-b12x": "--exp-b12x",
        "--experimental-mxfp4": "--exp-mxfp4",
        "--pre-tf": "--tf5",
        "--pre-transformers": "--tf5",
    }
    out = []
    for arg in build_args:
        flag = aliases.get(arg, arg)
        if not flag.startswith("--") or "=" in flag:
            raise ConfigError(
                f"{label}:build_args: {arg!r} is not a build flag (expected flags such as --exp-b12x, "
                "each naming a profile of build.yaml)"
            )
        out.append(flag[2:])
    return tuple(out)

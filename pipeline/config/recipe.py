"""Recipes: one-command model presets, in the bash toolkit's format (`recipe_version: "1"`) and in
sparkrun's "v2" superset, loaded unchanged; unknown keys are located errors (sparkrun only warns).

    recipe_version: "1"
    name: qwen3.5-35b-a3b-fp8
    model: Qwen/Qwen3.5-35B-A3B-FP8
    container: vllm-node
    mods: [mods/fix-qwen3.5-chat-template]
    defaults: {port: 8000, host: 0.0.0.0, tensor_parallel: 2, gpu_memory_utilization: 0.8}
    env: {VLLM_MARLIN_USE_ATOMIC_ADD: "1"}
    command: |
      vllm serve Qwen/Qwen3.5-35B-A3B-FP8 --host {host} --port {port} \\
        -tp {tensor_parallel} --gpu-memory-utilization {gpu_memory_utilization}

v2 adds: `model` as the only required key, `model_revision`, `runtime`, `min_nodes`/`max_nodes`
(instead of solo_only/cluster_only), `metadata`, a `benchmark` block, a `{model}` placeholder and
`${VAR}` in `env`. A v2 recipe without `command` serves its model with the defaults as flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from pipeline.config.load import read_yaml, validate
from pipeline.config.types import STRICT, EnvName, EnvValue, Flag, ImageRef, NonEmptyStr, PositiveInt, expect
from pipeline.errors import ConfigError
from pipeline.paths import recipe_dirs

Scalar = Annotated[
    str | int | float | bool, expect("a string, number or boolean", lambda v: isinstance(v, str | int | float | bool))
]
Version = Annotated[Literal["1", "2"], BeforeValidator(lambda v: str(v) if isinstance(v, int) and v in (1, 2) else v)]


def is_model_id(v: object) -> bool:
    """ORG/NAME, as the hub names models (also what `model download` takes): huggingface_hub's own rule
    (no `..`, `--`, leading `-` or `.`, at most 96 characters), so the hub never refuses what we accept."""
    if not isinstance(v, str) or len(v.split("/")) != 2:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(v)
    except HFValidationError:
        return False
    return not v.startswith(("-", ".")) and "/-" not in v and "/." not in v


ModelId = Annotated[str, expect("a Hugging Face model id such as Qwen/Qwen3-8B", is_model_id)]


class BenchmarkSpec(BaseModel):
    model_config = STRICT
    enabled: Flag = True
    framework: Literal["llama-benchy"] = "llama-benchy"
    model: NonEmptyStr | None = None
    profile: NonEmptyStr | None = None
    args: dict[NonEmptyStr, Any] = Field(default_factory=dict)
    timeout: PositiveInt | None = None  # seconds (sparkrun's key)
    metadata: dict[NonEmptyStr, Any] = Field(default_factory=dict)


class RecipeSpec(BaseModel):
    model_config = STRICT
    recipe_version: Version = "2"
    name: NonEmptyStr | None = None
    description: str = ""
    model: ModelId | None = None
    model_revision: NonEmptyStr | None = None
    runtime: Literal["vllm"] = "vllm"
    container: ImageRef | None = None
    command: NonEmptyStr | None = None
    defaults: dict[NonEmptyStr, Scalar] = Field(default_factory=dict)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    mods: list[NonEmptyStr] = Field(default_factory=list)
    build_args: list[NonEmptyStr] = Field(default_factory=list)
    cluster_only: Flag = False
    solo_only: Flag = False
    min_nodes: PositiveInt | None = None
    max_nodes: PositiveInt | None = None
    metadata: dict[NonEmptyStr, Any] = Field(default_factory=dict)
    benchmark: BenchmarkSpec | None = None
    _load_warnings: list[str] = PrivateAttr(default_factory=list)  # set by load_recipe, never by the file

    @field_validator("env", "defaults", "metadata", "mods", "build_args", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any, info: ValidationInfo) -> Any:
        """`env:` with nothing under it is YAML's null; the toolkit's loader reads it as empty, so do we."""
        if v is not None:
            return v
        return [] if info.field_name in ("mods", "build_args") else {}

    @property
    def load_warnings(self) -> list[str]:
        return self._load_warnings

    @model_validator(mode="after")
    def _shape(self) -> RecipeSpec:
        if self.recipe_version == "1":
            missing = [k for k in ("name", "container", "command") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"recipe_version 1 needs {', '.join(missing)}")
        elif self.model is None:
            raise ValueError("expected model (the one key every recipe needs)")
        if self.cluster_only and self.solo_only:
            raise ValueError("cluster_only and solo_only exclude each other")
        lo, hi = self.node_range()
        if hi is not None and lo > hi:
            raise ValueError(f"min_nodes {lo} is more than max_nodes {hi}")
        return self

    def node_range(self) -> tuple[int, int | None]:
        """(min, max) nodes; max None for no limit (solo_only -> 1..1, cluster_only -> 2..)."""
        lo = self.min_nodes or (2 if self.cluster_only else 1)
        hi = self.max_nodes or (1 if self.solo_only else None)
        return lo, hi


def load_recipe(path: Path, label: str | None = None) -> RecipeSpec:
    label = label or path.name
    noted: list[str] = []  # the toolkit's loader takes a duplicate key (the later one): so do we, and say so
    data, lines = read_yaml(path, label, duplicates=noted)
    if not data:
        raise ConfigError(f"{label}: empty recipe (expected at least model)")
    spec = validate(RecipeSpec, data, label, lines)
    spec._load_warnings.extend(noted)
    return spec


def all_recipes() -> list[tuple[str, Path]]:
    """(name, file) of every recipe, subfolders included; a name in ./recipes hides the tool's."""
    seen: dict[str, Path] = {}
    for d in recipe_dirs():
        for f in sorted([*d.rglob("*.yaml"), *d.rglob("*.yml")]):
            seen.setdefault(str(f.relative_to(d).with_suffix("")), f)
    return sorted(seen.items())


def find_recipe(name: str) -> Path:
    """A recipe by file path, or by name under recipes/ (`qwen3-8b`, `3x-spark-cluster/…`). Only that
    exact name: never the same file name in another folder (the toolkit's footgun)."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    key = name.removeprefix("recipes/").removesuffix(".yaml").removesuffix(".yml")
    for d in recipe_dirs():
        for candidate in (d / f"{key}.yaml", d / f"{key}.yml"):
            if candidate.is_file():
                return candidate
    import difflib

    names = [n for n, _ in all_recipes()]
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `recipe list` shows them all"
    raise ConfigError(
        f"recipe {name}: not found (looked in {', '.join(str(d) for d in recipe_dirs()) or 'recipes/'})" + hint
    )

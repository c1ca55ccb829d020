"""Where the tool keeps things on this machine. One place, so every command agrees.

The cache root holds source mirrors (`git/`), checked-out trees (`trees/`), stage logs (`logs/`), the
artifact store (`store/`, unless overridden), bootstrap base images' work files and deploy state.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from platformdirs import user_cache_path

from pipeline.errors import ConfigError


def cache_root() -> Path:
    """$SPARK_PIPELINE_CACHE, or the user cache directory (~/.cache/spark-pipeline)."""
    env = os.environ.get("SPARK_PIPELINE_CACHE")
    return Path(env) if env else user_cache_path("spark-pipeline")


def default_store() -> Path:
    """$SPARK_PIPELINE_STORE, or `store/` under the cache root."""
    env = os.environ.get("SPARK_PIPELINE_STORE")
    return Path(env) if env else cache_root() / "store"


def stage_log(stage: str, key: str) -> Path:
    """The log of one run of a stage (its directory also keeps the Dockerfile that ran)."""
    return cache_root() / "logs" / stage / key[:16] / "build.log"


def api_key_file(container: str) -> Path:
    """Where `deploy --api-key auto` keeps the key it made for a deployment (mode 0600)."""
    return cache_root() / "api-keys" / f"{container}.key"


def ray_token_file(container: str) -> Path:
    """Where `deploy --ray` keeps the Ray auth token it made for a deployment (mode 0600)."""
    return cache_root() / "ray-tokens" / f"{container}.token"


def startup_file(container: str) -> Path:
    """How the last deploy of a deployment started (its phases, time to ready): `bench` records it."""
    return cache_root() / "deploy" / f"{container}.startup.json"


def failed_hosts_file() -> Path:
    """The nodes the last deploy/ship/stop failed on (`--limit @failed`)."""
    return cache_root() / "last-failed.json"


def deploy_workdir() -> Path:
    """Scratch space of deploy (unpacked mods, generated PR mods)."""
    return cache_root() / "deploy"


def ship_workdir() -> Path:
    """The loopback registry's storage and the per-port ship lock."""
    return cache_root() / "ship"


# The tool's own files, shipped inside the package (a wheel, `pipx install`, `uv tool install` carry them):
# the default build.yaml, the recipes, the mods and the docker-contexts. In a checkout the same folders are
# also reachable from the repository's root. What the working directory holds always wins.
RESOURCES = Path(__file__).resolve().parent / "resources"
TOOL_BUILD = RESOURCES / "build.yaml"
TOOL_RECIPES = RESOURCES / "recipes"
TOOL_MODS = RESOURCES / "mods"
TOOL_CONTEXTS = RESOURCES / "docker-contexts"


def default_build_file() -> Path:
    """./build.yaml when the working directory has one, else the tool's own."""
    here = Path("build.yaml")
    return here if here.is_file() else TOOL_BUILD


def mod_dirs() -> list[Path]:
    """Where a mod named on the command line or in a recipe is looked for: ./mods, then the tool's."""
    return [Path("mods"), TOOL_MODS]


def recipe_dirs() -> list[Path]:
    """Where a recipe named by its name is looked for: ./recipes, then the tool's."""
    return [d for d in (Path("recipes"), TOOL_RECIPES) if d.is_dir()]


def input_dir(root: Path, ref: str) -> Path | None:
    """Where a directory input of build.yaml is: relative to build.yaml's directory; for
    docker-contexts/<stage>/, the tool's own when build.yaml's directory has none, and None (empty)
    when neither has it."""
    path = root / ref
    if path.exists() or not ref.startswith("docker-contexts/"):
        return path
    tool = TOOL_CONTEXTS / ref.removeprefix("docker-contexts/")
    return tool if tool.exists() else None


# --- environment knobs (SPARK_PIPELINE_*): each read here, checked where it enters -------------------------
def env_seconds(name: str, default: float, most: float = 7 * 86400) -> float:
    """A number of seconds from $name: a wrong value is an error naming the variable, never ignored."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= most:  # NaN fails too
        raise ConfigError(f"${name}: expected seconds, more than 0 and at most {most:.0f}, got {raw!r}")
    return value


def env_matching(name: str, pattern: str, expected: str) -> str:
    """$name when it matches `pattern` whole ('' when unset); otherwise an error naming the variable."""
    raw = os.environ.get(name, "")
    if raw and re.fullmatch(pattern, raw) is None:
        raise ConfigError(f"${name}: expected {expected}, got {raw[:80]!r}")
    return raw


def env_program(name: str) -> str:
    """An executable named by $name ('' when unset): an absolute path to a program, or an error."""
    raw = os.environ.get(name, "")
    if raw and not (os.path.isabs(raw) and os.path.isfile(raw) and os.access(raw, os.X_OK)):
        raise ConfigError(f"${name}: expected the absolute path of an executable program, got {raw[:200]!r}")
    return raw

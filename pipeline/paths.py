"""Where the tool keeps things on this machine. One place, so every command agrees.

The cache root holds source mirrors (`git/`), checked-out trees (`trees/`), stage logs (`logs/`), the
artifact store (`store/`, unless overridden), bootstrap base images' work files and deploy state.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_path


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


def failed_hosts_file() -> Path:
    """The nodes the last deploy/ship/stop failed on (`--limit @failed`)."""
    return cache_root() / "last-failed.json"


def deploy_workdir() -> Path:
    """Scratch space of deploy (unpacked mods, generated PR mods)."""
    return cache_root() / "deploy"


def ship_workdir() -> Path:
    """The loopback registry's storage and the per-port ship lock."""
    return cache_root() / "ship"


# The tool's own docker-contexts/ (prepare scripts, patches), used where a build.yaml's directory has none.
TOOL_CONTEXTS = Path(__file__).resolve().parents[1] / "docker-contexts"


def input_dir(root: Path, ref: str) -> Path | None:
    """Where a directory input of build.yaml is: relative to build.yaml's directory; for
    docker-contexts/<stage>/, the tool's own when build.yaml's directory has none, and None (empty)
    when neither has it."""
    path = root / ref
    if path.exists() or not ref.startswith("docker-contexts/"):
        return path
    tool = TOOL_CONTEXTS / ref.removeprefix("docker-contexts/")
    return tool if tool.exists() else None

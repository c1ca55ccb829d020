"""Build engines: one interface, two implementations (BuildKit through Docker, and Dagger).

The build runner only talks to `Engine`; it never knows which one it drives. Both engines are thin:
they turn a Stage of the IR into their own terms and run it. What to run lives in the IR and the
planner, where it is tested without any engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline import paths
from pipeline.core.ir import Cache, Stage
from pipeline.report import Reporter

# Never sent to a stage by either engine, at any depth: our completion markers and git metadata (trees
# reach builds without .git; a local input may still hold one).
EXCLUDED = (".complete", ".git")


@dataclass(frozen=True)
class StageRun:
    """One stage to run: the stage, where each of its inputs is on the host, and where to log."""

    stage: Stage
    key: str
    inputs: dict[str, Path]  # input name -> host directory
    log: Path
    build_env: tuple[tuple[str, str], ...] = ()  # stage.build_env plus per-run values (never in the key)
    ca_bundle: Path | None = None  # the host file mounted at ir.CA_BUNDLE when stage.ca_bundle


class Engine(Protocol):
    name: str

    def check(self) -> None:
        """Raise EngineUnavailable, with what the user needs, if this engine cannot run now."""

    def refuses(self, stage: Stage) -> str | None:
        """Why this engine cannot build `stage` as its key describes (checked before the first stage)."""

    def prepare_base(self, run: StageRun, report: Reporter) -> None:
        """Make sure the stage's base image can be used (make a bootstrap image if needed)."""

    def run_stage(self, run: StageRun, dest: Path) -> None:
        """Run the stage's steps and export its output directory into `dest` (an empty directory).
        Raise StageError on failure, with the log's tail."""

    def build_image(self, run: StageRun, labels: dict[str, str], metadata: str, tag: str) -> str:
        """Build an image-output stage, make it available as `tag` in the local Docker, return its ID."""

    def build_toolchain(self, run: StageRun, tag: str) -> str:
        """Make a toolchain stage's container (its steps, no export) available as `tag` in the local
        Docker, where the compiling stages start from it; return its ID. After run_stage of the same
        stage this reuses the engine's cache."""

    def has_image(self, ref: str) -> bool:
        """Whether the local Docker has `ref`."""

    def reuse_image(self, image_id: str, tag: str, kept: str = "") -> bool:
        """If the local Docker still has `image_id` (by that ID, or as `kept`: the build's name by key),
        point `tag` and `kept` at it and return True."""

    def export_image(self, tag: str, dest: Path) -> None:
        """Write the image `tag` as a tarball to `dest` (atomically)."""

    def push_image(self, tag: str, ref: str) -> str:
        """Push the image built as `tag` to the registry reference `ref`; return `ref@digest`."""

    def close(self) -> None:
        """Release the engine's connection (Dagger session), if any."""


def cache_id(stage: Stage, cache: Cache) -> str:
    """The one name of a cache volume, for both engines: platform and cache name, so arm64 and amd64
    objects never mix. Volumes are global to a Docker daemon or Dagger engine;
    $SPARK_PIPELINE_CACHE_NAMESPACE keeps sets apart (two checkouts, a test that must start cold).
    Never part of a key."""
    ns = paths.env_matching(
        "SPARK_PIPELINE_CACHE_NAMESPACE",
        r"[a-z0-9][a-z0-9_.-]{0,63}",
        "a volume-name part (lowercase letters, digits, _ . -)",
    )
    arch = stage.platform.split("/")[-1]
    return "-".join(p for p in ("spark-pipeline", ns, arch, cache.name) if p)


def dagger_session() -> bool:
    """A Dagger session exists when run under `dagger run` (it sets these two variables)."""
    return bool(os.environ.get("DAGGER_SESSION_PORT") and os.environ.get("DAGGER_SESSION_TOKEN"))


def choose(name: str) -> str:
    """`auto` -> dagger inside a Dagger session, else buildkit."""
    if name == "auto":
        return "dagger" if dagger_session() else "buildkit"
    return name


def make_engine(name: str, cache: Path) -> Engine:
    chosen = choose(name)
    if chosen == "buildkit":
        from pipeline.engines.buildkit import BuildKitEngine

        return BuildKitEngine(cache)
    from pipeline.engines.dagger import DaggerEngine

    return DaggerEngine(cache)

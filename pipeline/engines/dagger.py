"""The Dagger engine: a Stage -> a dagger-io pipeline, from the same IR as the BuildKit engine, into
the same store (outputs are exported to a staging dir and committed by the same runner code).

`stage_container` builds the chain lazily and purely (nothing runs until an await), which is how the
tests inspect it without an engine. `DaggerEngine` connects (under `dagger run` it uses that session;
no CLI is downloaded), runs stages and maps the SDK's errors onto ours.

What the Dagger API cannot express is said here rather than faked: a step's network cannot be cut
(`network: false` stages run with the engine's default network; the key still records the setting).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dagger

from pipeline.core.ir import CA_BUNDLE, Stage
from pipeline.engines import StageRun, bootstrap, cache_id, dagger_session
from pipeline.engines.docker import Docker, LocalImages
from pipeline.errors import EngineUnavailable, StageError, StepFailed
from pipeline.report import Reporter

T = TypeVar("T")
SDK_CLI_VERSION = "0.21.11"  # dagger-io pins its CLI and engine image to this version


def _args(argv: tuple[str, ...]) -> list[str]:
    # beartype checks one random element of a list; check every element ourselves.
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError(f"with_exec needs a list of str, got {argv!r}")
    return list(argv)


def base_container(client: dagger.Client, stage: Stage) -> dagger.Container:
    """The stage's base: an image only the local Docker has (a bootstrap image, the toolchain) is read
    from it through the host (`from` would look it up in a registry); others are pulled."""
    if stage.base.local:
        return client.host().container_image(stage.base.ref)
    return client.container(platform=dagger.Platform(stage.platform)).from_(stage.base.ref)


def prepared(client: dagger.Client, stage: Stage, dirs: dict[str, dagger.Directory],
             build_env: tuple[tuple[str, str], ...]) -> dagger.Container:
    """The base with the stage's environment, copied inputs, caches and secrets: ready for its steps."""
    ctr = base_container(client, stage)
    for name, value in stage.env:
        ctr = ctr.with_env_variable(name, value)
    for name, value in build_env:
        # Job counts change speed, not results: a volatile variable does not invalidate the exec cache.
        ctr = ctr.with_volatile_variable(name, value)
    for inp in stage.inputs:
        if inp.mode == "copy":
            ctr = ctr.with_directory(inp.path, dirs[inp.name])
    for cache in stage.caches:
        sharing = dagger.CacheSharingMode.LOCKED if cache.sharing == "locked" else dagger.CacheSharingMode.SHARED
        ctr = ctr.with_mounted_cache(cache.path, client.cache_volume(cache_id(stage, cache)), sharing=sharing)
    for secret in stage.secrets:
        ctr = ctr.with_mounted_secret(f"/run/secrets/{secret}", client.secret(f"env://{secret}", cache_key=secret))
    return ctr


def stage_container(client: dagger.Client, stage: Stage, dirs: dict[str, dagger.Directory],
                    build_env: tuple[tuple[str, str], ...] = (), ca_bundle: Path | None = None) -> dagger.Container:
    """The stage as a lazy dagger-io chain. `dirs` maps each input name to a Directory."""
    ctr = prepared(client, stage, dirs, build_env)
    trusted = stage.ca_bundle and ca_bundle is not None
    if trusted:
        ctr = ctr.with_mounted_file(CA_BUNDLE, client.host().file(str(ca_bundle)))
    for step in stage.steps:
        for name in step.mounts:
            ctr = ctr.with_mounted_directory(stage.input(name).path, dirs[name], read_only=True)
        ctr = ctr.with_workdir(step.workdir or "/").with_exec(_args(step.argv))
        for name in step.mounts:
            ctr = ctr.without_mount(stage.input(name).path)
    return ctr.without_mount(CA_BUNDLE) if trusted else ctr  # trust for the steps, never part of an image


def image_container(client: dagger.Client, stage: Stage, dirs: dict[str, dagger.Directory], labels: dict[str, str],
                    metadata: str, build_env: tuple[tuple[str, str], ...] = (),
                    ca_bundle: Path | None = None) -> dagger.Container:
    """An image-output stage: the steps' container, then metadata, env, workdir and labels, in the
    same order as the BuildKit engine's layers (the CA bundle is a mount: not in the image)."""
    ctr = stage_container(client, stage, dirs, build_env, ca_bundle)
    ctr = ctr.with_new_file(stage.output.path, metadata)
    for name, value in stage.output.env:
        ctr = ctr.with_env_variable(name, value)
    if stage.output.workdir:
        ctr = ctr.with_workdir(stage.output.workdir)
    for name, value in sorted(labels.items()):
        ctr = ctr.with_label(name, value)
    return ctr


def host_dirs(client: dagger.Client, stage: Stage, inputs: dict[str, Path]) -> dict[str, dagger.Directory]:
    """Each input's host directory, narrowly (never the whole repo): the entry/tree itself only."""
    return {inp.name: client.host().directory(str(inputs[inp.name]), exclude=[".complete", ".git"])
            for inp in stage.inputs}


def unavailable(e: Exception) -> EngineUnavailable:
    return EngineUnavailable(
        f"cannot use a Dagger engine: {e}\n"
        f"Run under the Dagger CLI ({SDK_CLI_VERSION}, the version dagger-io pins): "
        "`dagger run python -m pipeline build …`; that needs Docker (the CLI starts the engine in a "
        "container). Or point at a running engine with _EXPERIMENTAL_DAGGER_RUNNER_HOST "
        "(e.g. tcp://host:1234), or put the CLI at _EXPERIMENTAL_DAGGER_CLI_BIN. "
        "Without Dagger, use --engine buildkit.")


class DaggerEngine(LocalImages):
    name = "dagger"

    def __init__(self, cache: Path, client: dagger.Client | None = None):
        self.cache = cache
        self.client = client or dagger.dag
        self._portal: Any = None
        self._portal_cm: Any = None
        self._conn_cm: Any = None
        self._log: Any = None
        self._docker: Docker | None = None
        self._last_image: dagger.Container | None = None

    # --- connection -------------------------------------------------------------------------------
    def _open(self) -> None:
        import anyio.from_thread

        if self._portal is not None:
            return
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        logs = self.cache / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._log = (logs / "dagger-engine.log").open("a")
        # Under `dagger run` the session's port/token are in the environment and are used as they are.
        config = dagger.Config(log_output=None if dagger_session() else self._log)
        self._conn_cm = self._portal.wrap_async_context_manager(dagger.connection(config))
        try:
            self._conn_cm.__enter__()
        except (dagger.ProvisionError, dagger.ClientConnectionError, dagger.TransportError) as e:
            self.close()
            raise unavailable(e) from None

    def close(self) -> None:
        for cm in (self._conn_cm, self._portal_cm):
            if cm is not None:
                with contextlib.suppress(Exception):  # closing must not mask the build's own error
                    cm.__exit__(None, None, None)
        self._conn_cm = self._portal_cm = self._portal = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _call(self, stage: str, fn: Callable[[], Awaitable[T]]) -> T:
        self._open()
        try:
            return self._portal.call(fn)
        except dagger.ExecError as e:
            tail = "\n".join((e.stderr or e.stdout or "").splitlines()[-20:])
            raise StageError(stage, "a step failed on the Dagger engine", step=shlex.join(e.command),
                             exit_code=e.exit_code, log_tail=tail) from None
        except dagger.TransportError as e:
            raise StepFailed(f"lost the connection to the Dagger engine during stage {stage}: {e}") from None
        except (dagger.ProvisionError, dagger.ClientConnectionError) as e:
            raise unavailable(e) from None
        except dagger.QueryError as e:
            raise StageError(stage, f"the Dagger engine refused the pipeline: {e}") from None

    # --- Engine -----------------------------------------------------------------------------------
    def check(self) -> None:
        self._open()

    def prepare_base(self, run: StageRun, report: Reporter) -> None:
        bootstrap.ensure(run.stage.base, run.stage.platform, self.docker, self.cache / "bootstrap",
                         lambda m: report.say(m, "note"))

    def run_stage(self, run: StageRun, dest: Path) -> None:
        if not run.stage.network:
            run.log.open("a").write("note: the Dagger engine cannot cut a step's network; "
                                    "this stage runs with the engine's default network\n")
        ctr = stage_container(self.client, run.stage, host_dirs(self.client, run.stage, run.inputs), run.build_env,
                              run.ca_bundle)
        out = ctr.directory(run.stage.output.path)
        self._call(run.stage.name, lambda: out.export(str(dest)))

    def build_toolchain(self, run: StageRun, tag: str) -> str:
        ctr = stage_container(self.client, run.stage, host_dirs(self.client, run.stage, run.inputs), run.build_env,
                              run.ca_bundle)
        self._export_image(run.stage.name, ctr, tag)
        return self.local_image_id(run.stage.name, tag)

    def build_image(self, run: StageRun, labels: dict[str, str], metadata: str, tag: str) -> str:
        ctr = image_container(self.client, run.stage, host_dirs(self.client, run.stage, run.inputs), labels,
                              metadata, run.build_env, run.ca_bundle)
        self._export_image(run.stage.name, ctr, tag)
        self._last_image = ctr
        return self.local_image_id(run.stage.name, tag)

    def _export_image(self, stage: str, ctr: dagger.Container, tag: str) -> None:
        self._call(stage, lambda: ctr.export_image(tag))

    def push_image(self, tag: str, ref: str) -> str:
        ctr = self._last_image
        if ctr is None:
            return self.docker.push(tag, ref)
        return self._call("runtime", lambda: ctr.publish(ref))

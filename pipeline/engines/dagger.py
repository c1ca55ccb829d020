"""The Dagger engine: a Stage -> a dagger-io pipeline, from the same IR as the BuildKit engine, into
the same store (outputs are exported to a staging dir and committed by the same runner code).

`stage_container` builds the chain lazily and purely (nothing runs until an await), which is how the
tests inspect it without an engine. `DaggerEngine` connects (under `dagger run` it uses that session;
no CLI is downloaded), runs stages and maps the SDK's errors onto ours.

What the Dagger API cannot express is refused rather than faked: the 0.21 API cannot cut a step's
network, so a stage that is to build with `network: false` is refused before the first stage runs (its
key says "built offline", which a Dagger build could not make true).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dagger
from beartype.roar import BeartypeCallHintReturnViolation

from pipeline.core.ir import CA_BUNDLE, Stage
from pipeline.engines import EXCLUDED, StageRun, bootstrap, cache_id, dagger_session
from pipeline.engines.docker import Docker, LocalImages
from pipeline.errors import EngineLost, EngineUnavailable, StageError
from pipeline.report import Reporter

T = TypeVar("T")
SDK_CLI_VERSION = "0.21.11"  # dagger-io pins its CLI and engine image to this version
MIN_ENGINE = (0, 21, 4)  # Container.withVolatileVariable (every compiling stage) is new in engine 0.21.4


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


def prepared(
    client: dagger.Client, stage: Stage, dirs: dict[str, dagger.Directory], build_env: tuple[tuple[str, str], ...]
) -> dagger.Container:
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


def stage_chain(
    client: dagger.Client,
    stage: Stage,
    dirs: dict[str, dagger.Directory],
    build_env: tuple[tuple[str, str], ...] = (),
    ca_bundle: Path | None = None,
) -> tuple[dagger.Container, list[tuple[str, dagger.Container]]]:
    """The stage as a lazy dagger-io chain, and the container right after each step (the step's output
    is read back from it for the stage's log). `dirs` maps each input name to a Directory."""
    ctr = prepared(client, stage, dirs, build_env)
    trusted = stage.ca_bundle and ca_bundle is not None
    if trusted:
        ctr = ctr.with_mounted_file(CA_BUNDLE, client.host().file(str(ca_bundle)))
    after: list[tuple[str, dagger.Container]] = []
    for step in stage.steps:
        for name in step.mounts:
            ctr = ctr.with_mounted_directory(stage.input(name).path, dirs[name], read_only=True)
        ctr = ctr.with_workdir(step.workdir or "/").with_exec(_args(step.argv))
        after.append((shlex.join(step.argv), ctr))
        for name in step.mounts:
            ctr = ctr.without_mount(stage.input(name).path)
    return (ctr.without_mount(CA_BUNDLE) if trusted else ctr), after  # trust for the steps, never in an image


def stage_container(
    client: dagger.Client,
    stage: Stage,
    dirs: dict[str, dagger.Directory],
    build_env: tuple[tuple[str, str], ...] = (),
    ca_bundle: Path | None = None,
) -> dagger.Container:
    """The stage as a lazy dagger-io chain."""
    return stage_chain(client, stage, dirs, build_env, ca_bundle)[0]


def image_chain(
    client: dagger.Client,
    stage: Stage,
    dirs: dict[str, dagger.Directory],
    labels: dict[str, str],
    metadata: str,
    build_env: tuple[tuple[str, str], ...] = (),
    ca_bundle: Path | None = None,
) -> tuple[dagger.Container, list[tuple[str, dagger.Container]]]:
    """An image-output stage: the steps' container, then metadata, env, workdir and labels, in the
    same order as the BuildKit engine's layers (the CA bundle is a mount: not in the image)."""
    ctr, after = stage_chain(client, stage, dirs, build_env, ca_bundle)
    ctr = ctr.with_new_file(stage.output.path, metadata)
    for name, value in stage.output.env:
        ctr = ctr.with_env_variable(name, value)
    if stage.output.workdir:
        ctr = ctr.with_workdir(stage.output.workdir)
    for name, value in sorted(labels.items()):
        ctr = ctr.with_label(name, value)
    return ctr, after


def image_container(
    client: dagger.Client,
    stage: Stage,
    dirs: dict[str, dagger.Directory],
    labels: dict[str, str],
    metadata: str,
    build_env: tuple[tuple[str, str], ...] = (),
) -> dagger.Container:
    return image_chain(client, stage, dirs, labels, metadata, build_env)[0]


def host_dirs(client: dagger.Client, stage: Stage, inputs: dict[str, Path]) -> dict[str, dagger.Directory]:
    """Each input's host directory, narrowly (never the whole repo): the entry/tree itself only, without
    what neither engine sends (engines.EXCLUDED, at any depth)."""
    exclude = [f"**/{name}" for name in EXCLUDED]
    return {inp.name: client.host().directory(str(inputs[inp.name]), exclude=exclude) for inp in stage.inputs}


def unavailable(e: Exception | str) -> EngineUnavailable:
    return EngineUnavailable(
        f"cannot use a Dagger engine: {e}\n"
        f"Run under the Dagger CLI {SDK_CLI_VERSION} (the version dagger-io pins; engine 0.21.4 or newer works): "
        "`dagger run python -m pipeline build …`; that needs Docker (the CLI starts the engine in a "
        "container). Or put the CLI at _EXPERIMENTAL_DAGGER_CLI_BIN. Or point at a running engine: "
        "_EXPERIMENTAL_DAGGER_RUNNER_HOST=tcp://HOST:PORT (or unix:///run/dagger/engine.sock) together with "
        "_EXPERIMENTAL_DAGGER_RUNNER_IMAGESTORE=docker-image, without which the images this tool builds "
        "cannot be loaded into the local Docker. Without Dagger, use --engine buildkit."
    )


def engine_version(text: str) -> tuple[int, int, int] | None:
    """`v0.21.11` -> (0, 21, 11); None for a version that is not a release (a dev engine)."""
    m = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def too_old(text: str) -> EngineUnavailable | None:
    found = engine_version(text)
    if found is None or found >= MIN_ENGINE:
        return None
    need = ".".join(map(str, MIN_ENGINE))
    return EngineUnavailable(
        f"the Dagger engine is {text}; this tool needs engine {need} or newer (it uses "
        f"Container.withVolatileVariable), and is tested with CLI and engine {SDK_CLI_VERSION}.\n"
        f"Install CLI {SDK_CLI_VERSION} (https://docs.dagger.io/install, or dagger/dagger-for-github with "
        f'version: "{SDK_CLI_VERSION}"), remove the old engine container (docker rm -f dagger-engine-…; '
        "its cache volume stays), and run `dagger run python -m pipeline build …` again. "
        "Without Dagger, use --engine buildkit."
    )


def step_error(stage: str, e: dagger.ExecError, log: Path | None) -> StageError:
    """A failed step, from what the engine sent: any of its fields may be missing."""
    command = getattr(e, "command", None)
    stdout, stderr = getattr(e, "stdout", None) or "", getattr(e, "stderr", None) or ""
    tail = "\n".join((stderr or stdout).splitlines()[-20:])
    return StageError(
        stage,
        f"a step failed on the Dagger engine: {getattr(e, 'message', None) or e}",
        step=shlex.join(command) if command else "(the engine did not say which)",
        exit_code=getattr(e, "exit_code", None),
        log_tail=tail,
        log_path=str(log or ""),
    )


class DaggerEngine(LocalImages):
    name = "dagger"

    def __init__(self, cache: Path, client: dagger.Client | None = None, retry: dagger.Retry | None = None):
        self.cache = cache
        self.retry = retry or dagger.Retry()  # dagger-io's own retries of a lost connection, by default
        self.client = client or dagger.dag
        self._portal: Any = None
        self._portal_cm: Any = None
        self._conn_cm: Any = None
        self._log: Any = None
        self._docker: Docker | None = None
        self._last_image: tuple[StageRun, dagger.Container] | None = None  # for --push

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
        config = dagger.Config(log_output=None if dagger_session() else self._log, retry=self.retry)
        self._conn_cm = self._portal.wrap_async_context_manager(dagger.connection(config))
        try:
            self._conn_cm.__enter__()
            version = str(self._portal.call(self.client.version))
        except (dagger.ProvisionError, dagger.ClientConnectionError, dagger.TransportError, dagger.QueryError) as e:
            self.close()
            raise unavailable(e) from None
        old = too_old(version)
        if old is not None:
            self.close()
            raise old
        self._log.write(f"connected to Dagger engine {version}\n")

    def close(self) -> None:
        for cm in (self._conn_cm, self._portal_cm):
            if cm is not None:
                with contextlib.suppress(Exception):  # closing must not mask the build's own error
                    cm.__exit__(None, None, None)
        self._conn_cm = self._portal_cm = self._portal = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _call(self, run: StageRun, fn: Callable[[], Awaitable[T]]) -> T:
        self._open()
        stage = run.stage.name
        try:
            return self._portal.call(fn)
        except dagger.ExecError as e:
            with run.log.open("a") as log:
                log.write(
                    f"== failed: {shlex.join(e.command) if getattr(e, 'command', None) else '?'}\n"
                    f"{getattr(e, 'stdout', None) or ''}{getattr(e, 'stderr', None) or ''}\n"
                )
            raise step_error(stage, e, run.log) from None
        except dagger.TransportError as e:
            raise EngineLost(f"lost the connection to the Dagger engine during stage {stage}: {e}") from None
        except (dagger.ProvisionError, dagger.ClientConnectionError) as e:
            raise unavailable(e) from None
        except dagger.QueryError as e:
            if run.stage.base.ref in str(e):
                where = "the local Docker" if run.stage.base.local else "its registry"
                raise StageError(
                    stage, f"cannot get its base image {run.stage.base.ref} from {where}: {e}", log_path=str(run.log)
                ) from None
            raise StageError(stage, f"the Dagger engine refused the pipeline: {e}", log_path=str(run.log)) from None

    def _write_step_log(self, run: StageRun, after: list[tuple[str, dagger.Container]]) -> None:
        """The stage's log: each step's command and its output, read back from the engine (the exec
        results are cached there, so nothing runs again)."""
        with run.log.open("a") as log:
            for i, (command, ctr) in enumerate(after, 1):
                output = self._call(run, ctr.combined_output)
                log.write(f"== step {i}/{len(after)}: {command}\n{output}")
                if output and not output.endswith("\n"):
                    log.write("\n")

    # --- Engine -----------------------------------------------------------------------------------
    def check(self) -> None:
        self._open()

    def refuses(self, stage: Stage) -> str | None:
        if stage.network:
            return None
        return (
            f"stage {stage.name} is to build with network: false, which the Dagger engine cannot enforce "
            "(its 0.21 API has no way to cut a step's network), and its key would say it was built "
            "offline. Build it with --engine buildkit, or set network: true for it in build.yaml "
            "(a different key)"
        )

    def prepare_base(self, run: StageRun, report: Reporter) -> None:
        bootstrap.ensure(
            run.stage.base, run.stage.platform, self.docker, self.cache / "bootstrap", lambda m: report.say(m, "note")
        )

    def _chain(self, run: StageRun) -> tuple[dagger.Container, list[tuple[str, dagger.Container]]]:
        return stage_chain(
            self.client, run.stage, host_dirs(self.client, run.stage, run.inputs), run.build_env, run.ca_bundle
        )

    def run_stage(self, run: StageRun, dest: Path) -> None:
        ctr, after = self._chain(run)
        out = ctr.directory(run.stage.output.path)
        self._call(run, lambda: out.export(str(dest)))
        self._write_step_log(run, after)

    def build_toolchain(self, run: StageRun, tag: str) -> str:
        ctr, after = self._chain(run)
        self._export_image(run, ctr, tag)
        self._write_step_log(run, after)
        return self.local_image_id(run.stage.name, tag)

    def build_image(self, run: StageRun, labels: dict[str, str], metadata: str, tag: str) -> str:
        ctr, after = image_chain(
            self.client,
            run.stage,
            host_dirs(self.client, run.stage, run.inputs),
            labels,
            metadata,
            run.build_env,
            run.ca_bundle,
        )
        self._export_image(run, ctr, tag)
        self._write_step_log(run, after)
        self._last_image = (run, ctr)
        return self.local_image_id(run.stage.name, tag)

    def _export_image(self, run: StageRun, ctr: dagger.Container, tag: str) -> None:
        async def export() -> None:
            try:
                await ctr.export_image(tag)
            except BeartypeCallHintReturnViolation as e:
                # dagger-io 0.21.11 (and every release since 0.19.0) annotates the generated export_image
                # `-> Void` but returns None, and beartype checks that at run time: the engine has loaded
                # the image when this is raised. Only that defect is swallowed; test_dagger_session's
                # test_sdk_export_image_still_needs_the_workaround fails once dagger-io fixes it.
                if "export_image" not in str(e) or '"None"' not in str(e):
                    raise

        self._call(run, export)

    def push_image(self, tag: str, ref: str) -> str:
        if self._last_image is None:  # the image was reused from the local Docker: push that one
            return self.docker.push(tag, ref)
        run, ctr = self._last_image
        return self._call(run, lambda: ctr.publish(ref))

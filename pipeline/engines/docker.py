"""The local Docker, driven through its CLI (the BuildKit engine and the bootstrap images use it).

Which client: `SPARK_PIPELINE_DOCKER` when set; else the first of `docker` on PATH and /usr/bin/docker
that can run BuildKit builds, judged by what it is, not where it lies: a client before 23 has BuildKit
built in (Debian's 20.10), a newer one needs the buildx plugin (docker-ce 28 on a Spark has it; a bare
28 client fails `DOCKER_BUILDKIT=1 docker build` with "the buildx component is missing").
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import paths
from pipeline.errors import DockerError, EngineUnavailable, StageError

DEBIAN_DOCKER = "/usr/bin/docker"  # also tried when PATH's docker cannot build (a bare newer client first on PATH)
# Where the docker CLI looks for its plugins (docs.docker.com, "CLI plugins"), after $DOCKER_CONFIG's.
PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def has_buildx() -> bool:
    config = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return any(os.access(Path(d) / "docker-buildx", os.X_OK) for d in (f"{config}/cli-plugins", *PLUGIN_DIRS))


def client_major(binary: str) -> int | None:
    """The client's major version from `docker --version` (no daemon asked), None when it does not say."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"Docker version (\d+)\.", out)
    return int(m[1]) if m else None


def can_build(binary: str) -> bool:
    major = client_major(binary)
    return major is not None and (major < 23 or has_buildx())


@functools.cache
def _detected(path: str) -> str:
    candidates = list(dict.fromkeys(c for c in (shutil.which("docker", path=path), DEBIAN_DOCKER) if c))
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    if not candidates:
        raise EngineUnavailable(
            "no docker client found: install Docker (Debian: apt-get install docker.io) or set SPARK_PIPELINE_DOCKER"
        )
    if has_buildx():  # every client can build then (before 23 BuildKit is built in): no need to ask one
        return candidates[0]
    return next((c for c in candidates if can_build(c)), candidates[0])


def docker_binary() -> str:
    return paths.env_program("SPARK_PIPELINE_DOCKER") or _detected(os.environ.get("PATH", os.defpath))


class Docker:
    def __init__(self, binary: str | None = None):
        self.binary = binary or docker_binary()

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 600, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.cmd(*args),
            capture_output=True,
            text=input is None,
            timeout=timeout,
            check=False,
            input=input,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )
        if check and proc.returncode != 0:
            err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
            raise DockerError(f"docker {' '.join(args[:2])} failed: {err.strip()[-2000:]}")
        return proc

    def check_daemon(self) -> None:
        try:
            proc = self.run("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EngineUnavailable(f"cannot run {self.binary}: {e}") from None
        if proc.returncode != 0:
            raise EngineUnavailable(
                "cannot reach the Docker daemon (" + (proc.stderr.strip().splitlines() or ["no answer"])[-1] + "). "
                "Start it (e.g. `examples/smoke/setup.sh`, or `setsid dockerd &` as root), "
                "or build with --engine dagger under `dagger run`."
            )

    def image_id(self, ref: str) -> str | None:
        proc = self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False, timeout=60)
        out = proc.stdout.strip()
        return out if proc.returncode == 0 and out else None

    def content_id(self, ref: str) -> str | None:
        """The image's ID as nodes are compared with it, the same on either image store (engines/identity.py)."""
        from pipeline.engines.identity import FORMAT, content_id

        proc = self.run("image", "inspect", "--format", FORMAT, ref, check=False, timeout=60)
        return (content_id(proc.stdout) or None) if proc.returncode == 0 else None

    def image_labels(self, ref: str) -> dict[str, str]:
        import json

        proc = self.run("image", "inspect", "--format", "{{json .Config.Labels}}", ref, check=False, timeout=60)
        if proc.returncode != 0:
            return {}
        return json.loads(proc.stdout or "null") or {}

    def save(self, ref: str, dest: Path) -> None:
        """`docker save` to a temp file beside `dest`, renamed into place when complete."""
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        try:
            with tmp.open("wb") as out:
                proc = subprocess.run(self.cmd("save", ref), stdout=out, stderr=subprocess.PIPE, check=False)
            if proc.returncode != 0:
                raise DockerError(f"docker save {ref} failed: {proc.stderr.decode(errors='replace').strip()}")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def push(self, tag: str, ref: str) -> str:
        """Tag the local image as `ref` and push it; returns the pushed reference with its digest."""
        self.run("tag", tag, ref)
        out = self.run("push", ref, timeout=3600).stdout
        digest = next((w for w in out.split() if w.startswith("sha256:")), "")
        return f"{ref}@{digest}" if digest else ref

    def stream(
        self,
        args: list[str],
        log: Path,
        on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> int:
        """Run a docker command with its output appended to `log`; returns the exit code."""
        deadline = time.monotonic() + timeout if timeout else None
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.cmd(*args),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DOCKER_BUILDKIT": "1", **(env or {})},
            )
            try:
                for raw in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
                    out.write(raw)
                    out.flush()
                    if on_line:
                        on_line(raw.decode(errors="replace").rstrip())
                    if deadline and time.monotonic() > deadline:
                        proc.kill()
                        raise DockerError(f"docker {args[0]} ran past its {timeout:.0f} s deadline")
                return proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise


class LocalImages:
    """Both engines leave the runtime image in the local Docker; these work on it there."""

    _docker: Docker | None = None

    @property
    def docker(self) -> Docker:
        if self._docker is None:
            self._docker = Docker()
        return self._docker

    def has_image(self, ref: str) -> bool:
        return self.docker.image_id(ref) is not None

    def reuse_image(self, image_id: str, tag: str, kept: str = "") -> bool:
        """If the local Docker still has `image_id`, point `tag` (and `kept`) at it and return True. On the
        containerd image store an image no name points to is deleted, so a moved `tag` takes the old
        image with it: `kept`, the build's name by key, is what still holds it there."""
        source = next((ref for ref in (tag, kept, image_id) if ref and self.docker.image_id(ref) == image_id), None)
        if source is None:
            return False
        for name in (tag, kept):
            if name and name != source:
                self.docker.run("tag", source, name)
        return True

    def export_image(self, tag: str, dest: Path) -> None:
        self.docker.save(tag, dest)

    def local_image_id(self, stage: str, tag: str) -> str:
        image_id = self.docker.image_id(tag)
        if not image_id:
            raise StageError(stage, f"the image was built but {tag} is not in the local Docker")
        return image_id


def tail(path: Path, lines: int = 20) -> str:
    try:
        data = path.read_bytes()[-64 * 1024 :]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

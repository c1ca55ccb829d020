"""A container registry next to the image source, on loopback only: Debian's `docker-registry`
(distribution 2.x) started with our own config, storage kept under the cache so a later push sends only
new layers, stopped by PID when shipping ends (also on Ctrl-C).

Every running registry holds a shared lock on its storage; `collect` (run by `store gc`) takes it
exclusively, so the registry's garbage collector never runs under a push or a pull."""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline import paths
from pipeline.errors import ConfigError, RegistryError, ToolMissing

CONFIG = """version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def registry_binary(binary: str | None = None) -> str:
    return (
        binary
        or paths.env_program("SPARK_PIPELINE_REGISTRY")
        or shutil.which("docker-registry")
        or "/usr/bin/docker-registry"
    )


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Registry:
    def __init__(self, workdir: Path, port: int, binary: str | None = None):
        self.workdir = workdir
        self.port = port
        self.binary = registry_binary(binary)
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    def __enter__(self) -> Registry:
        if not Path(self.binary).exists():
            raise ToolMissing(
                "shipping through a registry needs Debian/Ubuntu's docker-registry "
                "(apt-get install docker-registry); or use --ship stream"
            )
        if port_in_use(self.port):
            raise ConfigError(
                f"127.0.0.1:{self.port} is taken here; set registry_port in cluster.yaml "
                "(or finish the other ship/deploy first)"
            )
        cfg = write_config(self.workdir, self.port)
        self._lock = storage_lock(self.workdir, exclusive=False, wait=60)
        try:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "serve", str(cfg)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:  # Ctrl-C included: the registry runs in its own session and would outlive us
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 20
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryError(f"docker-registry exited at start; see {self.log}")
            with contextlib.suppress(OSError), opener.open(f"http://127.0.0.1:{self.port}/v2/", timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.02)
        raise RegistryError(f"docker-registry did not answer on 127.0.0.1:{self.port} within 20 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


ELIGIBLE = re.compile(r"(\d+) blobs and (\d+) manifests eligible for deletion")


def holds(workdir: Path, image_id: str) -> bool:
    """Whether every blob of this image went into this storage (a push completed since the last collection)."""
    return (workdir / "pushed" / image_id.removeprefix("sha256:")).exists()


def mark_held(workdir: Path, image_id: str) -> None:
    (workdir / "pushed").mkdir(parents=True, exist_ok=True)
    (workdir / "pushed" / image_id.removeprefix("sha256:")).touch()


def write_config(workdir: Path, port: int) -> Path:
    (workdir / "storage").mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.yml"
    cfg.write_text(CONFIG.format(root=workdir / "storage", port=port))
    return cfg


def storage_lock(workdir: Path, exclusive: bool, wait: float = 0) -> IO[str]:
    """An open file holding the storage's lock (closing it releases the lock), waiting up to `wait`
    seconds: shared for a running registry, exclusive for the garbage collector."""
    workdir.mkdir(parents=True, exist_ok=True)
    f = (workdir / "storage.lock").open("w")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                holder = "a ship or deploy" if exclusive else "the garbage collector (store gc)"
                raise RegistryError(
                    f"the image registry in {workdir} is in use by {holder}; try again when it has finished"
                ) from None
            time.sleep(0.2)


@dataclass(frozen=True)
class Collected:
    blobs: int  # the collector's own count of what it deleted (or would delete)
    manifests: int
    freed: int  # bytes, measured on disk (0 for a dry run)


def collect(workdir: Path, dry_run: bool = False, wait: float = 60, binary: str | None = None) -> Collected | None:
    """The registry's garbage collection: blobs no tagged manifest references, and manifests no tag names
    (each ship re-tags an image name, so its previous manifest is untagged). None when there is no storage."""
    if not (workdir / "storage").is_dir():
        return None
    binary = registry_binary(binary)
    if not Path(binary).exists():
        raise ToolMissing(
            f"{workdir}/storage is a registry's storage, and collecting it needs docker-registry "
            "(apt-get install docker-registry)"
        )
    with storage_lock(workdir, exclusive=True, wait=wait):
        cfg = write_config(workdir, 0)  # the collector reads only the storage section
        before = _disk_bytes(workdir / "storage")
        argv = [binary, "garbage-collect", "--delete-untagged", *(["--dry-run"] if dry_run else []), str(cfg)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip()[-500:]
            raise RegistryError(f"docker-registry garbage-collect failed: {why}")
        count = ELIGIBLE.search(proc.stdout)
        blobs, manifests = (int(count[1]), int(count[2])) if count else (0, 0)
        if not dry_run:
            shutil.rmtree(workdir / "pushed", ignore_errors=True)  # what was held may be collected now
        return Collected(blobs, manifests, 0 if dry_run else before - _disk_bytes(workdir / "storage"))


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())

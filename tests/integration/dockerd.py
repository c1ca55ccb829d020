"""Test-only: make sure a Docker daemon answers, starting one if none does, and stop only what we
started (by the PID in our own pidfile). CI starts on a machine with nothing running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def answering() -> bool:
    try:
        return (
            subprocess.run(
                [DOCKER, "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def launch(
    argv: list[str], log: Path, pidfile: Path, answers: Callable[[], bool], deadline: float, what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a daemon in its own session, its output appended to `log`, and wait until it has written
    `pidfile` and `answers()`; returns the process and the PID it wrote."""
    pidfile.unlink(missing_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if pidfile.exists() and answers():
            return proc, int(pidfile.read_text().strip())
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer within {deadline:.0f} s; see {log}")


class Daemon:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pid: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def why_not(self) -> str | None:
        if answering():
            return None
        if os.geteuid() != 0:
            return "no Docker daemon answers and starting one needs root"
        if not shutil.which("dockerd"):
            return "no Docker daemon answers and dockerd is not installed (apt-get install docker.io)"
        return None

    def start(self, deadline: float = 90) -> None:
        if answering():
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        pidfile = self.workdir / "dockerd.pid"
        argv = ["dockerd", "--pidfile", str(pidfile)]
        self.proc, self.pid = launch(argv, self.workdir / "dockerd.log", pidfile, answering, deadline, "dockerd")

    def stop(self, deadline: float = 30) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.proc is not None:  # our child: wait() also reaps it (no zombie left behind)
            try:
                self.proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            return
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.3)
        os.kill(self.pid, signal.SIGKILL)


def data_root() -> Path:
    proc = subprocess.run(
        [DOCKER, "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True, timeout=20, check=False
    )
    return Path(proc.stdout.strip() or "/var/lib/docker")


def make_room(tmp: Path, min_free_gib: float = 30, keep_cache: str = "8GB") -> str:
    """The suite writes about 10 GiB (images, build cache, fixtures) and BuildKit keeps what every earlier
    run built: a CI machine that ran the suite often fills up, and every later test then errors with
    ENOSPC. Under CI (a machine the suite owns) old build cache and dangling images are dropped when
    space is short; elsewhere the suite only says so, since the cache may be the user's."""

    def free() -> float:
        return min(shutil.disk_usage(p).free for p in (tmp, data_root()) if p.exists()) / 2**30

    before = free()
    if before >= min_free_gib:
        return f"{before:.0f} GiB free"
    if not os.environ.get("CI"):
        msg = f"only {before:.1f} GiB free for Docker and temp files; the suite needs about 10 (docker builder prune)"
        print(f"\nwarning: {msg}", file=sys.stderr)
        return msg
    # images too: every build keeps a name by key (engines/identity.py key_tag), so none is dangling
    for argv in (
        ["builder", "prune", "-f", "--keep-storage", keep_cache],
        ["image", "prune", "-af", "--filter", "until=48h"],
    ):
        subprocess.run([DOCKER, *argv], capture_output=True, timeout=600, check=False)
    return f"{before:.1f} GiB free; after pruning old build cache: {free():.1f} GiB"

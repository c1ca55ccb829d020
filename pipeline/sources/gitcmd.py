"""Running git: short local commands, and fetches that show progress, keep to a deadline, and leave a
mirror the next run can use however they end."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline import paths
from pipeline.errors import SourceError

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
# git's progress lines: "Receiving objects:  45% (1234/2742), 1.20 MiB | 2.40 MiB/s"
_PROGRESS = re.compile(r"^(remote: )?(Counting|Compressing|Receiving|Resolving|Enumerating|Updating)")


def git(
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """A local git command (no network): output captured, a failure is a SourceError."""
    env = {**os.environ, **GIT_ENV, **(extra_env or {})}
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=env, input=input, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {' '.join(args[:3])}… did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise SourceError(f"git {' '.join(args[:3])}… failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def git_timeout() -> float:
    """Seconds a fetch may take ($SPARK_PIPELINE_GIT_TIMEOUT, default 1800: vLLM's history is large)."""
    return paths.env_seconds("SPARK_PIPELINE_GIT_TIMEOUT", 1800.0)


def fetch(
    mirror: Path,
    remote: str,
    refspecs: list[str],
    *,
    what: str,
    progress: Callable[[str], None],
    partial: bool,
    timeout: float | None = None,
) -> None:
    """`git fetch` into a bare mirror: only `refspecs`, blobs left for later when `partial` (a promisor
    remote). Progress lines go to `progress`. A timeout or failure is a SourceError that names the
    source, the remote and the command to retry; the mirror stays usable (what was complete is kept,
    stale lock files of the killed git are removed), so the next run carries on."""
    argv = [
        "git",
        "fetch",
        "--progress",
        "--force",
        "--no-write-fetch-head",
        *(["--filter=blob:none"] if partial else []),
        remote,
        *refspecs,
    ]
    transfer(argv, mirror, remote, what=what, progress=progress, timeout=timeout, kept="what the mirror had is kept")


def clone(
    url: str,
    dest: Path,
    ref: str,
    *,
    what: str,
    progress: Callable[[str], None],
    partial: bool,
    timeout: float | None = None,
) -> bool:
    """A cold mirror in one step: `git clone --bare --single-branch --branch REF` (its history and the
    tags in it, refs packed). False when REF is not a branch or tag of `url` (nothing is left behind)."""
    # --no-local: a local path goes through upload-pack too, so only the tags in the branch come along
    argv = [
        "git",
        "clone",
        "--bare",
        "--progress",
        "--no-local",
        "--single-branch",
        "--branch",
        ref,
        *(["--filter=blob:none"] if partial else []),
        url,
        str(dest),
    ]
    try:
        transfer(
            argv,
            dest.parent,
            url,
            what=what,
            progress=progress,
            timeout=timeout,
            kept="git cannot resume a clone: the next run starts it again",
        )
    except SourceError as e:
        if "not found in upstream" in str(e):
            shutil.rmtree(dest, ignore_errors=True)
            return False
        shutil.rmtree(dest, ignore_errors=True)  # a half clone is no mirror: the next run starts it again
        raise
    return True


def transfer(
    argv: list[str],
    cwd: Path,
    remote: str,
    *,
    what: str,
    progress: Callable[[str], None],
    kept: str,
    timeout: float | None = None,
) -> None:
    """Run a git command that talks to a remote, with progress, a deadline and a located error."""
    limit = timeout if timeout is not None else git_timeout()
    # Its own process group: on a timeout or Ctrl-C, git and what it started (ssh, upload-pack) end together.
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_read_progress, args=(proc, lines, progress), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        reader.join(timeout=5)
        remove_stale_locks(cwd)
        raise SourceError(
            f"{what}: fetching {remote} did not finish within {limit:.0f} s (a slow or lost "
            f"connection); {kept}. Retry with the same command (or raise "
            f"SPARK_PIPELINE_GIT_TIMEOUT), or fetch by hand: "
            f"git -C {shlex.quote(str(cwd))} {shlex.join(argv[1:])}"
        ) from None
    except BaseException:
        _kill_group(proc)
        remove_stale_locks(cwd)
        raise
    reader.join(timeout=5)
    if proc.returncode != 0:
        tail = "\n".join(line for line in lines if not _PROGRESS.match(line))[-2000:].strip()
        raise SourceError(f"{what}: cannot fetch {remote}: {tail or f'git exited {proc.returncode}'}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_progress(proc: subprocess.Popen[bytes], lines: list[str], progress: Callable[[str], None]) -> None:
    if proc.stderr is None:
        return
    buf = b""
    last = 0.0
    while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
        buf += chunk
        *done, buf = re.split(rb"[\r\n]", buf)
        for raw in done:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            if _PROGRESS.match(line):
                now = time.monotonic()
                if now - last > 0.5 or "done" in line:  # a few updates a second, and each phase's end
                    progress(line)
                    last = now
            else:
                lines.append(line)


def remove_stale_locks(mirror: Path) -> None:
    """A killed git leaves *.lock files that make the next fetch fail ("File exists"): ours, remove."""
    for lock in [*mirror.glob("*.lock"), *mirror.glob("refs/**/*.lock")]:
        lock.unlink(missing_ok=True)

"""The machine you are on, as a node: the same commands as over SSH, run as local processes (no sshd,
no SSH keys). Most Spark owners have one box; `deploy --solo` with no cluster file lands here.

Commands are argv lists run without a shell, exactly as `Hosts.run` would send them joined with
shlex.join; files are copied with the same modes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pipeline.errors import HostError
from pipeline.nodes.transport import Ran


class LocalTransport:
    """Run a node's commands on this machine."""

    def __init__(self, label: str):
        self.label = label

    def run(self, argv: list[str], timeout: float = 120, check: bool = True) -> Ran:
        command = shlex.join(argv)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HostError(self.label, f"no end within {timeout:.0f} s", command=command) from None
        except OSError as e:
            raise HostError(self.label, f"cannot run {argv[0]}: {e.strerror or e}", command=command) from None
        ran = Ran(status=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
        return ran.checked(self.label, command) if check else ran

    def stream(self, argv: list[str]) -> int:
        """Run argv with its output passed on to ours as it comes (logs -f); returns its exit status. Through
        sys.stdout/sys.stderr, as the SSH transport's output is, so a caller that captures them sees it."""
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise HostError(self.label, f"cannot run {argv[0]}: {e.strerror or e}", command=shlex.join(argv)) from None
        assert proc.stdout is not None and proc.stderr is not None
        errors = threading.Thread(target=_pass_on, args=(proc.stderr, sys.stderr), daemon=True)
        errors.start()
        try:
            _pass_on(proc.stdout, sys.stdout)
            return proc.wait()
        finally:
            if proc.poll() is None:  # Ctrl-C during logs -f
                proc.kill()
                proc.wait()
            errors.join(timeout=5)

    def feed(self, argv: list[str], write: Callable[[IO[bytes]], None]) -> Ran:
        """Run argv with `write` producing its standard input (a tar stream, say)."""
        command = shlex.join(argv)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise HostError(self.label, f"cannot run {argv[0]}: {e.strerror or e}", command=command) from None
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            write(proc.stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the command ended early: its status and stderr say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.wait()
        return Ran(status=proc.returncode, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))

    def home(self) -> str:
        return os.path.expanduser("~")

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        try:
            if local.is_dir():
                shutil.copytree(local, remote, dirs_exist_ok=True)
                return
            Path(remote).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, remote)
            os.chmod(remote, mode if mode is not None else local.stat().st_mode & 0o777)
        except OSError as e:
            raise HostError(self.label, f"cannot copy {local} to {remote}: {e}") from None

    def put_text(self, text: str, remote: str, mode: int = 0o600) -> None:
        """A new file with `mode` from its creation on (a secret is never readable by others)."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(remote)  # O_EXCL then makes it fresh, with our mode
            fd = os.open(remote, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as e:
            raise HostError(self.label, f"cannot write {remote}: {e}") from None

    def local_argv(self, argv: list[str]) -> list[str] | None:
        return argv  # the node is this machine


def _pass_on(src: IO[bytes], dest: IO[str]) -> None:
    for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
        dest.write(chunk.decode(errors="replace"))
        dest.flush()

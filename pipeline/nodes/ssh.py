"""A node reached over SSH (Fabric's Connection, opened by Hosts with real host-key trust): commands as
argv joined with shlex.join, files over SFTP, standard input over a raw channel."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

import paramiko
from fabric import Connection
from invoke.exceptions import CommandTimedOut

from pipeline.config.cluster import NodeSpec, SshSpec
from pipeline.errors import HostError
from pipeline.nodes.openssh import run_argv
from pipeline.nodes.transport import Ran


class SshTransport:
    def __init__(self, label: str, open_connection: Callable[[], Connection], ssh: SshSpec, node: NodeSpec):
        self.label = label
        self._open = open_connection
        self._ssh = ssh
        self._node = node
        self._home: str | None = None

    def run(self, argv: list[str], timeout: float = 120, check: bool = True) -> Ran:
        """Run argv on a node (quoted with shlex.join: no user value reaches a shell unquoted)."""
        command = shlex.join(argv)
        conn = self._open()
        try:
            res = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        except (CommandTimedOut, paramiko.SSHException, OSError, EOFError) as e:
            raise HostError(self.label, f"{type(e).__name__}: {e}".strip(), command=command) from None
        ran = Ran(status=res.exited, stdout=res.stdout, stderr=res.stderr)
        return ran.checked(self.label, command) if check else ran

    def stream(self, argv: list[str]) -> int:
        """Run argv with its output going straight to ours (logs -f); returns its exit status."""
        return int(self._open().run(shlex.join(argv), warn=True, in_stream=False, pty=False).exited)

    def feed(self, argv: list[str], write: Callable[[IO[bytes]], None]) -> Ran:
        """Run argv on the node with `write` producing its standard input (a tar stream: bytes go over
        the SSH channel as they are made, nothing is staged on disk)."""
        command = shlex.join(argv)
        try:
            transport = self._open().client.get_transport()
            assert transport is not None
            chan = transport.open_session()
            chan.exec_command(command)
            with chan.makefile("wb") as stdin:
                write(stdin)
            chan.shutdown_write()
            out, err = chan.makefile("rb").read(), chan.makefile_stderr("rb").read()
            status = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise HostError(self.label, f"{type(e).__name__}: {e}".strip(), command=command) from None
        return Ran(status=status, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))

    def home(self) -> str:
        """The user's home directory on the node (asked once)."""
        if self._home is None:
            self._home = self.run(["sh", "-c", 'printf %s "$HOME"']).stdout or "/root"
        return self._home

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file, or a directory tree, to `remote` on the node (SFTP)."""
        sftp = self._open().sftp()
        try:
            files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
            for f in files:
                target = remote if f == local else f"{remote}/{f.relative_to(local).as_posix()}"
                _sftp_makedirs(sftp, target.rsplit("/", 1)[0])
                sftp.put(str(f), target)
                sftp.chmod(target, mode if mode is not None else f.stat().st_mode & 0o777)
        except OSError as e:
            raise HostError(self.label, f"cannot copy {local} to {remote}: {e}") from None
        finally:
            sftp.close()

    def put_text(self, text: str, remote: str, mode: int = 0o600) -> None:
        """Write `text` to a new file on the node, created with `mode` before any byte is written."""
        sftp = self._open().sftp()
        try:
            with sftp.file(remote, "w") as f:
                f.chmod(mode)
                f.write(text)
        except OSError as e:
            raise HostError(self.label, f"cannot write {remote}: {e}") from None
        finally:
            sftp.close()

    def local_argv(self, argv: list[str]) -> list[str] | None:
        return run_argv(self._node, self._ssh, argv) if shutil.which("ssh") else None


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    current = ""
    for part in parts:
        current += "/" + part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current)

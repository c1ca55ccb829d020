"""How commands and files reach one node: the interface both transports implement (SSH in ssh.py, this
machine in local.py). Everything above `nodes/` talks to a node through it (or through `Hosts`, which
picks the transport per node), never by looking at `transport:` itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from pipeline.errors import HostError


@dataclass(frozen=True)
class Ran:
    """How a command ended on a node, over either transport."""

    status: int
    stdout: str
    stderr: str

    def checked(self, label: str, command: str) -> Ran:
        """Itself when the command succeeded; else the node's error, with the command and its last output."""
        if self.status != 0:
            raise HostError(
                label,
                "command failed",
                command=command,
                remote_status=self.status,
                tail=(self.stderr or self.stdout).strip(),
            )
        return self


class Transport(Protocol):
    label: str

    def run(self, argv: list[str], timeout: float = 120, check: bool = True) -> Ran:
        """argv on the node (never through a shell of ours: SSH sends it joined with shlex.join)."""
        ...

    def stream(self, argv: list[str]) -> int:
        """argv with its output going straight to ours (logs -f); its exit status."""
        ...

    def feed(self, argv: list[str], write: Callable[[IO[bytes]], None]) -> Ran:
        """argv with `write` producing its standard input as it runs (a tar stream, say)."""
        ...

    def home(self) -> str: ...

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """A local file or directory tree to `remote` on the node."""
        ...

    def put_text(self, text: str, remote: str, mode: int = 0o600) -> None:
        """A new file with `mode` from its creation on (a secret is never readable by others)."""
        ...

    def local_argv(self, argv: list[str]) -> list[str] | None:
        """The command to run on this machine that runs argv on the node (the system ssh, which is faster
        than our own channel for bulk bytes), or None when there is none."""
        ...

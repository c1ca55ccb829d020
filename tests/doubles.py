"""Test doubles (tests only, never in the product).

`FakeHosts` stands in for the node transport (pipeline.nodes.hosts.Hosts), the way Invoke's
MockContext stands in for a shell: it answers exactly the commands a test expects and raises on any
other, so a test states every command the apply layer may run. It records what ran, in order.
"""

from __future__ import annotations

import http.server
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline.config.cluster import ClusterSpec, NodeSpec
from pipeline.errors import HostError
from pipeline.nodes.hosts import NODE_ERRORS, HostResults, Outcome
from pipeline.nodes.transport import Ran

T = TypeVar("T")


class Unexpected(AssertionError):
    """A command no test expected: never captured as a node failure, so the test fails loudly."""


@dataclass
class Answer:
    stdout: str = ""
    stderr: str = ""
    status: int = 0
    repeat: bool = False
    raises: BaseException | None = None
    used: int = 0


@dataclass
class FakeHosts:
    cluster: ClusterSpec
    answers: dict[tuple[str, str], list[Answer]] = field(default_factory=dict)
    ran: list[tuple[str, str]] = field(default_factory=list)  # (node, shlex-joined argv), in order
    files: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)  # (node, path) -> (what, mode)
    homes: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(
        self,
        node: str,
        argv: list[str] | tuple[str, ...],
        stdout: str = "",
        stderr: str = "",
        status: int = 0,
        repeat: bool = False,
        raises: BaseException | None = None,
    ) -> FakeHosts:
        self.answers.setdefault((node, shlex.join(argv)), []).append(Answer(stdout, stderr, status, repeat, raises))
        return self

    def run(self, node: NodeSpec, argv: list[str], timeout: float = 120, check: bool = True) -> Ran:
        command = shlex.join(argv)
        with self._lock:
            queue = self.answers.get((node.label, command), [])
            answer = next((a for a in queue if a.repeat or a.used == 0), None)
            if answer is None:
                raise Unexpected(f"{node.label}: unexpected command: {command}")
            answer.used += 1
            self.ran.append((node.label, command))
        if answer.raises is not None:
            raise answer.raises
        if check and answer.status != 0:
            raise HostError(
                node.label,
                "command failed",
                command=command,
                remote_status=answer.status,
                tail=(answer.stderr or answer.stdout).strip(),
            )
        return Ran(answer.status, answer.stdout, answer.stderr)

    def put(self, node: NodeSpec, local: Path, remote: str, mode: int | None = None) -> None:
        with self._lock:
            self.files[(node.label, remote)] = (f"copy of {local}", mode)
            self.ran.append((node.label, f"<put {local} {remote}>"))

    def put_text(self, node: NodeSpec, text: str, remote: str, mode: int = 0o600) -> None:
        with self._lock:
            self.files[(node.label, remote)] = (text, mode)
            self.ran.append((node.label, f"<put_text {remote} {mode:o}>"))

    def each(self, fn: Callable[[NodeSpec], T], nodes: list[NodeSpec] | None = None) -> HostResults[T]:
        out = []
        for node in nodes if nodes is not None else self.cluster.ordered():
            try:
                out.append(Outcome(node=node, value=fn(node)))
            except NODE_ERRORS as e:
                out.append(Outcome(node=node, error=e))
        return HostResults(tuple(out))

    def home(self, node: NodeSpec) -> str:
        return self.homes.get(node.label, "/root")

    def close(self) -> None:
        pass

    def unused(self) -> list[str]:
        """Expected commands that never ran (repeatable ones excepted)."""
        return [f"{n}: {c}" for (n, c), q in self.answers.items() for a in q if not a.repeat and a.used == 0]

    def commands(self, node: str) -> list[str]:
        return [c for n, c in self.ran if n == node]


@dataclass
class FakeShipper:
    """Records which nodes deploy shipped to; `fail` names nodes whose ship fails."""

    fail: dict[str, str] = field(default_factory=dict)
    shipped: list[tuple[str, list[str], str]] = field(default_factory=list)

    def ship_to(self, image: str, nodes: list[NodeSpec], mode: str) -> HostResults[Any]:
        self.shipped.append((image, [n.label for n in nodes], mode))
        return HostResults(
            tuple(
                Outcome(n, error=HostError(n.label, self.fail[n.label]))
                if n.label in self.fail
                else Outcome(n, value="shipped")
                for n in nodes
            )
        )


class Health(http.server.BaseHTTPRequestHandler):
    """A stand-in for the vLLM server's /health and /v1/models: 200 once `ready_after` has passed."""

    ready_after = 0.0

    def do_GET(self) -> None:
        ok = time.monotonic() >= Health.ready_after and self.path in ("/health", "/v1/models")
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass

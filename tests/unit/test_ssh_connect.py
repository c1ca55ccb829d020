"""Connecting to nodes: what a booting node answers is retried with backoff within the connect deadline,
what retrying cannot change fails at once, and a port that speaks no SSH gives our located message,
not paramiko's logged tracebacks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

from pipeline.config.cluster import ClusterSpec
from pipeline.errors import HostError
from pipeline.nodes.hosts import Hosts
from tests.conftest import run_cli


class FlakyConnection:
    """Test double for fabric's Connection: open() fails with the given errors, then works."""

    def __init__(self, errors: list[BaseException]):
        self.errors = errors
        self.attempts = 0
        self.is_connected = False

    def open(self) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.is_connected = True


def hosts_with(conn: FlakyConnection, timeout: int = 5) -> tuple[Hosts, Any]:
    spec = ClusterSpec.model_validate(
        {"nodes": [{"address": "10.0.0.1", "name": "s1"}], "ssh": {"connect_timeout": timeout}}
    )
    hosts = Hosts(spec)
    hosts.connection = lambda node: conn  # type: ignore[method-assign,assignment,return-value]
    return hosts, spec.nodes[0]


def test_a_refused_or_bannerless_connect_is_retried() -> None:
    conn = FlakyConnection(
        [ConnectionRefusedError(111, "refused"), paramiko.SSHException("Error reading SSH protocol banner")]
    )
    hosts, node = hosts_with(conn)
    assert hosts.open(node) is conn and conn.attempts == 3


def test_retries_stop_at_the_connect_deadline() -> None:
    conn = FlakyConnection([ConnectionRefusedError(111, "refused")] * 1000)
    hosts, node = hosts_with(conn, timeout=1)
    start = time.monotonic()
    with pytest.raises(HostError, match="cannot connect"):
        hosts.open(node)
    assert 1 <= time.monotonic() - start < 4 and 2 <= conn.attempts < 20


def test_an_authentication_failure_is_not_retried() -> None:
    conn = FlakyConnection([paramiko.AuthenticationException("no"), ConnectionRefusedError()])
    hosts, node = hosts_with(conn)
    with pytest.raises(HostError, match="authentication failed"):
        hosts.open(node)
    assert conn.attempts == 1


@pytest.fixture
def not_ssh() -> Iterator[int]:
    """A port on loopback that answers, but speaks HTTP."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def test_a_port_that_speaks_no_ssh_gives_one_located_line(not_ssh: int, tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        yaml.safe_dump(
            {
                "nodes": [{"address": "127.0.0.1", "port": not_ssh, "name": "web"}],
                "ssh": {"connect_timeout": 1, "known_hosts": str(tmp_path / "kh")},
            }
        )
    )
    proc = run_cli("doctor", "--cluster", str(cluster), "--no-gpu-ok", check=1)
    assert "Traceback" not in proc.stderr and "paramiko" not in proc.stderr
    assert "web" in proc.stderr and "SSH" in proc.stderr

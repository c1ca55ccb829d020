"""A node that cannot be reached never gives exit 0: status, stop, exec and logs against a port on
loopback where nothing listens (connection refused at once) exit 1 and name the node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli


@pytest.fixture
def dead_cluster(tmp_path: Path) -> Path:
    with socket.socket() as s:  # a port nothing listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"nodes": [{"address": "127.0.0.1", "port": port, "name": "gone"}],
                                    "ssh": {"known_hosts": str(tmp_path / "known_hosts"), "connect_timeout": 2}}))
    return path


@pytest.mark.parametrize("args", [["status"], ["stop"], ["exec", "--", "true"], ["logs"]])
def test_an_unreachable_node_exits_1(dead_cluster: Path, args: list[str]) -> None:
    proc = run_cli(*args[:1], "--cluster", str(dead_cluster), *args[1:], check=1)
    assert "gone" in proc.stderr and "Traceback" not in proc.stderr

"""A node that cannot be reached never gives exit 0: status, stop, exec and logs against a port on
loopback where nothing listens (connection refused at once) exit 1 and name the node."""

from __future__ import annotations

import json
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
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [{"address": "127.0.0.1", "port": port, "name": "gone"}],
                "ssh": {"known_hosts": str(tmp_path / "known_hosts"), "connect_timeout": 1},
            }
        )
    )
    return path


@pytest.mark.parametrize("args", [["status"], ["stop"], ["exec", "--", "true"], ["logs"]])
def test_an_unreachable_node_exits_1(dead_cluster: Path, args: list[str]) -> None:
    proc = run_cli(*args[:1], "--cluster", str(dead_cluster), *args[1:], check=1)
    assert "gone" in proc.stderr and "Traceback" not in proc.stderr


def test_a_deploy_that_fails_in_discovery_records_the_nodes_and_names_each_once(
    dead_cluster: Path, isolated_cache: Path
) -> None:
    failed = isolated_cache / "last-failed.json"
    failed.write_text('["someone-else"]\n')  # what an earlier run left: must not survive this one
    proc = run_cli("deploy", "--cluster", str(dead_cluster), "--", "vllm", "serve", "m", check=1)
    assert json.loads(failed.read_text()) == ["gone"]
    lines = [ln for ln in proc.stderr.splitlines() if "gone" in ln]
    assert lines and all(ln.count("gone") == 1 for ln in lines), proc.stderr


def test_ipv6_node_labels_stay_whole_and_apart() -> None:
    """Two nodes named by IPv6 address: each keeps its own entry (a label is never cut at its first ':')."""
    from pipeline.config.cluster import ClusterSpec
    from pipeline.deploy.service import Deployer, DeployRequest
    from pipeline.errors import LaunchFailed
    from pipeline.launch.secrets import Secrets
    from pipeline.nodes.discover import NodeFacts

    spec = ClusterSpec.model_validate({"nodes": [{"address": "fd00::1"}, {"address": "fd00::2"}]})
    saved = [NodeFacts(node=n, error="no SSH answer within 2 s") for n in spec.nodes]
    with pytest.raises(LaunchFailed) as info:
        Deployer(spec).plan(DeployRequest(command=("vllm", "serve", "m")), [], Secrets({}), saved)
    assert info.value.failures == {"fd00::1": "no SSH answer within 2 s", "fd00::2": "no SSH answer within 2 s"}

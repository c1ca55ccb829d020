"""cluster.yaml, -n / --solo, and importing the toolkit's .env."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config.clusterfile import import_dotenv, load_cluster, parse_dotenv
from pipeline.errors import ConfigError
from tests.conftest import run_cli


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_head_is_first_unless_marked(tmp_path: Path) -> None:
    spec = load_cluster(write(tmp_path, {"nodes": [{"address": "10.0.0.1"}, {"address": "10.0.0.2", "head": True}]}))
    assert [n.address for n in spec.ordered()] == ["10.0.0.2", "10.0.0.1"]
    assert load_cluster(None, "10.0.0.5,10.0.0.6").head.address == "10.0.0.5"


def test_solo_keeps_only_the_head(tmp_path: Path) -> None:
    spec = load_cluster(write(tmp_path, {"nodes": [{"address": "a1"}, {"address": "a2"}]}), solo=True)
    assert [n.address for n in spec.nodes] == ["a1"]


def test_no_cluster_anywhere_is_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./cluster.yaml
    [node] = load_cluster(None, None, solo=True).nodes
    assert (node.transport, node.address, node.label) == ("local", "127.0.0.1", "local")
    assert load_cluster(None, "10.0.0.5").nodes[0].transport == "ssh"


def test_n_keeps_per_node_settings_from_the_file(tmp_path: Path) -> None:
    p = write(tmp_path, {"nodes": [{"address": "a1", "user": "spark", "eth_if": "enp1s0f1np1"}]})
    spec = load_cluster(p, "a1,a2")
    assert spec.nodes[0].user == "spark" and spec.nodes[0].eth_if == "enp1s0f1np1" and spec.nodes[1].user == "root"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"nodes": [{"address": "a1", "head": True}, {"address": "a2", "head": True}]},
            "cluster.yaml:nodes: expected at most one node with head: true",
        ),
        ({"nodes": [{"address": "bad host"}]}, "cluster.yaml:nodes.0.address: expected a host name or IP address"),
        ({"nodes": [{"address": "a1", "port": 70000}]}, "cluster.yaml:nodes.0.port: expected a port number 1-65535"),
        ({"nodes": [{"address": "a1", "eth_if": "this-name-is-too-long"}]}, "cluster.yaml:nodes.0.eth_if: expected an"),
        (
            {"nodes": [{"address": "a1"}], "ssh": {"host_keys": "yes"}},
            "cluster.yaml:ssh.host_keys: expected one of 'strict' or 'accept-new'",
        ),
        ({"nodes": [{"adress": "a1"}]}, "cluster.yaml:nodes.0.adress: unknown key 'adress'; did you mean 'address'?"),
        ({"nodes": []}, "no nodes"),
        ({"nodes": [{"address": "a1"}, {"address": "a1"}]}, "expected each node once, got a1 twice"),
    ],
)
def test_bad_cluster_files(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_cluster(write(tmp_path, data))
    assert message in str(info.value)


def test_dotenv_import_keeps_per_node_interfaces_and_container_env() -> None:
    data, notes = import_dotenv(
        'CLUSTER_NODES="192.168.1.10,192.168.1.11"\nLOCAL_IP=192.168.1.11\n'
        "ETH_IF=enp1s0f1np1\nIB_IF=rocep1s0f1,roceP2p1s0f1\n"
        "CONTAINER_NCCL_IB_MERGE_NICS=0\nCONTAINER_NAME=vllm_node\n# comment\n"
        "MASTER_PORT=29501\n"
    )
    assert [n.get("head", False) for n in data["nodes"]] == [False, True]
    assert data["nodes"][0]["ib_if"] == ["rocep1s0f1", "roceP2p1s0f1"]
    assert data["container_env"] == {"NCCL_IB_MERGE_NICS": "0"}
    assert any("not imported: MASTER_PORT" in n for n in notes)
    assert any("set eth_if per node" in n for n in notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CLUSTER_NODES\n", ".env:1: expected KEY=VALUE"),
        ("A=1\nA=2\n", ".env:2: A is set twice"),
        ("ETH_IF=eth0\n", "neither CLUSTER_NODES nor LOCAL_IP"),
    ],
)
def test_bad_dotenv(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        import_dotenv(text)
    assert parse_dotenv("X='a b'\n") == {"X": "a b"}


def test_cluster_import_command(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("CLUSTER_NODES=10.0.0.1,10.0.0.2\n")
    out = tmp_path / "cluster.yaml"
    run_cli("cluster", "import", str(env), "-o", str(out))
    assert [n["address"] for n in yaml.safe_load(out.read_text())["nodes"]] == ["10.0.0.1", "10.0.0.2"]
    proc = run_cli("cluster", "import", str(env), "-o", str(out), check=2)
    assert "exists; use --force" in proc.stderr

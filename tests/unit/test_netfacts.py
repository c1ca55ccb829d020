"""Interface choice per node from `ibdev2netdev` and `ip -j addr`: one fixture file per case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.launch.interfaces import NodeNet, choose_all
from pipeline.nodes.netfacts import parse_ibdev2netdev, parse_ip_addr, parse_nvidia_smi

CASES = sorted((Path(__file__).parent / "fixtures" / "netfacts").glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_interface_choice(path: Path) -> None:
    case = json.loads(path.read_text())
    nodes = [
        NodeNet(
            address=n["address"],
            links=parse_ibdev2netdev(n["ibdev2netdev"]),
            ifaces=parse_ip_addr(json.dumps(n["ip_addr"])),
            eth_if=n.get("eth_if", "auto"),
            ib_if=n.get("ib_if", "auto"),
        )
        for n in case["nodes"]
    ]
    choices = choose_all(nodes)
    for node, choice, want in zip(case["nodes"], choices, case["expect"], strict=True):
        where = f"{path.stem}/{node['address']}: {choice}"
        if "problem" in want:
            assert any(want["problem"] in p for p in choice.problems), where
            continue
        assert not choice.problems, where
        assert choice.mode == want["mode"], where
        assert choice.eth_if == want["eth_if"], where
        assert sorted(choice.ib_if) == sorted(want["ib_if"]), where
        assert dict(choice.extra_env) == want.get("extra_env", {}), where
        if "warning" in want:
            assert any(want["warning"] in w for w in choice.warnings), where


def test_ibdev2netdev_parser() -> None:
    links = parse_ibdev2netdev(
        "rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)\nroceP2p1s0f0 port 1 ==> enP2p1s0f0np0 (Down)\ngarbage line\n"
    )
    assert [(lk.dev, lk.netdev, lk.up) for lk in links] == [
        ("rocep1s0f1", "enp1s0f1np1", True),
        ("roceP2p1s0f0", "enP2p1s0f0np0", False),
    ]


def test_ip_addr_parser_skips_loopback_and_ipv6() -> None:
    ifaces = parse_ip_addr(
        json.dumps(
            [
                {
                    "ifname": "lo",
                    "flags": ["LOOPBACK", "UP"],
                    "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}],
                },
                {
                    "ifname": "eth0",
                    "flags": ["UP", "LOWER_UP"],
                    "operstate": "UP",
                    "addr_info": [
                        {"family": "inet", "local": "10.1.2.3", "prefixlen": 24},
                        {"family": "inet6", "local": "fe80::1", "prefixlen": 64},
                    ],
                },
            ]
        )
    )
    assert list(ifaces) == ["eth0"] and ifaces["eth0"].ipv4 == (("10.1.2.3", 24),) and ifaces["eth0"].up


def test_nvidia_smi_parser() -> None:
    assert parse_nvidia_smi("NVIDIA GB10, 12.1\n")[0].compute_cap == "12.1"
    assert parse_nvidia_smi("") == []

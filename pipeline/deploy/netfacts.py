"""Pure parsers of what nodes report (`ibdev2netdev`, `ip -j addr`, `nvidia-smi`), and the choice of
each node's interfaces: which netdev carries NCCL/Gloo sockets (eth_if) and which RoCE devices NCCL
uses (ib_if). Per node, never one name for all. No I/O here; discover.py gathers the text.

GB10 rules (toolkit autodiscover.sh, with its issue #40 fixed): each QSFP port shows up as two RoCE
devices ("twins", e.g. rocep1s0f1 + roceP2p1s0f1 for netdevs enp1s0f1np1 + enP2p1s0f1np1). A port is a
cluster link only if one of its netdevs shares an IPv4 subnet with another node of the cluster, so a
port cabled to a PC is ignored. One cluster port -> standard (both twins); two -> mesh (all four, plus
NCCL's mesh settings); none -> sockets only over the interface holding the node's address.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Literal

_LINK_RE = re.compile(r"^(?P<dev>\S+)\s+port\s+(?P<port>\d+)\s+==>\s+(?P<netdev>\S+)\s+\((?P<state>\w+)\)")


@dataclass(frozen=True)
class Link:
    dev: str
    port: int
    netdev: str
    up: bool


@dataclass(frozen=True)
class Iface:
    name: str
    up: bool
    ipv4: tuple[tuple[str, int], ...] = ()

    def networks(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.ip_network(f"{a}/{p}", strict=False) for a, p in self.ipv4]  # type: ignore[misc]


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_cap: str


ChoiceMode = Literal["standard", "mesh", "sockets", "unknown", "given"]


@dataclass(frozen=True)
class Choice:
    eth_if: str | None
    ib_if: tuple[str, ...]
    mode: ChoiceMode
    extra_env: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def parse_ibdev2netdev(text: str) -> list[Link]:
    """`rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)` lines; anything else is ignored."""
    out = []
    for line in text.splitlines():
        m = _LINK_RE.match(line.strip())
        if m:
            out.append(Link(dev=m["dev"], port=int(m["port"]), netdev=m["netdev"], up=m["state"].lower() == "up"))
    return out


def parse_ip_addr(text: str) -> dict[str, Iface]:
    """`ip -j addr` -> name -> Iface (IPv4 addresses only; loopback skipped)."""
    out: dict[str, Iface] = {}
    for item in json.loads(text or "[]"):
        name = item.get("ifname", "")
        if not name or "LOOPBACK" in item.get("flags", []):
            continue
        up = item.get("operstate") == "UP" or ("UP" in item.get("flags", []) and "LOWER_UP" in item.get("flags", []))
        v4 = tuple((a["local"], int(a["prefixlen"])) for a in item.get("addr_info", []) if a.get("family") == "inet")
        out[name] = Iface(name=name, up=up, ipv4=v4)
    return out


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """`nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` lines."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[0]:
            out.append(Gpu(name=parts[0], compute_cap=parts[1]))
    return out


def twin_key(netdev: str) -> str:
    """enP2p1s0f1np1 and enp1s0f1np1 are the same physical port (PCIe domain prefix dropped)."""
    return re.sub(r"P\d+(?=p\d)", "", netdev)


@dataclass
class NodeNet:
    """What one node reported, for the interface choice."""

    address: str
    links: list[Link] = field(default_factory=list)
    ifaces: dict[str, Iface] = field(default_factory=dict)
    eth_if: str = "auto"
    ib_if: list[str] | str = "auto"

    def addresses(self) -> set[str]:
        return {a for i in self.ifaces.values() for a, _ in i.ipv4}


def _iface_of_address(ifaces: dict[str, Iface], address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for i in ifaces.values():
        if any(ip in net for net in i.networks()) and i.up:
            return i.name
    return None


def subnet_clashes(node: NodeNet) -> list[str]:
    """The toolkit's sanity check: no two up interfaces on one subnet, or routing (and NCCL) picks at random."""
    problems = []
    seen: dict[ipaddress.IPv4Network, str] = {}
    for i in node.ifaces.values():
        if not i.up:
            continue
        for net in i.networks():
            if net in seen and twin_key(seen[net]) != twin_key(i.name):
                problems.append(f"{seen[net]} and {i.name} are both up on {net}: give each link its own subnet")
            seen.setdefault(net, i.name)
    return problems


def cluster_ports(node: NodeNet, peers: list[NodeNet]) -> tuple[dict[str, list[Link]], list[str]]:
    """Up RoCE ports (twins grouped) that reach another node of the cluster, and the warning for the
    ports that do not (cabled to a PC, say)."""
    peer_ips = [ipaddress.ip_address(a) for p in peers for a in p.addresses()]
    groups: dict[str, list[Link]] = {}
    for lk in node.links:
        if lk.up:
            groups.setdefault(twin_key(lk.netdev), []).append(lk)

    def reaches_peer(links: list[Link]) -> bool:
        nets = [net for lk in links if lk.netdev in node.ifaces for net in node.ifaces[lk.netdev].networks()]
        return any(ip in net for ip in peer_ips for net in nets)

    ports = {k: v for k, v in groups.items() if not peers or reaches_peer(v)}
    ignored = sorted(set(groups) - set(ports))
    warnings = [f"RoCE port(s) up but reaching no cluster node, ignored: "
                f"{', '.join(lk.netdev for k in ignored for lk in groups[k])}"] if ignored else []
    return ports, warnings


def _standard(node: NodeNet, links: list[Link], problems: list[str]) -> str | None:
    """One cluster port: sockets over the twin without the PCIe-domain prefix (enp1s0f1np1)."""
    with_ip = [lk.netdev for lk in links if node.ifaces.get(lk.netdev, Iface(lk.netdev, False)).ipv4]
    eth = next((n for n in with_ip if not re.search(r"P\d", n)), with_ip[0] if with_ip else None)
    if eth is None:
        problems.append(f"RoCE port {links[0].netdev} is up but none of its interfaces has an IPv4 address")
    return eth


def _mesh(node: NodeNet, problems: list[str]) -> str | None:
    """Two cluster ports (3-node mesh): sockets over the interface holding the node's address."""
    eth = _iface_of_address(node.ifaces, node.address) or next(
        (n for n in ("enP7s7", "wlP9s9") if node.ifaces.get(n, Iface(n, False)).ipv4), None)
    if eth is None:
        problems.append("mesh: no interface holds the node's address for sockets (expected enP7s7)")
    return eth


def _sockets(node: NodeNet, peers: list[NodeNet], problems: list[str], warnings: list[str]) -> str | None:
    """No RoCE link: TCP sockets over the interface holding the node's address."""
    eth = _iface_of_address(node.ifaces, node.address)
    if eth is None:
        up = [i.name for i in node.ifaces.values() if i.up and i.ipv4]
        eth = up[0] if len(up) == 1 else None
    if not peers:
        return eth  # one node: nothing crosses the network, so no interface needs naming
    warnings.append(f"no RoCE link up to the other nodes: NCCL falls back to TCP sockets over {eth} (slow)")
    if eth is None:
        problems.append(f"cannot tell which interface carries {node.address}; set eth_if in cluster.yaml")
    return eth


MESH_ENV = (("NCCL_NET_PLUGIN", "none"), ("NCCL_IB_SUBNET_AWARE_ROUTING", "1"), ("NCCL_IB_MERGE_NICS", "0"))


def _given(node: NodeNet, choice: Choice) -> Choice:
    """Explicit settings win, but must exist and be up."""
    problems = list(choice.problems)
    eth, ib = choice.eth_if, list(choice.ib_if)
    mode: ChoiceMode = choice.mode
    if node.eth_if != "auto":
        given = node.ifaces.get(node.eth_if)
        if given is None or not given.up:
            problems.append(f"eth_if {node.eth_if} is {'down' if given else 'not an interface of this node'}")
        eth, mode = node.eth_if, "given"
    if isinstance(node.ib_if, list):
        known = {lk.dev: lk for lk in node.links}
        for dev in node.ib_if:
            if dev not in known or not known[dev].up:
                problems.append(f"ib_if {dev} is {'down' if dev in known else 'not a RoCE device of this node'}")
        ib, mode = list(node.ib_if), "given"
    elif node.ib_if == "none":
        ib = []
    return Choice(eth_if=eth, ib_if=tuple(ib), mode=mode, extra_env=choice.extra_env, problems=tuple(problems),
                  warnings=choice.warnings)


def choose(node: NodeNet, peers: list[NodeNet]) -> Choice:
    problems = subnet_clashes(node)
    ports, warnings = cluster_ports(node, peers)
    ib: list[str] = [lk.dev for links in ports.values() for lk in links]
    extra: tuple[tuple[str, str], ...] = ()
    mode: ChoiceMode
    if len(ports) == 1:
        mode, eth = "standard", _standard(node, next(iter(ports.values())), problems)
    elif len(ports) == 2:
        mode, eth, extra = "mesh", _mesh(node, problems), MESH_ENV
    elif not ports:
        mode, eth = "sockets", _sockets(node, peers, problems, warnings)
    else:
        mode, eth = "unknown", None
        problems.append(f"{len(ports)} RoCE ports reach cluster nodes; expected 1 (pair or switch) or 2 "
                        "(mesh); set eth_if and ib_if in cluster.yaml")
    return _given(node, Choice(eth_if=eth, ib_if=tuple(ib), mode=mode, extra_env=extra, problems=tuple(problems),
                               warnings=tuple(warnings)))


def choose_all(nodes: list[NodeNet]) -> list[Choice]:
    """Each node's choice, with every other node as a peer (a one-node list has no peers)."""
    return [choose(n, [p for p in nodes if p is not n]) for n in nodes]

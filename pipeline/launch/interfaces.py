"""The choice of each node's interfaces, from what nodes reported (nodes/netfacts.py parses it):
which netdev carries NCCL/Gloo sockets (eth_if) and which RoCE devices NCCL uses (ib_if).
Per node, never one name for all. Pure.

GB10 rules (toolkit autodiscover.sh, with its issue #40 fixed): each QSFP port shows up as two RoCE
devices ("twins", e.g. rocep1s0f1 + roceP2p1s0f1 for netdevs enp1s0f1np1 + enP2p1s0f1np1). A port is a
cluster link only if one of its netdevs shares an IPv4 subnet with another node of the cluster, so a
port cabled to a PC is ignored. One cluster port -> standard (both twins); two -> mesh (all four, plus
NCCL's mesh settings); none -> sockets only over the interface holding the node's address.

What the user sets in cluster.yaml (eth_if, ib_if) always wins over the automatic choice, whose
problems then do not apply. Only the interfaces the choice uses are checked for subnet clashes (Wi-Fi
and wired Ethernet on one LAN are fine while NCCL runs over a QSFP link). A node named by hostname is
matched through what that name resolves to on the node itself; IPv6 addresses work like IPv4 ones.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pipeline.nodes.netfacts import Iface, Link, twin_key

if TYPE_CHECKING:
    from pipeline.nodes.discover import NodeFacts


ChoiceMode = Literal["standard", "mesh", "sockets", "unknown", "given"]


@dataclass(frozen=True)
class Choice:
    eth_if: str | None
    ib_if: tuple[str, ...]
    mode: ChoiceMode
    extra_env: tuple[tuple[str, str], ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    ip: str | None = None  # the address on eth_if that peers reach (VLLM_HOST_IP, the master address)
    nets: tuple[str, ...] = ()  # eth_if's networks (CIDR): what this node reaches without a router


@dataclass
class NodeNet:
    """What one node reported, for the interface choice."""

    address: str
    links: list[Link] = field(default_factory=list)
    ifaces: dict[str, Iface] = field(default_factory=dict)
    eth_if: str = "auto"
    ib_if: list[str] | str = "auto"
    resolved: tuple[str, ...] = ()  # what `address` resolves to on the node itself (a hostname)
    name: str = ""

    def addresses(self) -> set[str]:
        return {a for i in self.ifaces.values() for a, _ in i.addresses()}

    def own_ips(self) -> list[str]:
        """The node's address as IPs: itself when it is one, else what it resolved to on the node."""
        try:
            return [str(ipaddress.ip_address(self.address.strip("[]")))]
        except ValueError:
            return list(self.resolved)


def _iface_of_address(ifaces: dict[str, Iface], addresses: list[str]) -> str | None:
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        for i in ifaces.values():
            if i.up and any(ip == ipaddress.ip_address(a) for a, _ in i.addresses()):
                return i.name
    for address in addresses:  # not one of its own: the interface on its subnet
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        for i in ifaces.values():
            if i.up and any(ip in net for net in i.networks()):
                return i.name
    return None


def subnet_clashes(node: NodeNet, used: set[str]) -> list[str]:
    """The toolkit's sanity check, on the interfaces the choice uses: another up interface on the same
    subnet makes routing (and NCCL) pick either at random. Clashes elsewhere (Wi-Fi and wired on one
    LAN) do not touch the traffic the cluster sends."""
    problems = []
    for name in sorted(used):
        mine = node.ifaces.get(name)
        if mine is None or not mine.up:
            continue
        for other in node.ifaces.values():
            if other.name == name or not other.up or twin_key(other.name) == twin_key(name):
                continue
            for net in mine.networks():
                if net in other.networks():
                    problems.append(f"{name} and {other.name} are both up on {net}: give each link its own subnet")
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
    warnings = (
        [
            f"RoCE port(s) up but reaching no cluster node, ignored: "
            f"{', '.join(lk.netdev for k in ignored for lk in groups[k])}"
        ]
        if ignored
        else []
    )
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
    eth = _iface_of_address(node.ifaces, node.own_ips()) or next(
        (n for n in ("enP7s7", "wlP9s9") if node.ifaces.get(n, Iface(n, False)).ipv4), None
    )
    if eth is None:
        problems.append(
            "mesh: no interface holds the node's address for sockets (expected enP7s7); set eth_if in cluster.yaml"
        )
    return eth


def _sockets(node: NodeNet, peers: list[NodeNet], problems: list[str], warnings: list[str]) -> str | None:
    """No RoCE link: TCP sockets over the interface holding the node's address."""
    eth = _iface_of_address(node.ifaces, node.own_ips())
    if eth is None:
        up = [i.name for i in node.ifaces.values() if i.up and i.addresses()]
        eth = up[0] if len(up) == 1 else None
    if not peers:
        return eth  # one node: nothing crosses the network, so no interface needs naming
    warnings.append(f"no RoCE link up to the other nodes: NCCL falls back to TCP sockets over {eth} (slow)")
    if eth is None:
        problems.append(f"cannot tell which interface carries {node.address}; set eth_if in cluster.yaml")
    return eth


MESH_ENV = (("NCCL_NET_PLUGIN", "none"), ("NCCL_IB_SUBNET_AWARE_ROUTING", "1"), ("NCCL_IB_MERGE_NICS", "0"))


def _given_ib(node: NodeNet, problems: list[str]) -> list[str]:
    if node.ib_if == "none":
        return []
    known = {lk.dev: lk for lk in node.links}
    for dev in node.ib_if:
        if dev not in known or not known[dev].up:
            problems.append(f"ib_if {dev} is {'down' if dev in known else 'not a RoCE device of this node'}")
    return list(node.ib_if)


def _auto_eth(
    node: NodeNet, peers: list[NodeNet], ports: dict[str, list[Link]], problems: list[str], warnings: list[str]
) -> str | None:
    if len(ports) == 1:
        return _standard(node, next(iter(ports.values())), problems)
    if len(ports) == 2:
        return _mesh(node, problems)
    if not ports:
        return _sockets(node, peers, problems, warnings)
    return None


def address_for(node: NodeNet, eth: str | None, peers: list[NodeNet]) -> str | None:
    """The address on eth_if that the others use: one on a subnet a peer shares, else the node's own
    address, else any but a leftover link-local (169.254/16) one."""
    iface = node.ifaces.get(eth or "")
    if iface is None:
        return None
    addrs = iface.addresses()
    peer_ips = [ipaddress.ip_address(a) for p in peers for a in p.addresses()]
    for a, prefix in addrs:
        net = ipaddress.ip_network(f"{a}/{prefix}", strict=False)
        if any(ip in net for ip in peer_ips):
            return a
    own = [a for a, _ in addrs if a in node.own_ips()]
    if own:
        return own[0]
    usable = [a for a, _ in addrs if not ipaddress.ip_address(a).is_link_local] or [a for a, _ in addrs]
    return usable[0] if usable else None


def choose(node: NodeNet, peers: list[NodeNet]) -> Choice:
    """One node's interfaces. What cluster.yaml sets wins, and the automatic choice's problems for that
    part then do not apply."""
    problems: list[str] = []
    warnings: list[str] = []
    ports, ignored = cluster_ports(node, peers)
    given_ib = node.ib_if != "auto"
    given_eth = node.eth_if != "auto"
    if given_ib:
        ib = _given_ib(node, problems)
    else:
        warnings += ignored
        ib = [lk.dev for links in ports.values() for lk in links] if len(ports) <= 2 else []
    if given_eth:
        iface = node.ifaces.get(node.eth_if)
        if iface is None or not iface.up:
            problems.append(f"eth_if {node.eth_if} is {'down' if iface else 'not an interface of this node'}")
        eth: str | None = node.eth_if
    else:
        eth = _auto_eth(node, peers, ports if not given_ib else {}, problems, warnings)
        if len(ports) > 2 and not given_ib:
            problems.append(
                f"{len(ports)} RoCE ports reach cluster nodes; expected 1 (pair or switch) or 2 "
                "(mesh); set eth_if and ib_if in cluster.yaml"
            )
    by_ports: dict[int, ChoiceMode] = {0: "sockets", 1: "standard", 2: "mesh"}
    mode: ChoiceMode = "given" if given_eth or given_ib else by_ports.get(len(ports), "unknown")
    used = {eth} if eth else set()
    used |= {lk.netdev for lk in node.links if lk.dev in ib}
    problems += subnet_clashes(node, used)
    extra = MESH_ENV if len(ports) == 2 and not given_ib else ()
    iface = node.ifaces.get(eth or "")
    nets = tuple(str(n) for n in iface.networks()) if iface else ()
    return Choice(
        eth_if=eth,
        ib_if=tuple(ib),
        mode=mode,
        extra_env=extra,
        problems=tuple(problems),
        warnings=tuple(warnings),
        ip=address_for(node, eth, peers),
        nets=nets,
    )


def choose_all(nodes: list[NodeNet]) -> list[Choice]:
    """Each node's choice, with every other node as a peer (a one-node list has no peers)."""
    return [choose(n, [p for p in nodes if p is not n]) for n in nodes]


def interfaces(facts: list[NodeFacts]) -> list[Choice]:
    """Each discovered node's choice, all nodes considered together (a link is a cluster link only if
    a peer shares its subnet)."""
    nets = [
        NodeNet(
            address=f.node.address,
            links=f.links,
            ifaces=f.ifaces,
            eth_if=f.node.eth_if,
            ib_if=f.node.ib_if,
            resolved=f.resolved,
            name=f.node.label,
        )
        for f in facts
    ]
    return choose_all(nets)

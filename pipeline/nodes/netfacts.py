"""Pure parsers of what nodes report: `ibdev2netdev`, `ip -j addr`, `nvidia-smi`. No I/O here;
discover.py gathers the text, and launch/interfaces.py chooses each node's interfaces from it.

GB10 names (toolkit autodiscover.sh): each QSFP port shows up as two RoCE devices ("twins", e.g.
rocep1s0f1 + roceP2p1s0f1 for netdevs enp1s0f1np1 + enP2p1s0f1np1); twin_key says which are one port.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

_LINK_RE = re.compile(r"^(?P<dev>\S+)\s+port\s+(?P<port>\d+)\s+==>\s+(?P<netdev>\S+)\s+\(\s*(?P<state>\w+)\s*\)")
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    ipv6: tuple[tuple[str, int], ...] = ()  # global-scope only (link-local fe80:: cannot carry NCCL)

    def addresses(self) -> list[tuple[str, int]]:
        return [*self.ipv4, *self.ipv6]

    def networks(self) -> list[Net]:
        return [ipaddress.ip_network(f"{a}/{p}", strict=False) for a, p in self.addresses()]


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_cap: str


def parse_ibdev2netdev(text: str) -> list[Link]:
    """`rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)` lines; anything else is ignored."""
    out = []
    for line in text.splitlines():
        m = _LINK_RE.match(line.strip())
        if m:
            out.append(Link(dev=m["dev"], port=int(m["port"]), netdev=m["netdev"], up=m["state"].lower() == "up"))
    return out


def parse_ip_addr(text: str) -> dict[str, Iface]:
    """`ip -j addr` -> name -> Iface (loopback skipped). Raises ValueError, saying what is wrong, for
    output that is not `ip -j addr`'s JSON (an old iproute2, a wrapper printing text)."""
    try:
        items = json.loads(text or "[]")
    except json.JSONDecodeError as e:
        raise ValueError(f"ip -j addr did not answer JSON ({e.msg}): {text.strip()[:80]!r}") from None
    if not isinstance(items, list):
        raise ValueError(f"ip -j addr answered a JSON {type(items).__name__}, expected a list of interfaces")
    out: dict[str, Iface] = {}
    for i, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("flags", []), list)
            or not isinstance(item.get("addr_info", []), list)
        ):
            raise ValueError(f"ip -j addr: interface {i} is not an object with flags and addr_info lists")
        name = item.get("ifname", "")
        if not isinstance(name, str) or not name or "LOOPBACK" in item.get("flags", []):
            continue
        flags = item.get("flags", [])
        up = item.get("operstate") == "UP" or ("UP" in flags and "LOWER_UP" in flags)
        addrs = [a for a in item.get("addr_info", []) if isinstance(a, dict)]
        try:
            v4 = tuple((str(a["local"]), int(a["prefixlen"])) for a in addrs if a.get("family") == "inet")
            v6 = tuple(
                (str(a["local"]), int(a["prefixlen"]))
                for a in addrs
                if a.get("family") == "inet6"
                and a.get("scope", "global") == "global"
                and not str(a["local"]).lower().startswith("fe80")
            )
            for a, p in (*v4, *v6):
                ipaddress.ip_network(f"{a}/{p}", strict=False)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"ip -j addr: interface {name}: an address without a valid local/prefixlen") from None
        out[name] = Iface(name=name, up=up, ipv4=v4, ipv6=v6)
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


def parse_proc_net_tcp(text: str) -> tuple[tuple[str, int], ...]:
    """`/proc/net/tcp{,6}` local addresses (`0100007F:1F40`, one a line: each 32-bit word of the address
    in host byte order, little-endian on aarch64 and x86_64) -> sorted, distinct (address, port)."""
    out = set()
    for word in text.split():
        addr, sep, port = word.partition(":")
        try:
            raw = bytes.fromhex(addr)
            number = int(port, 16)
        except ValueError:
            continue
        if not sep or len(raw) not in (4, 16) or not 0 < number < 65536:
            continue
        ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1
        out.add((str(mapped or ip), number))
    return tuple(sorted(out, key=lambda a: (a[1], a[0])))


@dataclass(frozen=True)
class GpuAccess:
    """How the node's Docker can hand a container its GPUs. Docker 28 reads Container Device Interface
    specs from its CDI spec dirs (`--device nvidia.com/gpu=all`, what the NVIDIA container toolkit now
    generates and prefers); `--gpus` goes through the toolkit's runtime hook instead."""

    hook: bool = False  # nvidia-container-runtime-hook on the node's PATH (`--gpus`)
    runtimes: tuple[str, ...] = ()  # docker info's runtimes
    cdi_dirs: tuple[str, ...] = ()  # docker info's CDI spec dirs (none before Docker 25, or CDI off)
    cdi_gpu: tuple[str, ...] = ()  # spec files there that declare nvidia.com/gpu

    @property
    def flag(self) -> str:
        """cdi when the node's Docker has an NVIDIA CDI spec, else gpus (the toolkit's hook)."""
        return "cdi" if self.cdi_gpu else "gpus"

    @property
    def ready(self) -> bool:
        return bool(self.cdi_gpu) or self.hook or "nvidia" in self.runtimes


def parse_gpu_access(text: str, most: int = 32) -> GpuAccess:
    """The discovery script's `gpu-access` lines (`hook`, `runtime NAME`, `cdi-dir DIR`, `cdi-gpu FILE`);
    anything else, and anything past `most` entries of a kind, is ignored (a node's answer is untrusted)."""
    found: dict[str, list[str]] = {"runtime": [], "cdi-dir": [], "cdi-gpu": []}
    hook = False
    for line in text.splitlines()[: 4 * most]:
        kind, _, value = line.strip().partition(" ")
        if kind == "hook" and not value:
            hook = True
        elif kind in found and value and len(value) <= 4096 and len(found[kind]) < most:
            found[kind].append(value)
    return GpuAccess(hook, tuple(found["runtime"]), tuple(found["cdi-dir"]), tuple(found["cdi-gpu"]))

"""`doctor`'s rules: from what each node reported, the problems that block a deploy and the warnings,
each with its fix. Pure; discover.py gathers the facts.

The GPU check compares each node's compute capability with the image's own `gpu-arch` label (what the
runtime image was compiled for), not with a literal: an image built with `--gpu-arch 12.0f` is fine on
any 12.x GPU, one built for 12.1a only on 12.1.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from pipeline.contract import is_decimal
from pipeline.launch.interfaces import Choice
from pipeline.nodes.discover import NodeFacts

# A runtime image is ~20 GB and a redeploy's new layers arrive before the old ones can go: below this,
# a ship can fill the disk mid-pull. `doctor --min-free-gb` overrides it.
MIN_FREE_GB = 40.0


@dataclass(frozen=True)
class Problem:
    node: str
    text: str
    blocking: bool


def runs_on(gpu_arch: str, compute_cap: str) -> bool:
    """Whether device code for `gpu_arch` (e.g. "12.1a;12.0f") runs on a GPU of `compute_cap` ("12.1"):
    `a` needs the exact capability, `f` the same major (the family), plain code any capability at
    least as high (PTX is compiled just in time)."""
    try:
        major, minor = (int(x) for x in compute_cap.split("."))
    except ValueError:
        return False
    for arch in (a for a in re.split(r"[;\s]+", gpu_arch.strip()) if a):
        m = re.match(r"^(\d+)\.(\d)([af]?)$", arch)
        if not m:
            continue
        amaj, amin, kind = int(m[1]), int(m[2]), m[3]
        if (
            (kind == "a" and (amaj, amin) == (major, minor))
            or (kind == "f" and amaj == major)
            or (kind == "" and (major, minor) >= (amaj, amin))
        ):
            return True
    return False


Scope = Literal["local", "cluster", "all", "beyond"]


@dataclass(frozen=True)
class Listening:
    """A port the deploy container listens on, and who can reach it."""

    address: str
    port: int
    scope: Scope  # local: loopback; cluster: an address in the cluster link's subnet; all: every interface


def scope_of(address: str, cluster_nets: tuple[str, ...]) -> Scope:
    ip = ipaddress.ip_address(address)  # IPv4-mapped addresses arrive as IPv4 (netfacts.parse_proc_net_tcp)
    if ip.is_loopback:
        return "local"
    if ip.is_unspecified:
        return "all"
    nets = [ipaddress.ip_network(n, strict=False) for n in cluster_nets]
    return "cluster" if any(ip in n for n in nets if n.version == ip.version) else "beyond"


def exposure(f: NodeFacts, choice: Choice) -> list[Listening]:
    return [Listening(a, p, scope_of(a, choice.nets)) for a, p in f.listening]


def exposure_problems(f: NodeFacts, choice: Choice) -> list[Problem]:
    """One warning per node for the deploy container's ports that answer on every interface, one for those
    on an address outside the cluster link's subnet (Ray alone opens a dozen: one line, not twelve)."""
    found = exposure(f, choice)
    nets = ", ".join(choice.nets) or "unknown"
    fix = "the API narrows with deploy --expose cluster|local; Ray's own ports cannot, keep its token auth on"
    out = []
    everywhere = [str(x.port) for x in found if x.scope == "all"]
    if everywhere:
        out.append(Problem(f.node.label, f"ports on every interface: {', '.join(everywhere)} ({fix})", False))
    beyond = [f"{x.port} on {x.address}" for x in found if x.scope == "beyond"]
    if beyond:
        out.append(
            Problem(f.node.label, f"ports outside the cluster subnet ({nets}): {', '.join(beyond)} ({fix})", False)
        )
    return out


def docker_notes(f: NodeFacts) -> list[Problem]:
    """What the node's Docker means for shipping and building (measured on Docker 28.5, issue #23)."""
    out = []
    if f.gpus and f.docker_version and not f.gpu_access.ready:
        dirs = ", ".join(f.gpu_access.cdi_dirs) or "none: Docker before 25, or CDI off"
        out.append(
            Problem(
                f.node.label,
                "Docker cannot hand a container this node's GPU: no NVIDIA CDI spec in its CDI spec dirs "
                f"({dirs}) and no nvidia-container-runtime-hook; install the NVIDIA container toolkit and run "
                "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`",
                True,
            )
        )
    major = f.docker_version.split(".", 1)[0]
    if is_decimal(major) and int(major) >= 23 and not f.buildx:
        out.append(
            Problem(
                f.node.label,
                f'Docker {f.docker_version} without the buildx plugin: BuildKit builds fail there ("BuildKit '
                'is enabled but the buildx component is missing"); install docker-buildx to build on this node',
                False,
            )
        )
    return out


def node_problems(
    f: NodeFacts, choice: Choice, image: str, image_arch: str, min_free_gb: float, gpu_required: bool, multi: bool
) -> list[Problem]:
    n = f.node.label
    if not f.reachable:
        return [Problem(n, f.error, True)]
    out: list[Problem] = []
    if not f.docker_version:
        out.append(
            Problem(
                n,
                "Docker does not answer: install docker.io / start dockerd, and let the SSH user use it (group docker)",
                True,
            )
        )
    out += docker_notes(f)
    if f.disk_free and f.disk_free < min_free_gb * 1e9:
        out.append(
            Problem(
                n,
                f"only {f.disk_free / 1e9:.1f} GB free under {f.docker_root}: `docker system prune` "
                f"or grow the disk (need ≥ {min_free_gb:g} GB)",
                True,
            )
        )
    if not f.gpus:
        out.append(
            Problem(
                n,
                f"{f.gpu_note or 'no GPU'}: vLLM needs the NVIDIA driver (nvidia-smi) and the NVIDIA container toolkit",
                gpu_required,
            )
        )
    for gpu in f.gpus:
        if image_arch and not runs_on(image_arch, gpu.compute_cap):
            out.append(
                Problem(
                    n,
                    f"GPU {gpu.name} has compute capability {gpu.compute_cap}, but {image} was built "
                    f"for {image_arch}: build with a matching --gpu-arch",
                    True,
                )
            )
    if f.ib_note and multi:
        out.append(
            Problem(
                n,
                f"{f.ib_note}: NCCL will use TCP sockets (install the Mellanox OFED / rdma-core tools for RoCE)",
                False,
            )
        )
    out += [Problem(n, p, True) for p in choice.problems]
    out += [Problem(n, w, False) for w in choice.warnings]
    out += exposure_problems(f, choice)
    if not f.image_id:
        out.append(Problem(n, f"{image} is not on this node: `python -m pipeline ship` puts it there", False))
    return out


def problems(
    facts: list[NodeFacts], choices: list[Choice], image: str, image_arch: str, min_free_gb: float, gpu_required: bool
) -> list[Problem]:
    return [
        p
        for f, c in zip(facts, choices, strict=True)
        for p in node_problems(f, c, image, image_arch, min_free_gb, gpu_required, len(facts) > 1)
    ]

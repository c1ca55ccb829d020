"""cluster.yaml: where to run. Nodes (address, user, port, key, interfaces), which is head, SSH policy.

nodes:
  - address: 192.168.100.10     # the head unless another node says head: true
    eth_if: auto                # or a name; chosen per node, never one name for all
    ib_if: auto                 # or a list of RoCE devices, or none
  - address: 192.168.100.11
    user: spark
ssh:
  known_hosts: ~/.ssh/known_hosts
  host_keys: strict             # accept-new: trust and record a node seen for the first time
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from pipeline.config.types import (
    STRICT,
    EnvName,
    EnvValue,
    Flag,
    ImageRef,
    NonEmptyStr,
    PositiveInt,
    UserName,
    expect,
)
from pipeline.contract import IMAGE

_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[?[0-9a-fA-F:]+\]?$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def is_host(v: object) -> bool:
    """A host name or an IP address; all-numeric dotted names must be a valid IPv4 (192.168.100.300 is a
    typo, not a host name)."""
    if not isinstance(v, str) or not _HOST_RE.match(v):
        return False
    if re.fullmatch(r"[0-9.]+", v) or ":" in v:
        try:
            ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            return False
    return True


Host = Annotated[str, expect("a host name or IP address", is_host)]
IfaceName = Annotated[
    str,
    expect(
        "an interface name (up to 15 letters, digits, . _ : -) or auto",
        lambda v: isinstance(v, str) and bool(_IFACE_RE.match(v)),
    ),
]
Port = Annotated[
    int, expect("a port number 1-65535", lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536)
]


class NodeSpec(BaseModel):
    model_config = STRICT
    address: Host
    name: NonEmptyStr | None = None
    user: UserName = "root"
    port: Port = 22
    key: NonEmptyStr | None = None
    head: Flag = False
    eth_if: IfaceName = "auto"
    ib_if: list[IfaceName] | Literal["auto", "none"] = "auto"
    # Container environment for this node only (after cluster-wide container_env and -e).
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    # ssh: reached over SSH. local: this machine, run as local processes (no sshd needed).
    transport: Literal["ssh", "local"] = "ssh"

    @field_validator("ib_if", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        if isinstance(v, str) and v not in ("auto", "none"):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @property
    def label(self) -> str:
        return self.name or self.address


class SshSpec(BaseModel):
    model_config = STRICT
    known_hosts: NonEmptyStr = "~/.ssh/known_hosts"
    host_keys: Literal["strict", "accept-new"] = "strict"
    connect_timeout: PositiveInt = 10
    parallel: PositiveInt = 8
    key: NonEmptyStr | None = None


class ClusterSpec(BaseModel):
    model_config = STRICT
    nodes: list[NodeSpec] = Field(min_length=1)
    ssh: SshSpec = Field(default_factory=SshSpec)
    image: ImageRef = IMAGE
    registry_port: Port = 5000
    container_env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    # Names of environment variables that are secrets (besides HF_TOKEN, HUGGING_FACE_HUB_TOKEN): wherever
    # they are set, they reach containers only through a 0600 env file, never argv or logs.
    secrets: list[EnvName] = Field(default_factory=list)
    # Some ranks on RoCE and others on TCP sockets is refused (all run at TCP's speed) unless this is set.
    allow_mixed_transports: Flag = False

    @field_validator("nodes")
    @classmethod
    def _checks(cls, nodes: list[NodeSpec]) -> list[NodeSpec]:
        heads = [n for n in nodes if n.head]
        if len(heads) > 1:
            raise ValueError(f"expected at most one node with head: true, got {len(heads)}")
        labels = [n.label for n in nodes]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(f"expected each node once, got {sorted(dup)[0]} twice")
        return nodes

    @property
    def head(self) -> NodeSpec:
        return next((n for n in self.nodes if n.head), self.nodes[0])

    def node(self, name: str | None) -> NodeSpec:
        """A node by its name or address (the head when name is None); ConfigError otherwise."""
        if name is None:
            return self.head
        found = next((n for n in self.nodes if name in (n.label, n.address)), None)
        if found is None:
            from pipeline.errors import ConfigError

            raise ConfigError(f"--node {name}: not a node of the cluster ({', '.join(n.label for n in self.nodes)})")
        return found

    def ordered(self) -> list[NodeSpec]:
        """Head first, then the others in file order (rank order)."""
        return [self.head, *[n for n in self.nodes if n is not self.head]]

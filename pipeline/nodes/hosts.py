"""SSH to the nodes with Fabric, with real trust: known_hosts is loaded and unknown or changed host
keys are refused (paramiko's RejectPolicy), unless `ssh.host_keys: accept-new`, which appends one line
for a host seen for the first time (under a lock; the file is never rewritten) and still refuses a
changed key. Fabric's own default (AutoAddPolicy) would accept any key.

Remote commands are argv lists joined with shlex.join. Fan-out is bounded (`ssh.parallel`) and
returns a result or an error per host, like Fabric's GroupResult.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Generic, TypeVar

import paramiko
import tenacity
from fabric import Config, Connection

from pipeline.config.cluster import ClusterSpec, NodeSpec
from pipeline.errors import ConfigError, HostError, NodesFailed, PipelineError
from pipeline.nodes.local import LocalTransport
from pipeline.nodes.ssh import SshTransport
from pipeline.nodes.transport import Ran, Transport

T = TypeVar("T")
# paramiko logs its own transport errors, with tracebacks, to stderr when nothing handles its logger;
# every such error reaches the user as ours instead (HostError, located to the node).
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False
# What a node step may fail with: our own errors (HostError among them), OS and socket errors, SSH
# errors. Anything else is a bug in our code and must not be reported as a node failure.
NODE_ERRORS: tuple[type[BaseException], ...] = (PipelineError, OSError, paramiko.SSHException, EOFError)


def host_key_name(host: str, port: int) -> str:
    """How known_hosts names a host: `host`, or `[host]:port` off port 22 (OpenSSH's rule)."""
    return host if port == 22 else f"[{host}]:{port}"


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """OpenSSH's StrictHostKeyChecking=accept-new: record an unknown host's key by appending one line."""

    def __init__(self, known_hosts: Path, port: int):
        self.known_hosts = known_hosts
        self.port = port

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        name = host_key_name(hostname.strip("[]").split("]:")[0], self.port) if hostname.startswith("[") else hostname
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
            f.flush()
            os.fsync(f.fileno())
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One host's result: `value` when it worked, `error` when it did not."""

    node: NodeSpec
    value: T | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def result(self) -> T:
        """The value of a node that worked; re-raises the error of one that did not."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    @property
    def reason(self) -> str:
        """Why it failed, in one line."""
        if isinstance(self.error, HostError):
            return self.error.reason
        return str(self.error).splitlines()[0] if self.error is not None else ""


@dataclass(frozen=True)
class HostResults(Generic[T]):
    """Every node's outcome of one fan-out, in node order (Fabric's GroupResult idea)."""

    outcomes: tuple[Outcome[T], ...]

    def __iter__(self) -> Iterator[Outcome[T]]:
        return iter(self.outcomes)

    @property
    def failed(self) -> dict[str, str]:
        """Node label -> why, for the nodes that failed."""
        return {o.node.label: o.reason for o in self.outcomes if not o.ok}

    @property
    def values(self) -> dict[str, T]:
        return {o.node.label: o.value for o in self.outcomes if o.ok}  # type: ignore[misc]

    def raise_if_failed(self, step: str) -> None:
        failed = self.failed
        if failed:
            raise NodesFailed(f"{step} failed on {', '.join(failed)}", {n: f"{step}: {w}" for n, w in failed.items()})


class Hosts:
    """A cluster's nodes: SSH connections made on first use (closed with close()), or this machine
    for a node with `transport: local`. Same calls, same results, either way."""

    def __init__(self, cluster: ClusterSpec):
        self.cluster = cluster
        self.known_hosts = Path(os.path.expanduser(cluster.ssh.known_hosts))
        if self.known_hosts.exists() and not self.known_hosts.is_file():  # a FIFO would hang paramiko's read
            raise ConfigError(f"ssh.known_hosts: {self.known_hosts} is not a regular file")
        self._conns: dict[str, Connection] = {}
        self._transports: dict[str, Transport] = {}

    def connection(self, node: NodeSpec) -> Connection:
        if node.label in self._conns:
            return self._conns[node.label]
        key = node.key or self.cluster.ssh.key
        kwargs: dict[str, object] = {
            "banner_timeout": self.cluster.ssh.connect_timeout,
            "auth_timeout": self.cluster.ssh.connect_timeout,
        }
        if key:
            kwargs.update(key_filename=[os.path.expanduser(key)], look_for_keys=False, allow_agent=False)
        # ~/.ssh/config and /etc/ssh/ssh_config are not read: cluster.yaml is the whole truth.
        cfg = Config(system_ssh_path=os.devnull, user_ssh_path=os.devnull)
        conn = Connection(
            node.address,
            user=node.user,
            port=node.port,
            config=cfg,
            connect_timeout=self.cluster.ssh.connect_timeout,
            connect_kwargs=kwargs,
        )
        if self.known_hosts.exists():
            conn.client.load_host_keys(str(self.known_hosts))
        policy: paramiko.MissingHostKeyPolicy = paramiko.RejectPolicy()
        if self.cluster.ssh.host_keys == "accept-new":
            policy = AcceptNewPolicy(self.known_hosts, node.port)
        conn.client.set_missing_host_key_policy(policy)
        self._conns[node.label] = conn
        return conn

    def open(self, node: NodeSpec) -> Connection:
        if node.transport == "local":
            raise HostError(node.label, "this machine is reached without SSH: nothing to connect to")
        conn = self.connection(node)
        if conn.is_connected:
            return conn
        try:
            self._connect(conn)
        except paramiko.BadHostKeyException:
            name = host_key_name(node.address, node.port)
            raise HostError(
                node.label,
                f"REMOTE HOST IDENTIFICATION HAS CHANGED: the host key does not match "
                f"{self.known_hosts}. If you know why (reinstalled node), remove the old key with:\n"
                f"  ssh-keygen -f {self.known_hosts} -R '{name}'",
            ) from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                name = host_key_name(node.address, node.port)
                raise HostError(
                    node.label,
                    f"host key unknown (not in {self.known_hosts}); check it, then add it:"
                    f"\n  ssh-keyscan -p {node.port} {node.address} >> {self.known_hosts}\n"
                    "or set ssh.host_keys: accept-new in cluster.yaml",
                ) from None
            if isinstance(e, paramiko.AuthenticationException):
                raise HostError(
                    node.label,
                    f"authentication failed for {node.user}@{name_of(node)} "
                    f"(key: {node.key or self.cluster.ssh.key or 'default keys'})",
                ) from None
            raise HostError(node.label, f"SSH failed: {e}") from None
        except TimeoutError:
            raise HostError(
                node.label, f"no SSH answer within {self.cluster.ssh.connect_timeout} s ({name_of(node)})"
            ) from None
        except OSError as e:
            raise HostError(node.label, f"cannot connect to {name_of(node)}: {e.strerror or e}") from None
        return conn

    def _connect(self, conn: Connection) -> None:
        """Open the connection, retrying with backoff what a node that is booting or restarting sshd
        answers (refused, no SSH banner yet) until the connect deadline; refusals that retrying cannot
        change (host key, authentication) fail at once."""
        deadline = self.cluster.ssh.connect_timeout
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(deadline),
            reraise=True,
            wait=tenacity.wait_exponential(multiplier=0.2, max=2),
            retry=tenacity.retry_if_exception(_transient),
        ):
            with attempt:
                conn.open()

    def transport(self, node: NodeSpec) -> Transport:
        """How commands reach this node: this machine's processes, or SSH (one connection, opened on first
        use). The one place that looks at `transport:`."""
        if node.label not in self._transports:
            made: Transport
            if node.transport == "local":
                made = LocalTransport(node.label)
            else:
                made = SshTransport(node.label, lambda: self.open(node), self.cluster.ssh, node)
            self._transports[node.label] = made
        return self._transports[node.label]

    def run(self, node: NodeSpec, argv: list[str], timeout: float = 120, check: bool = True) -> Ran:
        """Run argv on a node (quoted with shlex.join: no user value reaches a shell unquoted)."""
        return self.transport(node).run(argv, timeout, check)

    def stream(self, node: NodeSpec, argv: list[str]) -> int:
        """Run argv with its output going straight to ours (logs -f); returns its exit status."""
        return self.transport(node).stream(argv)

    def feed(self, node: NodeSpec, argv: list[str], write: Callable[[IO[bytes]], None]) -> Ran:
        """Run argv on the node with `write` producing its standard input (a tar stream: bytes go to the
        node as they are made, nothing is staged on disk)."""
        return self.transport(node).feed(argv, write)

    def home(self, node: NodeSpec) -> str:
        """The user's home directory on the node (asked once)."""
        return self.transport(node).home()

    def put(self, node: NodeSpec, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file, or a directory tree, to `remote` on the node."""
        self.transport(node).put(local, remote, mode)

    def put_text(self, node: NodeSpec, text: str, remote: str, mode: int = 0o600) -> None:
        """Write `text` to a new file on the node, created with `mode` before any byte is written."""
        self.transport(node).put_text(text, remote, mode)

    def each(self, fn: Callable[[NodeSpec], T], nodes: list[NodeSpec] | None = None) -> HostResults[T]:
        """Run fn per node, at most `ssh.parallel` at once; one Outcome per node, in node order. Only
        node errors (NODE_ERRORS) are captured; a bug in fn propagates."""
        chosen = nodes if nodes is not None else self.cluster.ordered()

        def one(node: NodeSpec) -> Outcome[T]:
            start = time.monotonic()
            try:
                return Outcome(node=node, value=fn(node), seconds=time.monotonic() - start)
            except NODE_ERRORS as e:
                return Outcome(node=node, error=e, seconds=time.monotonic() - start)

        if not chosen:
            return HostResults(())
        with ThreadPoolExecutor(max_workers=max(1, min(self.cluster.ssh.parallel, len(chosen)))) as pool:
            return HostResults(tuple(pool.map(one, chosen)))

    def close(self) -> None:
        for c in self._conns.values():
            with contextlib.suppress(Exception):
                c.close()
        self._conns.clear()


def _transient(e: BaseException) -> bool:
    if isinstance(e, paramiko.BadHostKeyException | paramiko.AuthenticationException):
        return False
    if isinstance(e, ConnectionRefusedError | paramiko.ssh_exception.NoValidConnectionsError):
        return True
    return isinstance(e, paramiko.SSHException) and "protocol banner" in str(e)


def name_of(node: NodeSpec) -> str:
    return f"{node.address}:{node.port}" if node.port != 22 else node.address

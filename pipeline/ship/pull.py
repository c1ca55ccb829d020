"""How a node pulls the image from the loopback registry: through an SSH remote forward, so it sees the
registry at its own 127.0.0.1:PORT (Docker trusts loopback registries without TLS).

With a system ssh, OpenSSH carries the forward (it encrypts several times faster than paramiko). Its
connection is opened while the image is still being pushed, and the node waits for a line on stdin
before pulling, so the SSH handshake costs nothing once the registry is ready. Without one, our own
relay on the paramiko connection carries it.
"""

from __future__ import annotations

import collections
import contextlib
import shlex
import subprocess
import threading
from collections.abc import Callable

from pipeline.config.cluster import NodeSpec
from pipeline.engines.identity import FORMAT
from pipeline.errors import HostError
from pipeline.nodes.hosts import Hosts
from pipeline.nodes.openssh import run_argv
from pipeline.nodes.tunnel import RemoteForward

# On the node, one command: pull through the tunnel ($1), name the image as the deploy knows it ($2), drop
# the registry's name, and print what the image's content ID is made of (the last line, engines/identity.py)
# for the caller to check.
PULL = (
    'docker pull "$1" && docker tag "$1" "$2" && docker rmi "$1" >/dev/null && docker image inspect --format "$3" "$2"'
)


# The last line the node prints: the pull's exit status. ssh itself ends only when every forwarded
# connection has closed, and Docker 28 on the containerd store keeps its idle keep-alive connections to
# the registry open for about 30 s after the pull (measured): the status line ends the wait instead.
DONE = "@@spark-pipeline-pull@@"


def pull_argv(ref: str, image: str, wait: bool = False) -> list[str]:
    """The node's command; the names and the format are arguments, never part of the script. With
    `wait`, it first reads one line (the go-ahead) from stdin and does nothing if stdin closes instead."""
    script = f'{"read -r go && " if wait else ""}{{ {PULL}; }}; echo "{DONE} $?"'
    return ["sh", "-c", script, "sh", ref, image, FORMAT]


class OpenSshPull:
    """One node's pull over `ssh -R`: opened early, started by go(), followed to the end by follow()."""

    def __init__(self, hosts: Hosts, node: NodeSpec, port: int, ref: str, image: str):
        self.node = node
        self.command = pull_argv(ref, image)
        forward = f"127.0.0.1:{port}:127.0.0.1:{port}"
        argv = run_argv(
            node, hosts.cluster.ssh, pull_argv(ref, image, wait=True), "-o", "ExitOnForwardFailure=yes", "-R", forward
        )
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )

    def go(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # ssh already ended: follow() reports why
            self.proc.stdin.write("go\n")
            self.proc.stdin.close()

    def abandon(self) -> None:
        """Never pull (the push failed): stdin closes, the node's `read` fails, ssh ends."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def follow(self, sizes: dict[str, int], timeout: float, progress: Callable[[int], None]) -> tuple[int, str]:
        """Wait for the pull; returns the bytes of the layers the node pulled (those it lacked, by the
        sizes of `docker pull`'s short IDs) and the end of its output."""
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        received, tail = 0, collections.deque[str](maxlen=20)
        code: int | None = None
        try:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                if line.startswith(DONE):
                    word = line[len(DONE) :].strip()
                    code = int(word) if word.isdecimal() else 1
                    break
                tail.append(line)
                short, _, status = line.partition(": ")
                if status.strip() == "Pull complete":
                    received += sizes.get(short.strip(), 0)
                    progress(received)
        finally:
            timer.cancel()
            if code is not None:  # the pull has ended: only idle forwarded connections keep ssh open
                self.proc.terminate()
            ended = self.proc.wait()
            code = ended if code is None else code
        if code != 0:
            why = f"no end within {timeout:.0f} s" if expired.is_set() else f"exit {code}"
            raise HostError(
                self.node.label,
                f"docker pull through the SSH tunnel failed ({why})",
                command=shlex.join(self.command),
                tail="".join(tail).strip(),
            )
        return received, "".join(tail)


def paramiko_pull(
    hosts: Hosts, node: NodeSpec, port: int, ref: str, image: str, timeout: float, progress: Callable[[int], None]
) -> tuple[int, str]:
    """The pull through our own relay on the paramiko connection (no system ssh here); returns the bytes
    that crossed the relay and the command's output."""
    transport = hosts.open(node).client.get_transport()
    if transport is None:
        raise HostError(node.label, "the SSH connection closed before the pull")
    try:
        with RemoteForward(transport, port, port) as fwd:
            done = threading.Event()

            def report() -> None:
                while not done.wait(0.5):
                    progress(fwd.bytes_to_node)

            reporter = threading.Thread(target=report, daemon=True)
            reporter.start()
            try:
                ran = hosts.run(node, pull_argv(ref, image), timeout=timeout)
            finally:
                done.set()
                reporter.join()
            out, found, status = ran.stdout.rpartition(DONE)
            if not found or status.strip() != "0":
                raise HostError(
                    node.label,
                    f"docker pull through the SSH tunnel failed (exit {status.strip() if found else 'unknown'})",
                    command=shlex.join(pull_argv(ref, image)),
                    tail=(ran.stdout + ran.stderr).strip()[-2000:],
                )
            return fwd.bytes_to_node, out
    except OSError as e:
        raise HostError(node.label, str(e)) from None

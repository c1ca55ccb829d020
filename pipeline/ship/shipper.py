"""Shipping the runtime image to the nodes: only the layers a node lacks.

registry (default): nodes whose image ID already matches are skipped; otherwise the image is pushed to a
registry on this machine's loopback (only new blobs travel there), and every node, in parallel, pulls it
through an SSH remote forward, so it sees the registry at its own localhost:PORT (Docker trusts loopback
registries without TLS) and downloads only the layers it lacks. Then it is tagged as the deploy's image
name and its ID is verified.

stream (`--ship stream`, the toolkit's way): one `docker save`, fanned out over SSH channels to
`docker load` on every node that needs it. Always the whole image.

Why the registry even for a node that has nothing yet: Docker recognises a layer it already has at pull
time only by the digest it was pulled under. Layers that arrived by `docker load` carry no such record, so
after one stream ship every later pull downloads the whole image again (measured on 20.10: 29 MB instead
of a 4 MB changed layer). The push to the registry is not `docker push`, which gzips every layer first,
but `ship/push.py`: the layers as `docker save` wrote them, uncompressed, so a cold ship costs no
compression here and no decompression on the nodes.
"""

from __future__ import annotations

import fcntl
import functools
import queue
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config.cluster import NodeSpec
from pipeline.engines.docker import Docker
from pipeline.engines.identity import FORMAT, content_id
from pipeline.errors import ConfigError, HostError
from pipeline.nodes.hosts import HostResults, Hosts, Outcome
from pipeline.ship.oci_layout import push_form
from pipeline.ship.pull import OpenSshPull, paramiko_pull
from pipeline.ship.push import RegistryPush, start_save, stop_save
from pipeline.ship.registry import Registry, holds, mark_held


@dataclass
class ShipResult:
    node: NodeSpec
    status: Literal["skipped", "shipped", "failed"]
    bytes: int = 0
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class ShipPlan:
    """What a ship will do, decided from each node's answer before a byte moves: `--dry-run` prints it."""

    image: str
    local_id: str
    mode: str
    decided: tuple[ShipResult, ...]  # nodes that need nothing (skipped) or could not be asked (failed)
    todo: tuple[NodeSpec, ...]  # nodes that lack the image, in node order
    order: tuple[str, ...]  # every node's label, in node order

    def lines(self) -> list[str]:
        out = [f"{r.node.label}: nothing to do, because {r.detail}" for r in self.decided if r.status == "skipped"]
        out += [f"{r.node.label}: cannot ship: {r.detail}" for r in self.decided if r.status == "failed"]
        out += [
            f"{n.label}: ship {self.image} ({self.local_id[7:19]}) by {self.mode}, only the layers it lacks"
            for n in self.todo
        ]
        return out


def registry_name(image: str, port: int) -> str:
    """`vllm-node` -> `localhost:5000/vllm-node:latest` (the name nodes pull through their tunnel)."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    return f"localhost:{port}/{name}:{tag or 'latest'}"


def remote_image_id(hosts: Hosts, node: NodeSpec, image: str) -> str:
    """The node's image by content ID (engines/identity.py): a node on the other image store has another
    `.Id` for the same image."""
    ran = hosts.run(node, ["docker", "image", "inspect", "--format", FORMAT, image], check=False, timeout=60)
    return content_id(ran.stdout) if ran.status == 0 else ""


class Shipper:
    def __init__(
        self,
        hosts: Hosts,
        docker: Docker,
        workdir: Path,
        port: int,
        progress: Callable[[str, int], None] | None = None,
        pull_timeout: float = 3600,
    ):
        self.hosts = hosts
        self.docker = docker
        self.workdir = workdir
        self.port = port
        self.progress = progress or (lambda node, n: None)
        self.pull_timeout = pull_timeout
        self._form: str | None = None

    def ship(self, image: str, nodes: list[NodeSpec], mode: str = "registry", force: bool = False) -> list[ShipResult]:
        """Every node gets `image`; nodes whose image ID already matches are skipped (unless force).
        `docker save` starts while the nodes are asked (its first byte comes only after Docker exported
        the whole image)."""
        save = self._early_save(image, self._local_id(image), mode)
        try:
            return self.apply(self.plan(image, nodes, mode, force), save)
        finally:
            stop_save(save)

    def plan(self, image: str, nodes: list[NodeSpec], mode: str = "registry", force: bool = False) -> ShipPlan:
        """Ask each node for its image ID; decide which nodes lack the image. Moves nothing."""
        local_id = self._local_id(image)
        decided: list[ShipResult] = []
        todo: list[NodeSpec] = []
        for o in self.hosts.each(lambda n: remote_image_id(self.hosts, n, image), nodes):
            if not o.ok:
                decided.append(ShipResult(o.node, "failed", detail=str(o.error)))
            elif o.node.transport == "local":  # the image is built here: this machine has it already
                decided.append(ShipResult(o.node, "skipped", detail="this machine"))
            elif o.value == local_id and not force:
                decided.append(ShipResult(o.node, "skipped", detail="same image"))
            else:
                todo.append(o.node)
        return ShipPlan(image, local_id, mode, tuple(decided), tuple(todo), tuple(n.label for n in nodes))

    def apply(self, plan: ShipPlan, save: subprocess.Popen[bytes] | None = None) -> list[ShipResult]:
        results = {r.node.label: r for r in plan.decided}
        for r in self._transfer(plan.image, plan.local_id, list(plan.todo), plan.mode, save):
            results[r.node.label] = r
        return [results[label] for label in plan.order]

    def ship_to(self, image: str, nodes: list[NodeSpec], mode: str) -> HostResults[ShipResult]:
        """Ship to exactly these nodes (deploy decided from its facts that they lack the image)."""
        local_id = self._local_id(image)
        save = self._early_save(image, local_id, mode) if nodes else None
        try:
            results = self._transfer(image, local_id, nodes, mode, save)
        finally:
            stop_save(save)
        return HostResults(
            tuple(
                Outcome(r.node, value=r)
                if r.status != "failed"
                else Outcome(r.node, error=HostError(r.node.label, r.detail))
                for r in results
            )
        )

    def _local_id(self, image: str) -> str:
        local_id = self.docker.content_id(image)
        if not local_id:
            raise ConfigError(f"image {image} is not in the local Docker; build it first (python -m pipeline build)")
        return local_id

    def _early_save(self, image: str, local_id: str, mode: str) -> subprocess.Popen[bytes] | None:
        """`docker save` started while the nodes are asked (its first byte comes only after Docker has
        exported the whole image), when the registry has never held this image and the push reads it."""
        if mode != "registry" or holds(self.workdir / "registry", local_id) or self._push_form() != "uncompressed":
            return None
        return start_save(self.docker, image)

    def _push_form(self) -> str:
        if self._form is None:
            self._form = push_form(
                self.docker.run("info", "--format", "{{json .DriverStatus}}", check=False, timeout=60).stdout
            )
        return self._form

    def _transfer(
        self, image: str, local_id: str, nodes: list[NodeSpec], mode: str, save: subprocess.Popen[bytes] | None
    ) -> list[ShipResult]:
        if not nodes:
            return []
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"ship-{self.port}.lock").open("w") as lock:
            # One ship at a time per port: a node accepts only one remote forward on a port.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if mode == "registry":
                return self._registry(image, local_id, nodes, save)
            return self._stream(image, local_id, nodes)

    # --- registry + tunnels -----------------------------------------------------------------------
    def _registry(
        self, image: str, local_id: str, nodes: list[NodeSpec], save: subprocess.Popen[bytes] | None
    ) -> list[ShipResult]:
        ref = registry_name(image, self.port)
        with Registry(self.workdir / "registry", self.port):
            early = {
                n.label: OpenSshPull(self.hosts, n, self.port, ref, image)
                for n in nodes
                if n.transport == "ssh" and shutil.which("ssh")
            }
            try:
                sizes = self._push(image, local_id, ref, save)
            except BaseException:
                for tunnel in early.values():
                    tunnel.abandon()
                raise
            try:
                outcomes = self.hosts.each(
                    lambda n: self._pull(n, early.get(n.label), image, ref, local_id, sizes), nodes
                )
            finally:
                for tunnel in early.values():  # each has ended by now, unless interrupted
                    tunnel.abandon()
        return [o.value if o.value is not None else ShipResult(o.node, "failed", detail=str(o.error)) for o in outcomes]

    def _push(self, image: str, local_id: str, ref: str, save: subprocess.Popen[bytes] | None) -> dict[str, int]:
        """Put the image into the loopback registry; returns its layers' sizes by short ID."""
        pusher = RegistryPush(
            self.docker, f"127.0.0.1:{self.port}", progress=lambda n: self.progress("registry (uncompressed)", n)
        )
        at = ref.replace("localhost:", "127.0.0.1:", 1)
        if self._push_form() == "docker push":  # the containerd image store: its blobs go as they are stored
            self.docker.run("tag", image, ref)
            try:
                self.docker.run("push", ref, timeout=self.pull_timeout)
            finally:
                self.docker.run("rmi", ref, check=False)
        else:
            pusher.push(image, at, save)
            mark_held(self.workdir / "registry", local_id)
        return pusher.layer_sizes(at)

    def _pull(
        self, node: NodeSpec, tunnel: OpenSshPull | None, image: str, ref: str, local_id: str, sizes: dict[str, int]
    ) -> ShipResult:
        start = time.monotonic()
        progress = functools.partial(self.progress, node.label)
        if tunnel is not None:
            tunnel.go()
            received, out = tunnel.follow(sizes, self.pull_timeout, progress)
        else:
            received, out = paramiko_pull(self.hosts, node, self.port, ref, image, self.pull_timeout, progress)
        got = content_id(out.strip().rsplit("\n", 1)[-1])
        if got != local_id:
            raise HostError(node.label, f"after the pull, {image} is {got[:19] or 'missing'}, expected {local_id[:19]}")
        self.progress(node.label, received)
        return ShipResult(node, "shipped", bytes=received, seconds=time.monotonic() - start, detail="registry pull")

    # --- stream (the toolkit's way) ---------------------------------------------------------------
    def _stream(self, image: str, local_id: str, nodes: list[NodeSpec]) -> list[ShipResult]:
        start = time.monotonic()
        queues: dict[str, queue.Queue[bytes | None]] = {n.label: queue.Queue(maxsize=16) for n in nodes}
        sent = dict.fromkeys(queues, 0)
        errors: dict[str, str] = {}
        threads = [
            threading.Thread(target=self._load_on, args=(n, queues[n.label], sent, errors), daemon=True) for n in nodes
        ]
        for t in threads:
            t.start()
        producer = subprocess.Popen(self.docker.cmd("save", image), stdout=subprocess.PIPE)
        try:
            while chunk := producer.stdout.read(1 << 20):  # type: ignore[union-attr]
                for q in queues.values():
                    q.put(chunk)
        finally:
            for q in queues.values():
                q.put(None)
            for t in threads:
                t.join()
            producer.wait()
        return [
            self._loaded(n, image, local_id, sent[n.label], errors.get(n.label), time.monotonic() - start)
            for n in nodes
        ]

    def _load_on(
        self, node: NodeSpec, q: queue.Queue[bytes | None], sent: dict[str, int], errors: dict[str, str]
    ) -> None:
        """Feed the chunks of `docker save` into `docker load` on one node, over a raw SSH channel
        (invoke's in_stream reads 1 byte at a time)."""
        try:
            chan = self.hosts.open(node).create_session()
            chan.exec_command(shlex.join(["docker", "load"]))
            while (data := q.get()) is not None:
                chan.sendall(data)
                sent[node.label] += len(data)
                self.progress(node.label, sent[node.label])
            chan.shutdown_write()
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            if chan.recv_exit_status() != 0:
                errors[node.label] = f"docker load failed: {err.strip()[-500:]}"
            chan.close()
        except Exception as e:  # any failure, ours included: keep draining, or the producer blocks forever
            errors[node.label] = str(e)
            while q.get() is not None:
                pass

    def _loaded(
        self, node: NodeSpec, image: str, local_id: str, nbytes: int, error: str | None, seconds: float
    ) -> ShipResult:
        if error is not None:
            return ShipResult(node, "failed", bytes=nbytes, detail=error)
        got = remote_image_id(self.hosts, node, image)
        if got != local_id:
            return ShipResult(
                node, "failed", bytes=nbytes, seconds=seconds, detail=f"image ID after load is {got[:19]}"
            )
        return ShipResult(node, "shipped", bytes=nbytes, seconds=seconds, detail="docker save | docker load")

"""Deploy done: run the commands `steps.py` decided, phase by phase, nodes in parallel, and wait on
real signals with deadlines.

While it waits (Ray sees every node; /health and /v1/models answer on the head) it watches every
node: when one rank's process or container ends, or a node's Docker stops answering, the launch fails
at once naming that node (the other ranks would otherwise hang until their own timeout).
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pipeline.config.cluster import NodeSpec
from pipeline.contract import EXIT_FILE, is_env_name, is_one_line
from pipeline.errors import ConfigError, HostError, LaunchFailed
from pipeline.launch.plan import LaunchPlan
from pipeline.launch.scripts import probe_argv
from pipeline.launch.secrets import Secrets
from pipeline.launch.startup import DEFAULT_DEADLINES, LABELS, Seen, progress
from pipeline.launch.steps import (
    WAITS,
    Command,
    DeploySteps,
    NodeSteps,
    Phase,
    Run,
    Ship,
    Upload,
    WaitRay,
    WaitReady,
    WriteSecrets,
)
from pipeline.nodes.hosts import HostResults
from pipeline.nodes.transport import Ran
from pipeline.report import Reporter

T = TypeVar("T")
NodeStatus = Literal["pending", "started", "ready", "failed", "skipped"]
# Constant script; the container name arrives as $1.
WATCH = (
    'docker inspect -f "{{.State.Running}}" "$1" 2>&1 || true; echo "@@"; '
    f'docker exec "$1" cat {EXIT_FILE} 2>/dev/null || true'
)


class Transport(Protocol):
    """How commands reach nodes: SSH (hosts.Hosts) or, in tests, a double that expects each command."""

    def run(self, node: NodeSpec, argv: list[str], timeout: float = 120, check: bool = True) -> Ran: ...

    def put(self, node: NodeSpec, local: Path, remote: str, mode: int | None = None) -> None: ...

    def put_text(self, node: NodeSpec, text: str, remote: str, mode: int = 0o600) -> None: ...

    def each(self, fn: Callable[[NodeSpec], T], nodes: list[NodeSpec] | None = None) -> HostResults[T]: ...


class Shipper(Protocol):
    def ship_to(self, image: str, nodes: list[NodeSpec], mode: str) -> HostResults[Any]: ...


@dataclass
class NodeState:
    status: NodeStatus = "pending"
    detail: str = ""
    log_tail: str = ""


@dataclass
class Deployment:
    plan: LaunchPlan
    by_name: dict[str, NodeSpec]
    states: dict[str, NodeState] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # containers this run started (Ctrl-C stops only these)
    phases: list[tuple[str, float]] = field(default_factory=list)  # (startup phase, seconds) as the wait saw them

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(node, role, status, detail) for the per-node result table."""
        out: list[tuple[str, str, str, str]] = []
        for n in self.plan.nodes:
            st = self.states.get(n.name, NodeState())
            out.append((n.name, n.role, st.status, st.detail))
        return out


def env_file_text(values: dict[str, str]) -> str:
    """A docker --env-file: one NAME=VALUE a line. A name or value with a line break would start a line of
    its own (a second variable: LD_PRELOAD=…), so it is refused here, where the file is written."""
    for name, value in values.items():
        if not is_env_name(name) or not is_one_line(value):
            raise ConfigError(
                f"secret {name!r}: names are letters, digits and _, and values are one line "
                "(a line break would add a variable to the env file)"
            )
    return "".join(f"{k}={v}\n" for k, v in values.items())


def http_ok(url: str, timeout: float = 2, api_key: str = "") -> tuple[bool, str]:
    """GET url (no proxy); with an API key, as vLLM's --api-key wants it (a Bearer token)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with opener.open(request, timeout=timeout) as r:
            body = r.read(65536).decode(errors="replace")
            return r.status == 200, body
    except OSError as e:
        return False, str(e)


def answers_here(url: str, api_key: str = "") -> tuple[bool, str]:
    """Whether the server at url answers from this machine: /health, then /v1/models with the key; and why
    not."""
    ok, body = http_ok(f"{url}/health")
    if not ok:
        return False, f"/health: {body[:200]}"
    ok, body = http_ok(f"{url}/v1/models", api_key=api_key)
    return ok, "" if ok else f"/v1/models: {body[:200]}"


def node_answers(hosts: Transport, node: NodeSpec, container: str, port: int) -> tuple[bool, str]:
    """Whether the server answers on its own node (scripts.PROBE: whichever address it listens on, with the
    container's own API key), and why not."""
    ran = hosts.run(node, probe_argv(container, port), check=False, timeout=20)
    return ran.status == 0, (ran.stdout + ran.stderr).strip()


def ray_alive_nodes(status_text: str) -> int:
    """Count the nodes under "Active:" in `ray status`."""
    active = status_text.split("Active:", 1)[1] if "Active:" in status_text else ""
    active = re.split(r"\n\s*(Pending|Recent failures):", active, maxsplit=1)[0]
    return len(re.findall(r"^\s*\d+\s+node_", active, flags=re.M))


def container_state(hosts: Transport, node: NodeSpec, name: str) -> tuple[str, str]:
    """(running: 'true' | 'false' | 'missing' | 'docker-down: …', exit status or '')."""
    ran = hosts.run(node, ["sh", "-c", WATCH, "sh", name], check=False, timeout=20)
    head, _, tail = ran.stdout.partition("@@")
    running = head.strip()
    if "No such object" in running or "No such container" in running:
        running = "missing"
    elif running not in ("true", "false"):
        running = "docker-down: " + (running.splitlines() or ["no answer"])[-1]
    return running, tail.strip()


def log_tail(hosts: Transport, node: NodeSpec, name: str, lines: int = 20) -> str:
    ran = hosts.run(node, ["docker", "logs", "--tail", str(lines), name], check=False, timeout=20)
    return (ran.stdout + ran.stderr).strip()


class Applier:
    """Runs a DeploySteps list on the nodes."""

    def __init__(
        self,
        hosts: Transport,
        shipper: Shipper,
        container: str,
        reporter: Reporter,
        secrets: Secrets | None = None,
        poll: float = 1.0,
        deadlines: dict[str, float] | None = None,
    ):
        self.hosts = hosts
        self.shipper = shipper
        self.container = container
        self.report = reporter
        self.secrets = secrets or Secrets()
        self.poll = poll
        self.deadlines = {**DEFAULT_DEADLINES, **(deadlines or {})}

    def apply(self, todo: DeploySteps, dep: Deployment, deadline: float) -> float:
        """Run every phase; returns when the server answered (monotonic). Raises LaunchFailed."""
        answered = 0.0
        for i, phase in enumerate(todo.phases, 1):
            self.report.step(i, len(todo.phases), phase.title)
            if phase.name == "ship":
                self._ship(phase, dep)
                continue
            waits = [c for n in phase.nodes for c in n.commands if isinstance(c, WAITS)]
            if waits:
                answered = self._wait(waits[0], dep, deadline)
                continue
            self._run_phase(phase, dep)
        for n in dep.plan.nodes:
            dep.states[n.name] = NodeState("ready")
        return answered

    # --- phases -----------------------------------------------------------------------------------
    def _ship(self, phase: Phase, dep: Deployment) -> None:
        ships = {n.node: n.commands[0] for n in phase.nodes if n.commands}
        if not ships:
            return
        first = next(iter(ships.values()))
        assert isinstance(first, Ship)
        failed = self.shipper.ship_to(first.image, [dep.by_name[k] for k in ships], first.mode).failed
        if failed:
            for k, v in failed.items():
                dep.states[k] = NodeState("failed", f"ship: {v}")
            raise LaunchFailed(f"shipping failed on {', '.join(failed)}", failed, dep)

    def _run_phase(self, phase: Phase, dep: Deployment) -> None:
        work = {n.node: n for n in phase.nodes if n.commands}
        if not work:
            return
        results = self.hosts.each(
            lambda node: self._node(work[node.label], node, dep), [dep.by_name[name] for name in work]
        )
        failed = results.failed
        for o in results:
            if not o.ok:
                dep.states[o.node.label] = NodeState("failed", f"{phase.name}: {o.reason}", str(o.error))
        if failed:
            raise LaunchFailed(
                f"{phase.name} failed on {', '.join(failed)}", {k: f"{phase.name}: {v}" for k, v in failed.items()}, dep
            )

    def _node(self, steps: NodeSteps, node: NodeSpec, dep: Deployment) -> None:
        error: BaseException | None = None
        for c in steps.commands:
            if error is not None and not c.always:
                continue
            try:
                self._command(c, node, dep)
            except (HostError, OSError) as e:
                error = error or e
        if error is not None:
            raise error

    def _command(self, c: Command, node: NodeSpec, dep: Deployment) -> None:
        match c:
            case Run():
                ran = self.hosts.run(node, list(c.argv), timeout=c.timeout, check=False)
                if c.check and ran.status != 0:
                    raise HostError(
                        node.label,
                        c.failure or "command failed",
                        command=c.show(),
                        remote_status=ran.status,
                        tail=(ran.stdout + ran.stderr).strip(),
                    )
                if c.starts_container:
                    dep.started.append(node.label)
                    dep.states[node.label] = NodeState("started")
            case Upload():
                self.hosts.put(node, Path(c.source), c.dest)
            case WriteSecrets():
                values = self.secrets.for_node(node.label)
                self.hosts.put_text(node, env_file_text({k: values[k] for k in c.names if k in values}), c.dest, 0o600)
            case Ship() | WaitRay() | WaitReady():
                raise ValueError(f"{c.kind} is a phase of its own, not a node command")

    # --- waits ------------------------------------------------------------------------------------
    def _wait(self, c: Command, dep: Deployment, deadline: float) -> float:
        match c:
            case WaitRay():
                self.wait_ray(dep, c.count, deadline)
                return 0.0
            case WaitReady():
                return self.wait_ready(dep, c, deadline)
        raise ValueError(f"{c.kind} is not a wait")

    def ended_nodes(self, nodes: list[NodeSpec]) -> dict[str, str]:
        """Node -> why, for every node whose container or started process has ended, or that no longer
        answers; empty while all are alive."""
        dead: dict[str, str] = {}
        for o in self.hosts.each(lambda n: container_state(self.hosts, n, self.container), nodes):
            if not o.ok:
                dead[o.node.label] = f"unreachable: {o.reason}"
                continue
            running, status = o.result
            if running != "true":
                dead[o.node.label] = f"container {running}"
            elif status:
                dead[o.node.label] = f"its process exited with status {status}"
        return dead

    def _fail_if_ended(self, dep: Deployment, what: str) -> None:
        dead = self.ended_nodes([dep.by_name[n.name] for n in dep.plan.nodes])
        if not dead:
            return
        for name, why in dead.items():
            tail = ""
            with contextlib.suppress(HostError, OSError):
                tail = log_tail(self.hosts, dep.by_name[name], self.container)
            dep.states[name] = NodeState("failed", why, tail)
        raise LaunchFailed(f"{what}{', '.join(dead)}: {'; '.join(dead.values())}", dead, dep)

    def wait_ready(self, dep: Deployment, c: WaitReady, deadline: float) -> float:
        """Until /health and /v1/models answer (from here, or on the head when the server listens on its
        loopback only), phase by phase (startup.py: each has its deadline, and the head's log says which
        one it is in); fails at once when any node's process or container ends or its Docker stops
        answering. Returns when the server answered (monotonic)."""
        last_error = "no answer yet"
        next_watch = 0.0
        head = dep.by_name[dep.plan.head.name]
        seen, since = Seen("start", "no output yet"), time.monotonic()
        while True:
            ok, why = (
                node_answers(self.hosts, head, self.container, c.port)
                if c.on_node
                else answers_here(c.url, self.secrets.common.get("VLLM_API_KEY", ""))
            )
            now = time.monotonic()
            if ok:
                seen, since = self._read_phase(dep, head, seen, since, now)  # the phase it answered in
                self._phase_done(dep, seen.phase, now - since)
                return now
            last_error = why
            if now >= next_watch:
                next_watch = now + self.poll
                self._fail_if_ended(dep, "")
                seen, since = self._read_phase(dep, head, seen, since, now)
                self._check_phase(dep, seen, now - since)
            if now > deadline:
                self._timed_out(dep, f"{last_error}; {LABELS[seen.phase]}, last seen: {seen.detail}")
            time.sleep(self.poll if c.on_node else 0.2)

    def _read_phase(self, dep: Deployment, head: NodeSpec, seen: Seen, since: float, now: float) -> tuple[Seen, float]:
        """The phase the head's log shows, and since when; a phase left behind is reported with its time."""
        with contextlib.suppress(HostError, OSError):
            new = progress(log_tail(self.hosts, head, self.container, 400), seen.phase)
            if new.phase != seen.phase:
                self._phase_done(dep, seen.phase, now - since)
                since = now
            seen = new
        return seen, since

    def _check_phase(self, dep: Deployment, seen: Seen, spent: float) -> None:
        """A phase past its own deadline fails the launch, naming it and what the log last said."""
        limit = self.deadlines[seen.phase]
        if spent > limit:
            self._timed_out(
                dep,
                f"{LABELS[seen.phase]} took longer than {limit:.0f} s (--phase-timeout {seen.phase}=SECONDS); "
                f"last seen: {seen.detail}",
            )

    def _phase_done(self, dep: Deployment, phase: str, seconds: float) -> None:
        dep.phases.append((phase, round(seconds, 1)))
        self.report.say(f"{LABELS[phase]}: {seconds:.0f} s", "note")

    def _timed_out(self, dep: Deployment, last_error: str) -> None:
        for n in dep.plan.nodes:
            st = dep.states.setdefault(n.name, NodeState())
            if st.status != "failed":
                with contextlib.suppress(HostError, OSError):
                    st.log_tail = log_tail(self.hosts, dep.by_name[n.name], self.container)
                st.detail = st.detail or f"not ready: {last_error}"
        head = dep.plan.head.name
        raise LaunchFailed(f"the server on {head} did not answer: {last_error}", {head: last_error}, dep)

    def wait_ray(self, dep: Deployment, want: int, deadline: float) -> None:
        head = dep.by_name[dep.plan.head.name]
        seen = 0
        while time.monotonic() < deadline:
            ran = self.hosts.run(head, ["docker", "exec", self.container, "ray", "status"], check=False, timeout=30)
            seen = ray_alive_nodes(ran.stdout)
            if seen >= want:
                return
            self._fail_if_ended(dep, "Ray ended before the cluster formed on ")
            time.sleep(self.poll)
        raise LaunchFailed(f"Ray sees {seen} of {want} nodes after the deadline", {head.label: "ray"}, dep)

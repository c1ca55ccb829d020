"""Applying a launch plan with Fabric, nodes in parallel, waiting on real signals with deadlines.

Ship the image, start the idle keepalive containers, apply mods, then start the cluster (Ray: head,
workers, wait until Ray sees every node, then the command; no-Ray: the command on every node, workers
first; solo: the command). Then wait until /health and /v1/models answer on the head, watching every
node meanwhile: when one rank's process or container ends, or a node's Docker stops answering, the
launch fails at once naming that node (the other ranks would otherwise hang until their own timeout).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.deploy.hosts import HostError, Hosts
from pipeline.deploy.launch import EXIT_FILE, Plan
from pipeline.deploy.mods import Mod, apply_mod
from pipeline.errors import PipelineError
from pipeline.spec.cluster import NodeSpec

# Constant scripts; the container name arrives as $1.
WATCH = ('docker inspect -f "{{.State.Running}}" "$1" 2>&1 || true; echo "@@"; '
         f'docker exec "$1" cat {EXIT_FILE} 2>/dev/null || true')


class LaunchFailed(PipelineError):
    def __init__(self, message: str, failures: dict[str, str]):
        self.failures = failures
        self.dep: Deployment | None = None  # set by the deploy that failed, for its per-node table
        super().__init__(message)


@dataclass
class NodeState:
    status: str = "pending"  # pending | started | ready | failed | skipped
    detail: str = ""
    log_tail: str = ""


@dataclass
class Deployment:
    plan: Plan
    by_name: dict[str, NodeSpec]
    states: dict[str, NodeState] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)  # containers this run started (Ctrl-C stops only these)


def http_ok(url: str, timeout: float = 2) -> tuple[bool, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            body = r.read(65536).decode(errors="replace")
            return r.status == 200, body
    except OSError as e:
        return False, str(e)


def ray_alive_nodes(status_text: str) -> int:
    """Count the nodes under "Active:" in `ray status`."""
    active = status_text.split("Active:", 1)[1] if "Active:" in status_text else ""
    active = re.split(r"\n\s*(Pending|Recent failures):", active, maxsplit=1)[0]
    return len(re.findall(r"^\s*\d+\s+node_", active, flags=re.M))


class Applier:
    def __init__(self, hosts: Hosts, name: str, say: Callable[[str], None]):
        self.hosts = hosts
        self.name = name
        self.say = say

    # --- inspection -------------------------------------------------------------------------------
    def container_state(self, node: NodeSpec) -> tuple[str, str]:
        """(running: 'true' | 'false' | 'missing' | 'docker-down: …', exit status or '')."""
        ran = self.hosts.run(node, ["sh", "-c", WATCH, "sh", self.name], check=False, timeout=20)
        head, _, tail = ran.stdout.partition("@@")
        running = head.strip()
        if "No such object" in running or "No such container" in running:
            running = "missing"
        elif running not in ("true", "false"):
            running = "docker-down: " + (running.splitlines() or ["no answer"])[-1]
        return running, tail.strip()

    def deployed_hash(self, node: NodeSpec) -> str:
        ran = self.hosts.run(node, ["docker", "inspect", "-f", '{{index .Config.Labels "io.spark-pipeline.deploy"}}',
                                    self.name], check=False, timeout=20)
        return ran.stdout.strip() if ran.exit_code == 0 else ""

    def log_tail(self, node: NodeSpec, lines: int = 20) -> str:
        ran = self.hosts.run(node, ["docker", "logs", "--tail", str(lines), self.name], check=False, timeout=20)
        return (ran.stdout + ran.stderr).strip()

    def remove(self, node: NodeSpec) -> None:
        self.hosts.run(node, ["docker", "rm", "-f", self.name], check=False, timeout=60)

    # --- steps ------------------------------------------------------------------------------------
    def start_container(self, node: NodeSpec, argv: tuple[str, ...], dirs: list[str], secrets: dict[str, str]) -> None:
        self.hosts.run(node, ["mkdir", "-p", *dirs], timeout=30)
        self.remove(node)
        if secrets:
            self._run_with_env_file(node, argv, secrets)
        else:
            self.hosts.run(node, list(argv), timeout=120)

    def _run_with_env_file(self, node: NodeSpec, argv: tuple[str, ...], secrets: dict[str, str]) -> None:
        """Secret values go to the node in a 0600 file (SFTP), read by `docker run --env-file`, then
        deleted: never in an argv, a log or an image layer."""
        import secrets as pysecrets

        conn = self.hosts.open(node)
        home = self.hosts.run(node, ["sh", "-c", 'printf %s "$HOME"']).stdout or "/root"
        path = f"{home}/.spark-pipeline-env-{pysecrets.token_hex(8)}"
        sftp = conn.sftp()
        try:
            with sftp.file(path, "w") as f:
                f.chmod(0o600)
                f.write("".join(f"{k}={v}\n" for k, v in secrets.items()))
            i = argv.index("run") + 1
            self.hosts.run(node, [*argv[:i], "--env-file", path, *argv[i:]], timeout=120)
        finally:
            with contextlib.suppress(OSError):
                sftp.remove(path)
            sftp.close()

    def exec_start(self, node: NodeSpec, argv: tuple[str, ...]) -> None:
        self.hosts.run(node, ["docker", "exec", self.name, "rm", "-f", EXIT_FILE], check=False, timeout=30)
        self.hosts.run(node, list(argv), timeout=60)


def run_parallel(hosts: Hosts, nodes: list[NodeSpec], fn: Callable[[NodeSpec], object],
                 dep: Deployment, step: str) -> None:
    """fn on every node at once; a failure marks that node and stops the launch after all return."""
    failed: dict[str, str] = {}
    for o in hosts.each(fn, nodes):
        if not o.ok:
            err = o.error
            # Lead with what went wrong (the command's last output lines), not the command line itself.
            why = (err.tail.strip().splitlines() or [str(err)])[-1] if isinstance(err, HostError) and err.tail \
                else str(err).splitlines()[0]
            dep.states[o.node.label] = NodeState("failed", f"{step}: {why}", str(err))
            failed[o.node.label] = f"{step}: {why}"
    if failed:
        raise LaunchFailed(f"{step} failed on {', '.join(failed)}", failed)


def ended_nodes(applier: Applier, nodes: list[NodeSpec]) -> dict[str, str]:
    """Node -> why, for every node whose container or started process has ended, or that no longer
    answers; empty while all are alive."""
    dead: dict[str, str] = {}
    for o in applier.hosts.each(applier.container_state, nodes):
        if not o.ok:
            dead[o.node.label] = f"unreachable: {o.error}"
            continue
        running, status = o.value  # type: ignore[misc]
        if running != "true":
            dead[o.node.label] = f"container {running}"
        elif status:
            dead[o.node.label] = f"its process exited with status {status}"
    return dead


def mark_failed(applier: Applier, dep: Deployment, dead: dict[str, str]) -> None:
    for name, why in dead.items():
        tail = ""
        with contextlib.suppress(Exception):
            tail = applier.log_tail(dep.by_name[name])
        dep.states[name] = NodeState("failed", why, tail)


def wait_ready(applier: Applier, dep: Deployment, deadline: float, poll: float = 1.0) -> float:
    """Until /health and /v1/models answer on the head; fails at once when any node's process or
    container ends or its Docker stops answering. Returns when the server answered (monotonic)."""
    plan = dep.plan
    base = f"http://{plan.head.ip}:{plan.port}"
    nodes = [dep.by_name[n.name] for n in plan.nodes]
    last_error = "no answer yet"
    next_watch = 0.0
    while True:
        ok, body = http_ok(f"{base}/health")
        if ok:
            ok2, body2 = http_ok(f"{base}/v1/models")
            if ok2:
                return time.monotonic()
            last_error = f"/v1/models: {body2[:200]}"
        else:
            last_error = f"/health: {body[:200]}"
        now = time.monotonic()
        if now >= next_watch:
            next_watch = now + poll
            dead = ended_nodes(applier, nodes)
            if dead:
                mark_failed(applier, dep, dead)
                raise LaunchFailed(f"{', '.join(dead)}: {'; '.join(dead.values())}", dead)
        if now > deadline:
            for n in nodes:
                st = dep.states.setdefault(n.label, NodeState())
                if st.status != "failed":
                    with contextlib.suppress(Exception):
                        st.log_tail = applier.log_tail(n)
                    st.detail = st.detail or f"not ready: {last_error}"
            raise LaunchFailed(f"the server on {plan.head.name} did not answer within the deadline "
                               f"({last_error})", {plan.head.name: last_error})
        time.sleep(0.2)


def wait_ray(applier: Applier, dep: Deployment, want: int, deadline: float) -> None:
    head = dep.by_name[dep.plan.head.name]
    seen = 0
    while time.monotonic() < deadline:
        ran = applier.hosts.run(head, ["docker", "exec", applier.name, "ray", "status"], check=False, timeout=30)
        seen = ray_alive_nodes(ran.stdout)
        if seen >= want:
            return
        dead = ended_nodes(applier, [dep.by_name[n.name] for n in dep.plan.nodes])
        if dead:
            mark_failed(applier, dep, dead)
            raise LaunchFailed(f"Ray on {', '.join(dead)} ended before the cluster formed: "
                               f"{'; '.join(dead.values())}", dead)
        time.sleep(1)
    raise LaunchFailed(f"Ray sees {seen} of {want} nodes after the deadline", {dep.plan.head.name: "ray"})


def apply_mods(applier: Applier, dep: Deployment, mods: list[Mod], workdir: str) -> None:
    if not mods:
        return
    nodes = [dep.by_name[n.name] for n in dep.plan.nodes]

    def one(node: NodeSpec) -> None:
        for mod in mods:
            apply_mod(applier.hosts, node, applier.name, mod, workdir)

    run_parallel(applier.hosts, nodes, one, dep, "mods")


def record_failed(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(names)) + "\n")


def read_failed(path: Path) -> list[str]:
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []

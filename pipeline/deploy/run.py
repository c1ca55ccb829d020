"""deploy / stop / status / logs / exec over the cluster's nodes."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.deploy.apply import (
    Applier,
    Deployment,
    LaunchFailed,
    NodeState,
    apply_mods,
    http_ok,
    ray_alive_nodes,
    run_parallel,
    wait_ray,
    wait_ready,
)
from pipeline.deploy.discover import NodeFacts, gather, interfaces
from pipeline.deploy.hosts import Hosts
from pipeline.deploy.image import Shipper
from pipeline.deploy.launch import NodeInput, Options, Plan, plan
from pipeline.deploy.mods import Mod
from pipeline.engines.docker_cli import Docker
from pipeline.spec.cluster import ClusterSpec, NodeSpec
from pipeline.ui import console

WORKDIR = "/workspace/vllm"  # the runtime image's working directory: mods' WORKSPACE_DIR


def ip_on(facts: NodeFacts, iface: str | None) -> str | None:
    if iface and iface in facts.ifaces and facts.ifaces[iface].ipv4:
        return facts.ifaces[iface].ipv4[0][0]
    return None


def node_inputs(facts: list[NodeFacts]) -> tuple[list[NodeInput], list[str]]:
    """NodeInputs from discovery, and the problems that block a launch."""
    problems: list[str] = []
    out = []
    for f, c in zip(facts, interfaces(facts), strict=True):
        if not f.reachable:
            problems.append(f"{f.node.label}: {f.error}")
            continue
        problems += [f"{f.node.label}: {p}" for p in c.problems]
        ip = ip_on(f, c.eth_if)
        if ip is None:
            with contextlib.suppress(ValueError):
                ip = str(ipaddress.ip_address(f.node.address))
        out.append(NodeInput(name=f.node.label, address=f.node.address, eth_if=c.eth_if, ib_if=c.ib_if, ip=ip,
                             extra_env=c.extra_env, home=f.home or "/root", env=tuple(f.node.env.items())))
    return out, problems


@dataclass
class DeployResult:
    plan: Plan
    dep: Deployment
    skipped: bool
    seconds_to_ready: float = 0.0
    answered_at: float = 0.0


class Cluster:
    def __init__(self, spec: ClusterSpec, name: str = "vllm_node"):
        self.spec = spec
        self.hosts = Hosts(spec)
        self.name = name
        self.applier = Applier(self.hosts, name, lambda m: console.print(m, soft_wrap=True))
        self.by_name = {n.label: n for n in spec.nodes}

    def close(self) -> None:
        self.hosts.close()

    def make_plan(self, opts: Options, image: str) -> tuple[Plan, list[NodeFacts]]:
        facts = gather(self.hosts, image)
        nodes, problems = node_inputs(facts)
        if problems:
            raise LaunchFailed("cannot launch:\n" + "\n".join(problems),
                               {p.split(":", 1)[0]: p.split(":", 1)[1].strip() for p in problems})
        local_id = Docker().image_id(image) if not opts.image_id else opts.image_id
        return plan(nodes, Options(**{**opts.__dict__, "image_id": local_id or ""})), facts

    def current(self, p: Plan) -> bool:
        """True when every planned node runs a container with this plan's hash and the server answers."""
        for o in self.hosts.each(lambda n: (self.applier.deployed_hash(n), self.applier.container_state(n)),
                                 [self.by_name[n.name] for n in p.nodes]):
            if not o.ok:
                return False
            digest, (running, status) = o.value  # type: ignore[misc]
            want = next(n.deploy_hash for n in p.nodes if n.name == o.node.label)
            if digest != want or running != "true" or status:
                return False
        return http_ok(f"http://{p.head.ip}:{p.port}/health")[0] and http_ok(f"http://{p.head.ip}:{p.port}/v1/models")[0]

    def deploy(self, p: Plan, opts: Options, mods: list[Mod], ship_mode: str, force: bool, timeout: float,
               ship_workdir: Path, secrets: dict[str, str]) -> DeployResult:
        nodes = [self.by_name[n.name] for n in p.nodes]
        dep = Deployment(plan=p, by_name=self.by_name)
        started = time.monotonic()
        if not force and self.current(p):
            for n in p.nodes:
                dep.states[n.name] = NodeState("skipped", "running, same deploy hash, server answers")
            return DeployResult(p, dep, skipped=True)
        deadline = started + timeout
        try:
            console.print(f"[1/5] ship {opts.image} to {len(nodes)} node(s)")
            shipper = Shipper(self.hosts, Docker(), ship_workdir, self.spec.registry_port)
            failed = {r.node.label: r.detail for r in shipper.ship(opts.image, nodes, mode=ship_mode)
                      if r.status == "failed"}
            if failed:
                for k, v in failed.items():
                    dep.states[k] = NodeState("failed", f"ship: {v}")
                raise LaunchFailed(f"shipping failed on {', '.join(failed)}", failed)
            console.print(f"[2/5] start containers ({p.mode})")
            planned = {n.name: n for n in p.nodes}

            def start(node: NodeSpec) -> None:
                np_ = planned[node.label]
                self.applier.start_container(node, np_.run_argv, list(np_.mkdirs), secrets)
                dep.started.append(node.label)
                dep.states[node.label] = NodeState("started")

            run_parallel(self.hosts, nodes, start, dep, "docker run")
            console.print(f"[3/5] mods: {', '.join(m.name for m in mods) or 'none'}")
            apply_mods(self.applier, dep, mods, WORKDIR)
            console.print("[4/5] start the command")
            self._start(dep, deadline)
            console.print(f"[5/5] wait for http://{p.head.ip}:{p.port}/health")
            answered = wait_ready(self.applier, dep, deadline)
            for n in p.nodes:
                dep.states[n.name] = NodeState("ready")
            return DeployResult(p, dep, skipped=False, seconds_to_ready=time.monotonic() - started,
                                answered_at=answered)
        except KeyboardInterrupt:
            console.print("[red]interrupted: stopping the containers this run started[/red]")
            self.stop([self.by_name[n] for n in dep.started])
            raise
        except LaunchFailed as e:
            e.dep = dep
            raise

    def _start(self, dep: Deployment, deadline: float) -> None:
        p = dep.plan
        by = dep.by_name
        first = {n.name: n.start[0] for n in p.nodes if n.start}  # each node's first start command

        def start_workers(step: str) -> None:
            workers = [by[n.name] for n in p.nodes[1:] if n.start]
            run_parallel(self.hosts, workers, lambda node: self.applier.exec_start(node, first[node.label]), dep, step)

        head = by[p.head.name]
        if p.mode == "ray":
            self.applier.exec_start(head, first[p.head.name])
            start_workers("ray start")
            wait_ray(self.applier, dep, len(p.nodes), deadline)
            self.hosts.run(head, list(p.head.start[1]), timeout=60)
        else:
            if p.mode == "noray":
                start_workers("start ranks")  # workers (headless) first, then rank 0
            self.applier.exec_start(head, first[p.head.name])

    # --- stop / status / logs / exec --------------------------------------------------------------
    def stop(self, nodes: list[NodeSpec] | None = None) -> list[tuple[str, str]]:
        out = []
        for o in self.hosts.each(lambda n: self.hosts.run(n, ["docker", "rm", "-f", self.name], check=False,
                                                          timeout=120), nodes):
            if not o.ok:
                out.append((o.node.label, f"failed: {o.error}"))
            else:
                gone = "No such container" in (o.value.stderr if o.value else "")  # type: ignore[union-attr]
                out.append((o.node.label, "not running" if gone else "stopped"))
        return out

    def status(self, port: int | None = None) -> list[dict[str, str]]:
        def one(node: NodeSpec) -> dict[str, str]:
            running, status = self.applier.container_state(node)
            image = self.hosts.run(node, ["docker", "inspect", "-f", "{{.Config.Image}} {{.Image}}", self.name],
                                   check=False).stdout.strip()
            role = self.hosts.run(node, ["docker", "inspect", "-f", '{{index .Config.Labels "io.spark-pipeline.role"}}',
                                         self.name], check=False).stdout.strip()
            row = {"node": node.label, "container": running, "exit": status, "image": image, "role": role,
                   "health": "", "ray_nodes": ""}
            if role == "head" and running == "true":
                ray = self.hosts.run(node, ["docker", "exec", self.name, "ray", "status"], check=False, timeout=30)
                if ray.exit_code == 0:
                    row["ray_nodes"] = str(ray_alive_nodes(ray.stdout))
                if port:
                    row["health"] = "ok" if http_ok(f"http://{node.address}:{port}/health")[0] else "no answer"
            return row

        rows = []
        for o in self.hosts.each(one):
            rows.append(o.value if o.ok else {"node": o.node.label, "container": f"unreachable: {o.error}",  # type: ignore[arg-type]
                                              "exit": "", "image": "", "role": "", "health": "", "ray_nodes": ""})
        return rows


def secrets_from_env(names: tuple[str, ...] = ("HF_TOKEN",)) -> dict[str, str]:
    return {n: os.environ[n] for n in names if os.environ.get(n)}


def fail_table_rows(dep: Deployment) -> list[tuple[str, str, str, str]]:
    rows = []
    for n in dep.plan.nodes:
        st = dep.states.get(n.name, NodeState())
        rows.append((n.name, n.role, st.status, st.detail))
    return rows

"""deploy / stop / status / logs / exec as a Python API (the command line is a thin layer on it).

    deployer = Deployer(load_cluster(Path("cluster.yaml")), reporter=ConsoleReporter())
    result = deployer.deploy(DeployRequest(command=("vllm", "serve", "org/model", "-tp", "2")))

`plan()` gathers facts and decides every command (steps.py); `apply()` runs them. `--dry-run` is
`plan()` printed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import paths
from pipeline.config.cluster import ClusterSpec, NodeSpec
from pipeline.contract import CONTAINER, ROLE_LABEL
from pipeline.deploy.models import Expected, expected_models, memory_of, model_problems, weights_of
from pipeline.deploy.request import DeployRequest
from pipeline.engines.docker import Docker
from pipeline.errors import ConfigError, HostError, LaunchFailed, NodeProblem, PipelineError
from pipeline.launch.apply import (
    Applier,
    Deployment,
    NodeState,
    answers_here,
    container_state,
    node_answers,
    ray_alive_nodes,
)
from pipeline.launch.interfaces import interfaces
from pipeline.launch.memory import Estimate, claim_of, estimate
from pipeline.launch.mods import Mod, cleanup, load_mod
from pipeline.launch.plan import LaunchPlan, NodeInput, Options, plan
from pipeline.launch.secrets import Secrets
from pipeline.launch.steps import DeploySteps, Inputs, StepFacts, steps
from pipeline.model import damage
from pipeline.nodes.discover import NodeFacts, gather
from pipeline.nodes.hosts import HostResults, Hosts
from pipeline.nodes.transport import Ran
from pipeline.report import NullReporter, Reporter
from pipeline.ship.shipper import Shipper

WORKDIR = "/workspace/vllm"  # the runtime image's working directory: mods' WORKSPACE_DIR


@dataclass
class DeployPlan:
    launch: LaunchPlan
    steps: DeploySteps
    options: Options
    mods: list[Mod]
    warnings: list[str]
    memory: list[Estimate] = field(default_factory=list)


@dataclass
class DeployResult:
    plan: LaunchPlan
    dep: Deployment
    skipped: bool


def node_inputs(facts: list[NodeFacts]) -> tuple[list[NodeInput], list[NodeProblem], list[str]]:
    """NodeInputs from discovery, the problems that block a launch, and the warnings of the choice."""
    problems: list[NodeProblem] = []
    warnings: list[str] = []
    out = []
    for f, c in zip(facts, interfaces(facts), strict=True):
        if not f.reachable:
            problems.append(NodeProblem(f.node.label, "unreachable", f.error))
            continue
        if f.ip_note:
            problems.append(NodeProblem(f.node.label, "discovery", f.ip_note))
        problems += [NodeProblem(f.node.label, "interfaces", p) for p in c.problems]
        warnings += [f"{f.node.label}: {w}" for w in c.warnings]
        ip = c.ip
        if f.node.transport == "local" and len(facts) == 1:
            ip = f.node.address  # alone on this machine: the server is reached over loopback
        if ip is None:
            with contextlib.suppress(ValueError):
                ip = str(ipaddress.ip_address(f.node.address))
        out.append(
            NodeInput(
                name=f.node.label,
                address=f.node.address,
                eth_if=c.eth_if,
                ib_if=c.ib_if,
                ip=ip,
                extra_env=c.extra_env,
                home=f.home or "/root",
                env=tuple(f.node.env.items()),
                nets=c.nets,
                gpu_access=f.gpu_access.flag,
            )
        )
    return out, problems, warnings


def exposure_warnings(launch: LaunchPlan, secrets: Secrets) -> list[str]:
    """Who can reach what this deploy starts, when that is more than the user may think."""
    out = []
    if launch.expose == "all" and "VLLM_API_KEY" not in secrets.names():
        out.append(
            f"{launch.head.name}: the API answers on every interface of the node (LAN, Wi-Fi, QSFP) without "
            "an API key: --api-key auto asks for one, --expose cluster|local narrows who reaches it"
        )
    if launch.mode == "ray" and "RAY_AUTH_TOKEN" not in secrets.names():
        out.append(
            "Ray listens on every interface of each node (its GCS and worker ports cannot be bound to one "
            "address), and runs code for whoever reaches it: keep token auth on (drop --no-ray-auth)"
        )
    return out


def step_facts(facts: list[NodeFacts]) -> dict[str, StepFacts]:
    return {
        f.node.label: StepFacts(
            home=f.home or "/root",
            image_id=f.image_id,
            container_running=f.container_running,
            container_hash=f.container_hash,
            exit_status=f.exit_status,
        )
        for f in facts
    }


class Deployer:
    def __init__(
        self,
        spec: ClusterSpec,
        name: str = CONTAINER,
        reporter: Reporter | None = None,
        hosts: Hosts | None = None,
        docker: Docker | None = None,
    ):
        self.spec = spec
        self.name = name
        self.report: Reporter = reporter or NullReporter()
        self.hosts = hosts or Hosts(spec)
        self._docker = docker

    @property
    def docker(self) -> Docker:
        if self._docker is None:
            self._docker = Docker()
        return self._docker

    def close(self) -> None:
        self.hosts.close()

    # --- deploy -----------------------------------------------------------------------------------
    def load_mods(self, request: DeployRequest) -> list[Mod]:
        workdir = paths.deploy_workdir()
        workdir.mkdir(parents=True, exist_ok=True)
        mods = [load_mod(m, paths.mod_dirs(), workdir) for m in request.mods]
        return mods + self.pr_mods(request.vllm_prs, request.vllm_repo, workdir)

    def pr_mods(self, prs: tuple[str, ...], repo: str, workdir: Path) -> list[Mod]:
        """--apply-vllm-pr values -> generated mods (PRs fetched through the source mirror)."""
        from pipeline.config.types import parse_pr
        from pipeline.launch.prmod import fetch_pr_diff, launch_diff, make_mod
        from pipeline.sources.mirror import Mirrors

        out = []
        for raw in prs:
            try:
                pr = parse_pr(raw)
            except ValueError as e:
                raise ConfigError(f"--apply-vllm-pr {raw}: {e}") from None
            label, head, diff = fetch_pr_diff(Mirrors(paths.cache_root()), repo, Path.cwd(), pr)
            kept, dropped = launch_diff(diff, label)
            if dropped:
                self.report.say(
                    f"vLLM PR {label}: leaving out {len(dropped)} file(s) not needed at launch "
                    f"({', '.join(dropped[:3])}{'…' if len(dropped) > 3 else ''})"
                )
            out.append(make_mod(label, head, kept, workdir))
        return out

    def plan(
        self, request: DeployRequest, mods: list[Mod], secrets: Secrets, saved: list[NodeFacts] | None = None
    ) -> DeployPlan:
        """Discover every node (or take `saved` facts: then nothing is contacted, the server is taken as
        not answering), plan the launch, and decide every command. Runs nothing on the nodes."""
        opts = request.options(self.spec, mods, secrets.names())
        expected = expected_models(request.command)
        facts = saved if saved is not None else gather(self.hosts, opts.image, self.name, tuple(expected))
        nodes, problems, warnings = node_inputs(facts)
        problems += model_problems(facts, expected, damage.load())
        if problems:
            raise LaunchFailed.from_problems("cannot launch", problems)
        local_id = self._local_image_id(opts.image, offline=saved is not None)
        launch = plan(nodes, Options(**{**opts.__dict__, "image_id": local_id}))
        if launch.problems:
            raise LaunchFailed.from_problems("cannot launch", list(launch.problems))
        warnings += exposure_warnings(launch, secrets)
        memory = self._memory(facts, launch, request, expected)
        warnings += [f"{e.node}: {p} (--force: launching anyway)" for e in memory for p in e.problems]
        answers = saved is None and self._answers(launch, secrets)
        todo = steps(
            launch,
            Inputs(
                image=opts.image,
                local_image_id=local_id,
                facts=step_facts(facts),
                container=self.name,
                server_answers=answers,
                mods=tuple(m.ref() for m in mods),
                secret_names=secrets.names(),
                ship_mode=request.ship_mode,
                force=request.force,
                workdir=WORKDIR,
                master_port=request.master_port,
            ),
        )
        return DeployPlan(launch=launch, steps=todo, options=opts, mods=mods, warnings=warnings, memory=memory)

    def _memory(
        self, facts: list[NodeFacts], launch: LaunchPlan, request: DeployRequest, expected: Expected
    ) -> list[Estimate]:
        """Per node, whether the model fits (launch/memory.py); refused with the numbers unless --force."""
        used = {n.name for n in launch.nodes}
        nodes = memory_of([f for f in facts if f.node.label in used], request.gpus)
        found = estimate(nodes, weights_of(expected, request.command), claim_of(request.command))
        bad = [f"{e.node}: {p}" for e in found for p in e.problems]
        if bad and not request.force:
            raise ConfigError("the model does not fit (--force launches anyway):\n  " + "\n  ".join(bad))
        return found

    def _answers(self, launch: LaunchPlan, secrets: Secrets) -> bool:
        """Whether the server answers now: from here, or on the head when it listens on loopback only."""
        if launch.expose == "local":
            head = next(n for n in self.spec.nodes if n.label == launch.head.name)
            return node_answers(self.hosts, head, self.name, launch.port)[0]
        return answers_here(launch.url, secrets.common.get("VLLM_API_KEY", ""))[0]

    def _local_image_id(self, image: str, offline: bool) -> str:
        """The image's content ID in this machine's Docker (as the nodes' are read: engines/identity.py);
        offline, a machine without Docker plans with none."""
        try:
            return self.docker.content_id(image) or ""
        except (PipelineError, OSError):
            if offline:
                return ""
            raise

    def apply(self, dp: DeployPlan, request: DeployRequest, secrets: Secrets) -> DeployResult:
        by_name = {n.label: n for n in self.spec.nodes}
        dep = Deployment(plan=dp.launch, by_name=by_name)
        if dp.steps.nothing:
            for n in dp.launch.nodes:
                dep.states[n.name] = NodeState("skipped", "running, same deploy hash, server answers")
            return DeployResult(dp.launch, dep, skipped=True)
        started = time.monotonic()
        shipper = Shipper(
            self.hosts, self.docker, paths.ship_workdir(), self.spec.registry_port, progress=self.report.transfer
        )
        applier = Applier(self.hosts, shipper, self.name, self.report, secrets, deadlines=request.phase_deadlines)
        try:
            applier.apply(dp.steps, dep, started + request.timeout)
        except KeyboardInterrupt:
            self.report.say("interrupted: stopping the containers this run started", "warn")
            self.stop([by_name[n] for n in dep.started])
            raise
        except LaunchFailed as e:
            e.deployment = dep
            if request.cleanup_on_failure:
                self.stop([by_name[n.name] for n in dp.launch.nodes])
                self.report.say("removed the containers (--cleanup-on-failure)")
            raise
        return DeployResult(dp.launch, dep, skipped=False)

    def deploy(self, request: DeployRequest) -> DeployResult:
        """plan + apply, with the mods cleaned up afterwards."""
        secrets = request.secrets(self.spec)
        mods = self.load_mods(request)
        try:
            return self.apply(self.plan(request, mods, secrets), request, secrets)
        finally:
            cleanup(mods, paths.deploy_workdir())

    # --- stop / status / exec ---------------------------------------------------------------------
    def stop(self, nodes: list[NodeSpec] | None = None) -> HostResults[str]:
        def one(node: NodeSpec) -> str:
            ran = self.hosts.run(node, ["docker", "rm", "-f", self.name], check=False, timeout=120)
            if ran.status != 0 and "No such container" not in ran.stderr:
                raise HostError(node.label, "docker rm failed", remote_status=ran.status, tail=ran.stderr)
            return "not running" if "No such container" in ran.stderr else "stopped"

        return self.hosts.each(one, nodes)

    def status(self, port: int | None = None) -> HostResults[dict[str, str]]:
        def one(node: NodeSpec) -> dict[str, str]:
            running, status = container_state(self.hosts, node, self.name)
            if running.startswith("docker-down"):
                raise HostError(node.label, running)
            fmt = '{{.Config.Image}} {{.Image}}|{{index .Config.Labels "' + ROLE_LABEL + '"}}'
            info = self.hosts.run(node, ["docker", "inspect", "-f", fmt, self.name], check=False).stdout.strip()
            image, _, role = info.partition("|")
            row = {
                "node": node.label,
                "container": running,
                "exit": status,
                "image": image,
                "role": role,
                "health": "",
                "ray_nodes": "",
            }
            if role == "head" and running == "true":
                ray = self.hosts.run(node, ["docker", "exec", self.name, "ray", "status"], check=False, timeout=30)
                if ray.status == 0:
                    row["ray_nodes"] = str(ray_alive_nodes(ray.stdout))
                if port:
                    ok, why = node_answers(self.hosts, node, self.name, port)
                    row["health"] = "ok" if ok else f"no answer ({why[-160:]})"
            return row

        return self.hosts.each(one)

    def exec(self, nodes: list[NodeSpec], command: tuple[str, ...], timeout: float = 3600) -> HostResults[Ran]:
        """COMMAND in the container on each node (its status is in each Ran: the caller shows the output)."""
        return self.hosts.each(
            lambda n: self.hosts.run(n, ["docker", "exec", self.name, *command], timeout=timeout, check=False), nodes
        )

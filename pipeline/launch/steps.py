"""Deploy decided: from the launch plan and what each node reported, every command apply will run, per
node, each with why, or "nothing to do, because …". Pure (pyinfra's way: facts in, operations out);
`apply.py` runs exactly this list, and `deploy --dry-run` prints it.

Phases run in order; within a phase the nodes work in parallel, and each node's commands run in
order. A command marked `always` runs even after an earlier command of its node failed in that phase
(cleanup: the secrets env file, a mod's upload directory).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.contract import CONTAINER, EXIT_FILE, STATE_DIR
from pipeline.launch.plan import WRAPPER, LaunchPlan
from pipeline.launch.scripts import CONNECT, FREE, LISTEN, shown


def _show_argv(argv: tuple[str, ...]) -> str:
    return shown(shlex.join(argv).replace(shlex.quote(WRAPPER), "<log+exit-status wrapper>"))


@dataclass(frozen=True)
class Run:
    """argv on the node (joined with shlex.join for the remote shell)."""

    why: str
    argv: tuple[str, ...]
    timeout: float = 120
    check: bool = True
    always: bool = False  # runs even after an earlier command of the node failed (clean-ups)
    starts_container: bool = False  # a `docker run` (Ctrl-C and --cleanup-on-failure remove only these)
    failure: str = ""  # how a failure of this command is reported (default: "command failed")
    kind: ClassVar[str] = "run"

    def show(self) -> str:
        return _show_argv(self.argv)


@dataclass(frozen=True)
class Upload:
    """A local file or directory to a path on the node."""

    why: str
    source: str
    dest: str
    always: bool = False
    kind: ClassVar[str] = "upload"

    def show(self) -> str:
        return f"upload {self.source} -> {self.dest}"


@dataclass(frozen=True)
class WriteSecrets:
    """The named secrets' values into a 0600 file on the node (the plan holds names, never values)."""

    why: str
    names: tuple[str, ...]
    dest: str
    always: bool = False
    kind: ClassVar[str] = "write-secrets"

    def show(self) -> str:
        return f"write {','.join(self.names)} to {self.dest} (mode 0600; values never shown)"


@dataclass(frozen=True)
class Ship:
    """The image onto the node, only the layers it lacks (the shipper decides how, once for all nodes)."""

    why: str
    image: str
    mode: str  # registry | stream
    always: bool = False
    kind: ClassVar[str] = "ship"

    def show(self) -> str:
        return f"ship {self.image} ({self.mode})"


@dataclass(frozen=True)
class WaitRay:
    """Until Ray on the head sees `count` nodes, watching every node."""

    why: str
    count: int
    always: bool = False
    kind: ClassVar[str] = "wait-ray"

    def show(self) -> str:
        return f"wait until Ray sees {self.count} nodes (watching every node)"


@dataclass(frozen=True)
class WaitReady:
    """Until the server's /health and /v1/models answer, watching every node."""

    why: str
    url: str
    port: int = 8000
    on_node: bool = False  # asked on the head itself (the server listens on its loopback only)
    always: bool = False
    kind: ClassVar[str] = "wait-ready"

    def show(self) -> str:
        where = " on the head" if self.on_node else ""
        return f"wait until {self.url}/health and {self.url}/v1/models answer{where} (watching every node)"


# One kind of step per class; the applier dispatches on the class with `match`.
Command = Run | Upload | WriteSecrets | Ship | WaitRay | WaitReady
WAITS = (WaitRay, WaitReady)


def command_json(c: Command) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": c.kind, "why": c.why, "show": c.show()}
    if isinstance(c, Run):
        out["argv"] = list(c.argv)
    return out


@dataclass(frozen=True)
class NodeSteps:
    node: str
    commands: tuple[Command, ...] = ()
    nothing: str = ""  # why nothing is done on this node in this phase

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "commands": [command_json(c) for c in self.commands], "nothing": self.nothing}


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    nodes: tuple[NodeSteps, ...]

    def to_json(self) -> dict[str, Any]:
        return {"phase": self.name, "title": self.title, "nodes": [n.to_json() for n in self.nodes]}


@dataclass(frozen=True)
class DeploySteps:
    phases: tuple[Phase, ...] = ()
    nothing: str = ""  # why the whole deploy is a no-op

    def to_json(self) -> dict[str, Any]:
        return {"nothing": self.nothing, "phases": [p.to_json() for p in self.phases]}

    def lines(self) -> list[str]:
        """The plain-text listing `deploy --dry-run` prints (and the golden test pins)."""
        if self.nothing:
            return [f"nothing to do: {self.nothing}"]
        out: list[str] = []
        for i, phase in enumerate(self.phases, 1):
            out.append(f"[{i}/{len(self.phases)}] {phase.title}")
            for n in phase.nodes:
                if n.nothing:
                    out.append(f"  {n.node}: nothing to do, because {n.nothing}")
                for c in n.commands:
                    out.append(f"  {n.node}: {c.show()}")
                    out.append(f"      why: {c.why}")
        return out


@dataclass(frozen=True)
class StepFacts:
    """What deploy needs to know of a node's current state (from discovery)."""

    home: str = "/root"
    image_id: str = ""  # the deploy image's ID on the node, '' when absent
    container_running: str = "missing"  # true | false | missing
    container_hash: str = ""  # the running container's deploy hash label
    exit_status: str = ""  # the started command's exit status, '' while it runs


@dataclass(frozen=True)
class ModRef:
    name: str
    local: str  # a local directory holding run.sh
    digest: str


@dataclass(frozen=True)
class Inputs:
    """Everything `steps` decides from besides the plan."""

    image: str
    local_image_id: str
    facts: dict[str, StepFacts]
    container: str = CONTAINER
    server_answers: bool = False
    mods: tuple[ModRef, ...] = ()
    secret_names: tuple[str, ...] = ()
    ship_mode: str = "registry"
    force: bool = False
    workdir: str = "/workspace/vllm"  # the image's working directory: mods' WORKSPACE_DIR
    mods_dir: str = "/workspace/mods"
    master_port: int = 29501  # Ray's GCS port or torch.distributed's: where workers meet the head


def is_current(plan: LaunchPlan, inp: Inputs) -> str:
    """Why the deploy is a no-op ('' when it is not): same hash, running, answering."""
    if inp.force or not inp.server_answers:
        return ""
    for n in plan.nodes:
        f = inp.facts.get(n.name, StepFacts())
        if f.container_hash != n.deploy_hash or f.container_running != "true" or f.exit_status:
            return ""
    return (
        f"every node runs this deployment ({', '.join(sorted({n.deploy_hash for n in plan.nodes}))}) and "
        f"{plan.url} answers (--force redeploys)"
    )


def ship_phase(plan: LaunchPlan, inp: Inputs) -> Phase:
    out = []
    for n in plan.nodes:
        have = inp.facts.get(n.name, StepFacts()).image_id
        if have and have == inp.local_image_id:
            out.append(NodeSteps(n.name, nothing=f"it has {inp.image} ({have[7:19]})"))
        else:
            why = (
                f"it lacks {inp.image} ({inp.local_image_id[7:19]})"
                if not have
                else f"its {inp.image} is {have[7:19]}, this build is {inp.local_image_id[7:19]}"
            )
            out.append(NodeSteps(n.name, (Ship(why, image=inp.image, mode=inp.ship_mode),)))
    return Phase("ship", f"ship {inp.image} to the nodes that lack it", tuple(out))


def start_phase(plan: LaunchPlan, inp: Inputs) -> Phase:
    out = []
    for n in plan.nodes:
        home = inp.facts.get(n.name, StepFacts()).home
        cmds: list[Command] = [
            Run("the container's mounts must exist", ("mkdir", "-p", *n.mkdirs), timeout=30),
            Run(
                "a container of an earlier deploy holds the name",
                ("docker", "rm", "-f", inp.container),
                check=False,
                timeout=60,
            ),
        ]
        run_argv = n.run_argv
        if inp.secret_names:
            env_file = f"{home}/{STATE_DIR}/env-{inp.container}"
            cmds.append(
                Run(
                    "the env file's directory, readable by its owner only",
                    ("install", "-d", "-m", "700", f"{home}/{STATE_DIR}"),
                    timeout=30,
                )
            )
            cmds.append(
                WriteSecrets(
                    "secrets reach the container only through a 0600 env file", names=inp.secret_names, dest=env_file
                )
            )
            i = run_argv.index("run") + 1
            run_argv = (*run_argv[:i], "--env-file", env_file, *run_argv[i:])
            cmds.append(Run("the idle container the command runs in (keepalive)", run_argv, starts_container=True))
            cmds.append(
                Run(
                    "the env file is read; its values must not stay on disk",
                    ("rm", "-f", env_file),
                    check=False,
                    always=True,
                    timeout=30,
                )
            )
        else:
            cmds.append(Run("the idle container the command runs in (keepalive)", run_argv, starts_container=True))
        out.append(NodeSteps(n.name, tuple(cmds)))
    return Phase("start", f"start the {inp.container} containers ({plan.mode})", tuple(out))


def mod_commands(mod: ModRef, home: str, inp: Inputs) -> list[Command]:
    remote = f"{home}/{STATE_DIR}/mods/{mod.name}-{mod.digest}"
    target = f"{inp.mods_dir}/{mod.name}"
    c = inp.container
    return [
        Run(f"mod {mod.name}: a fresh upload directory", ("rm", "-rf", remote), timeout=30),
        Upload(f"mod {mod.name}: its files reach the node", source=mod.local, dest=remote),
        Run(f"mod {mod.name}: its place in the container", ("docker", "exec", c, "mkdir", "-p", target)),
        Run(f"mod {mod.name}: into the container", ("docker", "cp", f"{remote}/.", f"{c}:{target}")),
        Run(
            f"mod {mod.name}: run it (WORKSPACE_DIR is the image's working directory)",
            (
                "docker",
                "exec",
                "-w",
                target,
                "-e",
                f"WORKSPACE_DIR={inp.workdir}",
                c,
                "sh",
                "-c",
                "chmod +x run.sh && exec ./run.sh",
            ),
            timeout=1800,
            failure=f"mod {mod.name} failed",
        ),
        Run(
            f"mod {mod.name}: the upload is not needed any more",
            ("rm", "-rf", remote),
            check=False,
            always=True,
            timeout=30,
        ),
    ]


def mods_phase(plan: LaunchPlan, inp: Inputs) -> Phase:
    if not inp.mods:
        return Phase(
            "mods", "mods: none", tuple(NodeSteps(n.name, nothing="no mods were asked for") for n in plan.nodes)
        )
    out = []
    for n in plan.nodes:
        home = inp.facts.get(n.name, StepFacts()).home
        out.append(NodeSteps(n.name, tuple(c for m in inp.mods for c in mod_commands(m, home, inp))))
    return Phase("mods", f"mods: {', '.join(m.name for m in inp.mods)}", tuple(out))


def reach_phase(plan: LaunchPlan, inp: Inputs, port: int) -> Phase:
    """Before any rank starts: every worker connects to the master address from inside its container
    (the head listens there), so a worker that cannot reach it fails the launch in seconds, named."""
    head, c = plan.nodes[0], inp.container
    workers = tuple(x for w in plan.nodes[1:] for x in (w.name, w.ip))
    master = f"{head.ip}:{port}"
    out = [
        NodeSteps(
            head.name,
            (
                Run(
                    f"the workers check that they reach {master} before any rank starts",
                    ("docker", "exec", c, "python3", "-c", LISTEN, head.ip, str(port), "20", *workers),
                    timeout=40,
                    failure=f"cannot listen on the master address {master} (taken, or not this node's)",
                ),
            ),
        )
    ]
    for w in plan.nodes[1:]:
        route = w.eth_if or "its route"
        out.append(
            NodeSteps(
                w.name,
                (
                    Run(
                        f"the master address {master} must be reachable from here over {route}",
                        ("docker", "exec", c, "python3", "-c", CONNECT, head.ip, str(port), "12", w.ip),
                        timeout=40,
                        failure=f"cannot reach the master address {master} over {w.eth_if or 'its route'}",
                    ),
                ),
            )
        )
    return Phase("reach", f"check that every worker reaches the master address {master}", tuple(out))


def exec_start(argv: tuple[str, ...], container: str, why: str) -> tuple[Command, ...]:
    return (
        Run(
            "a fresh exit status for the watcher",
            ("docker", "exec", container, "rm", "-f", EXIT_FILE),
            check=False,
            timeout=30,
        ),
        Run(why, argv, timeout=60),
    )


def port_free(plan: LaunchPlan, container: str) -> Command:
    return Run(
        f"no other server may answer on port {plan.port}",
        ("docker", "exec", container, "python3", "-c", FREE, str(plan.port)),
        timeout=30,
        failure=f"port {plan.port} is taken on {plan.head.name} by another process: stop it, or "
        "deploy with another --port",
    )


def start_phases(plan: LaunchPlan, inp: Inputs) -> list[Phase]:
    """Ray: head, workers, wait for Ray, the command. No-Ray: the ranks (workers first), then rank 0.
    Solo: the command."""
    head, workers = plan.nodes[0], plan.nodes[1:]
    c = inp.container
    if plan.mode == "ray":
        joins = f"a Ray worker joins {head.ip}"
        return [
            Phase(
                "ray-head", "start the Ray head", (NodeSteps(head.name, exec_start(head.start[0], c, "the Ray head")),)
            ),
            Phase(
                "ray-workers",
                "start the Ray workers",
                tuple(NodeSteps(w.name, exec_start(w.start[0], c, joins)) for w in workers),
            ),
            Phase(
                "ray-wait",
                "wait until Ray sees every node",
                (NodeSteps(head.name, (WaitRay("the command needs every node in Ray", count=len(plan.nodes)),)),),
            ),
            Phase(
                "command",
                "start the command",
                (
                    NodeSteps(
                        head.name,
                        (port_free(plan, c), Run("the command, with the Ray backend", head.start[1], timeout=60)),
                    ),
                ),
            ),
        ]
    phases = []
    if plan.mode == "noray":
        phases.append(
            Phase(
                "ranks",
                "start the worker ranks (headless) before rank 0",
                tuple(
                    NodeSteps(w.name, exec_start(w.start[0], c, f"rank {w.rank} (headless)"))
                    if w.start
                    else NodeSteps(w.name, nothing="the command is not `vllm serve`: workers run nothing")
                    for w in workers
                ),
            )
        )
    phases.append(
        Phase(
            "command",
            "start the command",
            (NodeSteps(head.name, (port_free(plan, c), *exec_start(head.start[0], c, "the command (rank 0)"))),),
        )
    )
    return phases


def steps(plan: LaunchPlan, inp: Inputs) -> DeploySteps:
    """Every command of the deploy, per phase and node, or why there is nothing to do."""
    current = is_current(plan, inp)
    if current:
        return DeploySteps(nothing=current)
    url, local = plan.url, plan.expose == "local"
    why = "deploy returns when the server answers" + (" (it listens on the head's loopback only)" if local else "")
    wait = Phase(
        "wait",
        f"wait for {url}/health",
        (NodeSteps(plan.head.name, (WaitReady(why, url=url, port=plan.port, on_node=local),)),),
    )
    reach = [reach_phase(plan, inp, inp.master_port)] if plan.mode != "solo" else []
    return DeploySteps(
        phases=(
            ship_phase(plan, inp),
            start_phase(plan, inp),
            mods_phase(plan, inp),
            *reach,
            *start_phases(plan, inp),
            wait,
        )
    )

"""The launch plan: from node facts, the cluster spec and the command, what runs where. Pure.

Roles (head first, rank order), the node count from `-tp × -pp × -dp` in the command, each node's
`docker run` argv and environment — with *its own* interface names — and the command each node runs:
solo; Ray (`ray start` head + workers, then the command on the head with the Ray backend); or no-Ray
multi-node (the command on every node with --nnodes/--node-rank/--master-addr/--master-port, workers
--headless). Containers idle on a keepalive; commands run in them through `docker exec`, their output
going to the container's log and their exit status to a file the watcher reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline.config.vllm_args import BACKEND, check_command, flag_value, is_vllm_serve, parallelism, without_flag
from pipeline.contract import CONTAINER, DEPLOY_LABEL, EXIT_FILE, RANK_LABEL, ROLE_LABEL, is_env_name, is_one_line
from pipeline.errors import ConfigError, NodeProblem
from pipeline.launch.scripts import RAY_START

Mode = Literal["auto", "solo", "ray", "noray"]  # what was asked for
RunMode = Literal["solo", "ray", "noray"]  # what the plan runs
Role = Literal["head", "worker"]
# Who can reach vLLM's API: this node only (loopback), the cluster link's address, or every interface of
# the node (LAN, Wi-Fi, QSFP: the containers run with --network host).
Expose = Literal["local", "cluster", "all"]
EXPOSE_HOSTS: dict[str, str] = {"local": "127.0.0.1", "all": "0.0.0.0"}  # cluster: the head's cluster address

# Constant wrapper: the command arrives as "$@" (never pasted into the script); its output goes to the
# container's log and its exit status to EXIT_FILE, which the watcher reads.
WRAPPER = f'"$@" >>/proc/1/fd/1 2>>/proc/1/fd/2; echo $? > {EXIT_FILE}'


@dataclass(frozen=True)
class NodeInput:
    """What the plan needs to know of one node (from cluster.yaml and discovery)."""

    name: str
    address: str
    eth_if: str | None
    ib_if: tuple[str, ...] = ()
    ip: str | None = None  # the IPv4 on eth_if (VLLM_HOST_IP); the address when unknown
    extra_env: tuple[tuple[str, str], ...] = ()
    home: str = "/root"
    env: tuple[tuple[str, str], ...] = ()  # this node's own container env (cluster.yaml nodes[].env)
    nets: tuple[str, ...] = ()  # eth_if's networks (CIDR); empty when unknown
    gpu_access: str = "gpus"  # cdi: the node's Docker has an NVIDIA CDI spec (nodes/netfacts.py GpuAccess)


@dataclass(frozen=True)
class Options:
    image: str
    command: tuple[str, ...]
    mode: Mode = "auto"
    name: str = CONTAINER
    image_id: str = ""
    env: tuple[tuple[str, str], ...] = ()  # -e K=V and cluster.yaml container_env
    secret_env: tuple[str, ...] = ()  # names only: values go through an env file, never argv
    nccl_debug: str | None = None
    privileged: bool = True
    mem_limit_gb: int = 110
    mem_swap_limit_gb: int | None = None
    pids_limit: int = 4096
    shm_size_gb: int = 64
    nofile: int = 1048576
    gpus: str = "all"
    earlyoom: bool = False
    earlyoom_args: str = "-M 524288,102400 -s 100 -r 60"
    cache_dirs: bool = True
    volumes: tuple[str, ...] = ()
    master_port: int = 29501
    jobs: int | None = None
    ray_num_cpus: int = 2
    ray_object_store_memory: int = 1073741824
    mods: tuple[str, ...] = ()  # names, in order (content hashes are added by the caller)
    allow_mixed_transports: bool = False  # cluster.yaml: some ranks on RoCE, others on TCP, knowingly
    expose: Expose | None = None  # vLLM's --host by scope; None: as the command says
    ray_client: bool = False  # Ray's client server (10001) on the head


@dataclass(frozen=True)
class NodePlan:
    name: str
    address: str
    role: Role
    rank: int
    ip: str
    eth_if: str | None
    ib_if: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    run_argv: tuple[str, ...]  # docker run … (the idle keepalive container)
    start: tuple[tuple[str, ...], ...]  # docker exec argv run in order after mods (ray start / the command)
    mkdirs: tuple[str, ...] = ()  # host directories the container mounts (created before docker run)
    deploy_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "address": self.address,
            "role": self.role,
            "rank": self.rank,
            "ip": self.ip,
            "eth_if": self.eth_if,
            "ib_if": list(self.ib_if),
            "env": dict(self.env),
            "docker_run": list(self.run_argv),
            "start": [list(s) for s in self.start],
            "deploy_hash": self.deploy_hash,
        }


@dataclass(frozen=True)
class LaunchPlan:
    mode: RunMode
    nodes: tuple[NodePlan, ...]
    port: int
    notes: tuple[str, ...] = field(default=())
    problems: tuple[NodeProblem, ...] = field(default=())  # layouts that cannot launch
    expose: Expose = "all"  # who reaches the API, from the command's --host

    @property
    def head(self) -> NodePlan:
        return self.nodes[0]

    @property
    def url(self) -> str:
        """Where the API answers: on the head itself when it listens on loopback only."""
        host = EXPOSE_HOSTS["local"] if self.expose == "local" else self.head.ip
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "port": self.port,
            "expose": self.expose,
            "notes": list(self.notes),
            "health": f"{self.url}/health",
            "nodes": [n.to_json() for n in self.nodes],
        }


def node_env(n: NodeInput, opts: Options) -> list[tuple[str, str]]:
    """The toolkit's per-node environment (launch-cluster.sh §3.5), with this node's own names."""
    env = [("NCCL_IGNORE_CPU_AFFINITY", "1"), ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")]
    ip = n.ip or n.address
    env += [("VLLM_HOST_IP", ip), ("RAY_NODE_IP_ADDRESS", ip), ("RAY_OVERRIDE_NODE_IP_ADDRESS", ip)]
    if n.eth_if:
        env += [
            (k, n.eth_if)
            for k in (
                "MN_IF_NAME",
                "UCX_NET_DEVICES",
                "NCCL_SOCKET_IFNAME",
                "GLOO_SOCKET_IFNAME",
                "TP_SOCKET_IFNAME",
                "OMPI_MCA_btl_tcp_if_include",
            )
        ]
    if n.ib_if:
        env += [("NCCL_IB_HCA", ",".join(n.ib_if)), ("NCCL_IB_DISABLE", "0")]
    else:
        env.append(("NCCL_IB_DISABLE", "1"))
    env += [("RAY_memory_monitor_refresh_ms", "0"), ("RAY_num_prestart_python_workers", "0")]
    # Models come from the node's cache (`model download` / `recipe run --setup` put them there): a node
    # never downloads on its own (toolkit #262: two nodes fetched the same 200 GB). -e overrides it.
    env.append(("HF_HUB_OFFLINE", "1"))
    env += list(n.extra_env)
    if opts.nccl_debug:
        env.append(("NCCL_DEBUG", opts.nccl_debug))
    if opts.jobs:
        j = str(opts.jobs)
        env += [("MAX_JOBS", j), ("CMAKE_BUILD_PARALLEL_LEVEL", j), ("NINJAFLAGS", f"-j{j}"), ("MAKEFLAGS", f"-j{j}")]
    env += list(opts.env)
    env += list(n.env)
    seen: dict[str, str] = {}
    for k, v in env:  # later wins (user -e over defaults), one entry per name
        if k not in opts.secret_env:  # a secret's value goes through the env file, wherever it was set
            seen[k] = v
    return list(seen.items())


def run_argv(n: NodeInput, opts: Options, env: list[tuple[str, str]], role: str, rank: int) -> list[str]:
    argv = [
        "docker",
        "run",
        "-d",
        "--pull=never",
        "--name",
        opts.name,
        "--network",
        "host",
        "--label",
        f"{ROLE_LABEL}={role}",
        "--label",
        f"{RANK_LABEL}={rank}",
    ]
    if opts.gpus != "none":
        # --gpus all and CDI's nvidia.com/gpu=all hand the container the same devices, each its own way
        argv += ["--device", "nvidia.com/gpu=all"] if n.gpu_access == "cdi" else ["--gpus", opts.gpus]
    if opts.privileged:
        argv += ["--privileged", "--ulimit", f"nofile={opts.nofile}:{opts.nofile}", "--ipc=host"]
    else:
        swap = opts.mem_swap_limit_gb if opts.mem_swap_limit_gb is not None else opts.mem_limit_gb + 10
        argv += [
            "--cap-add=IPC_LOCK",
            "--ulimit",
            f"nofile={opts.nofile}:{opts.nofile}",
            f"--shm-size={opts.shm_size_gb}g",
            "--memory",
            f"{opts.mem_limit_gb}g",
            "--memory-swap",
            f"{swap}g",
            "--pids-limit",
            str(opts.pids_limit),
        ]
        if n.ib_if:  # RDMA needs the devices; a node without RoCE has none to pass
            argv.append("--device=/dev/infiniband")
    for k, v in env:
        argv += ["-e", f"{k}={v}"]
    for name in opts.secret_env:
        argv += ["-e", name]  # the value comes from the env file the apply step uploads (never argv)
    hf = f"{n.home}/.cache/huggingface"
    argv += ["-v", f"{hf}:/root/.cache/huggingface"]
    if opts.cache_dirs:
        for src, dst in zip(cache_dirs(n), CACHE_TARGETS, strict=True):
            argv += ["-v", f"{src}:{dst}"]
    for v in opts.volumes:
        argv += ["-v", v]
    argv += ["--entrypoint", ""]
    keepalive = ["earlyoom", *opts.earlyoom_args.split()] if opts.earlyoom else ["sleep", "infinity"]
    return [*argv, opts.image, *keepalive]


def exec_argv(opts: Options, argv: tuple[str, ...]) -> tuple[str, ...]:
    return ("docker", "exec", "-d", opts.name, "sh", "-c", WRAPPER, "sh", *argv)


def command_of(exec_line: tuple[str, ...]) -> tuple[str, ...]:
    """What an exec_argv line runs in the container (the wrapper left out), for display."""
    return exec_line[8:] if exec_line[4:8] == ("sh", "-c", WRAPPER, "sh") else exec_line


def mount_dirs(n: NodeInput, opts: Options) -> list[str]:
    dirs = [f"{n.home}/.cache/huggingface"]
    if opts.cache_dirs:
        dirs += cache_dirs(n)
    return dirs


CACHE_TARGETS = ("/root/.cache/vllm", "/root/.cache/flashinfer", "/root/.triton")


def cache_dirs(n: NodeInput) -> list[str]:
    """The node's compile caches (vLLM's torch.compile, FlashInfer's JIT and autotune, Triton's), one set per
    node under its name: two nodes that share a home (NFS) never share a cache file, and FlashInfer's
    autotune cache, saved by one rank and read by all, cannot deadlock their all_reduce. A Spark runs one
    rank per node, so per node is per rank."""
    base = f"{n.home}/.cache/spark-pipeline/nodes/{node_folder(n.name)}"
    return [f"{base}/vllm", f"{base}/flashinfer", f"{base}/triton"]


def node_folder(name: str) -> str:
    """A folder name for a node's label (an IPv6 address, a hostname, any text): readable and unique."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:48].lstrip(".") or "node"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def resolve_mode(solo: bool, ray: bool | None) -> Mode:
    """--solo / --ray / --no-ray -> the mode asked for (auto when neither is given)."""
    if solo:
        if ray is not None:
            raise ConfigError("--ray/--no-ray make no sense with --solo")
        return "solo"
    return "auto" if ray is None else ("ray" if ray else "noray")


def choose_nodes(nodes: list[NodeInput], opts: Options) -> tuple[list[NodeInput], RunMode, list[str]]:
    """(the nodes used, in rank order; the mode that runs; notes) from the command's tp × pp × dp."""
    need = parallelism(opts.command)
    if opts.mode == "solo" or len(nodes) == 1:
        if opts.mode in ("ray", "noray") and len(nodes) == 1:
            raise ConfigError(f"--{opts.mode.replace('noray', 'no-ray')} needs more than one node; this is solo")
        if need and need > 1:
            raise ConfigError(f"the command asks for {need} GPUs (-tp × -pp × -dp) but solo runs on one node")
        return nodes[:1], "solo", []
    if need is not None and need > len(nodes):
        raise ConfigError(
            f"the command asks for {need} nodes (-tp × -pp × -dp, one GPU per Spark) but the cluster has {len(nodes)}"
        )
    used = nodes[:need] if need else nodes
    notes = [f"using {need} of {len(nodes)} nodes (-tp × -pp × -dp = {need})"] if need and need < len(nodes) else []
    if len(used) == 1:
        return used, "solo", notes
    return used, ("noray" if opts.mode == "auto" else opts.mode), notes  # no-Ray: the toolkit's default since 2026-07


def start_commands(
    mode: RunMode, n: NodeInput, rank: int, count: int, head_ip: str, opts: Options
) -> list[tuple[str, ...]]:
    """What one node runs in its container after mods (the Ray head's command is added by `plan`)."""
    role: Role = "head" if rank == 0 else "worker"
    if mode == "solo":
        return [exec_argv(opts, without_flag(opts.command, BACKEND))]
    if mode == "ray":
        common = (
            "--object-store-memory",
            str(opts.ray_object_store_memory),
            "--num-cpus",
            str(opts.ray_num_cpus),
            "--disable-usage-stats",
            "--node-ip-address",
            n.ip or n.address,
        )
        if role == "head":
            ray = ("ray",) if opts.ray_client else ("python3", "-c", RAY_START)
            return [
                exec_argv(
                    opts,
                    (
                        *ray,
                        "start",
                        "--block",
                        "--head",
                        "--port",
                        str(opts.master_port),
                        "--include-dashboard=false",
                        *common,
                    ),
                )
            ]
        return [exec_argv(opts, ("ray", "start", "--block", f"--address={head_ip}:{opts.master_port}", *common))]
    cmd = without_flag(opts.command, BACKEND)
    if is_vllm_serve(cmd):
        cmd = (
            *cmd,
            "--nnodes",
            str(count),
            "--node-rank",
            str(rank),
            "--master-addr",
            head_ip,
            "--master-port",
            str(opts.master_port),
        )
        if role == "worker":
            cmd = (*cmd, "--headless")
    elif role == "worker":
        return []
    return [exec_argv(opts, cmd)]


def deploy_hash(opts: Options, mode: RunMode, node: NodePlan) -> str:
    """What a running container must match for a redeploy to be a no-op: image, argv, starts, mods."""
    return hashlib.sha256(
        json.dumps(
            {"image": opts.image_id, "run": node.run_argv, "start": node.start, "mods": opts.mods, "mode": mode},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]


def layout_problems(used: list[NodeInput], allow_mixed: bool) -> list[NodeProblem]:
    """What stops ranks from meeting: a worker whose chosen interface has no network holding the master
    address, or ranks on different transports (RoCE and TCP: every rank runs at the slowest one's speed)."""
    if len(used) < 2:
        return []
    head, problems = used[0], list[NodeProblem]()
    master = head.ip or head.address
    for w in used[1:]:
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(master.strip("[]"))
            if w.nets and not any(ip in ipaddress.ip_network(n) for n in w.nets):
                problems.append(
                    NodeProblem(
                        w.name,
                        "layout",
                        f"cannot reach the master address {master} over "
                        f"{w.eth_if} ({', '.join(w.nets)}); set eth_if for {w.name} to its "
                        "interface on the master's subnet, or cable it to the head",
                    )
                )
    roce = [n.name for n in used if n.ib_if]
    tcp = [n.name for n in used if not n.ib_if]
    if roce and tcp and not allow_mixed:
        problems += [
            NodeProblem(
                n,
                "layout",
                f"uses TCP sockets while {', '.join(roce)} use RoCE; every rank "
                "would run at TCP's speed (cable its QSFP link, or set allow_mixed_transports: "
                "true in cluster.yaml)",
            )
            for n in tcp
        ]
    return problems


def api_scope(command: tuple[str, ...]) -> Expose:
    """Who reaches the API the command serves: vLLM binds every interface without --host."""
    host = (flag_value(command, ("--host",)) or "").strip("[]")
    if not host:
        return "all"
    if host == "localhost":
        return "local"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "cluster"  # a name: one address of the node
    return "all" if ip.is_unspecified else "local" if ip.is_loopback else "cluster"


def exposed(command: tuple[str, ...], expose: Expose | None, head_ip: str) -> tuple[str, ...]:
    """The command with --host set for the scope asked for (--expose wins over a recipe's --host)."""
    if expose is None:
        return command
    if not is_vllm_serve(command):
        raise ConfigError(
            f"--expose {expose} sets `vllm serve`'s --host; {shlex.join(command[:2])} is not `vllm serve`: "
            "give its listen address in the command instead"
        )
    return (*without_flag(command, ("--host",)), "--host", EXPOSE_HOSTS.get(expose, head_ip))


def plan(nodes: list[NodeInput], opts: Options) -> LaunchPlan:
    """Nodes are in rank order, head first."""
    if not opts.command:
        raise ConfigError("no command: give it after --, e.g. deploy -- vllm serve MODEL --port 8000")
    check_command(opts.command)
    used, mode, notes = choose_nodes(nodes, opts)
    if mode == "noray" and not is_vllm_serve(without_flag(opts.command, BACKEND)):
        raise ConfigError(
            f"command: on {len(used)} nodes without Ray each rank runs `vllm serve … --node-rank N`; "
            f"{shlex.join(opts.command[:2])} is not `vllm serve`: use --solo, or --ray"
        )
    port = int(flag_value(opts.command, ("--port",)) or 8000)
    head_ip = used[0].ip or used[0].address
    opts = replace(opts, command=exposed(opts.command, opts.expose, head_ip))
    out: list[NodePlan] = []
    for rank, n in enumerate(used):
        role: Role = "head" if rank == 0 else "worker"
        env = node_env(n, opts)
        out.append(
            NodePlan(
                name=n.name,
                address=n.address,
                role=role,
                rank=rank,
                ip=n.ip or n.address,
                eth_if=n.eth_if,
                ib_if=n.ib_if,
                env=tuple(env),
                run_argv=tuple(run_argv(n, opts, env, role, rank)),
                start=tuple(start_commands(mode, n, rank, len(used), head_ip, opts)),
                mkdirs=tuple(mount_dirs(n, opts)),
            )
        )
    if mode == "ray":
        cmd = (
            opts.command
            if flag_value(opts.command, BACKEND) is not None
            else (*opts.command, "--distributed-executor-backend", "ray")
        )
        out[0] = replace(out[0], start=(*out[0].start, exec_argv(opts, cmd)))
    hashed = []
    for node in out:
        digest = deploy_hash(opts, mode, node)
        hashed.append(replace(node, deploy_hash=digest, run_argv=_with_hash(node.run_argv, digest)))
    return LaunchPlan(
        mode=mode,
        nodes=tuple(hashed),
        port=port,
        notes=tuple(notes),
        problems=tuple(layout_problems(used, opts.allow_mixed_transports)),
        expose=api_scope(without_flag(opts.command, BACKEND)),
    )


def _with_hash(argv: tuple[str, ...], digest: str) -> tuple[str, ...]:
    i = argv.index("--network")
    return (*argv[:i], "--label", f"{DEPLOY_LABEL}={digest}", *argv[i:])


def parse_env_items(items: tuple[str, ...] | list[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """`-e K=V` values; `-e K` alone takes K from `environ`, this machine's environment (like docker run)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not is_env_name(key):
            raise ConfigError(f"-e {item}: expected NAME=VALUE with NAME made of letters, digits and _")
        if not is_one_line(value) or (not sep and not is_one_line(environ.get(key, ""))):
            raise ConfigError(f"-e {key}: its value holds a line break (it would add a line to the env file)")
        if not sep:
            if key not in environ:
                raise ConfigError(f"-e {key}: not set in this environment")
            value = environ[key]
        out.append((key, value))
    return out

"""Discovery: what each node is, gathered over SSH in one command per node, parsed by netfacts.

GPU (nvidia-smi), RoCE links (ibdev2netdev), addresses (ip -j addr), Docker version and root dir, free
disk there, and the ID of the deploy image if present. What a node lacks is reported as absent, never
made up (our test hosts have no GPU and no RoCE: doctor says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.config.cluster import NodeSpec
from pipeline.contract import CONTAINER, DEPLOY_LABEL, EXIT_FILE, LIST_FORMAT, is_decimal, is_one_line
from pipeline.engines.identity import FORMAT as IMAGE_FORMAT
from pipeline.engines.identity import content_id
from pipeline.errors import HostError
from pipeline.nodes.hosts import Hosts
from pipeline.nodes.netfacts import (
    Gpu,
    GpuAccess,
    Iface,
    Link,
    parse_gpu_access,
    parse_ibdev2netdev,
    parse_ip_addr,
    parse_nvidia_smi,
    parse_proc_net_tcp,
)

MARK = "@@spark-pipeline@@"
# Run in the deploy container (--network host: its /proc/net is the node's): the TCP sockets its own
# processes listen on, as /proc/net/tcp{,6} writes them (hex address:port). No ss, no root on the node.
LISTENING = (
    "import os\nmine=set()\n"
    "for p in filter(str.isdigit,os.listdir('/proc')):\n"
    " try:\n  fds=os.listdir(f'/proc/{p}/fd')\n except OSError:\n  continue\n"
    " for fd in fds:\n"
    "  try:\n   mine.add(os.readlink(f'/proc/{p}/fd/{fd}'))\n  except OSError:\n   pass\n"
    "for t in ('/proc/net/tcp','/proc/net/tcp6'):\n"
    " try:\n  rows=open(t).read().splitlines()[1:]\n except OSError:\n  continue\n"
    " for r in rows:\n"
    "  w=r.split()\n"
    "  if len(w)>9 and w[3]=='0A' and f'socket:[{w[9]}]' in mine:\n   print(w[1])\n"
)
# One fixed script; the image name arrives as $1, the container name as $2, the node's address as
# cluster.yaml names it as $3, the LISTENING script as $4, the image's content-ID format as $5, the model
# cache folders to list as $6 (models--ORG--NAME, checked here) and their listing format as $7 (quoted by
# shlex.join), never pasted into it.
SCRIPT = f"""
sec() {{ echo "{MARK} $1"; }}
sec hostname; hostname
sec home; printf '%s\n' "$HOME"
sec nvidia-smi
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>&1
else echo ABSENT; fi
sec ibdev2netdev; if command -v ibdev2netdev >/dev/null 2>&1; then ibdev2netdev 2>&1; else echo ABSENT; fi
sec ip; ip -j addr 2>/dev/null || echo '[]'
sec resolve; getent ahosts "$3" 2>/dev/null | cut -d' ' -f1 | sort -u
sec docker; docker version --format '{{{{.Server.Version}}}}' 2>&1 || echo ABSENT
sec root; docker info --format '{{{{.DockerRootDir}}}}' 2>/dev/null
sec store; docker info --format '{{{{json .DriverStatus}}}}' 2>/dev/null
sec buildx; docker buildx version 2>/dev/null | head -1
sec meminfo; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null
sec df; root=$(docker info --format '{{{{.DockerRootDir}}}}' 2>/dev/null); df -Pk "${{root:-/}}" 2>/dev/null | tail -1
sec gpu-access; command -v nvidia-container-runtime-hook >/dev/null 2>&1 && echo hook
docker info --format '{{{{range $k, $v := .Runtimes}}}}runtime {{{{$k}}}}{{{{println}}}}{{{{end}}}}' 2>/dev/null
for d in $(docker info --format '{{{{range .CDISpecDirs}}}}{{{{.}}}} {{{{end}}}}' 2>/dev/null); do
  echo "cdi-dir $d"; grep -ls 'nvidia.com/gpu' "$d"/*.yaml "$d"/*.yml "$d"/*.json 2>/dev/null | sed 's/^/cdi-gpu /'
done
sec image; docker image inspect --format "$5" "$1" 2>/dev/null
sec container; docker inspect -f '{{{{.State.Running}}}} {{{{index .Config.Labels "{DEPLOY_LABEL}"}}}}' "$2" \
  2>/dev/null || echo missing
sec exit; docker exec "$2" cat {EXIT_FILE} 2>/dev/null
sec listen; docker exec "$2" python3 -c "$4" 2>/dev/null
set -f
for m in $6; do sec "model $m"; d="$HOME/.cache/huggingface/hub/$m"; test -d "$d" && find "$d" -printf "$7"; done
sec end
"""


@dataclass
class NodeFacts:
    node: NodeSpec
    error: str = ""
    hostname: str = ""
    home: str = ""
    gpus: list[Gpu] = field(default_factory=list)
    gpu_note: str = ""
    links: list[Link] = field(default_factory=list)
    ib_note: str = ""
    ifaces: dict[str, Iface] = field(default_factory=dict)
    ip_note: str = ""  # why `ip -j addr`'s answer could not be read
    resolved: tuple[str, ...] = ()  # what the node's address (a hostname) resolves to on the node
    docker_version: str = ""
    docker_root: str = ""
    image_store: str = ""  # classic | containerd ('' when Docker did not answer)
    buildx: str = ""  # the buildx plugin's version, '' when the node has none
    disk_free: int = 0
    mem_total: int = 0  # bytes, /proc/meminfo (GB10: the GPU's memory too, it is unified); 0 when unknown
    mem_available: int = 0  # MemAvailable: what can be had without swapping (page cache counts as free)
    gpu_access: GpuAccess = field(default_factory=GpuAccess)
    image_id: str = ""  # the deploy image's content ID (engines/identity.py), the same on either image store
    container_running: str = "missing"  # true | false | missing
    container_hash: str = ""
    exit_status: str = ""
    listening: tuple[tuple[str, int], ...] = ()  # (address, port) the deploy container's processes listen on
    models: dict[str, str] = field(default_factory=dict)  # cache folder -> its listing ('' when absent)
    answers: dict[str, str] = field(default_factory=dict)  # the script's raw sections (doctor --save-facts)

    @property
    def reachable(self) -> bool:
        return not self.error


def script_output(answers: dict[str, str]) -> str:
    """The discovery script's output that gives these sections back (a saved facts file -> parse_facts)."""
    return "".join(f"{MARK} {name}\n{text}\n" for name, text in answers.items())


def sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = line[len(MARK) :].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def parse_facts(node: NodeSpec, text: str) -> NodeFacts:
    """Pure: the discovery script's output -> NodeFacts."""
    s = sections(text)
    f = NodeFacts(node=node, hostname=s.get("hostname", ""), home=s.get("home", ""), answers=s)
    smi = s.get("nvidia-smi", "")
    if smi == "ABSENT":
        f.gpu_note = "nvidia-smi not found (no NVIDIA driver on this node)"
    else:
        f.gpus = parse_nvidia_smi(smi)
        if not f.gpus:
            f.gpu_note = f"nvidia-smi found no GPU ({smi.splitlines()[0] if smi else 'no output'})"
    ib = s.get("ibdev2netdev", "")
    if ib == "ABSENT":
        f.ib_note = "ibdev2netdev not found (no Mellanox/ConnectX tools)"
    else:
        f.links = parse_ibdev2netdev(ib)
    try:
        f.ifaces = parse_ip_addr(s.get("ip", "[]"))
    except ValueError as e:
        f.ip_note = str(e)
    f.resolved = tuple(a for a in s.get("resolve", "").split() if a)
    docker = s.get("docker", "")
    f.docker_version = "" if docker in ("", "ABSENT") or " " in docker else docker
    f.docker_root = s.get("root", "")
    if f.docker_version and "store" in s:  # facts saved by an older version lack it: unknown, not classic
        # Docker's containerd image store reports its snapshotter as the driver type (docker info's docs)
        f.image_store = "containerd" if "io.containerd.snapshotter" in s.get("store", "") else "classic"
    words = s.get("buildx", "").split()
    f.buildx = words[1] if len(words) >= 2 and words[0].endswith("buildx") and is_one_line(words[1]) else ""
    parts = s.get("df", "").split()
    if len(parts) >= 4 and is_decimal(parts[3]):
        f.disk_free = int(parts[3]) * 1024
    f.gpu_access = parse_gpu_access(s.get("gpu-access", ""))
    f.mem_total, f.mem_available = parse_meminfo(s.get("meminfo", ""))
    image = s.get("image", "").strip()
    # facts saved before content IDs hold Docker's `.Id`: kept, so an offline plan still sees the image
    # (it then differs from this build's content ID, and the deploy pulls, which moves no layer it has)
    f.image_id = image if re.fullmatch(r"sha256:[0-9a-f]{64}", image) else content_id(image)
    running, _, digest = s.get("container", "missing").partition(" ")
    f.container_running = running if running in ("true", "false") else "missing"
    f.container_hash = digest.strip() if f.container_running != "missing" else ""
    f.exit_status = s.get("exit", "") if f.container_running == "true" else ""
    f.listening = parse_proc_net_tcp(s.get("listen", "")) if f.container_running == "true" else ()
    f.models = {name.removeprefix("model "): text for name, text in s.items() if name.startswith("model ")}
    if "end" not in s:
        f.error = "discovery output was cut short"
    return f


def parse_meminfo(text: str) -> tuple[int, int]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo lines; 0 for what is missing or not a number."""
    kb = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if words and is_decimal(words[0]) and len(words[0]) <= 15:
            kb[name.strip()] = int(words[0]) * 1024
    return kb.get("MemTotal", 0), kb.get("MemAvailable", 0)


def script_argv(image: str, container: str, address: str, model_folders: tuple[str, ...] = ()) -> list[str]:
    """The discovery command for one node (SCRIPT with its arguments)."""
    folders = " ".join(m for m in model_folders if re.fullmatch(r"models--[A-Za-z0-9._-]+", m))
    return ["sh", "-c", SCRIPT, "sh", image, container, address, LISTENING, IMAGE_FORMAT, folders, LIST_FORMAT]


def gather(
    hosts: Hosts, image: str, container: str = CONTAINER, model_folders: tuple[str, ...] = ()
) -> list[NodeFacts]:
    """Every node's facts; `model_folders`: the Hugging Face cache folders whose listing each node gives."""

    def one(node: NodeSpec) -> NodeFacts:
        argv = script_argv(image, container, node.address, model_folders)
        ran = hosts.run(node, argv, timeout=60, check=False)
        return parse_facts(node, ran.stdout)

    return [
        o.value if o.value is not None else NodeFacts(node=o.node, error=unlabelled(o.error)) for o in hosts.each(one)
    ]


def unlabelled(error: BaseException | None) -> str:
    """What went wrong on a node, whole (a fix such as the ssh-keyscan line included), without the node's
    name in front: the problem that carries it names the node once."""
    if isinstance(error, HostError):
        return error.message
    return str(error or "")

"""Test-only: N test hosts on this machine, each a network namespace with its own sshd and dockerd.

Each node is a net namespace on a private bridge (no default route: it can reach only the bridge's
subnet), plus its own UTS namespace (hostname) and mount namespace (tmpfs Docker data-root; private
/root, /opt, /srv). sshd joins the dockerd's namespaces and sets DOCKER_HOST for every session, so
`ssh node docker …` talks to that node's daemon. Keys and known_hosts are the testbed's own.
Everything started is stopped by PID, and teardown verifies that nothing is left.
(TESTBED.md §C-E in ../shared describes the measured setup this follows.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.docker28 import daemon_config, private_run_script

SSHD_CONFIG = """Port 22
ListenAddress {addr}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {keys}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
MaxSessions 64
MaxStartups 64:30:128
SetEnv DOCKER_HOST=unix://{dir}/docker.sock TESTBED_NODE={name} PATH={path}
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


_RNG = random.SystemRandom()


def free_subnet() -> str:
    """A 10.213.N.0/24 that no route on this machine overlaps: a bridge left by a killed run (or anything
    else) on the same subnet would take the traffic meant for our nodes."""
    routes = sh("ip", "-4", "-o", "route", "show", "table", "all", check=False).stdout.split("\n")
    used = []
    for line in routes:
        words = line.split()
        dest = (
            words[1]
            if words and words[0] in ("local", "broadcast", "unicast") and len(words) > 1
            else (words[0] if words else "")
        )
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(dest, strict=False))
    free = [n for n in range(100, 250) if not any(ipaddress.ip_network(f"10.213.{n}.0/24").overlaps(u) for u in used)]
    if not free:
        raise RuntimeError("no free 10.213.N.0/24 for the testbed; `ip route` shows them all in use")
    return f"10.213.{_RNG.choice(free)}"


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, **kw)  # type: ignore[call-overload]


def alive(pid: int | None) -> bool:
    """Running, and not a zombie (the daemons are our children: reap them when they exit)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_pids(pids: list[int], deadline: float = 30) -> None:
    pids = [p for p in pids if alive(p)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            child = int(proc.name)
            out += [*descendants(child), child]
    return out


@dataclass
class Node:
    name: str  # hN
    index: int
    address: str
    dir: Path
    netns: str

    @property
    def sock(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("/usr/bin/docker", "-H", self.sock, *args, check=check)

    def rx_bytes(self) -> int:
        """Bytes received on the node's interface (what it downloaded, all protocols)."""
        return int(Path(f"/sys/class/net/{self.veth}/statistics/tx_bytes").read_text())  # host side tx = node rx

    veth: str = ""


@dataclass
class Testbed:
    __test__ = False  # not a test class, despite the name

    root: Path
    count: int = 3
    # SystemRandom: the global generator may be seeded (hypothesis), and two runs on one machine, one of
    # them killed before its teardown, must not pick the same names.
    tag: str = field(default_factory=lambda: f"{_RNG.randrange(16**4):04x}")
    subnet: str = ""
    nodes: list[Node] = field(default_factory=list)
    # Docker 28 on the nodes (tests/docker28.py: its bin/) with this image store; None: the host's dockerd
    docker28: Path | None = None
    store: str = "classic"

    def __post_init__(self) -> None:
        if not self.subnet:
            self.subnet = free_subnet()
        self.bridge = f"sp{self.tag}br"
        self.keys = self.root / "keys"
        for i in range(1, self.count + 1):
            node = Node(
                name=f"h{i}",
                index=i,
                address=f"{self.subnet}.{10 + i}",
                dir=self.root / f"h{i}",
                netns=f"sp{self.tag}h{i}",
            )
            node.veth = f"sp{self.tag}v{i}"
            self.nodes.append(node)

    # --- who can run it ---------------------------------------------------------------------------
    @staticmethod
    def why_not() -> str | None:
        if os.geteuid() != 0:
            return "the testbed needs root (network namespaces, dockerd)"
        for tool in ("ip", "iptables", "nsenter", "unshare", "dockerd", "ssh-keygen"):
            if not shutil.which(tool):
                return f"the testbed needs {tool}"
        if not Path("/usr/sbin/sshd").exists():
            return "the testbed needs /usr/sbin/sshd (apt-get install openssh-server)"
        return None

    @property
    def key(self) -> Path:
        return self.keys / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.keys / "known_hosts"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # --- setup ------------------------------------------------------------------------------------
    def setup(self) -> Testbed:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._keys()
            self._network()
            for n in self.nodes:
                self._start_dockerd(n)
            for n in self.nodes:
                self._wait_dockerd(n)
                self._start_sshd(n)
            for n in self.nodes:
                self._wait_sshd(n)
        except BaseException:
            self.teardown()
            raise
        return self

    def _keys(self) -> None:
        self.keys.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "testbed-client", "-f", str(self.key))
        shutil.copyfile(f"{self.key}.pub", self.keys / "authorized_keys")
        (self.keys / "authorized_keys").chmod(0o600)
        lines = []
        for n in self.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            hk = n.dir / "ssh_host_ed25519_key"
            if not hk.exists():
                sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{n.name}-hostkey", "-f", str(hk))
            lines.append(f"{n.address} {' '.join(Path(f'{hk}.pub').read_text().split()[:2])}\n")
        self.known_hosts.write_text("".join(lines))

    def _network(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        # The host dockerd sets FORWARD policy DROP; bridged node<->node traffic goes through FORWARD.
        sh(
            "iptables",
            "-I",
            "FORWARD",
            "1",
            "-i",
            self.bridge,
            "-o",
            self.bridge,
            "-m",
            "comment",
            "--comment",
            f"sp{self.tag}",
            "-j",
            "ACCEPT",
        )
        for n in self.nodes:
            sh("ip", "netns", "add", n.netns)
            sh("ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.netns)
            sh("ip", "link", "set", n.veth, "master", self.bridge, "up")
            sh("ip", "-n", n.netns, "addr", "add", f"{n.address}/24", "dev", "eth0")
            sh("ip", "-n", n.netns, "link", "set", "eth0", "up")
            sh("ip", "-n", n.netns, "link", "set", "lo", "up")
            # no default route: a node reaches only the testbed subnet

    def _start_dockerd(self, n: Node) -> None:
        for d in ("data", "exec", "fs/root", "fs/opt", "fs/srv"):
            (n.dir / d).mkdir(parents=True, exist_ok=True)
        (n.dir / "daemon.json").write_text(daemon_config(self.store) if self.docker28 else "{}\n")
        for f in ("docker.pid", "sshd.pid", "docker.sock"):
            (n.dir / f).unlink(missing_ok=True)
        binds = " && ".join(f"mount --bind {n.dir}/fs{d} {d}" for d in ("/root", "/opt", "/srv"))
        if self.docker28:  # its containerd, shims and runc state in the node's own folders
            binds += f" && {private_run_script(n.dir / 'private')} && export PATH={self.docker28}:$PATH"
        script = (
            f"hostname {n.name} && mount -t tmpfs -o size=6g sp{self.tag}-{n.name} {n.dir}/data && {binds} && "
            f"exec dockerd --config-file {n.dir}/daemon.json --data-root {n.dir}/data --exec-root {n.dir}/exec "
            f"--pidfile {n.dir}/docker.pid -H {n.sock} --bridge=none --iptables=false --ip6tables=false "
            f"--ip-masq=false --cgroup-parent=/sp{self.tag}-{n.name}"
            # Docker 28 reads CDI specs (GPUs by --device) from the node's own folder, not the host's /etc/cdi
            + (f" --cdi-spec-dir {n.dir}/cdi" if self.docker28 else "")
        )
        log = (n.dir / "dockerd.log").open("ab")
        # nsenter --net only (ip netns exec would remount /sys and hide the cgroup mounts dockerd needs)
        subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{n.netns}",
                "unshare",
                "--uts",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _wait_dockerd(self, n: Node, deadline: float = 60) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            answers = n.docker("info", "--format", "{{.Name}}", check=False).returncode == 0
            if read_pid(n.dir / "docker.pid") and answers:
                return
            time.sleep(0.3)
        raise RuntimeError(f"{n.name} dockerd did not come up; see {n.dir / 'dockerd.log'}")

    def _start_sshd(self, n: Node) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        cfg = n.dir / "sshd_config"
        # PATH puts Debian's docker client (/usr/bin, 20.10) before any newer one in /usr/local/bin.
        path = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin"
        if self.docker28:  # the node's own client is then 28.5 too
            path = f"{self.docker28}:{path}"
        cfg.write_text(SSHD_CONFIG.format(addr=n.address, dir=n.dir, keys=self.keys, name=n.name, path=path))
        sh("/usr/sbin/sshd", "-t", "-f", str(cfg))
        pid = read_pid(n.dir / "docker.pid")
        subprocess.Popen(
            [
                "nsenter",
                f"--target={pid}",
                "--net",
                "--uts",
                "--mount",
                "/usr/sbin/sshd",
                "-D",
                "-f",
                str(cfg),
                "-E",
                str(n.dir / "sshd.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait_sshd(self, n: Node, deadline: float = 20) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            # reached from here, not only started: a route that leads elsewhere fails every test after
            if read_pid(n.dir / "sshd.pid") and answers(n.address, 22):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{n.name} sshd at {n.address}:22 did not answer from the host; see {n.dir / 'sshd.log'}")

    # --- faults -----------------------------------------------------------------------------------
    def kill_node(self, name: str, what: str = "dockerd") -> None:
        n = self.node(name)
        pid = read_pid(n.dir / ("docker.pid" if what == "dockerd" else "sshd.pid"))
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)

    def restart_node(self, name: str) -> None:
        """After kill_node: stop what is left of the node (sshd, orphaned containerd/shims and their
        containers), then start a fresh dockerd (empty tmpfs data-root) and sshd."""
        n = self.node(name)
        sshd = read_pid(n.dir / "sshd.pid")
        if alive(sshd):
            stop_pids([*descendants(sshd), sshd], 5)  # type: ignore[list-item]
        for pid in self._leftovers(n.dir):
            for k in descendants(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)
            stop_pids([pid], 5)
        stop_pids([p for p in [read_pid(n.dir / "docker.pid")] if p], 10)
        # The dead daemon's containerd state (pid file, sockets) makes a new dockerd wait for a
        # containerd that is gone: start from a clean exec root.
        shutil.rmtree(n.dir / "exec", ignore_errors=True)
        self._start_dockerd(n)
        self._wait_dockerd(n)
        self._start_sshd(n)
        self._wait_sshd(n)

    def restart_sshd(self, name: str) -> None:
        n = self.node(name)
        (n.dir / "sshd.pid").unlink(missing_ok=True)
        self._start_sshd(n)
        self._wait_sshd(n)

    def cluster(self, **extra: object) -> dict[str, object]:
        """cluster.yaml data for these nodes, with the testbed's own key and known_hosts."""
        return {
            "nodes": [{"address": n.address, "name": n.name} for n in self.nodes],
            "ssh": {"known_hosts": str(self.known_hosts), "key": str(self.key), "connect_timeout": 5},
            **extra,
        }

    def ssh_argv(self, node: Node, *cmd: str) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{node.address}",
            *cmd,
        ]

    # --- teardown ---------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Stop everything by PID and verify; returns what was left (empty when clean)."""
        for n in self.nodes:
            if (n.dir / "docker.sock").exists():
                ids = n.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    n.docker("rm", "-f", *ids, check=False)
        sessions, listeners = [], []
        for n in self.nodes:
            pid = read_pid(n.dir / "sshd.pid")
            if alive(pid):
                sessions += descendants(pid)  # type: ignore[arg-type]
                listeners.append(pid)
        stop_pids(sessions, 5)
        stop_pids(listeners, 10)  # type: ignore[arg-type]
        dockerds = [p for n in self.nodes if alive(p := read_pid(n.dir / "docker.pid"))]
        children = [c for p in dockerds for c in descendants(p)]  # type: ignore[arg-type]
        stop_pids(dockerds, 30)  # type: ignore[arg-type]
        stop_pids(children, 10)
        for pid in self._leftovers():
            kids = descendants(pid)
            for k in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)
            stop_pids([pid], 5)
        for n in self.nodes:
            for cg in sorted(Path("/sys/fs/cgroup").glob(f"*/sp{self.tag}-{n.name}*"), reverse=True):
                for sub in sorted(cg.rglob("*"), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    cg.rmdir()
            sh("ip", "netns", "del", n.netns, check=False)
            sh("ip", "link", "del", n.veth, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        while (
            sh(
                "iptables",
                "-D",
                "FORWARD",
                "-i",
                self.bridge,
                "-o",
                self.bridge,
                "-m",
                "comment",
                "--comment",
                f"sp{self.tag}",
                "-j",
                "ACCEPT",
                check=False,
            ).returncode
            == 0
        ):
            pass
        return self.leftovers()

    def _leftovers(self, under: Path | None = None) -> list[int]:
        out = []
        root = under or self.root
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                comm = (proc / "comm").read_text().strip()
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            daemon = comm in ("dockerd", "containerd", "sshd") or comm.startswith("containerd-shim")
            if daemon and f"{root}/" in cmdline:
                out.append(int(proc.name))
        return out

    def leftovers(self) -> list[str]:
        left = [f"process {p}" for p in self._leftovers()]
        netns = sh("ip", "netns", "list", check=False).stdout
        left += [f"netns {n.netns}" for n in self.nodes if n.netns in netns]
        if sh("ip", "link", "show", self.bridge, check=False).returncode == 0:
            left.append(f"bridge {self.bridge}")
        if f"sp{self.tag}" in sh("iptables", "-S", "FORWARD", check=False).stdout:
            left.append("iptables rule")
        left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/sp{self.tag}-*")]
        return left

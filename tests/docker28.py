"""Test-only: Docker Engine 28.5 beside the host's Docker (Debian bookworm's 20.10), without touching it.

DGX Spark owners run Docker 28/29 (buildx; on new installs of 29 the containerd image store), so the
Docker-facing tests run on it too. Debian forky's docker.io 28.5, docker-cli, containerd 2.1, runc and
docker-buildx are unpacked into a debootstrap rootfs once (cached, about 1.5 minutes), and the binaries
run on the host's own root: under a chroot, `docker exec` would land outside the container and
`docker run -v` would see the rootfs. All but runc need nothing newer than bookworm's libc; runc gets a
copy whose ELF interpreter and rpath point into the rootfs (patchelf).

A daemon here gets its own socket, data-root, exec-root, cgroup parent and mount namespace, in which the
three host paths Docker 28 uses whatever its config says (/run/docker/plugins, /run/containerd,
/run/runc) are this daemon's own folders. Never `--bridge=none` in the host's network namespace: dockerd
then deletes the interface named docker0, the host daemon's bridge. A daemon on this machine gets its own
bridge without NAT instead; one in a test host's network namespace (tests/testbed) has none.
(../shared/testbed/docker28/ is the measured worked example this follows.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from pipeline.engines.bootstrap import debian_mirror
from tests.aptproxy import AptProxy
from tests.integration.dockerd import launch

# Not under /root: a test host's mount namespace covers /root, /opt and /srv with its own folders, and
# its dockerd, containerd and runc must still be found there.
CACHE = Path(os.environ.get("SPARK_PIPELINE_TEST_DOCKER28", "/var/cache/spark-pipeline-tests/docker28"))
SUITE = "forky"
PACKAGES = ("docker.io", "docker-cli", "containerd", "runc", "docker-buildx", "iptables", "patchelf")
# the daemon side, then the clients; all are links into the rootfs except runc (a patched copy)
BINARIES = (
    "usr/sbin/dockerd",
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/bin/ctr",
    "usr/bin/docker-init",
    "usr/sbin/docker-proxy",
    "usr/bin/docker",
)
_BRIDGES = threading.Lock()
PRIVATE_RUN = ("/run/docker/plugins", "/run/containerd", "/run/runc")


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "Docker 28 beside the host's needs root"
    for tool in ("debootstrap", "unshare", "chroot", "ip"):
        if not shutil.which(tool):
            return f"Docker 28 beside the host's needs {tool}"
    return None


def _in_rootfs(rootfs: Path, command: str, timeout: float) -> None:
    """A command chrooted into the rootfs, with /proc mounted there in a private mount namespace."""
    script = (
        'r=$1; shift; mount -t proc proc "$r/proc" && '
        'exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"'
    )
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(rootfs)]
    subprocess.run([*argv, "sh", "-c", command], check=True, capture_output=True, timeout=timeout)


def install(root: Path = CACHE, timeout: float = 900) -> Path:
    """The rootfs and bin/ (idempotent, one installer at a time); returns bin/."""
    root.mkdir(parents=True, exist_ok=True)
    bin_dir, rootfs = root / "bin", root / "rootfs"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((rootfs / "var/lib/dpkg/info" / f"{p}.list").exists() for p in PACKAGES) and _runs(bin_dir / "runc"):
            return bin_dir
        mirror = debian_mirror()  # the one apt uses here: the only one this network reaches
        if not (rootfs / "usr/bin/apt-get").exists():
            script = (
                []
                if Path(f"/usr/share/debootstrap/scripts/{SUITE}").exists()
                else ["/usr/share/debootstrap/scripts/sid"]
            )
            shutil.rmtree(rootfs, ignore_errors=True)
            cmd = ["debootstrap", "--variant=minbase", SUITE, str(rootfs), str(mirror), *script]
            subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
        # the mirror's Release files may be past Valid-Until by this clock; the postinsts start nothing
        (rootfs / "etc/apt/apt.conf.d/99no-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
        (rootfs / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (rootfs / "usr/sbin/policy-rc.d").chmod(0o755)
        packages = " ".join(PACKAGES)
        _in_rootfs(rootfs, f"apt-get update -q && apt-get install -y -q --no-install-recommends {packages}", timeout)
        bin_dir.mkdir(exist_ok=True)
        for f in BINARIES:
            (bin_dir / Path(f).name).unlink(missing_ok=True)
            (bin_dir / Path(f).name).symlink_to(rootfs / f)
        libs = rootfs / "usr/lib/x86_64-linux-gnu"
        shutil.copy2(rootfs / "usr/sbin/runc", rootfs / "runc.d28")
        _in_rootfs(
            rootfs,
            f"patchelf --set-interpreter {libs}/ld-linux-x86-64.so.2 --set-rpath {libs} /runc.d28",
            timeout,
        )
        os.replace(rootfs / "runc.d28", bin_dir / "runc")
        if not _runs(bin_dir / "runc"):
            raise RuntimeError(f"the patched runc in {bin_dir} does not run")
        return bin_dir


def _runs(binary: Path) -> bool:
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def daemon_config(store: str, **extra: object) -> str:
    """daemon.json for either image store (containerd-snapshotter is the containerd image store)."""
    features = {"containerd-snapshotter": store == "containerd"}
    base: dict[str, object] = {"features": features}
    if store == "classic":
        base["storage-driver"] = "overlay2"
    return json.dumps({**base, **extra}, indent=1) + "\n"


def private_run_script(private: Path) -> str:
    """Shell lines, run inside the daemon's own mount namespace, that cover the host paths Docker 28 uses
    whatever its config says with this daemon's folders."""
    return " && ".join(f"mkdir -p {d} {private}{d} && mount --bind {private}{d} {d}" for d in PRIVATE_RUN)


@dataclass
class Daemon28:
    """One Docker 28 daemon on this machine, beside the host's, with the given image store."""

    dir: Path
    store: str  # classic | containerd
    bin: Path
    apt: bool = False  # builds reach Debian's mirror through an AptProxy on its bridge (and nothing else)
    pid: int | None = None
    proxy: AptProxy | None = None

    @property
    def sock(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    @property
    def bridge(self) -> str:
        """Its own bridge, named after its folder (two runs never share one)."""
        return f"d28t{hashlib.sha256(str(self.dir).encode()).hexdigest()[:8]}"

    def _add_bridge(self) -> str:
        """Create the bridge on a 10.229.N.0/24 no interface here uses (a subnet on two bridges sends
        replies out of the wrong one); returns its address."""
        with _BRIDGES:  # two daemons may start at once (threads)
            if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode != 0:
                used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
                start = int(self.bridge[4:], 16)
                octet = next(n for i in range(200) if f"inet 10.229.{(n := (start + i) % 200 + 20)}." not in used)
                subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
                subprocess.run(["ip", "addr", "add", f"10.229.{octet}.1/24", "dev", self.bridge], check=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
            out = subprocess.run(["ip", "-o", "-4", "addr", "show", self.bridge], capture_output=True, text=True).stdout
            return out.split("inet ", 1)[1].split("/", 1)[0]

    def env(self) -> dict[str, str]:
        """What a test sets to make the tool use this daemon with its own client (28.5, buildx)."""
        return {
            "DOCKER_HOST": self.sock,
            "DOCKER_CONFIG": str(self.dir / "config"),
            "SPARK_PIPELINE_DOCKER": str(self.bin / "docker"),
        }

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, input_stream: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Its own client (28.5, buildx); `input_stream` feeds its stdin (a `docker save` piped in)."""
        proc = subprocess.run(
            [str(self.bin / "docker"), *args],
            env={**os.environ, **self.env()},
            stdin=input_stream,
            capture_output=True,
            check=False,
            timeout=timeout,
        )
        out = subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )
        if check and proc.returncode:
            raise RuntimeError(f"docker {' '.join(args)}: exit {proc.returncode}: {out.stderr.strip()[-2000:]}")
        return out

    def start(self, deadline: float = 60) -> Daemon28:
        """Start it; whatever a failed start made (bridge, proxy, daemon) is undone before the error."""
        try:
            return self._start(deadline)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> Daemon28:
        if len(f"{self.dir}/exec/containerd/containerd-debug.sock") > 100:
            raise ValueError(f"{self.dir}: too long for containerd's unix sockets (104 bytes); use a shorter folder")
        for d in ("data", "exec", "config/cli-plugins"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        plugin = self.dir / "config/cli-plugins/docker-buildx"
        if not plugin.exists():
            plugin.symlink_to(self.bin.parent / "rootfs/usr/libexec/docker/cli-plugins/docker-buildx")
        bridge, address = self.bridge, self._add_bridge()
        config: dict[str, object] = {}
        if self.apt:
            self.proxy = AptProxy(address, {urlsplit(debian_mirror()).hostname or ""}, cache=CACHE.parent / "debs")
            # the client hands config.json's proxies to builds as build args (apt honours http_proxy)
            config["proxies"] = {"default": {"httpProxy": self.proxy.url, "noProxy": "127.0.0.1,localhost"}}
        (self.dir / "config/config.json").write_text(json.dumps(config) + "\n")
        (self.dir / "daemon.json").write_text(
            daemon_config(
                self.store,
                bridge=bridge,
                **{"ip-masq": False, "iptables": False, "ip6tables": False, "ip-forward": False},
                **{"userland-proxy": False},
            )
        )
        pidfile = self.dir / "dockerd.pid"
        script = (
            f"{private_run_script(self.dir / 'private')} && exec env -i PATH={self.bin}:/usr/sbin:/usr/bin:/sbin:/bin "
            f"HOME=/root dockerd --config-file {self.dir}/daemon.json --data-root {self.dir}/data "
            f"--exec-root {self.dir}/exec --pidfile {pidfile} -H {self.sock} --cgroup-parent /d28t-{bridge}"
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        _, self.pid = launch(argv, self.dir / "dockerd.log", pidfile, self._answers, deadline, "Docker 28")
        return self

    def _answers(self) -> bool:
        try:
            return self.docker("version", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:  # a daemon still starting may not answer yet
            return False

    def stop(self, deadline: float = 30) -> None:
        """Stop it by its PID, then what only it started (its containerd, shims: their command lines name
        its exec-root); delete its bridge and its containers' empty cgroups."""
        from tests.testbed.testbed import alive, stop_pids

        if self.pid is not None and alive(self.pid):
            stop_pids([self.pid], deadline)
        ours = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if f"{self.dir}/exec".encode() in (proc / "cmdline").read_bytes():
                        ours.append(int(proc.name))
        stop_pids(ours, deadline)
        if self.proxy is not None:
            self.proxy.close()
        bridge = self.bridge
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        for cg in Path("/sys/fs/cgroup").glob(f"*/d28t-{bridge}"):
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()

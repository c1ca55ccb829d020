"""A container registry next to the image source, on loopback only: Debian's `docker-registry`
(distribution 2.x) started with our own config, storage kept under the cache so a later push sends only
new layers, stopped by PID when shipping ends (also on Ctrl-C)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from pipeline.errors import PipelineError

CONFIG = """version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Registry:
    def __init__(self, workdir: Path, port: int, binary: str | None = None):
        self.workdir = workdir
        self.port = port
        self.binary = binary or os.environ.get("SPARK_PIPELINE_REGISTRY") or shutil.which("docker-registry") \
            or "/usr/bin/docker-registry"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    def __enter__(self) -> Registry:
        if not Path(self.binary).exists():
            raise PipelineError("shipping through a registry needs Debian/Ubuntu's docker-registry "
                                "(apt-get install docker-registry); or use --ship stream")
        if port_in_use(self.port):
            raise PipelineError(f"127.0.0.1:{self.port} is taken here; set registry_port in cluster.yaml "
                                "(or finish the other ship/deploy first)")
        (self.workdir / "storage").mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "config.yml"
        cfg.write_text(CONFIG.format(root=self.workdir / "storage", port=self.port))
        self.proc = subprocess.Popen([self.binary, "serve", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PipelineError(f"docker-registry exited at start; see {self.log}")
            with contextlib.suppress(OSError), opener.open(f"http://127.0.0.1:{self.port}/v2/", timeout=1) as r:
                if r.status == 200:
                    return self
            time.sleep(0.1)
        self.__exit__()
        raise PipelineError(f"docker-registry did not answer on 127.0.0.1:{self.port} within 20 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

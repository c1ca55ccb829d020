"""A registry pull over `ssh -R` ends on the node's status line, not on ssh's end: Docker 28 on the
containerd store keeps idle keep-alive connections through the forward for about 30 s, and ssh waits
for them. Here a process that prints the line and then stays (as ssh does) stands in for ssh."""

from __future__ import annotations

import subprocess
import time

import pytest

from pipeline.config.cluster import NodeSpec
from pipeline.errors import HostError
from pipeline.ship.pull import DONE, OpenSshPull, pull_argv


def pull_that_stays(lines: str) -> OpenSshPull:
    pull = OpenSshPull.__new__(OpenSshPull)
    pull.node = NodeSpec(address="10.0.0.1", name="n1")
    pull.command = pull_argv("localhost:5000/vllm-node:latest", "vllm-node")
    pull.proc = subprocess.Popen(
        ["sh", "-c", f"printf '{lines}'; sleep 30"], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    return pull


def test_the_status_line_ends_the_wait_and_counts_what_was_pulled() -> None:
    pull = pull_that_stays(f"abc123: Pull complete\\nINSPECT\\n{DONE} 0\\n")
    started = time.monotonic()
    received, out = pull.follow({"abc123": 4096}, timeout=60, progress=lambda n: None)
    assert time.monotonic() - started < 5  # not the 30 s the process would stay
    assert received == 4096 and out.rstrip().endswith("INSPECT") and DONE not in out
    assert pull.proc.poll() is not None  # the stand-in for ssh was ended


def test_a_failed_pull_reports_its_own_status() -> None:
    pull = pull_that_stays(f"Error response from daemon: manifest unknown\\n{DONE} 1\\n")
    with pytest.raises(HostError) as e:
        pull.follow({}, timeout=60, progress=lambda n: None)
    assert "exit 1" in str(e.value) and "manifest unknown" in e.value.tail


def test_the_script_prints_the_status_after_the_pull_whatever_it_gave() -> None:
    script = pull_argv("r", "i", wait=True)[2]
    assert script.startswith("read -r go && {") and script.endswith(f'echo "{DONE} $?"')

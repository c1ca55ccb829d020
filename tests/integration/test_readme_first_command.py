"""The README's first command, as a user runs it after the setup command: it builds the smoke stack,
serves the smoke recipe on this machine, benchmarks it with llama-benchy's quick profile and shows the
table and where the chart is. (Its time is printed, not asserted: speed targets live in bench/.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.integration.conftest import SmokeBuild

pytestmark = pytest.mark.docker


def first_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md has no sh block"
    return [line.split("#")[0].strip() for line in block[1].splitlines() if line.strip()]


def test_the_readme_s_first_command_serves_and_benchmarks_the_smoke_stack(
    smoke_build: SmokeBuild, tmp_path: Path
) -> None:
    setup, main = first_block()
    assert setup.startswith("sudo examples/smoke/setup.sh")
    argv = shlex.split(main)
    assert argv[0] == "examples/smoke/run.sh"
    argv[1] = str(tmp_path / "smoke")  # the README's /tmp/smoke, kept per test
    env = {**os.environ, **smoke_build.env(), "PORT": "8093", "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        print(f"README first command: {time.monotonic() - started:.1f} s with the smoke stages in the store")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = proc.stderr
        assert "$ python3 -m pipeline build -f" in out and "ready in" in out
        assert re.search(r"│\s+0 │\s+1 │\s+[\d,.]+ │\s+[\d,.]+ │", out), out[-2000:]
        assert re.search(r"│\s+4096 │\s+1 │\s+[\d,.]+ │\s+[\d,.]+ │", out)
        results = Path(re.search(r"results: (\S+) \(table.md, record.json, chart.png\)", out)[1])  # type: ignore[index]
        assert (results / "chart.png").read_bytes()[:4] == b"\x89PNG" and (results / "record.json").is_file()
        assert "stop --name smoke" in out
    finally:
        run_cli("stop", "--name", "smoke", env=smoke_build.env(), check=None)


def test_a_port_another_server_holds_stops_the_deploy_instead_of_a_false_ready(smoke_build: SmokeBuild) -> None:
    import socket

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        proc = run_cli(
            "recipe",
            "run",
            str(smoke_build.root / "smoke.yaml"),
            "--solo",
            "--name",
            "smoke-port",
            "--port",
            str(port),
            "--gpus",
            "none",
            "--non-privileged",
            "--nofile",
            "16384",
            "--mem-limit-gb",
            "4",
            "--shm-size-gb",
            "1",
            "--timeout",
            "60",
            env=smoke_build.env(),
            check=1,
        )
        assert f"port {port} is taken on local by another process" in proc.stderr
        assert not re.search(r"ready in [\d.]+ s", proc.stderr) and "Traceback" not in proc.stderr
    finally:
        squatter.close()
        run_cli("stop", "--name", "smoke-port", env=smoke_build.env(), check=None)

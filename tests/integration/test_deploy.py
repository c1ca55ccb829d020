"""deploy / status / logs / exec / stop on three test hosts, with an image built by our BuildKit engine
from the smoke stack's runtime stage plus (for tests only) Ray from PyPI and the stand-in `vllm serve`
in tests/standin/. The product runs exactly the command it is given."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, run_cli
from tests.integration.conftest import SmokeBuild
from tests.testbed.testbed import Node, Testbed

pytestmark = pytest.mark.docker
IMAGE = "vllm-node-test"
# This sandbox allows neither --privileged nor a nofile limit above 20000; a Spark allows both.
LIMITS = ["--gpus", "none", "--non-privileged", "--nofile", "16384", "--mem-limit-gb", "4", "--shm-size-gb", "1"]


@pytest.fixture
def cluster_yaml(testbed: Testbed, tmp_path: Path, deploy_image: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(testbed.cluster(registry_port=5078, image=deploy_image)))
    yield path
    run_cli("stop", "--cluster", str(path), check=None)


def deploy(
    cf: Path,
    *args: str,
    check: int | None = 0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_cli("deploy", "--cluster", str(cf), *LIMITS, "--timeout", "180", *args, check=check, env=env)


def containers(tb: Testbed) -> list[str]:
    return [n.docker("ps", "-aq", "--filter", "name=vllm_node").stdout.strip() for n in tb.nodes]


def test_dry_run_prints_the_plan_and_runs_nothing(testbed: Testbed, cluster_yaml: Path) -> None:
    proc = deploy(cluster_yaml, "--dry-run", "--json", "--", "vllm", "serve", "m", "-pp", "3")
    p = json.loads(proc.stdout)
    assert p["mode"] == "noray" and [n["role"] for n in p["nodes"]] == ["head", "worker", "worker"]
    assert all(n["env"]["GLOO_SOCKET_IFNAME"] == "eth0" for n in p["nodes"])
    assert containers(testbed) == ["", "", ""]


def test_no_ray_on_three_nodes(testbed: Testbed, cluster_yaml: Path) -> None:
    cmd = ["--", "vllm", "serve", "test/model", "--port", "8021", "-pp", "3"]
    proc = deploy(cluster_yaml, *cmd)
    assert "ready in" in proc.stderr
    for node in ("h2", "h3"):
        log = run_cli("logs", "--cluster", str(cluster_yaml), "--node", node).stdout
        assert f"via eth0 to {testbed.nodes[0].address}:29501" in log  # ranks met on the planned interface
    ids = containers(testbed)
    again = deploy(cluster_yaml, *cmd)
    assert "nothing to do" in again.stderr and containers(testbed) == ids  # nothing shipped, nothing started
    run_cli("stop", "--cluster", str(cluster_yaml))
    assert containers(testbed) == ["", "", ""]


def test_ray_on_three_nodes(testbed: Testbed, cluster_yaml: Path) -> None:
    deploy(
        cluster_yaml,
        "--ray",
        "--ray-num-cpus",
        "1",
        "--ray-object-store-bytes",
        "100000000",
        "--",
        "vllm",
        "serve",
        "test/model",
        "--port",
        "8022",
        "-tp",
        "3",
    )
    rows = json.loads(run_cli("status", "--cluster", str(cluster_yaml), "--port", "8022", "--json").stdout)
    assert rows[0]["role"] == "head" and rows[0]["ray_nodes"] == "3" and rows[0]["health"] == "ok"
    assert [r["container"] for r in rows] == ["true"] * 3
    log = run_cli("logs", "--cluster", str(cluster_yaml)).stdout
    assert "Ray task per node" in log and "h3" in log
    head = testbed.nodes[0]
    assert "RAY_AUTH_MODE=token" in head.docker("inspect", "-f", "{{json .Config.Env}}", "vllm_node").stdout
    wrong = head.docker("exec", "-e", "RAY_AUTH_TOKEN=" + "x" * 43, "vllm_node", "ray", "status", check=False)
    assert wrong.returncode != 0 and "InvalidAuthToken" in wrong.stdout + wrong.stderr  # Ray checks the token
    assert listening(head, 10001) == set()  # Ray's client server is off unless asked (--ray-client)
    # Ray's GCS cannot be bound to one address (ss says so); doctor names it
    assert {a for a, _ in listening(head, 29501)} <= {"0.0.0.0", "::"}
    found = doctor_json(cluster_yaml)
    h1 = next(n for n in found["nodes"] if n["node"] == "h1")
    assert any(x["port"] == 29501 and x["scope"] == "all" for x in h1["listening"])
    warned = [p["problem"] for p in found["problems"] if p["node"] == "h1" and "on every interface" in p["problem"]]
    assert len(warned) == 1 and "29501" in warned[0]  # one line for all of Ray's ports


def listening(node: Node, port: int) -> set[tuple[str, int]]:
    """What `ss` in the node's network namespace says listens on `port` (TCP), as (address, port)."""
    out = subprocess.run(
        ["ip", "netns", "exec", node.netns, "ss", "-ltnH"], capture_output=True, text=True, check=True
    ).stdout
    found = set()
    for line in out.splitlines():
        address, _, p = line.split()[3].rpartition(":")
        if p == str(port):
            found.add(("::" if address == "*" else address.strip("[]"), port))
    return found


def doctor_json(cf: Path) -> dict[str, Any]:
    return json.loads(run_cli("doctor", "--cluster", str(cf), "--no-gpu-ok", "--json", check=None).stdout)


def test_api_key_and_expose_on_the_test_hosts(testbed: Testbed, cluster_yaml: Path) -> None:
    """With a key the deploy waits, status reports and only the key opens /v1; --expose local and cluster
    bind the API where asked and nowhere else (ss in the head's namespace), over the command's 0.0.0.0."""
    from pipeline import paths
    from pipeline.launch.apply import http_ok

    head = testbed.nodes[0]
    cmd = ["--", "vllm", "serve", "m", "--host", "0.0.0.0", "--port", "8027", "-pp", "2"]
    deploy(cluster_yaml, "--api-key", "auto", "--expose", "local", *cmd)
    assert listening(head, 8027) == {("127.0.0.1", 8027)}
    rows = json.loads(run_cli("status", "--cluster", str(cluster_yaml), "--port", "8027", "--json").stdout)
    assert rows[0]["health"] == "ok"  # asked on the head, with the container's own key
    h1 = next(n for n in doctor_json(cluster_yaml)["nodes"] if n["node"] == "h1")
    assert {"address": "127.0.0.1", "port": 8027, "scope": "local"} in h1["listening"]
    proc = deploy(cluster_yaml, "--api-key", "auto", "--expose", "cluster", *cmd)  # a new --host: a redeploy
    assert "ready in" in proc.stderr
    assert listening(head, 8027) == {(head.address, 8027)}
    key = paths.api_key_file("vllm_node").read_text().strip()
    url = f"http://{head.address}:8027/v1/models"
    assert http_ok(url, api_key=key)[0] and not http_ok(url)[0]
    assert key not in proc.stdout + proc.stderr


def test_wrong_interface_on_one_node_fails_fast_naming_it(testbed: Testbed, cluster_yaml: Path) -> None:
    data = yaml.safe_load(cluster_yaml.read_text())
    data["nodes"][2]["env"] = {"GLOO_SOCKET_IFNAME": "nonexist0"}
    cluster_yaml.write_text(yaml.safe_dump(data))
    start = time.monotonic()
    proc = deploy(cluster_yaml, "--", "vllm", "serve", "m", "--port", "8023", "-pp", "3", check=1)
    elapsed = time.monotonic() - start
    assert "h3" in proc.stderr and "Unable to find address for: nonexist0" in proc.stderr
    assert elapsed < 60, elapsed  # the healthy ranks would wait 600 s for it
    stopped = run_cli("stop", "--cluster", str(cluster_yaml), "--limit", "@failed").stderr
    assert "h3" in stopped and "h1" not in stopped


def test_worker_that_cannot_reach_the_master_fails_in_seconds(testbed: Testbed, cluster_yaml: Path) -> None:
    head, cut = testbed.nodes[0], testbed.nodes[2]
    rule = ["OUTPUT", "-d", head.address, "-p", "tcp", "--dport", "29501", "-j", "DROP"]
    subprocess.run(["ip", "netns", "exec", cut.netns, "iptables", "-I", *rule], check=True)
    try:
        start = time.monotonic()
        proc = deploy(cluster_yaml, "--", "vllm", "serve", "m", "--port", "8024", "-pp", "3", check=1)
        elapsed = time.monotonic() - start
    finally:
        subprocess.run(["ip", "netns", "exec", cut.netns, "iptables", "-D", *rule], check=True)
    flat = " ".join(proc.stderr.split())
    assert f"reach failed on {cut.name}" in flat and f"cannot reach the master address {head.address}:29501" in flat
    assert "h2" not in flat.split("reach failed on", 1)[1].split(":", 1)[0]
    assert elapsed < 60, elapsed  # no rank started: vLLM would have waited 600 s for the missing one


def test_ctrl_c_stops_what_this_run_started_and_nothing_else(testbed: Testbed, cluster_yaml: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "deploy",
            "--cluster",
            str(cluster_yaml),
            *LIMITS,
            "-e",
            "STANDIN_DELAY=600",
            "--timeout",
            "300",
            "--",
            "vllm",
            "serve",
            "m",
            "--port",
            "8026",
            "-pp",
            "3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bystander = testbed.nodes[1]
    try:
        deadline = time.monotonic() + 240
        while not all(containers(testbed)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert all(containers(testbed)), proc.stderr.read() if proc.poll() is not None else "no containers"
        # a container this run did not start, on one of its nodes
        bystander.docker("run", "-d", "--name", "bystander", "--entrypoint", "", IMAGE, "sleep", "infinity")
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 130, err
        assert "interrupted" in err and containers(testbed) == ["", "", ""]
        assert bystander.docker("inspect", "-f", "{{.State.Running}}", "bystander").stdout.strip() == "true"
    finally:
        if proc.poll() is None:
            proc.kill()
        bystander.docker("rm", "-f", "bystander", check=False)


def test_mods_run_in_order_and_a_failing_mod_stops_the_deploy(
    testbed: Testbed, cluster_yaml: Path, tmp_path: Path
) -> None:
    deploy(
        cluster_yaml,
        "--solo",
        "--apply-mod",
        "chatml-chat-template",
        "--",
        "vllm",
        "serve",
        "m",
        "--port",
        "8024",
        "--chat-template",
        "chatml.jinja",
    )
    out = run_cli("exec", "--cluster", str(cluster_yaml), "--", "cat", "/workspace/vllm/chatml.jinja").stdout
    assert "<|im_start|>" in out
    bad = tmp_path / "breaks"
    bad.mkdir()
    (bad / "run.sh").write_text("#!/bin/sh\necho 'patching failed: no such file' >&2\nexit 3\n")
    proc = deploy(
        cluster_yaml,
        "--solo",
        "--force",
        "--apply-mod",
        str(bad),
        "--",
        "vllm",
        "serve",
        "m",
        "--port",
        "8024",
        check=1,
    )
    assert "mod breaks failed" in proc.stderr and "patching failed: no such file" in proc.stderr


def test_secret_reaches_the_container_but_no_argv_or_output(testbed: Testbed, cluster_yaml: Path) -> None:
    token = "hf_" + "s3cr3t" * 4
    other = "hub_" + "t0ken" * 4  # set in cluster.yaml: it too goes through the env file
    data = yaml.safe_load(cluster_yaml.read_text())
    data["container_env"] = {"HUGGING_FACE_HUB_TOKEN": other}
    cluster_yaml.write_text(yaml.safe_dump(data))
    proc = deploy(cluster_yaml, "--solo", "--", "vllm", "serve", "m", "--port", "8025", env={"HF_TOKEN": token})
    assert token not in proc.stdout + proc.stderr and other not in proc.stdout + proc.stderr
    seen = json.loads(run_cli("exec", "--cluster", str(cluster_yaml), "--", "cat", "/tmp/standin-argv.json").stdout)
    assert seen["env"]["HF_TOKEN"] == token and seen["env"]["HUGGING_FACE_HUB_TOKEN"] == other
    inspect = testbed.nodes[0].docker("inspect", "-f", "{{json .Config.Labels}} {{json .Args}}", "vllm_node").stdout
    assert token not in inspect and other not in inspect
    sshd_log = (testbed.nodes[0].dir / "sshd.log").read_text()
    assert token not in sshd_log
    home = testbed.nodes[0].dir / "fs" / "root"
    assert (home / ".spark-pipeline").is_dir() and not (home / ".spark-pipeline" / "env-vllm_node").exists()


hostile = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=24)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=hostile, value=hostile)
def test_shell_metacharacters_arrive_byte_identical(
    testbed: Testbed, cluster_yaml: Path, model: str, value: str
) -> None:
    deploy(cluster_yaml, "--solo", "--force", "-e", f"ODD={value}", "--", "vllm", "serve", model, "--port", "8026")
    seen = json.loads(run_cli("exec", "--cluster", str(cluster_yaml), "--", "cat", "/tmp/standin-argv.json").stdout)
    assert seen["argv"][:2] == ["serve", model]
    assert seen["env"]["ODD"] == value


def test_killed_dockerd_mid_deploy_fails_within_the_deadline(testbed: Testbed, cluster_yaml: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "pipeline",
        "deploy",
        "--cluster",
        str(cluster_yaml),
        *LIMITS,
        "--timeout",
        "120",
        "-e",
        "STANDIN_DELAY=300",
        "--",
        "vllm",
        "serve",
        "m",
        "--port",
        "8027",
        "-pp",
        "3",
    ]
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while containers(testbed)[1] == "" and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(2)
        testbed.kill_node("h2", "dockerd")
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err[-2000:]
        assert time.monotonic() - killed < 30
        assert "h2" in err.split("error:")[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
        testbed.restart_node("h2")


def test_launch_time_vllm_pr(testbed: Testbed, cluster_yaml: Path, smoke_build: SmokeBuild) -> None:
    repo = str(smoke_build.root / "repos" / "vllm")
    deploy(
        cluster_yaml,
        "--solo",
        "--apply-vllm-pr",
        "101",
        "--vllm-repo",
        repo,
        "--",
        "vllm",
        "serve",
        "m",
        "--port",
        "8028",
    )
    out = run_cli(
        "exec", "--cluster", str(cluster_yaml), "--", "python3", "-c", "import vllm.pr101; print(vllm.pr101.FEATURE)"
    ).stdout
    assert out.strip() == "from PR 101"
    native = deploy(
        cluster_yaml,
        "--solo",
        "--apply-vllm-pr",
        "103",
        "--vllm-repo",
        repo,
        "--",
        "vllm",
        "serve",
        "m",
        "--port",
        "8028",
        check=2,
    )
    assert "csrc/kernel.cu" in native.stderr and "python -m pipeline build --apply-vllm-pr #103" in native.stderr


def test_solo_on_this_machine_without_ssh(deploy_image: str, tmp_path: Path) -> None:
    """No cluster file, no -n: the machine the tool runs on, through local processes (no sshd here)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}  # the container's cache mounts are made under the user's home
    name = ["--name", "spark_pipeline_local_test"]

    def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, env=env, check=check)

    try:
        proc = cli(
            "deploy",
            "--solo",
            "--image",
            deploy_image,
            *name,
            *LIMITS,
            "--timeout",
            "120",
            "--",
            "vllm",
            "serve",
            "test/model",
            "--port",
            "8031",
        )
        assert "ready in" in proc.stderr and "http://127.0.0.1:8031/v1" in proc.stderr
        [row] = json.loads(cli("status", *name, "--port", "8031", "--json").stdout)
        assert row["node"] == "local" and row["container"] == "true" and row["health"].startswith("ok")
        assert "test/model" in cli("logs", *name).stdout
        assert cli("exec", *name, "--", "echo", "inside").stdout == "inside\n"
        again = cli(
            "deploy",
            "--solo",
            "--image",
            deploy_image,
            *name,
            *LIMITS,
            "--",
            "vllm",
            "serve",
            "test/model",
            "--port",
            "8031",
        )
        assert "nothing to do" in again.stderr
    finally:
        cli("stop", *name, check=None)
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "name=spark_pipeline_local_test"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert left == ""


def test_a_start_is_waited_on_phase_by_phase_and_a_stuck_phase_is_named(testbed: Testbed, cluster_yaml: Path) -> None:
    """The smoke server takes its time in each phase, in vLLM's log words (SMOKE_START_SECONDS): the
    deploy reports each phase with its time, and fails naming the phase that outlived its deadline."""
    cmd = ["--", "vllm", "serve", "test/model", "--port", "8023", "-pp", "3"]
    slow = ["-e", "SMOKE_START_SECONDS=weights=4,compile=3"]
    proc = deploy(cluster_yaml, *slow, *cmd)
    took = {
        m[1]: int(m[2])
        for m in re.finditer(
            r"(starting|loading weights|compiling and capturing graphs|starting the API server): (\d+) s", proc.stderr
        )
    }
    assert set(took) >= {"loading weights", "compiling and capturing graphs", "starting the API server"}, proc.stderr
    # each phase is timed from the poll that first saw it to the one that saw the next: a poll or two off
    assert 2 <= took["loading weights"] <= 9 and 1 <= took["compiling and capturing graphs"] <= 8
    stuck = deploy(
        cluster_yaml, "--force", "--phase-timeout", "weights=2", "-e", "SMOKE_START_SECONDS=weights=30", *cmd, check=1
    )
    assert "loading weights took longer than 2 s (--phase-timeout weights=SECONDS)" in stuck.stderr
    assert re.search(r"last seen: [0-3]/3 shards", stuck.stderr), stuck.stderr

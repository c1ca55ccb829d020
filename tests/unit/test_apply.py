"""The apply layer on a test double of the hosts: every command it runs was decided by steps.py (the
dry-run list), in the decided order; failures name their node; cleanup commands run after a failure;
secret values reach only the 0600 env file. The server is a real HTTP server on loopback."""

from __future__ import annotations

import dataclasses
import shlex
import time

import pytest

from pipeline.config.cluster import ClusterSpec
from pipeline.errors import LaunchFailed
from pipeline.launch.apply import WATCH, Applier, Deployment
from pipeline.launch.plan import EXIT_FILE, LaunchPlan, NodeInput, Options, plan
from pipeline.launch.secrets import Secrets
from pipeline.launch.steps import DeploySteps, Inputs, ModRef, Run, StepFacts, steps
from pipeline.report import ListReporter
from tests.doubles import FakeHosts, FakeShipper, Health, Unexpected

IMAGE_ID = "sha256:" + "a" * 64


def cluster(n: int) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {"nodes": [{"address": f"10.9.0.{i + 1}", "name": f"s{i + 1}"} for i in range(n)]}
    )


def launch(n: int, port: int, *extra: str, mode: str = "auto", secret_env: tuple[str, ...] = ()) -> LaunchPlan:
    nodes = [
        NodeInput(
            name=f"s{i + 1}",
            address=f"10.9.0.{i + 1}",
            eth_if="eth0",
            home="/home/me",
            ip="127.0.0.1" if i == 0 else f"10.9.0.{i + 1}",
        )
        for i in range(n)
    ]
    return plan(
        nodes,
        Options(
            image="vllm-node",
            command=("vllm", "serve", "m", "--port", str(port), *extra),
            mode=mode,
            image_id=IMAGE_ID,
            secret_env=secret_env,
        ),
    )  # type: ignore[arg-type]


def inputs(p: LaunchPlan, **kw: object) -> Inputs:
    facts = {n.name: StepFacts(home="/home/me", image_id=IMAGE_ID) for n in p.nodes}
    return Inputs(image="vllm-node", local_image_id=IMAGE_ID, facts=facts, **kw)  # type: ignore[arg-type]


def expect_all(hosts: FakeHosts, todo: DeploySteps, fail: dict[str, int] | None = None) -> None:
    """Expect exactly the run commands the dry-run lists (a failing status where `fail` says so)."""
    for phase in todo.phases:
        for ns in phase.nodes:
            for c in ns.commands:
                if c.kind == "run":
                    hosts.expect(
                        ns.node,
                        c.argv,
                        status=(fail or {}).get(shlex.join(c.argv), 0),
                        stderr="patching failed: no such file" if fail else "",
                    )


def alive(hosts: FakeHosts, p: LaunchPlan, log: str = "INFO Starting vLLM API server 0 on http://0.0.0.0:8000") -> None:
    """Every node's container runs; the head's log (the phased wait reads it) says what `log` says."""
    for n in p.nodes:
        hosts.expect(n.name, ["sh", "-c", WATCH, "sh", "vllm_node"], stdout="true\n@@\n", repeat=True)
    hosts.expect(p.head.name, ["docker", "logs", "--tail", "400", "vllm_node"], stdout=log, repeat=True)


def run(
    hosts: FakeHosts,
    p: LaunchPlan,
    todo: DeploySteps,
    secrets: dict[str, str] | None = None,
    shipper: FakeShipper | None = None,
) -> tuple[Deployment, ListReporter]:
    dep = Deployment(plan=p, by_name={n.label: n for n in hosts.cluster.nodes})
    rep = ListReporter()
    Applier(hosts, shipper or FakeShipper(), "vllm_node", rep, Secrets(secrets or {}), poll=0.01).apply(
        todo, dep, time.monotonic() + 10
    )
    return dep, rep


def test_solo_runs_exactly_the_listed_commands_in_order(server: int) -> None:
    p = launch(1, server)
    todo = steps(p, inputs(p))
    hosts = FakeHosts(cluster(1))
    expect_all(hosts, todo)
    alive(hosts, p)
    dep, rep = run(hosts, p, todo)
    ran = [c for c in hosts.commands("s1") if not c.startswith(("sh -c", "docker logs"))]
    assert ran == [shlex.join(c.argv) for ph in todo.phases for ns in ph.nodes for c in ns.commands if c.kind == "run"]
    assert ran[0].startswith("mkdir -p /home/me/.cache/huggingface") and ran[1] == "docker rm -f vllm_node"
    assert ran[2].startswith("docker run -d --pull=never --name vllm_node")
    assert ran[3].startswith("docker exec vllm_node python3 -c") and ran[3].endswith(f" {p.port}")  # port free
    assert ran[4] == f"docker exec vllm_node rm -f {EXIT_FILE}" and ran[5].startswith("docker exec -d vllm_node")
    assert not hosts.unused() and dep.started == ["s1"] and dep.states["s1"].status == "ready"
    assert rep.lines[:2] == [
        "[1/5] ship vllm-node to the nodes that lack it",
        "[2/5] start the vllm_node containers (solo)",
    ]


def test_no_ray_starts_the_worker_ranks_before_rank_zero(server: int) -> None:
    p = launch(3, server, "-pp", "3")
    todo = steps(p, inputs(p))
    hosts = FakeHosts(cluster(3))
    expect_all(hosts, todo)
    alive(hosts, p)
    run(hosts, p, todo)
    starts = [(n, c) for n, c in hosts.ran if c.startswith("docker exec -d")]
    assert [n for n, _ in starts] == ["s2", "s3", "s1"]
    assert "--headless" in starts[0][1] and "--headless" not in starts[2][1]
    assert "--node-rank 0" in starts[2][1] and "--master-addr 127.0.0.1" in starts[0][1]


def test_ray_waits_for_every_node_before_the_command(server: int) -> None:
    p = launch(2, server, "-tp", "2", mode="ray")
    todo = steps(p, inputs(p))
    hosts = FakeHosts(cluster(2))
    expect_all(hosts, todo)
    alive(hosts, p)
    status = ["Active:\n 1 node_a\nPending:\n", "Active:\n 1 node_a\n 1 node_b\nPending:\n"]
    for text in status:
        hosts.expect("s1", ["docker", "exec", "vllm_node", "ray", "status"], stdout=text)
    run(hosts, p, todo)
    head = hosts.commands("s1")
    assert head.index("docker exec vllm_node ray status") < next(
        i for i, c in enumerate(head) if "--distributed-executor-backend ray" in c
    )
    assert not hosts.unused()


def test_a_failing_mod_names_its_node_and_its_upload_is_still_removed(server: int) -> None:
    p = launch(1, server)
    mod = ModRef(name="breaks", local="/tmp/breaks", digest="0123456789abcdef")
    todo = steps(p, inputs(p, mods=(mod,)))
    run_sh = next(
        c
        for ph in todo.phases
        for ns in ph.nodes
        for c in ns.commands
        if isinstance(c, Run) and "run.sh" in " ".join(c.argv)
    )
    hosts = FakeHosts(cluster(1))
    expect_all(hosts, todo, fail={shlex.join(run_sh.argv): 3})
    with pytest.raises(LaunchFailed) as info:
        run(hosts, p, todo)
    assert info.value.failures == {"s1": "mods: patching failed: no such file"}
    assert "mod breaks failed" in str(info.value.deployment.states["s1"].log_tail)
    ran = hosts.commands("s1")
    assert ran[-1] == "rm -rf /home/me/.spark-pipeline/mods/breaks-0123456789abcdef"  # cleanup after the failure
    assert not any("docker exec -d" in c for c in ran)  # the command never started


def test_secrets_reach_only_the_0600_env_file_which_is_removed_even_when_docker_run_fails(server: int) -> None:
    p = launch(1, server, secret_env=("HF_TOKEN",))
    todo = steps(p, inputs(p, secret_names=("HF_TOKEN",)))
    docker_run = next(
        c for ph in todo.phases for ns in ph.nodes for c in ns.commands if isinstance(c, Run) and c.starts_container
    )
    hosts = FakeHosts(cluster(1))
    expect_all(hosts, todo, fail={shlex.join(docker_run.argv): 125})
    with pytest.raises(LaunchFailed):
        run(hosts, p, todo, secrets={"HF_TOKEN": "hf_s3cret"})
    env_file = "/home/me/.spark-pipeline/env-vllm_node"
    assert hosts.files[("s1", env_file)] == ("HF_TOKEN=hf_s3cret\n", 0o600)
    assert hosts.commands("s1")[-1] == f"rm -f {env_file}"
    assert not any("hf_s3cret" in c for _, c in hosts.ran)
    assert "hf_s3cret" not in "\n".join(todo.lines())
    assert f"--env-file {env_file}" in shlex.join(docker_run.argv) and "-e HF_TOKEN" in shlex.join(docker_run.argv)


def test_a_rank_that_dies_fails_the_launch_at_once_naming_its_node(server: int) -> None:
    Health.ready_after = time.monotonic() + 60  # the server never answers in this test
    p = launch(2, server, "-pp", "2")
    todo = steps(p, inputs(p))
    hosts = FakeHosts(cluster(2))
    expect_all(hosts, todo)
    hosts.expect("s1", ["sh", "-c", WATCH, "sh", "vllm_node"], stdout="true\n@@\n", repeat=True)
    hosts.expect("s1", ["docker", "logs", "--tail", "400", "vllm_node"], stdout="", repeat=True)
    hosts.expect("s2", ["sh", "-c", WATCH, "sh", "vllm_node"], stdout="true\n@@\n1\n", repeat=True)
    hosts.expect("s2", ["docker", "logs", "--tail", "20", "vllm_node"], stdout="DistStoreError: wait timeout")
    started = time.monotonic()
    with pytest.raises(LaunchFailed) as info:
        run(hosts, p, todo)
    assert time.monotonic() - started < 5
    assert info.value.failures == {"s2": "its process exited with status 1"}
    assert info.value.deployment.states["s2"].log_tail == "DistStoreError: wait timeout"


def test_only_nodes_that_lack_the_image_are_shipped(server: int) -> None:
    p = launch(2, server, "-pp", "2")
    inp = inputs(p)
    facts = {**inp.facts, "s2": StepFacts(home="/home/me", image_id="sha256:" + "b" * 64)}
    todo = steps(p, Inputs(image="vllm-node", local_image_id=IMAGE_ID, facts=facts))
    hosts = FakeHosts(cluster(2))
    expect_all(hosts, todo)
    alive(hosts, p)
    shipper = FakeShipper()
    run(hosts, p, todo, shipper=shipper)
    assert shipper.shipped == [("vllm-node", ["s2"], "registry")]
    assert "  s1: nothing to do, because it has vllm-node (aaaaaaaaaaaa)" in todo.lines()


def test_a_failed_ship_stops_before_any_container_starts(server: int) -> None:
    p = launch(1, server)
    inp = inputs(p)
    todo = steps(p, Inputs(image="vllm-node", local_image_id=IMAGE_ID, facts={"s1": StepFacts(home="/home/me")}))
    hosts = FakeHosts(cluster(1))
    with pytest.raises(LaunchFailed) as info:
        run(hosts, p, todo, shipper=FakeShipper(fail={"s1": "docker pull: no space left"}))
    assert info.value.failures == {"s1": "docker pull: no space left"} and hosts.ran == []
    assert inp.facts  # (facts with the image were not used: this node had none)


def test_an_unexpected_command_is_a_test_failure_not_a_node_failure(server: int) -> None:
    p = launch(1, server)
    todo = steps(p, inputs(p))
    with pytest.raises(Unexpected):
        run(FakeHosts(cluster(1)), p, todo)


def test_a_current_deployment_is_a_no_op_with_its_reason() -> None:
    p = launch(1, 8000)
    facts = {"s1": StepFacts(image_id=IMAGE_ID, container_running="true", container_hash=p.head.deploy_hash)}
    todo = steps(p, Inputs(image="vllm-node", local_image_id=IMAGE_ID, facts=facts, server_answers=True))
    assert todo.phases == () and todo.lines() == [
        f"nothing to do: every node runs this deployment ({p.head.deploy_hash}) and http://127.0.0.1:8000 "
        "answers (--force redeploys)"
    ]
    forced = steps(p, Inputs(image="vllm-node", local_image_id=IMAGE_ID, facts=facts, server_answers=True, force=True))
    assert forced.phases and not forced.nothing


def test_each_kind_of_step_is_its_own_class_and_shows_itself() -> None:
    from pipeline.launch.steps import Ship, Upload, WaitRay, WaitReady, WriteSecrets, command_json

    p = launch(2, 8000, mode="ray", secret_env=("HF_TOKEN",))
    newer = dataclasses.replace(inputs(p, secret_names=("HF_TOKEN",)), local_image_id="sha256:" + "f" * 64)
    todo = steps(p, newer)  # the nodes hold an older image: a ship phase
    kinds = {type(c) for ph in todo.phases for ns in ph.nodes for c in ns.commands}
    assert {Run, Ship, WriteSecrets, WaitRay, WaitReady} <= kinds
    for ph in todo.phases:
        for ns in ph.nodes:
            for c in ns.commands:
                shown = command_json(c)
                assert shown["kind"] == c.kind and shown["show"] == c.show() and ("argv" in shown) == isinstance(c, Run)
    assert Upload("x", "/a", "/b").show() == "upload /a -> /b"


def test_a_secret_value_with_a_line_break_never_adds_a_line_to_the_env_file() -> None:
    from pipeline.errors import ConfigError
    from pipeline.launch.apply import env_file_text

    assert env_file_text({"HF_TOKEN": "tok"}) == "HF_TOKEN=tok\n"
    for bad in ({"HF_TOKEN": "tok\nLD_PRELOAD=/tmp/evil.so"}, {"HF_TOKEN\n": "x"}, {"A": "x\ry"}):
        with pytest.raises(ConfigError):
            env_file_text(bad)


def test_a_phase_past_its_deadline_fails_the_launch_naming_it_and_what_the_log_last_said(server: int) -> None:
    Health.ready_after = time.monotonic() + 60  # the server never answers in this test
    p = launch(1, server)
    todo = steps(p, inputs(p))
    hosts = FakeHosts(cluster(1))
    expect_all(hosts, todo)
    alive(
        hosts,
        p,
        "Starting to load model m...\rLoading safetensors checkpoint shards:  50% Completed | 1/2 [00:04<00:04]",
    )
    hosts.expect("s1", ["docker", "logs", "--tail", "20", "vllm_node"], stdout="still loading", repeat=True)
    dep = Deployment(plan=p, by_name={n.label: n for n in hosts.cluster.nodes})
    applier = Applier(hosts, FakeShipper(), "vllm_node", ListReporter(), poll=0.01, deadlines={"weights": 0.2})
    started = time.monotonic()
    with pytest.raises(LaunchFailed) as info:
        applier.apply(todo, dep, started + 10)
    assert time.monotonic() - started < 5
    assert str(info.value).endswith(
        "loading weights took longer than 0 s (--phase-timeout weights=SECONDS); last seen: 1/2 shards"
    )
    assert [name for name, _ in dep.phases] == ["start"]

"""Who can reach a running cluster: the API's bind scope (--expose), the API key through every wait, Ray's
token, the reach check that counts only the expected workers, and doctor's listing of what listens where.
The scripts that run in the containers run here for real (python3, loopback sockets, this /proc)."""

from __future__ import annotations

import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.cluster import ClusterSpec
from pipeline.errors import ConfigError
from pipeline.launch.plan import NodeInput, Options, api_scope, plan
from pipeline.launch.scripts import CONNECT, LISTEN, PROBE
from pipeline.launch.steps import Inputs, StepFacts, WaitReady, steps

NODES = [
    NodeInput(name="s1", address="10.9.0.1", eth_if="eth0", ip="10.9.0.1"),
    NodeInput(name="s2", address="10.9.0.2", eth_if="eth0", ip="10.9.0.2"),
]
RECIPE_COMMAND = ("vllm", "serve", "org/m", "--host", "0.0.0.0", "--port", "8000", "-tp", "2")


def host_of(argv: tuple[str, ...]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--host"]


@pytest.mark.parametrize(("expose", "host"), [("local", "127.0.0.1"), ("cluster", "10.9.0.1"), ("all", "0.0.0.0")])
def test_expose_sets_the_host_of_every_rank_over_the_recipes(expose: str, host: str) -> None:
    p = plan(NODES, Options(image="i", command=RECIPE_COMMAND, expose=expose))  # type: ignore[arg-type]
    assert p.expose == expose
    for node in p.nodes:
        assert host_of(node.start[0]) == [host]  # one --host: the recipe's 0.0.0.0 is gone
    assert p.url == ("http://127.0.0.1:8000" if expose == "local" else "http://10.9.0.1:8000")


def test_without_expose_the_command_decides_and_vllms_default_is_every_interface() -> None:
    assert plan(NODES, Options(image="i", command=RECIPE_COMMAND)).expose == "all"
    assert api_scope(("vllm", "serve", "m")) == "all"
    assert api_scope(("vllm", "serve", "m", "--host", "localhost")) == "local"
    assert api_scope(("vllm", "serve", "m", "--host=::1")) == "local"
    assert api_scope(("vllm", "serve", "m", "--host", "10.1.2.3")) == "cluster"
    assert api_scope(("vllm", "serve", "m", "--host", "::")) == "all"


@given(host=st.text(max_size=30))
def test_any_host_value_gets_a_scope_never_an_exception(host: str) -> None:
    assert api_scope(("vllm", "serve", "m", "--host", host)) in ("local", "cluster", "all")


def test_expose_on_a_command_that_is_not_vllm_serve_is_a_located_error() -> None:
    with pytest.raises(ConfigError, match="--expose local sets `vllm serve`'s --host"):
        plan(NODES[:1], Options(image="i", command=("python3", "-m", "http.server"), expose="local"))


def test_a_local_only_server_is_waited_for_on_the_head() -> None:
    p = plan(NODES[:1], Options(image="i", command=RECIPE_COMMAND[:7], expose="local"))
    facts = {"s1": StepFacts(image_id="sha256:" + "a" * 64)}
    todo = steps(p, Inputs(image="i", local_image_id="sha256:" + "a" * 64, facts=facts))
    wait = todo.phases[-1].nodes[0].commands[0]
    assert isinstance(wait, WaitReady) and wait.on_node and wait.url == "http://127.0.0.1:8000"
    assert "on the head" in wait.show()


# --- the scripts that run in the containers ---------------------------------------------------------
def run_script(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_reach_check_counts_only_the_expected_workers() -> None:
    """A connection from an address that is no worker's is refused, named, and does not stand in for the
    worker (before, any connection counted, and the head stopped listening before the worker came)."""
    port = free_port()
    head = subprocess.Popen(
        [sys.executable, "-c", LISTEN, "127.0.0.1", str(port), "10", "w2", "127.0.0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    stranger = run_script(CONNECT, "127.0.0.1", str(port), "5", "127.0.0.9")
    worker = run_script(CONNECT, "127.0.0.1", str(port), "5", "127.0.0.2")
    _, err = head.communicate(timeout=20)
    assert stranger.returncode == 1 and "another address than 127.0.0.9" in stranger.stderr
    assert worker.returncode == 0 and head.returncode == 0
    assert "refused a connection from 127.0.0.9: not an expected worker" in err


def test_the_reach_check_passes_when_each_worker_connects_from_its_own_address() -> None:
    port = free_port()
    head = subprocess.Popen(
        [sys.executable, "-c", LISTEN, "127.0.0.1", str(port), "10", "w2", "127.0.0.2", "w3", "127.0.0.3"],
        stderr=subprocess.PIPE,
        text=True,
    )
    workers = [run_script(CONNECT, "127.0.0.1", str(port), "5", src) for src in ("127.0.0.2", "127.0.0.3")]
    head.communicate(timeout=20)
    assert [w.returncode for w in workers] == [0, 0] and head.returncode == 0


def test_a_worker_whose_address_is_not_its_nodes_fails_naming_it() -> None:
    ran = run_script(CONNECT, "127.0.0.1", str(free_port()), "1", "192.0.2.7")
    assert ran.returncode == 1 and "from 192.0.2.7" in ran.stderr


@pytest.fixture
def keyed_server() -> Iterator[int]:
    """A server that answers /health to anyone and /v1/models only with the key, as vLLM does."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health" or self.headers.get("Authorization") == "Bearer k3y"
            self.send_response(200 if ok else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_the_probe_uses_the_containers_own_key_from_its_environment(keyed_server: int) -> None:
    base = {"PATH": os.environ["PATH"]}
    assert run_script(PROBE, str(keyed_server), env={**base, "VLLM_API_KEY": "k3y"}).returncode == 0
    wrong = run_script(PROBE, str(keyed_server), env={**base, "VLLM_API_KEY": "nope"})
    assert wrong.returncode == 1 and "401" in wrong.stdout and "nope" not in wrong.stdout
    assert run_script(PROBE, str(free_port()), env=base).returncode == 1


# --- Ray's token and the warnings ------------------------------------------------------------------
def test_ray_mode_gets_a_token_kept_0600_through_the_env_file_never_argv(isolated_cache: Path) -> None:
    from pipeline import paths
    from pipeline.deploy.request import DeployRequest

    spec = ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]})
    request = DeployRequest(command=("vllm", "serve", "m", "-tp", "2"), mode="ray")
    token = request.secrets(spec).common["RAY_AUTH_TOKEN"]
    assert len(token) >= 40 and request.secrets(spec).common["RAY_AUTH_TOKEN"] == token
    f = paths.ray_token_file("vllm_node")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    opts = request.options(spec, [], request.secrets(spec).names())
    assert ("RAY_AUTH_MODE", "token") in opts.env and "RAY_AUTH_TOKEN" in opts.secret_env
    launched = plan([NodeInput(name=f"n{i}", address=f"10.0.0.{i}", eth_if="eth0") for i in (1, 2)], opts)
    for node in launched.nodes:
        assert token not in " ".join(node.run_argv) and "RAY_AUTH_TOKEN" in node.run_argv


def test_no_token_without_ray_or_with_no_ray_auth(isolated_cache: Path) -> None:
    from pipeline.deploy.request import DeployRequest

    spec = ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}]})
    for request in (
        DeployRequest(command=("vllm", "serve", "m")),
        DeployRequest(command=("vllm", "serve", "m"), mode="ray", ray_auth=False),
    ):
        assert "RAY_AUTH_TOKEN" not in request.secrets(spec).names()
        assert "RAY_AUTH_MODE" not in dict(request.options(spec, [], ()).env)


def test_warnings_say_who_reaches_what() -> None:
    from pipeline.deploy.service import exposure_warnings
    from pipeline.launch.secrets import Secrets

    everywhere = plan(NODES, Options(image="i", command=RECIPE_COMMAND))
    assert "without an API key" in exposure_warnings(everywhere, Secrets())[0]
    assert exposure_warnings(everywhere, Secrets({"VLLM_API_KEY": "k"})) == []
    local = plan(NODES, Options(image="i", command=RECIPE_COMMAND, expose="local"))
    assert exposure_warnings(local, Secrets()) == []
    ray = plan(NODES, Options(image="i", command=RECIPE_COMMAND, mode="ray", expose="cluster"))
    assert "token auth" in exposure_warnings(ray, Secrets())[0]
    assert exposure_warnings(ray, Secrets({"RAY_AUTH_TOKEN": "t"})) == []


# --- doctor: what listens where ---------------------------------------------------------------------
def test_the_listening_script_finds_this_processs_socket_and_its_address() -> None:
    from pipeline.nodes.discover import LISTENING
    from pipeline.nodes.netfacts import parse_proc_net_tcp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = parse_proc_net_tcp(run_script(LISTENING).stdout)
    assert ("127.0.0.1", port) in found


def test_proc_net_tcp_words_parse_to_addresses_and_junk_is_skipped() -> None:
    from pipeline.nodes.netfacts import parse_proc_net_tcp

    text = (
        "020011AC:2711 0100007F:2711 00000000:733D 00000000000000000000000000000000:1F40 zz:1 0100007F:0 x "
        "0000000000000000FFFF00000100007F:1F41"
    )
    assert parse_proc_net_tcp(text) == (
        ("::", 8000),
        ("127.0.0.1", 8001),  # an IPv4-mapped address, as IPv4
        ("127.0.0.1", 10001),
        ("172.17.0.2", 10001),
        ("0.0.0.0", 29501),
    )


@given(st.text(max_size=200))
def test_any_listen_section_parses_or_is_skipped(text: str) -> None:
    from pipeline.nodes.netfacts import parse_proc_net_tcp

    for address, port in parse_proc_net_tcp(text):
        assert 0 < port < 65536 and address


def test_doctor_warns_about_each_port_beyond_the_cluster_subnet() -> None:
    from pipeline.config.cluster import NodeSpec
    from pipeline.launch.doctor import exposure, exposure_problems
    from pipeline.launch.interfaces import Choice
    from pipeline.nodes.discover import NodeFacts

    facts = NodeFacts(
        node=NodeSpec(address="10.9.0.1"),
        listening=(("127.0.0.1", 8000), ("10.9.0.1", 8001), ("0.0.0.0", 29501), ("192.168.1.5", 8002)),
    )
    choice = Choice(eth_if="eth0", ib_if=(), mode="given", nets=("10.9.0.0/24",))
    assert [x.scope for x in exposure(facts, choice)] == ["local", "cluster", "all", "beyond"]
    warned = [p.text for p in exposure_problems(facts, choice)]
    assert len(warned) == 2 and warned[0].startswith("ports on every interface: 29501 (")
    assert warned[1].startswith("ports outside the cluster subnet (10.9.0.0/24): 8002 on 192.168.1.5 (")


def test_ray_starts_without_its_client_server_unless_asked() -> None:
    from pipeline.launch.plan import command_of
    from pipeline.launch.scripts import RAY_START

    for client, want in ((False, ("python3", "-c", RAY_START, "start")), (True, ("ray", "start"))):
        p = plan(NODES, Options(image="i", command=RECIPE_COMMAND, mode="ray", ray_client=client))
        assert command_of(p.head.start[0])[: len(want)] == want
        assert command_of(p.nodes[1].start[0])[:2] == ("ray", "start")  # workers have no client server


def test_the_ray_start_shim_leaves_the_client_server_out(tmp_path: Path) -> None:
    """Against a module shaped like Ray's entry point: the probe answers "absent", then main() runs."""
    from pipeline.launch.scripts import RAY_START

    pkg = tmp_path / "ray" / "scripts"
    pkg.mkdir(parents=True)
    (tmp_path / "ray" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "scripts.py").write_text(
        "import sys\n"
        "def get_ray_client_dependency_error():\n    return None\n"
        "def main():\n"
        "    print('client' if get_ray_client_dependency_error() is None else 'no client', sys.argv)\n"
    )
    ran = run_script(RAY_START, "start", "--head", env={"PYTHONPATH": str(tmp_path), "PATH": os.environ["PATH"]})
    assert ran.stdout.strip() == "no client ['ray', 'start', '--head']"

"""Security holes found by feeding the tool inputs nobody here had tried: each test fails on the code
before its fix. What a file, a flag or a shared recipe says must not harm this machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import StoreError
from pipeline.store import Store
from tests.conftest import run_cli


def test_store_pull_takes_stage_and_key_as_identifiers_never_as_paths(tmp_path: Path) -> None:
    store = tmp_path / "st"
    store.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "manifest.json").write_text(json.dumps({"files": [{"path": "x", "size": 1, "sha256": "0"}]}))
    for stage, key in (("..", "victim"), ("vllm", "../../victim"), ("vllm", "/etc"), ("base", "a" * 63)):
        proc = run_cli("store", "pull", "--store", str(store), "--remote", "oci://127.0.0.1:9/x", stage, key, check=2)
        assert "Traceback" not in proc.stderr
    assert (victim / "manifest.json").is_file()  # never "verified", found corrupt and removed


def test_the_store_refuses_entry_paths_outside_itself(tmp_path: Path) -> None:
    s = Store(tmp_path / "st")
    for stage, key in (("..", "victim"), ("vllm", ".."), ("vllm", "a/b"), ("nope", "a" * 64)):
        with pytest.raises(StoreError):
            s.entry_path(stage, key)
    outside = tmp_path / "outside"
    outside.write_text("keep")
    entry = tmp_path / "st" / "vllm" / ("a" * 64)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(
        json.dumps({"files": [{"path": "../../../outside", "size": 4, "sha256": "0" * 64}]})
    )
    assert s.verify("vllm", "a" * 64)[0] is None
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("manifest", ["[]", '{"files": 3}', '{"files": [1]}', '{"files": [{"path": 1}]}', '"x"'])
def test_a_manifest_of_the_wrong_shape_is_no_entry_and_no_traceback(tmp_path: Path, manifest: str) -> None:
    entry = tmp_path / "st" / "vllm" / ("b" * 64)
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(manifest)
    assert Store(tmp_path / "st").entries() == []
    for args in (["store", "ls"], ["store", "gc", "--dry-run"]):
        proc = run_cli(*args, "--store", str(tmp_path / "st"), check=None)
        assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr


@pytest.mark.parametrize("member", ["/ABS", "../up", "a/../../up", "C:/x", "a\\\\..\\\\up"])
def test_a_zip_mod_never_writes_outside_its_folder(tmp_path: Path, member: str) -> None:
    import zipfile

    from pipeline.errors import ConfigError
    from pipeline.launch.mods import load_mod

    target = tmp_path / "written-outside"
    member = member.replace("ABS", str(target).lstrip("/"))
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("run.sh", "true\n")
        f.writestr(member, "pwned")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ConfigError, match="outside the mod's folder"):
        load_mod(str(z), [], work)
    assert not target.exists() and not (tmp_path / "up").exists() and list(work.iterdir()) == []


def test_a_mod_name_never_climbs_out_of_the_mods_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import ConfigError
    from pipeline.launch.mods import load_mod

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "run.sh").write_text("true\n")
    (tmp_path / "mods").mkdir()
    monkeypatch.chdir(tmp_path / "mods")  # `../outside` is not a path from here... but is from mods/
    with pytest.raises(ConfigError):
        load_mod("x/../../outside", [tmp_path / "mods" / "a"], tmp_path)


@pytest.mark.parametrize(
    "args",
    [
        {"post_run_cmd": "touch /tmp/pwned"},
        {"latency_mode": "api; touch x"},
        {"corpus": "/etc/shadow"},
        {"tokenizer": "/root/.ssh"},
        {"corpus": "../../etc/shadow"},
        {"corpus": "~/.ssh/id_ed25519"},
        {"runs": "²"},
        {"depth": "1;id"},
    ],
)
def test_a_shared_recipe_passes_llama_benchy_data_options_only(args: dict[str, str]) -> None:
    from pipeline.benchmark.profiles import resolve
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"recipe:benchmark\.args"):
        resolve(None, None, args, {})


def test_bench_run_never_runs_a_recipes_command(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    marker = tmp_path / "pwned"
    recipe.write_text(f"recipe_version: '2'\nmodel: org/m\nbenchmark:\n  args:\n    post_run_cmd: touch {marker}\n")
    proc = run_cli("bench", "run", str(recipe), "--url", "http://127.0.0.1:9/v1", check=2)
    assert "post_run_cmd" in proc.stderr and not marker.exists()


def test_a_line_break_in_a_value_never_becomes_a_line_of_an_env_file_or_a_dockerfile(tmp_path: Path) -> None:
    from pipeline.config.cluster import ClusterSpec
    from pipeline.engines.buildkit import _env_value
    from pipeline.errors import ConfigError
    from pipeline.launch.plan import parse_env_items
    from pipeline.launch.secrets import gather

    evil = "tok\nLD_PRELOAD=/tmp/evil.so"
    with pytest.raises(ConfigError):
        parse_env_items([f"HF_TOKEN={evil}"], {})
    with pytest.raises(ConfigError):
        parse_env_items(["HF_TOKEN"], {"HF_TOKEN": evil})
    with pytest.raises(ConfigError):
        gather(ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1"}]}), [], {"HF_TOKEN": evil})
    with pytest.raises(ConfigError):
        _env_value("x\nRUN touch /pwned")
    for bad in (
        {"nodes": [{"address": "10.0.0.1", "env": {"HF_TOKEN": evil}}]},
        {"nodes": [{"address": "h"}], "container_env": {"A": "x\ry"}},
        {"nodes": [{"address": "h"}], "container_env": {"A\n": "x"}},
    ):
        with pytest.raises(ValueError):
            ClusterSpec.model_validate(bad)
    build = tmp_path / "build.yaml"
    build.write_text('vllm:\n  env:\n    FOO: "a\\nRUN touch /pwned"\n')
    proc = run_cli("plan", "-f", str(build), "--offline", check=2)
    assert "build.yaml:vllm.env.FOO" in proc.stderr and "line break" in proc.stderr


def test_a_path_that_is_not_a_regular_file_is_refused_never_replaced_or_read(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    dotenv = tmp_path / ".env"
    dotenv.write_text("CLUSTER_NODES=10.0.0.1,10.0.0.2\n")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(f"nodes: [{{address: 10.0.0.1}}]\nssh: {{known_hosts: {fifo}}}\n")
    done = threading.Event()  # a hang would show as this test never ending: bound it
    threading.Timer(60, lambda: None if done.is_set() else os._exit(3)).start()
    try:
        for args in (
            ["plan", "-f", str(fifo)],
            ["cluster", "import", str(dotenv), "-o", str(fifo), "--force"],
            ["cluster", "import", str(fifo)],
            ["deploy", "--dry-run", "--facts", str(fifo), "--solo", "--", "vllm", "serve", "m"],
            ["status", "--cluster", str(cluster)],
            ["plan", "-f", "/dev/zero"],
        ):
            proc = run_cli(*args, check=None)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
    finally:
        done.set()
    assert fifo.exists() and not fifo.is_file()  # still a FIFO: never replaced by a regular file


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)),
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "vllm:\n  prs: !!set {1: null, 2: null}\n",
        "? [a, b]\n: x\n",
        "gpu_arch: !!python/name:os.system\n",
    ],
    ids=["alias-bomb", "deep", "set", "complex-key", "python-tag"],
)
def test_yaml_structure_no_settings_file_needs_is_refused_fast(tmp_path: Path, text: str) -> None:
    import time

    f = tmp_path / "build.yaml"
    f.write_text(text)
    start = time.monotonic()
    proc = run_cli("plan", "-f", str(f), "--offline", check=2)
    assert "Traceback" not in proc.stderr and "build.yaml" in proc.stderr and time.monotonic() - start < 10


def test_secrets_are_never_printed_nor_put_in_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config.cluster import ClusterSpec
    from pipeline.deploy.request import DeployRequest

    monkeypatch.setenv("HF_TOKEN", "hf_from_env_secret")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "recipe_version: '2'\nmodel: org/m\nenv:\n  HF_TOKEN: ${HF_TOKEN}\n  WANDB_API_KEY: wb_secret\n"
        "  PLAIN: shown\ncommand: vllm serve org/m --api-key sk_secret_1 --hf-token=hf_secret_2\n"
    )
    for args in (["recipe", "show", str(recipe), "--solo"], ["recipe", "show", str(recipe), "--solo", "--json"]):
        proc = run_cli(*args)
        out = proc.stdout + proc.stderr
        for secret in ("hf_from_env_secret", "wb_secret", "sk_secret_1", "hf_secret_2"):
            assert secret not in out, (args, out)
        assert "PLAIN" in out and "shown" in out
    spec = ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1"}]})
    request = DeployRequest(command=("vllm", "serve", "m", "--api-key", "sk_secret_1", "--hf-token=hf_secret_2"))
    secrets = request.secrets(spec)
    assert secrets.common["VLLM_API_KEY"] == "sk_secret_1" and secrets.common["HF_TOKEN"] == "hf_secret_2"
    opts = request.options(spec, [], secrets.names())
    assert "sk_secret_1" not in " ".join(opts.command) and "hf_secret_2" not in " ".join(opts.command)
    proc = run_cli("store", "ls", "--remote", "oci://me:hunter2@registry.lan:5000/x", check=2)
    assert "hunter2" not in proc.stderr and "credentials do not belong" in proc.stderr
    proc = run_cli("store", "ls", "--remote", "oci://127.0.0.1:70000/x", check=2)
    assert "port 1-65535" in proc.stderr


def test_results_stay_in_their_folder_and_a_user_name_is_never_an_ssh_option(tmp_path: Path) -> None:
    from pipeline.benchmark.results import Record
    from pipeline.config.cluster import ClusterSpec

    for recipe in ("..", "../../../etc", "a/b", ".", "x\n../y"):
        rec = Record(
            build_key="a" * 64,
            recipe=recipe,
            nodes=1,
            model="m",
            profile="quick",
            endpoint="e",
            started="20261207T000000Z",
            seconds=1.0,
            llama_benchy="0",
            rows=[],
        )
        dest = (tmp_path / rec.dirname()).resolve()
        assert dest.is_relative_to(tmp_path.resolve()) and len(Path(rec.dirname()).parts) == 4, recipe
    proc = run_cli("bench", "run", "--model", "org/m", "--build-key", "../../../x", check=2)
    assert "--build-key" in proc.stderr
    for user in ("-oProxyCommand=touch x", "a b", "a@b", "", "x" * 40):
        with pytest.raises(ValueError):
            ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1", "user": user}]})
    ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1", "user": "spark.user-1"}]})


def test_recipes_load_as_the_toolkit_loads_them(tmp_path: Path) -> None:
    """Two of the toolkit's mainline recipes: one with an empty `env:`, one with a duplicate key. Its loader
    takes both (the later duplicate wins): so does ours, naming both lines of the duplicate."""
    empty = tmp_path / "empty-env.yaml"
    empty.write_text("recipe_version: '1'\nname: a\ncontainer: vllm-node\ncommand: vllm serve org/m\nenv:\n")
    run_cli("recipe", "show", str(empty), "--solo")
    dup = tmp_path / "dup.yaml"
    dup.write_text("recipe_version: '2'\nmodel: org/m\ndefaults:\n  port: 8000\n  port: 8001\n")
    proc = run_cli("recipe", "show", str(dup), "--solo", "--json")
    assert "duplicate key 'port' at lines 4 and 5" in proc.stderr and "--port" in proc.stdout
    assert "8001" in proc.stdout
    build = tmp_path / "build.yaml"
    build.write_text("gpu_arch: 12.1a\ngpu_arch: 12.0f\n")  # build.yaml keeps refusing: it is ours
    assert "duplicate key" in run_cli("plan", "-f", str(build), "--offline", check=2).stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPARK_PIPELINE_GIT_TIMEOUT", "abc"),
        ("SPARK_PIPELINE_GIT_TIMEOUT", "-5"),
        ("SPARK_PIPELINE_GIT_TIMEOUT", "nan"),
        ("SPARK_PIPELINE_GIT_TIMEOUT", "²"),
        ("SPARK_PIPELINE_DOCKER", "docker; rm -rf /"),
        ("SPARK_PIPELINE_CACHE_NAMESPACE", "../x"),
        ("SPARK_PIPELINE_DEBIAN_MIRROR", "file:///etc"),
    ],
)
def test_a_wrong_environment_knob_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    from pipeline import paths
    from pipeline.engines import bootstrap, cache_id
    from pipeline.engines.docker import docker_binary
    from pipeline.errors import ConfigError
    from pipeline.sources.gitcmd import git_timeout

    monkeypatch.setenv(name, value)
    read = {
        "SPARK_PIPELINE_GIT_TIMEOUT": git_timeout,
        "SPARK_PIPELINE_DOCKER": docker_binary,
        "SPARK_PIPELINE_DEBIAN_MIRROR": bootstrap.debian_mirror,
        "SPARK_PIPELINE_CACHE_NAMESPACE": lambda: paths.env_matching(name, r"[a-z0-9][a-z0-9_.-]{0,63}", "x"),
    }
    with pytest.raises(ConfigError, match=name):
        read[name]()
    assert cache_id  # the namespace is read through env_matching in cache_id


def test_selection_flags_say_what_they_select(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("nodes: [{address: 10.0.0.1, name: a}, {address: 10.0.0.2, name: b}]\n")
    for args in (["stop", "--limit", ""], ["stop", "--limit", "a,zzz"], ["exec", "--node", "a", "--all", "--", "x"]):
        proc = run_cli(*args[:1], "--cluster", str(cluster), *args[1:], check=2)
        assert "Traceback" not in proc.stderr
    assert "zzz is not a node" in run_cli("stop", "--cluster", str(cluster), "--limit", "a,zzz", check=2).stderr


@pytest.mark.parametrize("argv", [["-tp", "²"], ["--port", "²"], ["--port", "99999"], ["-pp", "١"]])
def test_unicode_digits_and_big_ports_are_refused_not_crashed_on(argv: list[str]) -> None:
    from pipeline.config.vllm_args import check_command
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError):
        check_command(("vllm", "serve", "m", *argv))


@pytest.mark.parametrize("repo", ["../x", "org/..", "org/$(id)", "-x/y", "a/b/c", "org/" + "m" * 100, "org/-m"])
def test_model_ids_the_hub_refuses_are_refused_here(repo: str) -> None:
    proc = run_cli("model", "download", repo, check=2)
    assert "Traceback" not in proc.stderr and "model" in proc.stderr


def test_a_remote_store_that_is_down_or_no_registry_is_one_located_error_in_seconds(tmp_path: Path) -> None:
    import http.server
    import socket
    import threading
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        for port, said in ((closed, "cannot reach"), (srv.server_address[1], "is not an OCI registry")):
            start = time.monotonic()
            proc = run_cli("store", "ls", "--remote", f"oci://127.0.0.1:{port}/x", check=1)
            assert said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
            assert time.monotonic() - start < 15
    finally:
        srv.shutdown()
        srv.server_close()


def test_api_key_auto_is_made_once_kept_0600_and_never_in_argv(isolated_cache: Path) -> None:
    import stat

    from pipeline import paths
    from pipeline.benchmark.run import api_key
    from pipeline.config.cluster import ClusterSpec
    from pipeline.deploy.request import DeployRequest

    spec = ClusterSpec.model_validate({"nodes": [{"address": "10.0.0.1"}]})
    request = DeployRequest(command=("vllm", "serve", "m"), api_key="auto")
    first = request.secrets(spec).common["VLLM_API_KEY"]
    assert len(first) >= 40 and request.secrets(spec).common["VLLM_API_KEY"] == first  # the same on redeploy
    f = paths.api_key_file("vllm_node")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.read_text().strip() == first
    opts = request.options(spec, [], request.secrets(spec).names())
    assert first not in " ".join(opts.command) and "VLLM_API_KEY" in opts.secret_env
    assert api_key() == first  # bench finds it


def test_build_lock_goes_through_the_one_settings_reader(tmp_path: Path) -> None:
    import os

    from pipeline.errors import ConfigError
    from pipeline.resolution import read_lock

    assert read_lock(tmp_path / "build.lock") is None  # none yet: a first plan
    os.mkfifo(tmp_path / "build.lock")  # would hang a plain read
    with pytest.raises(ConfigError, match="not a regular file"):
        read_lock(tmp_path / "build.lock")
    os.unlink(tmp_path / "build.lock")
    (tmp_path / "build.lock").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        read_lock(tmp_path / "build.lock")

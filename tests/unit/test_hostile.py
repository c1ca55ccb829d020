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
    (entry / "manifest.json").write_text(json.dumps({"files": [{"path": "../../../outside", "size": 4,
                                                                 "sha256": "0" * 64}]}))
    assert s.verify("vllm", "a" * 64)[0] is None
    assert outside.read_text() == "keep"


@pytest.mark.parametrize("manifest", ['[]', '{"files": 3}', '{"files": [1]}', '{"files": [{"path": 1}]}', '"x"'])
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
    [{"post_run_cmd": "touch /tmp/pwned"}, {"latency_mode": "api; touch x"}, {"corpus": "/etc/shadow"},
     {"tokenizer": "/root/.ssh"}, {"runs": "²"}, {"depth": "1;id"}],
)
def test_a_shared_recipe_passes_llama_benchy_data_options_only(args: dict[str, str]) -> None:
    from pipeline.benchmark.profiles import resolve
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="recipe:benchmark.args"):
        resolve(None, None, args, {})


def test_bench_run_never_runs_a_recipes_command(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    marker = tmp_path / "pwned"
    recipe.write_text(f"recipe_version: '2'\nmodel: org/m\nbenchmark:\n  args:\n    post_run_cmd: touch {marker}\n")
    proc = run_cli("bench", "run", str(recipe), "--url", "http://127.0.0.1:9/v1", check=2)
    assert "post_run_cmd" in proc.stderr and not marker.exists()

"""Recipes: both formats load, render the way the toolkit's run-recipe.py renders (its rules, written
down in the module docstring of pipeline/config/render.py, minus its bugs), and every preset shipped
in recipes/ renders for the node counts it allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config.recipe import all_recipes, find_recipe, load_recipe
from pipeline.config.render import render
from pipeline.errors import ConfigError
from tests.conftest import REPO, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "recipes"
V1 = FIXTURES / "toolkit-v1.yaml"
V2 = FIXTURES / "sparkrun-v2.yaml"
BASE = ["vllm", "serve", "Org/Model-FP8", "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size"]
TAIL = ["--gpu-memory-utilization", "0.8", "--max-model-len", "65536"]
SPEC = ["--speculative-config", '{"method": "mtp", "num_speculative_tokens": 2}']


def test_v1_solo_sets_tp_1_and_drops_the_backend() -> None:
    r = render(load_recipe(V1), "toolkit-v1.yaml", nodes=1)
    assert list(r.command) == [*BASE, "1", *TAIL, *SPEC]
    assert r.image == "vllm-node:pr" and r.mods == ("drop-caches",) and r.nodes == 1
    assert r.env["VLLM_CHAT_TEMPLATE_KWARGS"] == '{"enable_thinking": false, "note": "say \\"hi\\""}'


def test_v1_cluster_keeps_tp_and_drops_the_backend_without_ray() -> None:
    r = render(load_recipe(V1), "toolkit-v1.yaml", nodes=2)
    assert list(r.command) == [*BASE, "2", *TAIL, *SPEC]


def test_v1_ray_gets_the_ray_backend_once() -> None:
    r = render(load_recipe(V1), "toolkit-v1.yaml", nodes=2, ray=True)
    assert list(r.command) == [*BASE, "2", *TAIL, *SPEC, "--distributed-executor-backend", "ray"]


def test_overrides_and_extra_arguments() -> None:
    r = render(
        load_recipe(V1),
        "toolkit-v1.yaml",
        nodes=1,
        extra=("--enforce-eager", "--port", "9000"),
        overrides={"tensor_parallel": 2, "port": 8100, "gpu_memory_utilization": 0.7},
    )
    argv = list(r.command)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"  # --tp wins over solo's 1
    assert argv[argv.index("--port") + 1] == "8100" and argv[-3:] == ["--enforce-eager", "--port", "9000"]
    assert "0.7" in argv and any("--port is also set" in w for w in r.warnings)


def test_v2_model_placeholder_env_vars_and_node_range() -> None:
    spec = load_recipe(V2)
    r = render(spec, "sparkrun-v2.yaml", nodes=2, environ={"HOME": "/home/me"}, overrides={"max_num_seqs": 8})
    assert list(r.command) == ["vllm", "serve", "Org/Model-NVFP4", "--port", "8000", "-tp", "2", "--max-num-seqs", "8"]
    assert r.env == {"TRITON_CACHE_DIR": "/home/me/.triton-cache"}
    assert spec.benchmark is not None and spec.benchmark.args == {"depth": [0, 4096]}
    with pytest.raises(ConfigError, match="at most 2 node"):
        render(spec, "sparkrun-v2.yaml", nodes=3, environ={"HOME": "/h"})
    with pytest.raises(ConfigError, match=r"env.TRITON_CACHE_DIR: uses \$\{HOME\}"):
        render(spec, "sparkrun-v2.yaml", nodes=1, environ={})


def test_a_model_only_v2_recipe_serves_its_model() -> None:
    spec = load_recipe(REPO / "recipes" / "qwen3-8b.yaml")
    argv = list(render(spec, "qwen3-8b.yaml", nodes=1).command)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"] and "--max-model-len" in argv


@pytest.mark.parametrize(("name", "path"), all_recipes(), ids=[n for n, _ in all_recipes()])
def test_every_preset_renders_for_the_nodes_it_allows(name: str, path: Path) -> None:
    spec = load_recipe(path)
    lo, hi = spec.node_range()
    for nodes in {lo, hi or lo + 1}:
        for ray in (False, True):
            r = render(spec, path.name, nodes=nodes, ray=ray, environ={"HOME": "/h"})
            assert r.command[:2] == ("vllm", "serve") and r.model and r.nodes == nodes
            assert ("--distributed-executor-backend" in r.command) == ray
    if lo > 1:
        with pytest.raises(ConfigError, match="needs at least"):
            render(spec, path.name, nodes=1)


def test_presets_cover_every_multi_node_size() -> None:
    names = [n for n, _ in all_recipes()]
    assert len(names) >= 12
    sizes = {load_recipe(p).node_range()[0] for _, p in all_recipes()}
    assert {1, 2, 3, 4, 8} <= sizes or {1, 2, 4, 8} <= sizes
    assert any(n.startswith("3x-spark-cluster/") for n in names)


def test_names_never_fall_back_to_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for rel in ("recipes/x.yaml", "recipes/sub/x.yaml"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"model: Org/{rel.replace('/', '-').replace('.yaml', '')}\n")
    monkeypatch.chdir(tmp_path)
    assert load_recipe(find_recipe("sub/x")).model == "Org/recipes-sub-x"
    assert load_recipe(find_recipe("x")).model == "Org/recipes-x"
    assert load_recipe(find_recipe("recipes/sub/x")).model == "Org/recipes-sub-x"
    with pytest.raises(ConfigError, match="not found"):
        find_recipe("other/x")
    assert "sub/x" in [n for n, _ in all_recipes()]


def test_show_json_is_the_rendered_recipe_and_nothing_else() -> None:
    proc = run_cli("recipe", "show", str(V1), "-n", "192.168.100.10,192.168.100.11", "--ray", "--json")
    data = json.loads(proc.stdout)
    assert set(data) == {"name", "model", "image", "command", "env", "mods", "nodes"}
    assert data["nodes"] == 2 and data["command"][-2:] == ["--distributed-executor-backend", "ray"]


def test_list_shows_subfolders() -> None:
    rows = json.loads(run_cli("recipe", "list", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["8x-spark-cluster/glm-5.2-nvfp4"]["nodes"] == "8"
    assert by_name["qwen3.5-122b-int4-autoround"]["nodes"] == "2.."

"""`bench`: profiles layered (profile < recipe < -b), the llama-benchy command line they make, its JSON
reduced to a row per (depth, concurrency), two results compared, and bad input located (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.benchmark.profiles import PROFILES, llama_benchy_argv, parse_sets, resolve
from pipeline.benchmark.results import Record, compare, rows_of, table_md
from pipeline.errors import ConfigError
from tests.conftest import run_cli as _run_cli


def run_cli(*args: str, **kw: Any) -> Any:
    """huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is imported: each run
    that talks to the stand-in hub gets a process of its own."""
    return _run_cli(*args, subprocess=True, **kw)


FIXTURE = Path(__file__).parent / "fixtures" / "bench" / "llama-benchy-0.4.0.json"


def test_sweep_has_sparkrun_s_28_points_and_quick_is_small() -> None:
    assert resolve("sweep", None, {}, {}).points == 28
    assert resolve(None, None, {}, {}).profile == "quick" and resolve(None, None, {}, {}).points == 2


def test_recipe_args_override_the_profile_and_b_overrides_both() -> None:
    args = resolve(
        None,
        "sweep",
        {"depth": [0, 8192], "prefix_caching": True, "runs": 5},
        parse_sets(("depth=0,1024,2048", "concurrency=1 4")),
    )
    assert args.profile == "sweep"
    assert args.values["depth"] == [0, 1024, 2048] and args.values["concurrency"] == [1, 4]
    assert args.values["runs"] == 5 and args.values["enable_prefix_caching"] is True


def test_the_llama_benchy_command_line() -> None:
    args = resolve("quick", None, {}, parse_sets(("skip_coherence=true", "latency-mode=generation")))
    argv = llama_benchy_argv(
        args,
        base_url="http://127.0.0.1:8000/v1",
        model="Qwen/Qwen3-8B",
        served_name="qwen",
        tokenizer="/t/tokenizer.json",
        book_url="http://127.0.0.1:1/c.txt",
        result_file="/r/out.json",
    )
    text = " ".join(argv)
    assert "--model Qwen/Qwen3-8B --served-model-name qwen --tokenizer /t/tokenizer.json" in text
    assert "--pp 2048 --tg 32 --depth 0 4096 --concurrency 1 --runs 3" in text
    assert "--latency-mode generation" in text and argv[-1] == "--skip-coherence"
    assert "--save-result /r/out.json --format json" in text
    assert "--tokenizer" in argv and "corpus" not in text  # ours, resolved before llama-benchy runs


@pytest.mark.parametrize(
    ("sets", "expect"),
    [
        (("depth=a,b",), "-b depth=a,b: depth expects whole numbers"),
        (("pp=0",), "pp expects positive numbers"),
        (("runs=0",), "runs expects a whole number from 1 to 999999"),
        (("no_cache=maybe",), "no_cache expects true or false"),
        (("colour=blue",), "unknown benchmark argument 'colour'"),
        (("depth",), "-b depth: expected KEY=VALUE"),
    ],
)
def test_bad_b_values_are_located(sets: tuple[str, ...], expect: str) -> None:
    with pytest.raises(ConfigError, match=expect):
        parse_sets(sets)


def test_a_recipe_s_bad_benchmark_arg_names_the_recipe_key() -> None:
    with pytest.raises(ConfigError, match=r"r.yaml:benchmark.args.depth: depth expects"):
        resolve(None, None, {"depth": "deep"}, {}, "r.yaml")
    with pytest.raises(ConfigError, match="profile 'fast': unknown"):
        resolve("fast", None, {}, {})


def record(build_key: str, scale: float = 1.0) -> Record:
    rows = rows_of(json.loads(FIXTURE.read_text()))
    for r in rows:
        r.tg_tps = r.tg_tps * scale if r.tg_tps else None
    return Record(
        build_key=build_key,
        recipe="qwen3-8b",
        nodes=2,
        model="Qwen/Qwen3-8B",
        profile="quick",
        endpoint="http://127.0.0.1:8000/v1",
        started="20261125T170547Z",
        seconds=10,
        llama_benchy="0.4.0",
        rows=rows,
    )


def test_llama_benchy_json_becomes_a_row_per_depth_and_concurrency() -> None:
    rows = rows_of(json.loads(FIXTURE.read_text()))
    assert [(r.depth, r.concurrency) for r in rows] == [(0, 1), (0, 2), (4096, 1), (4096, 2)]
    first = rows[0]
    assert first.pp_tps == 3000.0  # the context-prefill phase (9999) is not a serving number
    assert first.tg_tps == pytest.approx(50.5)  # mean over tg32 and tg128
    assert rows[2].ttfr_ms == pytest.approx(1109.6)
    assert "| 4096 | 2 | 5,590.4 | 96.4 | 1,109.6 |" in table_md(record("a" * 64))


def test_compare_matches_points_and_gives_b_over_a() -> None:
    a, b = record("a" * 64), record("b" * 64, scale=1.5)
    b.rows = b.rows[:-1]  # B lacks one point
    deltas = compare(a, b)
    assert len(deltas) == 4 and deltas[0].ratio("tg_tps") == pytest.approx(1.5)
    assert deltas[-1].b is None and deltas[-1].ratio("tg_tps") is None
    assert a.dirname() == "qwen3-8b/2n/aaaaaaaaaaaa/20261125T170547Z"


def test_bench_compare_and_ls_read_kept_results(tmp_path: Path) -> None:
    for rec in (record("a" * 64), record("b" * 64, scale=2)):
        d = tmp_path / rec.dirname()
        d.mkdir(parents=True)
        (d / "record.json").write_text(rec.model_dump_json())
    out = json.loads(run_cli("bench", "compare", "aaaa", "bbbb", "--results", str(tmp_path), "--json").stdout)
    assert out["points"][0]["tg_ratio"] == pytest.approx(2.0)
    listed = json.loads(run_cli("bench", "ls", "--results", str(tmp_path), "--json").stdout)
    assert sorted(r["build_key"][:4] for r in listed) == ["aaaa", "bbbb"]
    missing = run_cli("bench", "compare", "aaaa", "cccc", "--results", str(tmp_path), check=2)
    assert "no result matches 'cccc'" in missing.stderr and "Traceback" not in missing.stderr


def test_bench_without_a_tokenizer_says_how_to_get_one(tmp_path: Path) -> None:
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = run_cli(
        "bench",
        "run",
        "--model",
        "Qwen/Qwen3-8B",
        "--build-key",
        "abc123",
        "--results",
        str(tmp_path),
        env=env,
        check=2,
    )
    assert "model download Qwen/Qwen3-8B" in proc.stderr and "Traceback" not in proc.stderr
    assert run_cli("bench", "run", "-b", "depth=x", "--model", "a/b", env=env, check=2).stderr.count("depth") >= 1


def test_profiles_are_documented() -> None:
    assert set(PROFILES) == {"quick", "sweep"}

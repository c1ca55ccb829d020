"""Where a vLLM start is, from its log (pipeline/launch/startup.py): a cold start of openai/gpt-oss-120b
in vLLM's own words (tests/unit/fixtures/vllm_logs/), read as a deploy's wait reads the head's log tail."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.launch.startup import DEFAULT_DEADLINES, PHASES, parse_deadlines, progress

LOGS = Path(__file__).parent / "fixtures" / "vllm_logs"
START = (LOGS / "cold_start.log").read_text()
MORE = (LOGS / "cold_start_more.log").read_text()
READY = (LOGS / "cold_start_ready.log").read_text()


def test_a_cold_start_goes_through_each_phase_with_what_it_last_saw() -> None:
    head = START.split("(EngineCore_DP0 pid=312) INFO 11-30 09:12:33")[0]
    assert progress(head).phase == "start"
    assert progress(head).detail.endswith("is assigned as DP rank 0, PP rank 0, TP rank 0, EP rank 0")
    assert progress(START).phase == "weights" and progress(START).detail == "7/15 shards"
    assert progress(START + MORE).phase == "compile"
    assert progress(START + MORE).detail.startswith("Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  42%")
    assert progress(START + MORE + READY).phase == "serve"


def test_a_log_tail_that_scrolled_past_a_marker_keeps_the_phase() -> None:
    tail = MORE.splitlines()[-1]  # only the graph capture's progress bar is left in the tail
    assert progress(tail, "compile").phase == "compile" and progress("", "weights").phase == "weights"


def test_progress_bars_written_with_carriage_returns_count_as_lines() -> None:
    bar = "\r".join(f"Loading safetensors checkpoint shards: {p}% Completed | {i}/4" for i, p in enumerate((0, 25, 50)))
    assert progress(bar).detail == "2/4 shards"


@given(st.text(max_size=300), st.sampled_from(PHASES))
def test_any_log_text_never_moves_a_phase_back(text: str, at_least: str) -> None:
    seen = progress(text, at_least)
    assert PHASES.index(seen.phase) >= PHASES.index(at_least) and len(seen.detail) <= 160


def test_phase_deadlines_override_the_defaults_and_refuse_what_is_not_one() -> None:
    assert parse_deadlines(("weights=7200",)) == {**DEFAULT_DEADLINES, "weights": 7200.0}
    for bad in ("weights", "load=10", "compile=0", "serve=-1", "start=1e9"):
        with pytest.raises(ConfigError, match="--phase-timeout"):
            parse_deadlines((bad,))


def test_bench_takes_the_last_start_of_the_deployment_it_measures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.benchmark.run import last_startup
    from pipeline.cli.launching import record_startup

    monkeypatch.setenv("SPARK_PIPELINE_CACHE", str(tmp_path))
    assert last_startup("http://127.0.0.1:8000/v1") is None
    record_startup("vllm_node", "http://10.0.0.1:8000", 245.04, [("start", 12.0), ("weights", 70.5)])
    got = last_startup("http://127.0.0.1:8000/v1")
    assert got is not None and got.ready_seconds == 245.0
    assert got.phases == {"starting": 12.0, "loading weights": 70.5}
    assert last_startup("http://127.0.0.1:8001/v1") is None  # another server: not its start

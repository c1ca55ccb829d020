"""The memory preflight (pipeline/launch/memory.py): from the command's flags and each node's
/proc/meminfo, whether the model fits, with the numbers; and the dry run that prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.launch.memory import GIB, HEADROOM, Claim, NodeMemory, claim_of, estimate
from pipeline.nodes.discover import parse_meminfo
from tests.conftest import run_cli

SPARK = NodeMemory("spark1", 119 * GIB, 116 * GIB, gpu=True, ours_running=False)


def test_a_spark_with_vllm_s_default_fits_a_65_gib_model() -> None:
    [e] = estimate([SPARK], 65 * GIB, claim_of(("vllm", "serve", "openai/gpt-oss-120b")))
    assert e.problems == () and e.claim == int(0.9 * 119 * GIB) and e.weights == 65 * GIB
    assert e.line().endswith("fits") and "0.9 × 119.0 GiB" in e.line()


def test_weights_larger_than_the_claim_are_refused_with_the_numbers() -> None:
    two = estimate([SPARK, SPARK], 230 * GIB, claim_of(("vllm", "serve", "m", "-tp", "2")))
    assert [x.weights for x in two] == [115 * GIB] * 2  # split over two ranks, one per node
    assert two[0].problems[0].startswith("the weights (115.0 GiB on this node) do not fit in vLLM's 107.1 GiB")
    # two ranks on one machine share its unified memory: it holds all of the weights
    assert estimate([SPARK], 230 * GIB, claim_of(("vllm", "serve", "m", "-tp", "2")))[0].weights == 230 * GIB


def test_a_busy_node_is_refused_unless_our_own_container_is_what_holds_its_memory() -> None:
    busy = NodeMemory("spark2", 119 * GIB, 60 * GIB, gpu=True, ours_running=False)
    [e] = estimate([busy], 10 * GIB, claim_of(("vllm", "serve", "m", "--gpu-memory-utilization", "0.7")))
    assert e.problems == (
        "vLLM's 83.3 GiB (0.7 × 119.0 GiB) + 4 GiB for the OS exceed the 60.0 GiB available: lower "
        "--gpu-memory-utilization, or free memory (stop other containers; the drop-caches mod)",
    )
    redeploy = NodeMemory("spark2", 119 * GIB, 60 * GIB, gpu=True, ours_running=True)
    assert estimate([redeploy], 10 * GIB, claim_of(("vllm", "serve", "m")))[0].problems == ()


def test_nodes_without_a_gpu_or_memory_facts_are_not_estimated() -> None:
    nodes = [NodeMemory("h1", 24 * GIB, 1 * GIB, gpu=False, ours_running=False), NodeMemory("h2", 0, 0, True, False)]
    assert estimate(nodes, 100 * GIB, Claim()) == []


def test_the_gb_mod_s_flag_is_a_fixed_claim() -> None:
    c = claim_of(("vllm", "serve", "m", "--gpu-memory-utilization-gb", "100"))
    assert c.fixed == 100 * GIB and c.of(119 * GIB) == 100 * GIB


@pytest.mark.parametrize(
    "flags",
    [("--gpu-memory-utilization", "90"), ("--gpu-memory-utilization", "0"), ("--gpu-memory-utilization-gb", "-1")],
)
def test_a_claim_that_is_not_one_is_a_located_error(flags: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=flags[0]):
        claim_of(("vllm", "serve", "m", *flags))


@given(st.text(max_size=200))
def test_any_meminfo_text_reads_as_two_counts(text: str) -> None:
    total, avail = parse_meminfo(text)
    assert total >= 0 and avail >= 0


@given(
    st.integers(0, 1 << 42),
    st.integers(1 << 30, 1 << 40),
    st.integers(0, 1 << 40),
    st.floats(0.05, 1.0),
    st.integers(1, 8),
)
def test_an_estimate_refuses_exactly_when_a_limit_is_passed(
    weights: int, total: int, avail: int, frac: float, ranks: int
) -> None:
    node = NodeMemory("n", total, avail, gpu=True, ours_running=False)
    e = estimate([node] * ranks, weights, Claim(fraction=frac, ranks=ranks))[0]
    assert bool(e.problems) == (e.weights >= e.claim or e.claim + HEADROOM > avail)


def test_dry_run_prints_the_estimate_and_refuses_a_node_that_cannot_hold_it(tmp_path: Path) -> None:
    case = json.loads((Path(__file__).parent / "fixtures/layouts/twins-one-subnet.json").read_text())
    facts = case["facts"]
    facts["nodes"][0]["answers"]["meminfo"] = "MemTotal:       124142312 kB\nMemAvailable:   121000000 kB"
    facts["nodes"][1]["answers"]["meminfo"] = "MemTotal:       124142312 kB\nMemAvailable:    62000000 kB"
    (tmp_path / "facts.json").write_text(json.dumps(facts))
    (tmp_path / "cluster.yaml").write_text(json.dumps(case["cluster"]))
    argv = ["deploy", "--dry-run", "--facts", str(tmp_path / "facts.json"), "--cluster", str(tmp_path / "cluster.yaml")]
    env = {"SPARK_PIPELINE_CACHE": str(tmp_path / "cache")}
    refused = run_cli(*argv, "--", "vllm", "serve", "org/model", "-tp", "2", env=env, check=2)
    assert "spark2: vLLM's 106.6 GiB (0.9 × 118.4 GiB) + 4 GiB for the OS exceed the 59.1 GiB" in refused.stderr
    assert "spark1:" not in refused.stderr and "--force" in refused.stderr and "Traceback" not in refused.stderr
    ok = run_cli(*argv, "--", "vllm", "serve", "org/model", "-tp", "2", "--gpu-memory-utilization", "0.4", env=env)
    assert "memory spark1: weights 0.0 GiB within vLLM's 47.4 GiB (0.4 × 118.4 GiB)" in ok.stderr
    assert "memory spark2:" in ok.stderr and "does not fit" not in ok.stderr
    forced = run_cli(*argv, "--force", "--json", "--", "vllm", "serve", "org/model", "-tp", "2", env=env)
    plan = json.loads(forced.stdout)
    assert [m["fits"] for m in plan["memory"]] == [True, False]
    assert any("spark2: vLLM's" in w and "--force" in w for w in plan["warnings"])


def test_only_a_gb10_s_memory_is_the_node_s_memory() -> None:
    from pipeline.config.cluster import NodeSpec
    from pipeline.deploy.models import memory_of
    from pipeline.nodes.discover import NodeFacts
    from pipeline.nodes.netfacts import Gpu

    def facts(gpu: Gpu) -> NodeFacts:
        return NodeFacts(node=NodeSpec(address="10.0.0.1"), gpus=[gpu], mem_total=64 * GIB, mem_available=50 * GIB)

    spark, desktop = facts(Gpu("NVIDIA GB10", "12.1")), facts(Gpu("NVIDIA GeForce RTX 4090", "8.9"))
    assert [m.gpu for m in memory_of([spark, desktop], "all")] == [True, False]
    assert [m.gpu for m in memory_of([spark], "none")] == [False]  # --gpus none: vLLM gets no GPU

"""How a container gets the node's GPU: CDI's `--device nvidia.com/gpu=all` where the node's Docker has an
NVIDIA CDI spec (Docker 28 with the NVIDIA container toolkit), `--gpus` through the toolkit's hook
elsewhere; doctor blocks a GPU node whose Docker has neither. The answers are the discovery script's
`gpu-access` lines as Docker 20.10 and 28.5 give them here."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.cluster import NodeSpec
from pipeline.launch.doctor import docker_notes
from pipeline.launch.plan import NodeInput, Options, plan
from pipeline.nodes.discover import NodeFacts, parse_facts, script_output
from pipeline.nodes.netfacts import parse_gpu_access

DOCKER28 = "runtime io.containerd.runc.v2\nruntime runc\ncdi-dir /etc/cdi\ncdi-dir /var/run/cdi"
DOCKER28_CDI = DOCKER28 + "\ncdi-gpu /etc/cdi/nvidia.yaml"
DOCKER20_HOOK = "hook\nruntime io.containerd.runc.v2\nruntime io.containerd.runtime.v1.linux\nruntime runc"
SPARK_GPU = "NVIDIA GB10, 12.1"


def facts(access: str, smi: str = SPARK_GPU) -> NodeFacts:
    buildx = "github.com/docker/buildx 0.29.1+ds1 0.29.1+ds1-4"
    sections = {"nvidia-smi": smi, "docker": "28.5.2", "buildx": buildx, "gpu-access": access, "end": ""}
    return parse_facts(NodeSpec(address="10.0.0.1", name="n1"), script_output(sections))


def test_cdi_is_chosen_where_the_nodes_docker_has_an_nvidia_spec() -> None:
    assert facts(DOCKER28_CDI).gpu_access.flag == "cdi"
    assert facts(DOCKER28_CDI).gpu_access.cdi_dirs == ("/etc/cdi", "/var/run/cdi")
    assert facts(DOCKER28).gpu_access.flag == "gpus"  # CDI on, but no NVIDIA spec generated
    assert facts(DOCKER20_HOOK).gpu_access.flag == "gpus"
    assert facts("").gpu_access.flag == "gpus"  # an old facts file: as before


def test_the_run_argv_uses_the_nodes_way() -> None:
    opts = Options(image="vllm-node", command=("vllm", "serve", "m"), mode="solo")
    for access, want in (("cdi", ["--device", "nvidia.com/gpu=all"]), ("gpus", ["--gpus", "all"])):
        argv = plan([NodeInput("s1", "10.0.0.1", "eth0", gpu_access=access)], opts).head.run_argv
        i = argv.index(want[0])
        assert list(argv[i : i + 2]) == want
        assert ("--gpus" in argv) == (access == "gpus")
    none = plan([NodeInput("s1", "10.0.0.1", "eth0", gpu_access="cdi")], Options(**{**opts.__dict__, "gpus": "none"}))
    assert "--gpus" not in none.head.run_argv and "nvidia.com/gpu=all" not in none.head.run_argv


def test_doctor_blocks_a_gpu_node_whose_docker_cannot_hand_it_over() -> None:
    (problem,) = docker_notes(facts(DOCKER28))
    assert problem.blocking and "nvidia-ctk cdi generate" in problem.text and "/etc/cdi, /var/run/cdi" in problem.text
    assert docker_notes(facts(DOCKER28_CDI)) == []
    assert docker_notes(facts(DOCKER20_HOOK)) == []
    assert docker_notes(facts(DOCKER28, smi="ABSENT")) == []  # no GPU: said elsewhere, once


@given(st.text(max_size=2000))
def test_any_answer_parses_without_raising_and_stays_bounded(text: str) -> None:
    got = parse_gpu_access(text)
    assert all(len(x) <= 32 for x in (got.runtimes, got.cdi_dirs, got.cdi_gpu))
    assert got.flag in ("cdi", "gpus")


def test_a_flood_of_lines_is_cut() -> None:
    got = parse_gpu_access("cdi-gpu /x\n" * 10_000)
    assert len(got.cdi_gpu) == 32

"""Shipping is decided, then done: the plan asks each node for its image ID and says, per node, what
would be shipped and why; it moves nothing (no docker save, no registry, no pull)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.cluster import ClusterSpec
from pipeline.ship.shipper import Shipper
from tests.doubles import FakeHosts

LOCAL = "sha256:" + "a" * 64
OLD = "sha256:" + "b" * 64
INSPECT = ["docker", "image", "inspect", "--format", "{{.Id}}", "vllm-node"]


class LocalDocker:
    """This machine's Docker as the plan sees it: one image, nothing else may be asked."""

    def image_id(self, image: str) -> str:
        return LOCAL if image == "vllm-node" else ""

    def run(self, *args: str, **kw: object) -> object:
        raise AssertionError(f"a plan ran docker {args}")


def test_the_plan_says_per_node_what_would_move_and_moves_nothing(tmp_path: Path) -> None:
    spec = ClusterSpec.model_validate(
        {
            "nodes": [
                {"address": a, "name": n}
                for n, a in (("same", "10.0.0.1"), ("older", "10.0.0.2"), ("none", "10.0.0.3"))
            ]
        }
    )
    hosts = FakeHosts(spec).expect("same", INSPECT, stdout=LOCAL + "\n").expect("older", INSPECT, stdout=OLD + "\n")
    hosts.expect("none", INSPECT, status=1, stderr="No such image")
    plan = Shipper(hosts, LocalDocker(), tmp_path, 5000).plan("vllm-node", spec.ordered())  # type: ignore[arg-type]
    assert [n.label for n in plan.todo] == ["older", "none"]
    assert plan.lines() == [
        "same: nothing to do, because same image",
        "older: ship vllm-node (aaaaaaaaaaaa) by registry, only the layers it lacks",
        "none: ship vllm-node (aaaaaaaaaaaa) by registry, only the layers it lacks",
    ]
    assert len(hosts.ran) == 3 and not (tmp_path / "registry").exists()
    forced = Shipper(
        FakeHosts(spec)
        .expect("same", INSPECT, stdout=LOCAL)
        .expect("older", INSPECT, stdout=OLD)
        .expect("none", INSPECT, status=1),
        LocalDocker(),
        tmp_path,
        5000,
    )  # type: ignore[arg-type]
    assert len(forced.plan("vllm-node", spec.ordered(), force=True).todo) == 3

"""Shipping is decided, then done: the plan asks each node for its image's content ID and says, per node,
what would be shipped and why; it moves nothing (no docker save, no registry, no pull). A node on the
containerd image store holds the same image as this machine's classic store under another `.Id`."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.cluster import ClusterSpec
from pipeline.engines.identity import FORMAT, content_id
from pipeline.ship.shipper import Shipper
from tests.doubles import FakeHosts

FIXTURES = Path(__file__).parent / "fixtures" / "identity"
HERE = (FIXTURES / "docker20-classic.txt").read_text()  # this machine: Docker 20.10
LOCAL = content_id(HERE)
SAME = (FIXTURES / "docker28-containerd.txt").read_text()  # the same image on a containerd-store node
OLD = SAME.replace('"LANG=C.UTF-8"', '"LANG=C"')  # another image
INSPECT = ["docker", "image", "inspect", "--format", FORMAT, "vllm-node"]


class LocalDocker:
    """This machine's Docker as the plan sees it: one image, nothing else may be asked."""

    def content_id(self, image: str) -> str:
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
    assert content_id(OLD) not in ("", LOCAL)
    hosts = FakeHosts(spec).expect("same", INSPECT, stdout=SAME).expect("older", INSPECT, stdout=OLD)
    hosts.expect("none", INSPECT, status=1, stderr="No such image")
    plan = Shipper(hosts, LocalDocker(), tmp_path, 5000).plan("vllm-node", spec.ordered())  # type: ignore[arg-type]
    assert [n.label for n in plan.todo] == ["older", "none"]
    assert plan.lines() == [
        "same: nothing to do, because same image",
        f"older: ship vllm-node ({LOCAL[7:19]}) by registry, only the layers it lacks",
        f"none: ship vllm-node ({LOCAL[7:19]}) by registry, only the layers it lacks",
    ]
    assert len(hosts.ran) == 3 and not (tmp_path / "registry").exists()
    forced = Shipper(
        FakeHosts(spec)
        .expect("same", INSPECT, stdout=SAME)
        .expect("older", INSPECT, stdout=OLD)
        .expect("none", INSPECT, status=1),
        LocalDocker(),
        tmp_path,
        5000,
    )  # type: ignore[arg-type]
    assert len(forced.plan("vllm-node", spec.ordered(), force=True).todo) == 3

"""doctor reads each node's Docker: version, image store (classic or containerd), buildx, and says what
they mean for shipping and building. The answers below are what Docker 20.10 and 28.5 print here."""

from __future__ import annotations

import pytest

from pipeline.config.cluster import NodeSpec
from pipeline.launch.doctor import docker_notes
from pipeline.nodes.discover import NodeFacts, parse_facts, script_output

CLASSIC = '[["Backing Filesystem","extfs"],["Supports d_type","true"],["Native Overlay Diff","true"]]'
CONTAINERD = '[["driver-type","io.containerd.snapshotter.v1"]]'
BUILDX = "github.com/docker/buildx 0.29.1+ds1 0.29.1+ds1-4"


def facts(version: str, store: str, buildx: str) -> NodeFacts:
    sections = {"docker": version, "store": store, "buildx": buildx, "end": ""}
    return parse_facts(NodeSpec(address="10.0.0.1", name="n1"), script_output(sections))


@pytest.mark.parametrize(
    ("version", "store", "buildx", "want"),
    [
        ("20.10.24+dfsg1", CLASSIC, "", ("classic", "")),
        ("28.5.2+dfsg4", CLASSIC, BUILDX, ("classic", "0.29.1+ds1")),
        ("28.5.2+dfsg4", CONTAINERD, BUILDX, ("containerd", "0.29.1+ds1")),
        ("", "", "", ("", "")),  # Docker did not answer: nothing is made up
        ("28.5.2", CONTAINERD, "docker: unknown command: docker buildx", ("containerd", "")),
    ],
)
def test_the_image_store_and_buildx_are_read(version: str, store: str, buildx: str, want: tuple[str, str]) -> None:
    f = facts(version, store, buildx)
    assert (f.image_store, f.buildx) == want


def test_what_a_nodes_docker_means_is_said() -> None:
    assert docker_notes(facts("20.10.24+dfsg1", CLASSIC, "")) == []  # BuildKit is built into 20.10
    assert docker_notes(facts("28.5.2+dfsg4", CLASSIC, BUILDX)) == []
    no_buildx = [p.text for p in docker_notes(facts("28.5.2+dfsg4", CLASSIC, ""))]
    assert len(no_buildx) == 1 and "install docker-buildx" in no_buildx[0]
    # either store ships and deploys (images are compared by content ID: engines/identity.py)
    assert docker_notes(facts("28.5.2+dfsg4", CONTAINERD, BUILDX)) == []

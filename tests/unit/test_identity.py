"""The content ID: one value per image on every Docker and image store, "" for anything that is not an
image's inspect line (a node's answer is untrusted)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.cluster import NodeSpec
from pipeline.engines.identity import FORMAT, content_id, key_tag
from pipeline.nodes.discover import parse_facts, script_output

FIXTURES = Path(__file__).parent / "fixtures" / "identity"
DOCKER_IDS = {"classic": "sha256:4ac00607285f", "containerd": "sha256:6b9953dfe994"}  # README.md there


def fields(name: str) -> list[object]:
    return [json.loads(f) for f in (FIXTURES / name).read_text().rstrip("\n").split("\t")]


def line(values: list[object]) -> str:
    return "\t".join(json.dumps(v) for v in values)


def test_one_image_has_one_content_id_on_docker_20_and_28_and_on_both_stores() -> None:
    ids = {f.name: content_id(f.read_text()) for f in FIXTURES.glob("*.txt")}
    assert len(ids) == 3 and len(set(ids.values())) == 1
    assert next(iter(ids.values())).startswith("sha256:") and len(next(iter(ids.values()))) == 71
    assert DOCKER_IDS["classic"] != DOCKER_IDS["containerd"]  # what `.Id` would have compared


def test_what_the_image_is_changes_the_id_and_empty_config_keys_do_not() -> None:
    base = fields("docker28-containerd.txt")
    same = content_id(line(base))
    config = dict(base[5])  # type: ignore[call-overload]
    assert content_id(line([*base[:5], {**config, "Volumes": None, "OnBuild": [], "User": ""}])) == same
    # what the classic store adds (measured: an image built FROM another by the legacy builder, pulled
    # onto 28.5's containerd store, has neither the parent's "Image" ID nor the container-only keys)
    classic = {**config, "Image": "sha256:" + "b" * 64, "Hostname": "", "AttachStdin": False, "Tty": False}
    assert content_id(line([*base[:5], classic])) == same
    assert content_id(line([*base[:4], base[4][:-1], config])) != same  # type: ignore[index]
    assert content_id(line([*base[:5], {**config, "Env": ["X=1"]}])) != same
    assert content_id(line(["arm64", *base[1:]])) != same
    assert content_id(line([*base[:3], "2000-01-01T00:00:00Z", *base[4:]])) != same


def test_the_format_prints_its_tabs_itself() -> None:
    assert "\t" not in FORMAT and FORMAT.count('{{"\\t"}}') == 5


@given(st.text(max_size=300))
def test_any_answer_gives_an_id_or_nothing_and_never_raises(text: str) -> None:
    got = content_id(text)
    assert got == "" or (got.startswith("sha256:") and len(got) == 71)


def test_facts_read_the_content_id_and_keep_an_old_facts_files_docker_id() -> None:
    raw = (FIXTURES / "docker28-containerd.txt").read_text()

    def image_id(answer: str) -> str:
        return parse_facts(NodeSpec(address="10.0.0.1", name="n1"), script_output({"image": answer})).image_id

    assert image_id(raw) == content_id(raw)
    assert image_id("sha256:" + "a" * 64) == "sha256:" + "a" * 64
    assert image_id("Error: no such image") == ""


def test_a_builds_name_by_key_sits_beside_its_tag() -> None:
    key = "0123456789ab" + "c" * 52
    assert key_tag("vllm-node", key) == "vllm-node:0123456789ab"
    assert key_tag("vllm-node:latest", key) == "vllm-node:0123456789ab"
    assert key_tag("host:5000/team/vllm:v1", key) == "host:5000/team/vllm:0123456789ab"
    assert key_tag("host:5000/vllm", key) == "host:5000/vllm:0123456789ab"

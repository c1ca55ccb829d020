"""`store gc` also drops, from the local Docker, the names by key of the builds it removes (a runtime's
`vllm-node:<key12>`, a toolchain's tag), never a moving tag: the store's keep policy bounds what builds
leave in Docker, now that every runtime build keeps a name there."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.store import Store
from tests.conftest import run_cli

OLD, NEW, WHEELS = "a" * 64, "b" * 64, "c" * 64


class Docker:
    """The local Docker as gc sees it: which names it holds, and what it was asked to remove."""

    held: ClassVar[set[str]] = set()
    removed: ClassVar[list[str]] = []

    def image_id(self, ref: str) -> str | None:
        return "sha256:" + "f" * 64 if ref in self.held else None

    def run(self, *args: str, **kw: object) -> object:
        assert args[0] == "rmi" and len(args) == 2, args
        self.removed.append(args[1])
        self.held.discard(args[1])
        return type("Ran", (), {"returncode": 0})()


def commit(store: Store, stage: str, key: str, meta: dict[str, object]) -> None:
    """An entry (the store stamps it with the time: the later commit is the more recent)."""
    staging = store.staging_dir(stage)
    (staging / "f").write_text(key)
    store.commit(stage, key, staging, meta)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    s = Store(tmp_path / "st")
    commit(s, "runtime", OLD, {"tag": "vllm-node", "image_id": "sha256:" + "1" * 64})
    commit(s, "runtime", NEW, {"tag": "vllm-node", "image_id": "sha256:" + "2" * 64})
    commit(s, "base", OLD, {"toolchain": "spark-pipeline-toolchain:amd64-aaaa", "image_id": "x"})
    commit(s, "vllm", WHEELS, {})
    Docker.held = {
        "vllm-node",
        "vllm-node:aaaaaaaaaaaa",
        "vllm-node:bbbbbbbbbbbb",
        "spark-pipeline-toolchain:amd64-aaaa",
    }
    Docker.removed = []
    monkeypatch.setattr("pipeline.engines.docker.Docker", Docker)
    return tmp_path / "st"


def gc(store: Path, tmp_path: Path, *args: str) -> str:
    proc = run_cli("store", "gc", "--store", str(store), "--file", str(tmp_path / "build.yaml"), *args)
    return proc.stdout + proc.stderr


def test_the_dry_run_names_what_would_go_and_removes_nothing(store: Path, tmp_path: Path) -> None:
    out = gc(store, tmp_path, "--keep", "1", "--dry-run")
    assert "would untag vllm-node:aaaaaaaaaaaa" in out
    assert "would untag spark-pipeline-toolchain:amd64-aaaa" not in out  # the only toolchain: kept
    assert Docker.removed == []


def test_removed_builds_lose_their_names_by_key_and_the_moving_tag_stays(store: Path, tmp_path: Path) -> None:
    out = gc(store, tmp_path, "--keep", "0")
    assert sorted(Docker.removed) == [
        "spark-pipeline-toolchain:amd64-aaaa",
        "vllm-node:aaaaaaaaaaaa",
        "vllm-node:bbbbbbbbbbbb",
    ]
    assert "vllm-node" in Docker.held and "untagged vllm-node:aaaaaaaaaaaa" in out

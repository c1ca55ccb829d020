"""The shared store's URL and the check a pulled entry must pass before the local store takes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import fsutil
from pipeline.errors import ConfigError, StoreError
from pipeline.remote_store import parse_url
from pipeline.store import Store
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("url", "host", "repo", "insecure"),
    [
        ("oci://127.0.0.1:5000/spark-pipeline", "127.0.0.1:5000", "spark-pipeline", True),
        ("oci://registry.lan/team/spark", "registry.lan", "team/spark", False),
        ("oci+http://registry.lan:5000/sp", "registry.lan:5000", "sp", True),
        ("oci://[::1]:5000/sp", "[::1]:5000", "sp", True),
    ],
)
def test_remote_urls(url: str, host: str, repo: str, insecure: bool) -> None:
    spec = parse_url(url)
    assert (spec.host, spec.repo, spec.insecure) == (host, repo, insecure)
    assert spec.ref("vllm", "ab" * 32) == f"{host}/{repo}/vllm:{'ab' * 32}"


@pytest.mark.parametrize(
    "url",
    [
        "https://registry.lan/sp",
        "oci://registry.lan",
        "oci://Registry.lan/SP",
        "oci://host:port/sp",
        "registry.lan:5000/sp",
    ],
)
def test_bad_remote_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(ConfigError, match=r"expected oci://HOST\[:PORT\]/REPO"):
        parse_url(url)


def entry(tmp: Path, stage: str = "vllm", key: str = "c" * 64) -> Path:
    d = Store(tmp / "store").staging_dir(stage)  # where a pull writes
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.whl").write_bytes(b"wheel")
    files = [{"path": "sub/a.whl", "size": 5, "sha256": fsutil.file_sha256(d / "sub" / "a.whl")}]
    (d / "manifest.json").write_text(json.dumps({"stage": stage, "key": key, "files": files}))
    return d


def test_adopt_takes_an_entry_that_matches_its_manifest(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    got = store.adopt("vllm", "c" * 64, entry(tmp_path))
    assert got.path == tmp_path / "store/vllm" / ("c" * 64) and store.verify("vllm", "c" * 64)[0] is not None


@pytest.mark.parametrize("damage", ["bytes", "extra", "missing", "other-key"])
def test_adopt_refuses_what_does_not_match(tmp_path: Path, damage: str) -> None:
    d = entry(tmp_path, key="e" * 64 if damage == "other-key" else "c" * 64)
    if damage == "bytes":
        (d / "sub" / "a.whl").write_bytes(b"wheeL")
    elif damage == "extra":
        (d / "evil.sh").write_text("#!/bin/sh\n")
    elif damage == "missing":
        (d / "sub" / "a.whl").unlink()
    with pytest.raises(StoreError, match="from the remote store"):
        Store(tmp_path / "store").adopt("vllm", "c" * 64, d)
    assert not (tmp_path / "store/vllm" / ("c" * 64)).exists()


def test_a_bad_remote_flag_is_located_and_nothing_is_contacted() -> None:
    proc = run_cli("store", "ls", "--remote", "http://example.invalid/x", check=2)
    assert "--remote 'http://example.invalid/x': expected oci://HOST[:PORT]/REPO" in proc.stderr

"""The uncompressed push into the loopback registry (Debian's docker-registry): only the blobs the registry
lacks are uploaded, a layer that merely has the size of a present one is still found, and Docker pulls
the result back as the same image (same ID)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.engines.docker import Docker
from pipeline.errors import PipelineError
from pipeline.ship.push import RegistryPush
from pipeline.ship.registry import Registry, collect
from tests.conftest import run_cli
from tests.integration.dockerd import DOCKER, Daemon

PORT = 5094
BASE = 6 * 1024 * 1024
TOP = 2 * 1024 * 1024


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def load(tag: str, layers: list[bytes]) -> None:
    """`docker load` of a saved image made here, with exactly these layer tars."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": [f"{i}/layer.tar" for i in range(len(layers))]}]
    saved = _tar(
        {
            "config.json": config,
            "manifest.json": json.dumps(manifest).encode(),
            **{f"{i}/layer.tar": layer for i, layer in enumerate(layers)},
        }
    )
    subprocess.run([DOCKER, "load"], input=saved, capture_output=True, check=True)


def image_id(ref: str) -> str:
    return subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def images(docker_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """v1: one 6 MB layer (imported); v2: v1 + a 2 MB layer (built); pair: v1's layer, then one of the very
    same tar size with other bytes."""
    d = tmp_path_factory.mktemp("push-images")
    base = _tar({"data/base.bin": os.urandom(BASE)})
    subprocess.run([DOCKER, "import", "-", "sp-push:v1"], input=base, capture_output=True, check=True)
    load("sp-push:pair", [base, _tar({"data/twin.bin": os.urandom(BASE)})])
    (d / "ctx").mkdir()
    (d / "ctx" / "top.bin").write_bytes(os.urandom(TOP))
    (d / "ctx" / "Dockerfile").write_text("FROM sp-push:v1\nCOPY top.bin /data/top.bin\n")
    subprocess.run(
        [DOCKER, "build", "--network", "none", "-t", "sp-push:v2", str(d / "ctx")],
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
    )
    yield
    subprocess.run([DOCKER, "rmi", "-f", "sp-push:v1", "sp-push:v2", "sp-push:pair"], capture_output=True)


def pulled_id(ref: str) -> str:
    subprocess.run([DOCKER, "pull", ref], capture_output=True, check=True)
    try:
        return image_id(ref)
    finally:
        subprocess.run([DOCKER, "rmi", ref], capture_output=True)


def test_only_missing_blobs_are_uploaded_and_the_image_comes_back_the_same(images: None, tmp_path: Path) -> None:
    at = f"127.0.0.1:{PORT}/sp-push"
    with Registry(tmp_path / "registry", PORT):
        push = RegistryPush(Docker(), f"127.0.0.1:{PORT}")
        cold = push.push("sp-push:v1", f"{at}:v1")
        assert (cold.uploaded, cold.present, cold.saves) == (2, 0, 1)  # the layer and the config
        assert BASE < cold.uploaded_bytes < BASE + 64 * 1024  # uncompressed: random bytes, as saved

        delta = push.push("sp-push:v2", f"{at}:v2")
        assert (delta.uploaded, delta.present, delta.saves) == (2, 1, 1)  # the top layer and the new config
        assert TOP < delta.uploaded_bytes < TOP + 64 * 1024

        again = push.push("sp-push:v2", f"{at}:again")
        assert (again.uploaded, again.saves) == (0, 0)  # every blob is there: no docker save at all

        pair = push.push("sp-push:pair", f"{at}:pair")  # its new layer has the size of v1's: a second look finds it
        assert pair.saves == 2 and pair.uploaded >= 2

        short = {d.removeprefix("sha256:")[:12]: n for d, n in layer_digests("sp-push:v2")}
        assert push.layer_sizes(f"{at}:v2") == short  # what a node's `docker pull` output is counted by
        for tag, ref in (("v1", "sp-push:v1"), ("v2", "sp-push:v2"), ("pair", "sp-push:pair")):
            assert pulled_id(f"{at}:{tag}") == image_id(ref)


def layer_digests(ref: str) -> list[tuple[str, int]]:
    """(diff_id, size of the layer as docker save writes it) for each layer: what the manifest must list."""
    out = subprocess.run(
        [DOCKER, "image", "inspect", "--format", "{{range .RootFS.Layers}}{{.}} {{end}}", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    save = subprocess.run([DOCKER, "save", ref], capture_output=True, check=True).stdout
    sizes = {}
    with tarfile.open(fileobj=io.BytesIO(save)) as tar:
        for m in tar.getmembers():
            if m.name.endswith("layer.tar") and m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                sizes["sha256:" + hashlib.sha256(f.read()).hexdigest()] = m.size
    return [(d, sizes[d]) for d in out]


def test_store_gc_collects_the_registry_but_never_under_a_ship(images: None, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    where = cache / "ship" / "registry"
    at = f"127.0.0.1:{PORT}/sp-gc:latest"
    with Registry(where, PORT):
        push = RegistryPush(Docker(), f"127.0.0.1:{PORT}")
        push.push("sp-push:pair", at)
        push.push("sp-push:v1", at)  # re-tagged: pair's manifest, config and second layer are now unreferenced
        with pytest.raises(PipelineError, match="in use by a ship or deploy"):
            collect(where, wait=0)  # a running registry holds the storage

    env = {"SPARK_PIPELINE_CACHE": str(cache)}
    dry = run_cli("store", "gc", "--store", str(tmp_path / "store"), "--dry-run", env=env).stderr
    # pair's manifest (a blob too), config and second layer
    assert f"image registry {where}: would remove 3 blobs and 1 manifests" in " ".join(dry.split())
    done = " ".join(run_cli("store", "gc", "--store", str(tmp_path / "store"), env=env).stderr.split())
    assert f"image registry {where}: removed 3 blobs and 1 manifests no tag uses" in done
    freed = float(done.split("manifests no tag uses, ")[1].split()[0])  # "…, 6.0 MB freed"
    assert freed >= BASE / 1024 / 1024 - 0.1
    with Registry(where, PORT):  # what the tag names is intact
        assert pulled_id(at) == image_id("sp-push:v1")

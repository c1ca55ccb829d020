"""What an uncompressed push puts into the registry, and which form of push each Docker gets."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import oras.schemas
import pytest

from pipeline.ship.oci_layout import LAYER_TYPE, named_digest, oci_manifest, push_form

FIXTURES = Path(__file__).parent / "fixtures" / "docker_info"
HEX = "a" * 64


@pytest.mark.parametrize(
    ("fixture", "form"),
    [
        ("overlay2-20.10.json", "uncompressed"),  # `docker info --format '{{json .DriverStatus}}'`, here
        ("containerd-store.json", "docker push"),  # Docker's containerd image store (the Docker 29 default)
    ],
)
def test_push_form_follows_the_image_store(fixture: str, form: str) -> None:
    assert push_form((FIXTURES / fixture).read_text()) == form


@pytest.mark.parametrize(
    ("member", "digest"),
    [
        (f"blobs/sha256/{HEX}", f"sha256:{HEX}"),  # Docker 25+: an OCI layout names blobs by digest
        (f"./blobs/sha256/{HEX}", f"sha256:{HEX}"),
        (f"{HEX}.json", f"sha256:{HEX}"),  # Docker 20.10: the config, named by the image ID
        (f"{HEX}/layer.tar", None),  # 20.10: a layer's digest shows only after hashing
        (f"{HEX}/json", None),
        ("manifest.json", None),
        (f"blobs/sha256/{HEX[:-1]}", None),
    ],
)
def test_named_digest(member: str, digest: str | None) -> None:
    assert named_digest(member) == digest


def test_the_manifest_names_the_config_unchanged_and_every_layer_uncompressed() -> None:
    config, base, top = f"sha256:{'c' * 64}", f"sha256:{'1' * 64}", f"sha256:{'2' * 64}"
    manifest = oci_manifest((config, 1234), [(base, 210_000_000), (top, 21_000_000)])
    jsonschema.validate(manifest, schema=oras.schemas.manifest)  # what the registry push validates against
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": config,
        "size": 1234,
    }
    assert [(layer["digest"], layer["size"], layer["mediaType"]) for layer in manifest["layers"]] == [  # type: ignore[attr-defined]
        (base, 210_000_000, LAYER_TYPE),
        (top, 21_000_000, LAYER_TYPE),
    ]  # bottom first, as diff_ids are
    assert json.loads(json.dumps(manifest)) == manifest

"""An image as registry blobs: the OCI manifest that names its config and its layers uncompressed, which
form of push this Docker needs, and which blob a `docker save` member is. Pure: the pushing is in
`ship/push.py`.

Two forms of `docker save` exist:
- Docker 20.10 (Debian's, here): `<config-hex>.json`, `<v1-id>/layer.tar` uncompressed (a layer repeated
  in the image is a symlink to the first copy), `manifest.json`. sha256(layer.tar) is the layer's diff_id.
- Docker 25+: an OCI layout, `blobs/sha256/<hex>`. With the classic image store the layers are the same
  uncompressed tars, so their digests are again the diff_ids.
In both, an uncompressed layer's digest is its diff_id and the config's digest is the image ID, so the
manifest follows from `docker image inspect` alone.

Docker's containerd image store (the default for fresh installs of Docker 29) keeps layers compressed as
they were built or pulled, and `docker push` sends those blobs as they are, compressing nothing: there,
`docker push` is already the fast form, and it is what we use.
"""

from __future__ import annotations

import re

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONTAINERD_STORE = "io.containerd.snapshotter.v1"
_NAMED = re.compile(r"(?:blobs/sha256/(?P<blob>[0-9a-f]{64}))|(?P<config>[0-9a-f]{64})\.json")


def push_form(driver_status: str) -> str:
    """`uncompressed` (our push from `docker save`) or `docker push` (the containerd image store), from
    `docker info --format '{{json .DriverStatus}}'`."""
    return "docker push" if CONTAINERD_STORE in driver_status else "uncompressed"


def named_digest(member: str) -> str | None:
    """The digest a `docker save` member's name gives (an OCI blob, or 20.10's config), else None."""
    m = _NAMED.fullmatch(member.removeprefix("./"))
    if m is None:
        return None
    return "sha256:" + (m["blob"] or m["config"])


def oci_manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> dict[str, object]:
    """The OCI image manifest of (digest, size) blobs: the saved config unchanged, so the image ID stays
    the same on the node, and every layer uncompressed (its digest is its diff_id)."""
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": n} for d, n in layers],
    }

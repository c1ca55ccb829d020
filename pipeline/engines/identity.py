"""An image's ID as we compare it between machines: the same on every Docker image store.

Docker's own `.Id` is the config's digest on the classic store (20.10; 25+ unless the containerd store is
on), but the manifest's or OCI index's digest on the containerd image store (the default for new
installs of Docker 29). So the same image has two IDs as soon as head and node use different stores, and
even on the same store after a push that changes the manifest (compression). What does not change is
what the config blob says: platform, creation time, the uncompressed layers (diff_ids) and the
run config (CONFIG_KEYS). `docker image inspect` prints those the same way on 20.10 and 28, on both stores
(measured on one image loaded into all three); the content ID is their digest.
"""

from __future__ import annotations

import hashlib
import json

# One line; a tab between fields (JSON never holds a raw tab). The Go template prints the tab itself, so
# the format is safe to pass as one argv element or a shell argument.
FORMAT = '{{"\\t"}}'.join(
    (
        "{{json .Architecture}}",
        "{{json .Variant}}",
        "{{json .Os}}",
        "{{json .Created}}",
        "{{json .RootFS.Layers}}",
        "{{json .Config}}",
    )
)


# The image config's `config` as the OCI spec has it, plus Docker's own keys that change what runs. Not
# "Image" (the parent's store-specific ID, which the legacy builder records and the containerd store
# drops) nor the container-only keys (Hostname, Attach*, Tty…) the classic store prints.
CONFIG_KEYS = frozenset(
    {
        "User",
        "ExposedPorts",
        "Env",
        "Entrypoint",
        "Cmd",
        "Volumes",
        "WorkingDir",
        "Labels",
        "StopSignal",
        "ArgsEscaped",
        "Healthcheck",
        "OnBuild",
        "Shell",
    }
)


def _pruned(value: object) -> object:
    """Empty and false values dropped: one Docker prints `"Volumes": null, "Tty": false` where another leaves
    the keys out."""
    if isinstance(value, dict):
        kept = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not False and v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def content_id(line: str) -> str:
    """`sha256:…` of an image from `docker image inspect --format FORMAT`; "" for anything else (an absent
    image prints nothing; a node may answer garbage)."""
    fields = line.strip("\r\n").split("\t")
    if len(fields) != 6:
        return ""
    try:
        arch, variant, os_, created, layers, config = (json.loads(f) for f in fields)
    except ValueError:
        return ""
    if not (isinstance(layers, list) and layers and all(isinstance(x, str) for x in layers)):
        return ""
    if not (isinstance(arch, str) and isinstance(os_, str) and isinstance(config, dict | None)):
        return ""
    kept = {k: v for k, v in (config or {}).items() if k in CONFIG_KEYS}
    canon = [arch, variant or "", os_, created or "", layers, _pruned(kept)]
    data = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def key_tag(tag: str, key: str) -> str:
    """The build's name by key beside its moving tag: `vllm-node` -> `vllm-node:<key12>`,
    `host:5000/team/vllm:v1` -> `host:5000/team/vllm:<key12>`."""
    last = tag.rsplit("/", 1)[-1]
    repo = tag.rsplit(":", 1)[0] if ":" in last else tag
    return f"{repo.split('@', 1)[0]}:{key[:12]}"

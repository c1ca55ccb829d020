"""Content keys: the SHA-256 of a stage's canonical form with every input replaced by its digest.

In the key: platform, base image (digest when pinned, recipe hash when the tool makes it), env, each
input's name, placement and digest (upstream stage keys, source commits + PR heads + patch contents,
directory contents), steps, output, network. Not in the key: caches, secrets, build jobs (build_env),
log settings, the ref *names* (only what they resolve to), absolute paths, mtimes, dict order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config.types import image_digest
from pipeline.core.ir import Image, Input, Stage

# Bump when the meaning of a stage's canonical form changes, so old store entries are not reused.
KEY_FORMAT = 1


@dataclass(frozen=True)
class Resolved:
    """The digest of one input, and the facts (label -> value) that explain it to a user."""

    digest: str
    facts: tuple[tuple[str, str], ...] = ()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def base_digest(image: Image) -> tuple[str, str | None]:
    """(what goes into the key for the base image, a warning or None)."""
    if image.stage:  # the upstream stage's key is in the key through its input
        return f"stage:{image.stage}", None
    if image.bootstrap is not None:
        return "recipe:" + sha256_text(canonical_json(dict(image.bootstrap))), None
    pinned = image_digest(image.ref)
    if pinned:
        return pinned, None
    return image.ref, (
        f"base image {image.ref} is not pinned by digest, so its key follows the tag, not the content. "
        f"Pin it: docker pull {image.ref} && docker inspect --format '{{{{index .RepoDigests 0}}}}' "
        f"{image.ref}, then write that reference (…@sha256:…) in build.yaml"
    )


def input_id(inp: Input) -> tuple[str, str]:
    return inp.kind, inp.ref


def canonical(stage: Stage, digests: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    """The stage as plain data with inputs replaced by digests. Raises KeyError for a missing digest."""
    base, _ = base_digest(stage.base)
    return {
        "format": KEY_FORMAT,
        "name": stage.name,
        "platform": stage.platform,
        "base": base,
        "env": [list(kv) for kv in stage.env],
        "inputs": [
            {"name": i.name, "kind": i.kind, "path": i.path, "mode": i.mode, "digest": digests[input_id(i)]}
            for i in stage.inputs
        ],
        "steps": [
            {"argv": list(s.argv), "mounts": list(s.mounts), "workdir": s.workdir, "layer": s.layer}
            for s in stage.steps
        ],
        # The output's tag is left out: it names the result; building it under another name reuses it.
        "output": {
            "kind": stage.output.kind,
            "path": stage.output.path,
            "env": [list(kv) for kv in stage.output.env],
            "workdir": stage.output.workdir,
        },
        "network": stage.network,
    }


def stage_key(stage: Stage, digests: Mapping[tuple[str, str], str]) -> str:
    return sha256_text(canonical_json(canonical(stage, digests)))


def compute_keys(stages: list[Stage], resolved: Mapping[tuple[str, str], Resolved]) -> dict[str, str]:
    """Keys of all stages, in dependency order (upstream keys feed downstream digests)."""
    keys: dict[str, str] = {}
    for stage in stages:
        digests: dict[tuple[str, str], str] = {}
        for inp in stage.inputs:
            if inp.kind == "stage":
                digests[input_id(inp)] = keys[inp.ref]
            else:
                digests[input_id(inp)] = resolved[input_id(inp)].digest
        keys[stage.name] = stage_key(stage, digests)
    return keys

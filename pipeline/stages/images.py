"""Base images of stages: a pinned reference, or a recipe the tool turns into a local image."""

from __future__ import annotations

import hashlib
import json

from pipeline.config.build import ImageSpec
from pipeline.core.ir import Image


def image_of(spec: ImageSpec, platform: str) -> Image:
    if spec.bootstrap is None:  # the model allows exactly one of ref and bootstrap
        return Image(ref=spec.ref or "")
    recipe = spec.bootstrap.model_dump(mode="json")
    canonical = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in recipe.items()))
    digest = hashlib.sha256(json.dumps(canonical).encode()).hexdigest()
    # The tag names the platform and the recipe, so neither another platform's image nor an old recipe's is reused.
    arch = platform.split("/")[-1]
    return Image(
        ref=f"spark-pipeline-base:{spec.bootstrap.suite}-{arch}-{digest[:16]}", bootstrap=canonical, local=True
    )


def toolchain_of(stage: str) -> Image:
    """The toolchain image an upstream stage makes (the builder fills in its tag before a run)."""
    return Image(ref="", stage=stage, local=True)

"""Speculative decoding with `--load-format instanttensor`: the draft model loads with lazy safetensors.

InstantTensor streams a whole checkpoint through the GPU, which suits the target model; for a draft
(a separate, small checkpoint, or a subset of the target's tensors) that pass is wasted work and
memory on GB10. vLLM loads every model through `get_model()`; this wraps it so that a model other than
the served one (the draft's model_config) gets the same load config with another load format, while the
target keeps InstantTensor. INSTANTTENSOR_DRAFT_LOADER picks it: auto (safetensors, the default),
safetensors, fastsafetensors, or off (leave vLLM alone). It does nothing unless the load format is
instanttensor.
"""

from __future__ import annotations

import dataclasses
import os
from types import ModuleType
from typing import Any

import spark_posthook

TARGET = "vllm.model_executor.model_loader"


def draft_format(load_format: str, is_draft: bool) -> str | None:
    """The load format for the draft, or None to leave the call alone."""
    mode = os.environ.get("INSTANTTENSOR_DRAFT_LOADER", "auto").strip().lower()
    if mode == "off" or not is_draft or str(load_format) != "instanttensor":
        return None
    if mode not in ("auto", "safetensors", "fastsafetensors"):
        raise ValueError(f"INSTANTTENSOR_DRAFT_LOADER={mode}: expected auto, safetensors, fastsafetensors or off")
    return "safetensors" if mode == "auto" else mode


def patch(mod: ModuleType) -> None:
    original = mod.get_model

    def get_model(*args: Any, vllm_config: Any, model_config: Any = None, **kw: Any) -> Any:
        load = vllm_config.load_config
        is_draft = model_config is not None and model_config is not vllm_config.model_config
        fmt = draft_format(getattr(load, "load_format", ""), is_draft)
        if fmt is None:
            return original(*args, vllm_config=vllm_config, model_config=model_config, **kw)
        print(f"[instanttensor-hybrid-draft-loader] draft {getattr(model_config, 'model', '?')}: {fmt}", flush=True)
        loader = mod.get_model_loader(dataclasses.replace(load, load_format=fmt))
        return loader.load_model(vllm_config=vllm_config, model_config=model_config)

    mod.get_model = get_model


spark_posthook.after_import(TARGET, patch)

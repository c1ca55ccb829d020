"""TEST-ONLY: a model repository in the layout many hub repositories have (safetensors shards with their
index, Meta's `original/` checkpoint and a `.bin` set beside them, remote code), for the stand-in hub
(tests/standin/hf_hub.py). vLLM loads the shards and the small files; the rest must never move."""

from __future__ import annotations

import json
from pathlib import Path

REPO = "spark-pipeline/layered"
MiB = 1 << 20
SHARDS = {f"model-0000{i}-of-00003.safetensors": (i + 1) * MiB for i in range(1, 4)}
SMALL = {
    "config.json": '{"architectures": ["LlamaForCausalLM"]}',
    "tokenizer.json": "{}",
    "modeling_layered.py": "# trust_remote_code imports this\n",
}
LEFT = {
    "original/consolidated.00.pth": 3 * MiB,
    "pytorch_model-00001-of-00002.bin": 2 * MiB,
    "pytorch_model-00002-of-00002.bin": 2 * MiB,
}


def write_repo(root: Path) -> None:
    d = root / REPO
    for name, size in {**SHARDS, **LEFT}.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(name.encode().ljust(size, b"\0"))
    for name, text in SMALL.items():
        (d / name).write_text(text)
    (d / "original/params.json").write_text('{"dim": 4096}')
    index = {"metadata": {}, "weight_map": {f"layer.{i}": n for i, n in enumerate(SHARDS)}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    bins = [n for n in LEFT if n.endswith(".bin")]
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"a": bins[0], "b": bins[1]}}))

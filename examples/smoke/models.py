"""SMOKE-STACK FIXTURE: tiny repositories shaped like Hugging Face model repos (config.json, a tokenizer,
weights), the text corpus the smoke benchmark reads, and the smoke recipe. None of it is a model: the
"weights" are deterministic bytes (enough to make copying them measurable) and the tokenizer is a
word-level one over the words the fixture `vllm serve` (vllm_serve.py) speaks.

    root/models/spark-pipeline/smoke-tiny/        the recipe's model
    root/models/spark-pipeline/smoke-tiny-draft/  the draft model its --speculative-config names
    root/corpus.txt                               what llama-benchy cuts prompts from
    root/smoke.yaml                               the smoke recipe (v2)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from examples.smoke.vllm_serve import WORDS as SERVER_WORDS

HERE = Path(__file__).parent
MODEL = "spark-pipeline/smoke-tiny"
DRAFT = "spark-pipeline/smoke-tiny-draft"
# The fixture server's own words, then ours: the corpus only uses words the tokenizer knows.
CORPUS_WORDS = [
    "cluster",
    "memory",
    "bandwidth",
    "unified",
    "grace",
    "blackwell",
    "tensor",
    "cores",
    "attention",
    "cache",
    "prefill",
    "decode",
    "batch",
    "request",
    "stream",
    "latency",
    "throughput",
    "context",
    "depth",
    "prompt",
    "answer",
    "weights",
    "shard",
    "rank",
    "ring",
    "all",
    "reduce",
    "nccl",
    "rdma",
    "link",
    "port",
    "head",
    "worker",
    "image",
    "layer",
    "wheel",
    "store",
    "key",
    "stage",
    "build",
]


def words() -> list[str]:
    return sorted({*SERVER_WORDS, *CORPUS_WORDS, "Paris."})


def tokenizer_json() -> str:
    """A word-level tokenizer in the `tokenizers` library's file format (whitespace-split words)."""
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words())}}
    return json.dumps(
        {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [],
            "normalizer": None,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
        },
        sort_keys=True,
    )


def weights(name: str, size: int) -> bytes:
    """Deterministic, incompressible bytes (sha256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def write_model(dest: Path, repo: str, size: int) -> Path:
    """One model repository's files under dest/<org>/<name>."""
    d = dest / repo
    d.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["SmokeForCausalLM"],
        "model_type": "smoke",
        "vocab_size": len(words()) + 1,
        "max_position_embeddings": 4096,
        "_comment": "smoke-stack fixture, not a model",
    }
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (d / "generation_config.json").write_text('{"max_new_tokens": 16}\n')
    (d / "tokenizer.json").write_text(tokenizer_json())
    (d / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}\n')
    (d / "model.safetensors").write_bytes(weights(repo, size))
    (d / "README.md").write_text(f"# {repo}\n\nA smoke-stack fixture repository for spark-pipeline's tests.\n")
    return d


def corpus(n_words: int = 20000) -> str:
    ws = words()
    lines, line = [], []
    for i in range(n_words):
        line.append(ws[(i * 7 + i // len(ws)) % len(ws)])
        if len(line) == 16:
            lines.append(" ".join(line))
            line = []
    return "\n".join(lines) + "\n"


def generate(root: Path, weights_mb: int = 4) -> None:
    write_model(root / "models", MODEL, weights_mb << 20)
    write_model(root / "models", DRAFT, 1 << 20)
    (root / "corpus.txt").write_text(corpus())
    shutil.copyfile(HERE / "smoke.yaml", root / "smoke.yaml")

"""Which files of a model repository vLLM will load, from the repository's file listing. Pure.

A hub repository often holds its weights more than once: safetensors shards beside a `.bin` set, an
`original/` folder (Meta's and OpenAI's checkpoints), `consolidated.*` files (Mistral's format), a
`metal/` or `onnx/` export. vLLM reads one set. The rule, in order:

1. `--gguf FILE` (or a GGUF-only repo): that one file. vLLM serves GGUF from a file, so one is named.
2. `--load-format mistral`: the top-level `consolidated*.safetensors`.
3. A top-level `*.safetensors.index.json` (`model.safetensors.index.json` first): the shards its
   `weight_map` names. Else the top-level `*.safetensors`, without `consolidated*` when others are there.
4. Only when there are no safetensors (or `--load-format pt`): the top-level `.bin`/`.pt`/`.pth`, by
   `pytorch_model.bin.index.json` where there is one, never training state (optimizer, scheduler, ...).
5. Beside the weights, every file that is not a weight (config, tokenizer, generation config, chat
   templates, the `.py` files `trust_remote_code` imports), except in a folder that holds weights left
   out (`original/params.json` belongs to `original/`).

Load formats this rule does not model (tensorizer, runai_streamer, ...) take every file.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.contract import is_inner_path
from pipeline.errors import ConfigError

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Other frameworks' weights and exports: never loaded by vLLM.
FOREIGN = (".h5", ".msgpack", ".onnx", ".onnx_data", ".ot", ".tflite", ".ckpt", ".npz", ".mlmodel", ".keras", ".nemo")
TRAINING = frozenset(
    {"training_args.bin", "optimizer.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"}
)
MODELED = frozenset({"auto", "safetensors", "pt", "mistral", "gguf", "bitsandbytes", "fastsafetensors"})
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
INDEX_LIMIT = 16 << 20  # a weight map of 100k tensors is a few MiB; past this it is not an index


@dataclass(frozen=True)
class Selection:
    chosen: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]  # (path, why)
    weights: str  # which set, in words: "safetensors by model.safetensors.index.json (14 files)"

    def size(self, files: Mapping[str, int]) -> tuple[int, int]:
        """(bytes chosen, bytes left out)."""
        out = {p for p, _ in self.left_out}
        return sum(n for p, n in files.items() if p not in out), sum(n for p, n in files.items() if p in out)


def index_files(files: Mapping[str, int]) -> list[str]:
    """The weight indexes the rule reads (top-level ones), model.safetensors.index.json first."""
    found = [p for p in files if "/" not in p and p.endswith(INDEX_SUFFIXES)]
    return sorted(found, key=lambda p: (p not in ("model.safetensors.index.json", "pytorch_model.bin.index.json"), p))


def weight_map(name: str, text: str) -> set[str]:
    """The files an index names. A repository is hostile input: its index must be a JSON object whose
    weight_map maps names to relative paths inside the repository."""
    try:
        doc = json.loads(text) if len(text) <= INDEX_LIMIT else None
    except ValueError:
        doc = None
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        raise ConfigError(f"{name}: not a weight index (expected a JSON object with a weight_map of file names)")
    paths = set(wm.values())
    bad = sorted(p for p in paths if not is_inner_path(p))
    if bad:
        raise ConfigError(f"{name}: weight_map names {bad[0]!r}, not a path inside the repository")
    return paths


def is_weight(path: str) -> bool:
    return path.endswith(WEIGHTS) or path.endswith(FOREIGN)


def select(
    files: Mapping[str, int],
    read_index: Callable[[str], str],
    load_format: str = "auto",
    gguf: str | None = None,
) -> Selection:
    """The files of `files` (path -> size) that vLLM loads. `read_index(name)` gives the text of one of
    the index files `index_files` names; only the one the rule uses is read."""
    if load_format not in MODELED and not gguf:
        return Selection(tuple(sorted(files)), (), f"every file (load format {load_format} is not modelled)")
    weights, how = _weight_set(files, read_index, load_format, gguf)
    missing = sorted(weights - set(files))
    if missing:
        raise ConfigError(f"the weight set names {missing[0]}, which the repository lacks ({how})")
    left_dirs = {posixpath.dirname(p) for p in files if is_weight(p) and p not in weights} - {
        posixpath.dirname(p) for p in weights
    }
    other_index = INDEX_SUFFIXES[1] if how.startswith("safetensors") else INDEX_SUFFIXES[0]
    chosen, left_out = [], []
    for path in sorted(files):
        why = _why_left_out(path, weights, left_dirs)
        if not why and "/" not in path and path.endswith(other_index) and weights:
            why = "that weight set's index"
        if why:
            left_out.append((path, why))
        else:
            chosen.append(path)
    return Selection(tuple(chosen), tuple(left_out), how)


def _why_left_out(path: str, weights: set[str], left_dirs: set[str]) -> str:
    if path in weights:
        return ""
    folder = posixpath.dirname(path)
    if any(folder == d or folder.startswith(d + "/") for d in left_dirs if d):
        return f"{folder.split('/')[0]}/ holds weights vLLM does not load"
    if path.endswith(FOREIGN):
        return "another framework's weights"
    if posixpath.basename(path) in TRAINING:
        return "training state"
    if path.endswith(WEIGHTS):
        return "another weight set"
    return ""


def _weight_set(
    files: Mapping[str, int], read_index: Callable[[str], str], load_format: str, gguf: str | None
) -> tuple[set[str], str]:
    top = [p for p in files if "/" not in p]
    ggufs = sorted(p for p in files if p.endswith(".gguf"))
    if gguf:
        if gguf not in files:
            raise ConfigError(
                f"--gguf {gguf}: the repository has no such file (GGUF files: {', '.join(ggufs) or 'none'})"
            )
        return {gguf}, f"GGUF {gguf}"
    safetensors = sorted(p for p in top if p.endswith(".safetensors"))
    if load_format == "mistral":
        consolidated = {p for p in safetensors if p.startswith("consolidated")}
        if not consolidated:
            raise ConfigError("--load-format mistral: the repository has no top-level consolidated*.safetensors")
        return consolidated, "consolidated*.safetensors (mistral format)"
    if load_format != "pt" and safetensors:
        return _by_index(safetensors, files, read_index, ".safetensors.index.json", "safetensors")
    torch_files = sorted(p for p in top if p.endswith((".bin", ".pt", ".pth")) and p not in TRAINING)
    if torch_files:
        return _by_index(torch_files, files, read_index, ".bin.index.json", "PyTorch")
    if ggufs:
        raise ConfigError(f"a GGUF repository: name the file vLLM should serve with --gguf ({', '.join(ggufs)})")
    return set(), "no weights (config and tokenizer only)"


def _by_index(
    found: list[str], files: Mapping[str, int], read_index: Callable[[str], str], suffix: str, kind: str
) -> tuple[set[str], str]:
    for name in index_files(files):
        if name.endswith(suffix):
            named = weight_map(name, read_index(name) if files[name] <= INDEX_LIMIT else "")
            return named, f"{kind} by {name} ({len(named)} files)"
    plain = [p for p in found if not p.startswith("consolidated")] or found
    return set(plain), f"{kind} ({len(plain)} files)"

"""Which files of a model repository `model download` and `model copy` move (pipeline/model/select.py),
one fixture per layout the hub has (tests/unit/fixtures/model_layouts/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.model.select import index_files, select

LAYOUTS = Path(__file__).parent / "fixtures" / "model_layouts"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((LAYOUTS / f"{name}.yaml").read_text())


def indexes_of(case: dict[str, Any]) -> dict[str, str]:
    return {
        n: json.dumps({"metadata": {}, "weight_map": {f"t{i}": f for i, f in enumerate(fs)}})
        for n, fs in case["indexes"].items()
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in LAYOUTS.glob("*.yaml")))
def test_each_layout_moves_only_what_vllm_loads(name: str) -> None:
    case = load(name)
    files: dict[str, int] = case["files"]
    assert set(index_files(files)) == set(case["indexes"]), "the fixture gives the text of every index the rule reads"
    args = case.get("args", {})
    if "error" in case:
        with pytest.raises(ConfigError, match=case["error"]):
            select(files, indexes_of(case).__getitem__, **args)
        return
    sel = select(files, indexes_of(case).__getitem__, **args)
    assert list(sel.chosen) == case["chosen"]
    assert dict(sel.left_out) == case["left_out"]
    kept, saved = sel.size(files)
    assert saved == sum(files[p] for p in case["left_out"]) and kept + saved == sum(files.values())


def test_gpt_oss_120b_moves_about_a_third_of_its_repo() -> None:
    """sparkrun's figure for openai/gpt-oss-120b: about 196 GB in the repo, about 65 GB that vLLM loads."""
    case = load("gpt_oss_120b")
    kept, saved = select(case["files"], indexes_of(case).__getitem__).size(case["files"])
    assert round((kept + saved) / 1e9) == 196 and round(kept / 1e9) == 65


names = st.text(alphabet="abcmodel-0123456789._", min_size=1, max_size=12)
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
suffixes = st.sampled_from(["", ".safetensors", ".bin", ".pt", ".pth", ".gguf", ".json", ".py", ".onnx", ".index.json"])
listings = st.dictionaries(st.tuples(paths, suffixes).map("".join), st.integers(0, 1 << 40), max_size=30)


@given(listings, st.sampled_from(["auto", "safetensors", "pt", "mistral", "tensorizer"]), st.data())
def test_any_listing_is_split_into_chosen_and_left_out_or_refused_by_name(
    files: dict[str, int], load_format: str, data: st.DataObject
) -> None:
    idx = {
        n: data.draw(st.one_of(st.text(max_size=40), st.just(json.dumps({"weight_map": {"a": "x"}}))))
        for n in index_files(files)
    }
    try:
        sel = select(files, idx.__getitem__, load_format)
    except ConfigError as e:
        assert str(e)
        return
    left = dict(sel.left_out)
    assert set(sel.chosen) | set(left) == set(files) and not set(sel.chosen) & set(left)
    if load_format == "auto" and not idx and any("/" not in p and p.endswith(".safetensors") for p in files):
        assert any(p.endswith(".safetensors") for p in sel.chosen), "a repo with safetensors keeps some"

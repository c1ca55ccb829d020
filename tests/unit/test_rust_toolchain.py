"""Rust comes from the vLLM ref's rust-toolchain.toml (auto), is in the base key, and the vllm stage
uses exactly the toolchain base installed: rustup never downloads one mid-stage."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.auto import VllmFacts, apply, parse_rust_toolchain
from pipeline.config.build import FALLBACK_RUST, BuildSpec
from pipeline.stages import all_stages


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('[toolchain]\nchannel = "1.95"\n', "1.95"),
        ('[toolchain]\nchannel = "1.91.1"\ncomponents = ["rustfmt"]\n', "1.91.1"),
        ("1.88.0\n", "1.88.0"),  # the old one-line rust-toolchain file
        ('[toolchain]\nchannel = "stable"\n', None),  # moves: not a pin we can key on
        ('[toolchain]\nchannel = "1.95; rm -rf /"\n', None),
    ],
)
def test_the_channel_is_read_as_a_version_or_not_at_all(text: str, want: str | None) -> None:
    assert parse_rust_toolchain(text) == want


def facts(c: str, has_rust: bool = True, rust_toolchain: str | None = None) -> VllmFacts:
    return VllmFacts(commit=c * 40, pins={"torch": "2.14.0"}, has_rust=has_rust, rust_toolchain=rust_toolchain)


def stage_env(spec: BuildSpec, name: str) -> dict[str, str]:
    return dict(next(s for s in all_stages(spec) if s.name == name).env)


def test_auto_follows_the_tree_and_the_vllm_stage_pins_it() -> None:
    eff = apply(BuildSpec(), facts("a", rust_toolchain="1.95"), "build.yaml")
    assert eff.spec.base.rust.toolchain == "1.95" and eff.versions["rust"] == "1.95"
    base = next(s for s in all_stages(eff.spec) if s.name == "base")
    assert ("base.rust", "1.95") in base.knobs  # in the key
    assert any("1.95" in step.argv for step in base.steps if step.kind == "rust")
    env = stage_env(eff.spec, "vllm")
    assert env["RUSTUP_TOOLCHAIN"] == "1.95" and env["RUSTUP_AUTO_INSTALL"] == "0"


def test_a_tree_without_the_file_gets_the_fallback_and_an_explicit_pin_warns() -> None:
    eff = apply(BuildSpec(), facts("a"), "build.yaml")
    assert eff.spec.base.rust.toolchain == FALLBACK_RUST
    spec = BuildSpec.model_validate({"base": {"rust": {"toolchain": "1.91.1"}}})
    eff = apply(spec, facts("b", rust_toolchain="1.95"), "build.yaml")
    assert eff.spec.base.rust.toolchain == "1.91.1"
    assert any("rust-toolchain.toml asks for 1.95" in w for w in eff.warnings)
    assert stage_env(eff.spec, "vllm")["RUSTUP_TOOLCHAIN"] == "1.91.1"


def test_no_rust_no_rustup_env() -> None:
    eff = apply(BuildSpec(), facts("c", has_rust=False), "build.yaml")
    assert "RUSTUP_TOOLCHAIN" not in stage_env(eff.spec, "vllm")


@given(
    st.from_regex(r"[0-9]{1,2}\.[0-9]{1,3}(\.[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["", 'components = ["rustfmt"]\n', "# pinned\n"]),
)
def test_any_pinned_channel_is_read_back(channel: str, extra: str) -> None:
    assert parse_rust_toolchain(f'[toolchain]\n{extra}channel = "{channel}"\n') == channel
    assert parse_rust_toolchain(f"{channel}\n") == channel  # the old one-line rust-toolchain file


@given(st.text(max_size=200))
def test_any_file_gives_a_pinned_version_or_nothing(text: str) -> None:
    got = parse_rust_toolchain(text)
    assert got is None or re.fullmatch(r"\d+\.\d+(\.\d+)?", got)  # never `stable`, never a traceback

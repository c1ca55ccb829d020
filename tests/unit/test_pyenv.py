"""The build's Python environment as one set of requirements with origins (pipeline/core/pyenv.py), and the
plan-time resolver over it (pipeline/sources/pyresolve.py) against local wheel indexes with real cross-pins:
what a user reads when pins clash, and what every pip step is held to when they do not."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.smoke import fixtures
from pipeline.config import load_build
from pipeline.config.auto import VllmFacts, apply
from pipeline.core import pyenv
from pipeline.core.pyenv import Req, Target
from pipeline.errors import ConfigError
from pipeline.sources import pyresolve
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
LABEL = "vLLM v0.34.0 (0123456789ab)"


def tree_files(layout: str) -> dict[str, str]:
    root = FIXTURES / "vllm-reqs" / layout
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.txt"))}


def test_vllm_requirements_as_prepare_leaves_them_with_file_and_line() -> None:
    reqs = pyenv.vllm_reqs(tree_files("2026-04"), LABEL)
    lines = [(r.line, r.origin) for r in reqs]
    # build files first (cuda.txt, then rust.txt), then cuda.txt with common.txt included; torch and
    # FlashInfer are ours (the toolchain, the flashinfer stage), so vLLM's pins on them are left out
    assert lines[:3] == [
        ("cmake>=3.26.1", f"{LABEL} requirements/build/cuda.txt:2"),
        ("setuptools>=78.1.1,<81.0.0", f"{LABEL} requirements/build/cuda.txt:3"),
        ("wheel", f"{LABEL} requirements/build/cuda.txt:5"),
    ]
    assert ("setuptools-rust>=1.9.0", f"{LABEL} requirements/build/rust.txt:2") in lines
    assert ("regex", f"{LABEL} requirements/common.txt:1") in lines
    assert ("nvidia-cutlass-dsl[cu13]==4.8.0", f"{LABEL} requirements/cuda.txt:10") in lines
    assert ('tokenspeed-mla==2.0.3; platform_system == "Linux"', f"{LABEL} requirements/cuda.txt:11") in lines
    assert not {r.name for r in reqs} & {"torch", "torchvision", "torchaudio", "torchcodec", "flashinfer-python"}


def test_the_old_layout_has_build_txt_and_options_are_not_requirements() -> None:
    reqs = pyenv.vllm_reqs(tree_files("0.11"), "vLLM v0.11.0")
    assert [r.line for r in reqs] == [
        "cmake>=3.26.1",
        "fastapi[standard] >= 0.115.0",
        "xformers==0.0.32.post1; platform_system == 'Linux' and platform_machine == 'x86_64'",
    ]


def test_a_value_auto_filled_in_says_which_vllm_pin_it_followed() -> None:
    loaded = load_build(REPO / "build.yaml")
    facts = VllmFacts(
        commit="0" * 40,
        pins={
            "torch": "2.14.0",
            "torchvision": "0.29.0",
            "torchaudio": "2.11.0",
            "nvidia-cutlass-dsl": "4.8.0",
            "apache-tvm-ffi": "0.1.11",
        },
    )
    spec = apply(loaded.spec, facts, loaded.label).spec
    origins = {r.line: r.origin for r in pyenv.spec_reqs(spec, loaded.spec, LABEL)}
    assert origins["torch==2.14.0"] == f"build.yaml base.torch.version (auto: {LABEL}'s pin in requirements/cuda.txt)"
    assert origins["nvidia-cutlass-dsl[cu13]==4.8.0"] == (
        f"build.yaml base.pip_packages[1] (nvidia-cutlass-dsl[cu13]==auto: {LABEL}'s pin in requirements/cuda.txt)"
    )
    assert origins["nvidia-nvshmem-cu13"] == "build.yaml base.pip_packages[0]"
    assert origins["ray[default]"] == "build.yaml runtime.pip_packages[0]"


def test_the_target_is_the_base_image_not_this_machine() -> None:
    spec = load_build(REPO / "build.yaml").spec
    tgt = pyenv.target(spec, {})
    assert (tgt.platform, tgt.python) == ("aarch64-manylinux_2_39", "3.12")
    assert tgt.indexes == ("https://download.pytorch.org/whl/cu130", pyenv.PYPI)
    smoke = load_build(REPO / "examples" / "smoke" / "build.yaml").spec
    local = {"torch-index": "/x/torch-index", "wheel-index": "/x/wheel-index"}
    assert pyenv.target(smoke, local) == Target(
        platform="x86_64-manylinux_2_36", python="3.11", indexes=(), find_links=("/x/torch-index", "/x/wheel-index")
    )


@pytest.mark.parametrize(
    ("case", "names"),
    [
        ("two-pins-cutlass", {"nvidia-cutlass-dsl"}),
        ("torch-pins-nvshmem", {"torch", "nvidia-nvshmem-cu13"}),
        ("not-found", {"nvidia-nvshmem-cu13"}),
    ],
)
def test_a_conflict_names_the_projects_uv_talks_about(case: str, names: set[str]) -> None:
    assert pyenv.conflict_names((FIXTURES / "uv" / f"{case}.txt").read_text()) == names


def test_both_sides_of_a_conflict_with_their_origins() -> None:
    reqs = [
        Req("nvidia-cutlass-dsl[cu13]==4.7.0", "build.yaml base.pip_packages[1]"),
        Req("regex", f"{LABEL} requirements/common.txt:1"),
        Req("nvidia-cutlass-dsl[cu13]==4.8.0", f"{LABEL} requirements/cuda.txt:26"),
    ]
    text = pyenv.explain((FIXTURES / "uv" / "two-pins-cutlass.txt").read_text(), reqs)
    assert "nvidia-cutlass-dsl[cu13]==4.7.0  <- build.yaml base.pip_packages[1]" in text
    assert f"nvidia-cutlass-dsl[cu13]==4.8.0  <- {LABEL} requirements/cuda.txt:26" in text
    assert "regex" not in text
    # to find the next conflict, build.yaml's side is taken back, vLLM's kept
    assert pyenv.relaxed(reqs, "you require nvidia-cutlass-dsl==4.7.0") == reqs[1:]
    assert pyenv.relaxed(reqs[1:], "you require nvidia-cutlass-dsl==4.8.0") is None


_name = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,5})?", fullmatch=True)
_version = st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}(\.post[0-9])?", fullmatch=True)
_hash = st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}")  # a 64-hex regex is slow to draw


@given(st.dictionaries(_name, st.tuples(_version, st.lists(_hash, max_size=3)), max_size=20))
def test_what_uv_writes_is_read_back_whole(sets: dict[str, tuple[str, list[str]]]) -> None:
    text = "".join(
        f"{n}=={v}" + "".join(f" \\\n    --hash={h}" for h in hs) + "\n    # via somebody\n"
        for n, (v, hs) in sets.items()
    )
    got = pyenv.parse_compiled(text)
    assert {n: (p.version, list(p.hashes)) for n, p in got.items()} == {
        pyenv.canonicalize_name(n): (v, hs) for n, (v, hs) in sets.items()
    }


@given(
    st.lists(
        st.one_of(
            st.just("# a comment"),
            st.just("-r common.txt"),
            st.just("--prefer-binary"),
            st.just(""),
            st.from_regex(r"[a-z]{1,8}(>=[0-9]\.[0-9])?( # why)?", fullmatch=True),
        )
    )
)
def test_only_requirements_are_read_from_a_requirements_file(lines: list[str]) -> None:
    got = pyenv.requirement_lines("\n".join(lines))
    assert all(not line.startswith(("#", "-")) and "#" not in line and line for _, line in got)
    assert len(got) == sum(1 for ln in lines if ln and not ln.startswith(("#", "-")))


# --- the resolver against local indexes (no network): wheels carrying real pins -------------------


def cross_pinned_index(root: Path) -> Path:
    """torch pins nvshmem exactly, as torch 2.14.0 does (3.4.5); a newer nvshmem exists."""
    fixtures.write_wheel(root, "torch", "2.14.0", {}, requires=("nvidia-nvshmem-cu13==3.4.5",))
    for v in ("3.4.5", "3.8.0"):
        fixtures.write_wheel(root, "nvidia_nvshmem_cu13", v, {})
    for v in ("4.7.0", "4.8.0"):
        fixtures.write_wheel(root, "nvidia_cutlass_dsl", v, {})
    return root


def local_target(index: Path) -> Target:
    return Target(platform="aarch64-manylinux_2_39", python="3.12", indexes=(), find_links=(str(index),))


def test_unpinned_resolves_with_the_cross_pin_and_hashes(tmp_path: Path) -> None:
    reqs = [Req("torch==2.14.0", "build.yaml base.torch.version"), Req("nvidia-nvshmem-cu13", "build.yaml x")]
    got = pyresolve.resolve(reqs, local_target(cross_pinned_index(tmp_path)))
    assert got["nvidia-nvshmem-cu13"].version == "3.4.5"
    assert got["torch"].hashes and got["torch"].hashes[0].startswith("sha256:")
    assert pyenv.constraints(got) == "nvidia-nvshmem-cu13==3.4.5\ntorch==2.14.0\n"


def test_every_conflict_is_named_in_one_plan(tmp_path: Path) -> None:
    reqs = [
        Req("torch==2.14.0", f"build.yaml base.torch.version (auto: {LABEL}'s pin in requirements/cuda.txt)"),
        Req("nvidia-nvshmem-cu13==3.8.0", "build.yaml base.pip_packages[0]"),
        Req("nvidia-cutlass-dsl==4.7.0", "build.yaml base.pip_packages[1]"),
        Req("nvidia-cutlass-dsl==4.8.0", f"{LABEL} requirements/cuda.txt:26"),
    ]
    with pytest.raises(ConfigError) as e:
        pyresolve.resolve(reqs, local_target(cross_pinned_index(tmp_path)))
    text = str(e.value)
    assert "conflict 1:" in text and "conflict 2:" in text
    assert "nvidia-nvshmem-cu13==3.8.0  <- build.yaml base.pip_packages[0]" in text
    assert f"torch==2.14.0  <- build.yaml base.torch.version (auto: {LABEL}'s pin" in text
    assert "nvidia-cutlass-dsl==4.7.0  <- build.yaml base.pip_packages[1]" in text
    assert f"nvidia-cutlass-dsl==4.8.0  <- {LABEL} requirements/cuda.txt:26" in text
    assert "Python 3.12 on aarch64-manylinux_2_39" in text


def test_every_pip_of_every_stage_is_held_to_the_resolved_set(tmp_path: Path) -> None:
    from pipeline import python_env
    from tests.specs import SPARK, stages

    env = python_env.PythonEnv(
        target=Target("aarch64-manylinux_2_39", "3.12", (), ()),
        inputs="0" * 64,
        packages={"torch": pyenv.Pinned("2.14.0")},
        directory=tmp_path,
        own=("flashinfer",),
    )
    held = {s.name: python_env.with_python_env(s, env) for s in stages(SPARK)}
    for name in python_env.TOOLCHAIN_STAGES:  # their image is the toolchain, which never leaves the build machine
        assert ("PIP_CONSTRAINT", python_env.CONSTRAINTS) in held[name].env
        assert any(i.name == python_env.INPUT and i.ref == str(tmp_path) for i in held[name].inputs)
        assert held[name].steps[-1].kind == "python-env-check"  # nothing outside the set was installed
    # FlashInfer builds without isolation: its own build requirements first, from the set, no pip of its own
    first = held["flashinfer"].steps[0]
    assert first.argv == ("python3", "-m", "pip", "install", "-r", f"{python_env.PATH}/flashinfer.txt")
    assert ("FLASHINFER_BUILD_NO_PIP", "1") in held["flashinfer"].env
    # the runtime image ships: no ENV left in it, `-c` on its pip steps instead
    runtime = held["runtime"]
    assert not any(k == "PIP_CONSTRAINT" for k, _ in runtime.env)
    kinds = [s.kind for s in runtime.steps]
    assert kinds.index("python-env-check") == kinds.index("import-check") - 1  # checked before it is tagged
    pips = [s for s in runtime.steps if s.kind == "pip-install"]
    assert pips and all(s.argv[4:6] == ("-c", python_env.CONSTRAINTS) and python_env.INPUT in s.mounts for s in pips)


def test_a_ref_that_names_a_url_is_refused_before_anything_is_fetched() -> None:
    files = {"requirements/cuda.txt": "regex\nevil @ https://203.0.113.7/evil-1.0-py3-none-any.whl\n"}
    with pytest.raises(ConfigError, match=r"requirements/cuda.txt:2: evil comes from a URL"):
        pyenv.vllm_reqs(files, LABEL)


def test_each_stage_is_held_to_the_part_of_the_set_it_installs() -> None:
    text = (
        "torch==2.14.0 \\\n    --hash=sha256:aa\n    # via -r requirements.in\n"
        "nvidia-nvshmem-cu13==3.4.5\n    # via torch\n"
        "fastapi==0.136.0\n    # via\n    #   -r requirements.in\n    #   mcp\n"
        "starlette==1.0.1\n    # via fastapi\n"
        "mcp==2.2.0\n    # via -r requirements.in\n"
    )
    packages = pyenv.parse_compiled(text)
    assert packages["fastapi"].needed_by == ("mcp",) and packages["torch"].needed_by == ()
    assert set(pyenv.closure(packages, {"torch"})) == {"torch", "nvidia-nvshmem-cu13"}
    assert set(pyenv.closure(packages, {"mcp"})) == {"mcp", "fastapi", "starlette"}

    from pipeline import python_env

    reqs = [
        Req("torch==2.14.0", "build.yaml base.torch.version"),
        Req("fastapi", f"{LABEL} requirements/common.txt:3"),
        Req("ray", "build.yaml runtime.pip_packages[0]"),
    ]
    roots = python_env.stage_roots(reqs, {"flashinfer": [Req("packaging", "FlashInfer v0.7.2 pyproject.toml")]}, LABEL)
    assert roots == {
        "base": {"torch"},
        "vllm": {"torch", "fastapi"},
        "runtime": {"torch", "fastapi", "ray"},
        "triton": {"torch"},
        "flashinfer": {"torch", "packaging"},
    }

"""build.yaml validation: every bad input gives exit 2 and a located message, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import load_build
from tests.conftest import REPO, run_cli

BAD = sorted((REPO / "tests" / "spec" / "bad").glob("*.yaml"))


def expected_message(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect:' line"
    return first.removeprefix("# expect: ").replace("{file}", path.name)


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_input_is_located(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--offline", "-f", str(path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    flat = " ".join(err.split())
    assert " ".join(expected_message(path).split()) in flat, err
    assert "Traceback" not in err


def test_bad_input_through_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "build.yaml"
    bad.write_text("vllm:\n  ref: 12\n")
    proc = run_cli("plan", "-f", str(bad), check=2)
    assert "build.yaml:vllm.ref: expected a branch, tag or 40-hex SHA, got 12" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "build.yaml"
    bad.write_text("gpu_arch: x\n")
    proc = run_cli("--debug", "plan", "-f", str(bad), check=2)
    assert "Traceback" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "vllm.ref"], "--set vllm.ref: expected KEY.PATH=VALUE"),
        (["--set", "vllm.ref=12"], "build.yaml:vllm.ref: expected a branch, tag or 40-hex SHA, got 12"),
        (["--gpu-arch", "121"], "build.yaml:gpu_arch: expected a CUDA arch"),
        (["--apply-vllm-pr", "x1"], "build.yaml:vllm.prs.0: expected a PR number"),
        (["--set", "gpu_arch.x=1"], "--set gpu_arch.x: gpu_arch is not a mapping"),
        (["--build-jobs", "0"], "Invalid value for '--build-jobs': 0 is not in the range x>=1"),
    ],
)
def test_bad_flags_name_the_key(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--offline", "-f", str(REPO / "build.yaml"), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert exit_info.value.code == 2
    assert message in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "-f", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


def test_repo_build_yaml_is_the_spark_default() -> None:
    spec = load_build(REPO / "build.yaml").spec
    assert spec.gpu_arch == "12.1a" and spec.platform == "linux/arm64"
    assert spec.nccl_gencode == "-gencode=arch=compute_121,code=sm_121"
    assert spec.base.torch.version and spec.base.torch.index.startswith("https://")
    assert spec.runtime.tag == "vllm-node"


def test_every_default_in_build_yaml_has_a_why_comment() -> None:
    import yaml

    text = (REPO / "build.yaml").read_text().splitlines()
    data = yaml.safe_load("\n".join(text))
    for key in data:
        line = next(line for line in text if line.startswith(f"{key}:"))
        if isinstance(data[key], dict):
            continue
        assert "#" in line, f"top-level key {key} has no why comment"


@pytest.mark.parametrize(
    ("arch", "gencode"),
    [
        ("12.1a", "-gencode=arch=compute_121,code=sm_121"),
        ("12.0f", "-gencode=arch=compute_120,code=sm_120"),
        ("12.1a;12.0f", "-gencode=arch=compute_121,code=sm_121 -gencode=arch=compute_120,code=sm_120"),
        ("9.0", "-gencode=arch=compute_90,code=sm_90"),
    ],
)
def test_nccl_gencode_follows_gpu_arch(arch: str, gencode: str) -> None:
    spec = load_build(REPO / "build.yaml", flags={"gpu_arch": arch}).spec
    assert spec.nccl_gencode == gencode


@pytest.mark.parametrize(
    ("policy", "ref", "prs", "want"),
    [
        ("auto", "main", [], [7, 8]),
        ("auto", "main", [9], [9]),
        ("auto", "v0.11.0", [], []),
        ("apply", "v0.11.0", [9], [7, 8, 9]),
        ("skip", "main", [], []),
    ],
)
def test_preset_pr_policy(policy: str, ref: str, prs: list[int], want: list[int]) -> None:
    spec = load_build(
        REPO / "build.yaml", [f"vllm.preset_prs={policy}", f"vllm.ref={ref}", "vllm.presets=[7, 8]", f"vllm.prs={prs}"]
    ).spec
    assert spec.vllm_prs() == want


def test_pr_urls_are_accepted() -> None:
    spec = load_build(REPO / "build.yaml", ["vllm.prs=[12, 'https://github.com/vllm-project/vllm/pull/34']"]).spec
    assert spec.vllm.prs == [12, "https://github.com/vllm-project/vllm/pull/34"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))

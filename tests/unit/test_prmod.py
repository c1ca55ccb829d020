"""Launch-time vLLM PRs: what may be patched into a running image, and what needs a rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.launch.prmod import launch_diff, make_mod, split_diff


def file_diff(path: str, line: str = "+x = 1") -> str:
    return (
        f"diff --git a/{path} b/{path}\nindex 0000000..1111111 100644\n--- a/{path}\n+++ b/{path}\n"
        f"@@ -1 +1,2 @@\n a\n{line}\n"
    )


def test_python_under_vllm_is_kept_and_docs_tests_dropped() -> None:
    diff = (
        file_diff("vllm/model.py")
        + file_diff("tests/test_model.py")
        + file_diff("docs/x.md")
        + file_diff("vllm/entrypoints/api.py")
        + file_diff("README.md")
    )
    kept, dropped = launch_diff(diff, "#1")
    assert [p for p, _ in split_diff(kept)] == ["vllm/model.py", "vllm/entrypoints/api.py"]
    assert dropped == ["tests/test_model.py", "docs/x.md", "README.md"]


@pytest.mark.parametrize(
    "path", ["csrc/attention.cu", "vllm/_custom_ops.cpp", "CMakeLists.txt", "setup.cfg", "requirements/cuda.txt"]
)
def test_native_or_outside_vllm_needs_a_rebuild(path: str) -> None:
    with pytest.raises(ConfigError, match=r"python -m pipeline build --apply-vllm-pr #7"):
        launch_diff(file_diff("vllm/ok.py") + file_diff(path), "#7")


def test_nothing_under_vllm_is_refused() -> None:
    with pytest.raises(ConfigError, match="changes no file under vllm/"):
        launch_diff(file_diff("docs/a.md"), "#8")


def test_generated_mod_carries_the_diff_and_its_sha(tmp_path: Path) -> None:
    import hashlib

    diff = file_diff("vllm/a.py")
    mod = make_mod("#9", "a" * 40, diff, tmp_path)
    assert (mod.path / "pr.sha256").read_text().strip() == hashlib.sha256(diff.encode()).hexdigest()
    assert (mod.path / "run.sh").read_text().startswith("#!/bin/sh") and mod.name.startswith("vllm-pr-9-")

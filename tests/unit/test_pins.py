"""Pinned content: an unpinned requirement is resolved at plan time to the newest version its index
has for the platform, named in a warning and in build.lock, and a new release changes the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.smoke import fixtures
from pipeline.spec.pins import choose, pinned_requirement
from tests.conftest import plan_json, run_cli


@pytest.mark.parametrize(("req", "files", "arch", "want"), [
    ("ray[default]", {"2.60.0": ["ray-2.60.0-cp312-cp312-manylinux2014_aarch64.whl"],
                      "2.61.0": ["ray-2.61.0-cp312-cp312-manylinux2014_x86_64.whl"]}, "aarch64", "2.60.0"),
    ("ray[default]", {"2.60.0": ["ray-2.60.0-cp312-cp312-manylinux2014_aarch64.whl"],
                      "2.61.0": ["ray-2.61.0-cp312-cp312-manylinux2014_x86_64.whl"]}, "x86_64", "2.61.0"),
    ("setuptools-rust>=1.9.0", {"1.8.1": ["setuptools_rust-1.8.1-py3-none-any.whl"],
                                "1.12.0": ["setuptools_rust-1.12.0-py3-none-any.whl"],
                                "1.13.0rc1": ["setuptools_rust-1.13.0rc1-py3-none-any.whl"]}, "aarch64", "1.12.0"),
    ("tqdm<4", {"4.67.1": ["tqdm-4.67.1.tar.gz"]}, "aarch64", None),
])
def test_the_newest_final_release_for_the_platform(req: str, files: dict[str, list[str]], arch: str,
                                                   want: str | None) -> None:
    assert choose(req, files, arch) == want


def test_extras_and_markers_survive_pinning() -> None:
    assert pinned_requirement('ray[default]; python_version>"3.9"', "2.60.0") == \
        'ray[default]==2.60.0; python_version > "3.9"'


def test_an_unpinned_extra_is_warned_about_locked_and_keyed(smoke: Path) -> None:
    args = ["-f", str(smoke / "build.yaml"), "--set", 'runtime.pip_packages=["smoke-extra"]']
    first = run_cli("plan", "--json", "--write-lock", *args)
    assert "runtime.pip_packages smoke-extra: not pinned; built as smoke-extra==1.0" in " ".join(first.stderr.split())
    runtime = next(s for s in plan_json(*args)["stages"] if s["stage"] == "runtime")
    assert runtime["facts"]["runtime.pip_packages smoke-extra"] == "smoke-extra==1.0"
    assert '"runtime.pip_packages smoke-extra": "smoke-extra==1.0"' in (smoke / "build.lock").read_text()
    fixtures.write_wheel(smoke / "wheel-index", "smoke_extra", "1.1", {"smoke_extra/__init__.py": "V = 11\n"})
    moved = next(s for s in plan_json(*args)["stages"] if s["stage"] == "runtime")
    assert moved["key"] != runtime["key"]
    assert "runtime.pip_packages smoke-extra: smoke-extra==1.0 → smoke-extra==1.1" in moved["reasons"]

"""Test-only: a local wheel index standing in for PyPI for the repo's own build.yaml, so a plan of it
resolves its Python environment offline: the smoke wheel index plus a py3-none-any stand-in (version
99.0, no code) for every project base.pip_packages and runtime.pip_packages name."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from packaging.requirements import Requirement

from examples.smoke import fixtures
from tests.conftest import REPO


def names(build_yaml: Path = REPO / "build.yaml") -> list[str]:
    data = yaml.safe_load(build_yaml.read_text())
    reqs = [*data["base"]["pip_packages"], *data["runtime"]["pip_packages"]]
    return sorted({Requirement(r.replace("==auto", "")).name for r in reqs})


def write(dest: Path, smoke: Path) -> Path:
    shutil.copytree(smoke / "wheel-index", dest, dirs_exist_ok=True)
    for name in names():
        fixtures.write_wheel(dest, name.replace("-", "_"), "99.0", {})
    return dest

"""Pinned content: an unpinned requirement gets the version the plan-time resolution of the whole Python
environment chose, named in a warning, kept in build.lock with its hash, and a new release changes the key."""

from __future__ import annotations

import json
from pathlib import Path

from examples.smoke import fixtures
from pipeline.config.pins import pinned_requirement
from tests.conftest import plan_json, run_cli


def test_extras_and_markers_survive_pinning() -> None:
    assert (
        pinned_requirement('ray[default]; python_version>"3.9"', "2.60.0")
        == 'ray[default]==2.60.0; python_version > "3.9"'
    )


def test_an_unpinned_extra_is_warned_about_locked_and_keyed(smoke: Path) -> None:
    args = ["-f", str(smoke / "build.yaml"), "--set", 'runtime.pip_packages=["smoke-extra"]']
    first = run_cli("plan", "--json", "--write-lock", *args)
    assert "not pinned in build.yaml, built as resolved" in first.stderr
    assert "smoke-extra==1.0" in " ".join(first.stderr.split())
    assert json.loads(first.stdout)["python"]["packages"]["smoke-extra"] == "1.0"
    runtime = next(s for s in plan_json(*args)["stages"] if s["stage"] == "runtime")
    assert runtime["facts"]["runtime.pip_packages smoke-extra"] == "smoke-extra==1.0"
    locked = json.loads((smoke / "build.lock").read_text())["python"]
    assert locked["target"] == {"platform": "x86_64-manylinux_2_36", "python": "3.11"}
    assert locked["packages"]["smoke-extra"]["version"] == "1.0"
    assert locked["packages"]["smoke-extra"]["hashes"][0].startswith("sha256:")
    fixtures.write_wheel(smoke / "wheel-index", "smoke_extra", "1.1", {"smoke_extra/__init__.py": "V = 11\n"})
    moved = next(s for s in plan_json(*args)["stages"] if s["stage"] == "runtime")
    assert moved["key"] != runtime["key"]
    assert "runtime.pip_packages smoke-extra: smoke-extra==1.0 → smoke-extra==1.1" in moved["reasons"]
    assert "python: changed since build.lock: smoke-extra 1.0 → 1.1" in run_cli("plan", *args).stderr


def test_the_smoke_base_follows_torchs_exact_pin_not_the_newest(smoke: Path) -> None:
    """The fixture torch pins smoke-cross==1.0 while 2.0 exists, as torch 2.14.0 pins nvidia-nvshmem-cu13
    3.4.5 while 3.8.0 exists: resolved together, the unpinned extra is 1.0 (the newest would not install)."""
    plan = plan_json("-f", str(smoke / "build.yaml"))
    assert plan["python"]["packages"]["smoke-cross"] == "1.0"
    base = next(s for s in plan["stages"] if s["stage"] == "base")
    assert base["facts"]["base.pip_packages smoke-cross"] == "smoke-cross==1.0"
    clash = run_cli("plan", "-f", str(smoke / "build.yaml"), "--set", 'base.pip_packages=["smoke-cross==2.0"]', check=2)
    err = " ".join(clash.stderr.split())
    assert "smoke-cross==2.0 <- build.yaml base.pip_packages[0]" in err and "torch==2.13.0 <- build.yaml" in err


def test_a_wheel_directory_that_is_not_there_is_named(smoke: Path) -> None:
    proc = run_cli("plan", "-f", str(smoke / "build.yaml"), "--set", "base.torch.index=no-such-dir", check=2)
    assert "build.yaml:base.torch.index: no-such-dir is neither a URL nor a directory of wheels" in proc.stderr
    assert "Traceback" not in proc.stderr

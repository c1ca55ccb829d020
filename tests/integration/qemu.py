"""Test-only: let this machine run linux/arm64 binaries (qemu-user-static through binfmt_misc), as
TESTBED.md describes: mount binfmt_misc if needed and enable qemu-aarch64. Needs root and the
qemu-user-static and binfmt-support packages (.ci/run installs them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BINFMT = Path("/proc/sys/fs/binfmt_misc")


def why_not() -> str | None:
    """None when arm64 binaries run here (enabling qemu-aarch64 first if needed), else why not."""
    if (BINFMT / "qemu-aarch64").exists():
        return None
    if os.geteuid() != 0:
        return "running arm64 binaries needs qemu-aarch64 in binfmt_misc, and enabling it needs root"
    if not shutil.which("update-binfmts") or not Path("/usr/bin/qemu-aarch64-static").exists():
        return "qemu-user-static and binfmt-support are not installed (apt-get install qemu-user-static binfmt-support)"
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=False, capture_output=True)
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False, capture_output=True)
    return None if (BINFMT / "qemu-aarch64").exists() else "update-binfmts --enable qemu-aarch64 did not take"

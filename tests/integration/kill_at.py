"""Test-only: run `python -m pipeline ARGS` and SIGKILL the whole process group at a chosen point,
to check that an interrupted build leaves no partial store entry.

    python tests/integration/kill_at.py POINT STAGE -- build ...
POINT: stage (while docker build runs STAGE's steps), export (half-way through hashing the exported
files), rename (just before the staging dir is renamed into the store).
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def main() -> None:
    point, stage = sys.argv[1], sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1 :]
    from pipeline import store as store_mod
    from pipeline.engines import docker as docker_cli

    if point == "stage":
        real_stream = docker_cli.Docker.stream

        def stream(self, argv, log, on_line=None, env=None, timeout=None):
            if f"/{stage}/" not in str(log):
                return real_stream(self, argv, log, on_line, env, timeout)

            def watch(line: str) -> None:
                # the vllm stage's wheel build is running (mid-stage)
                if "RUN" in line and ("pip wheel" in line or '"wheel"' in line):
                    die()

            return real_stream(self, argv, log, watch, env, timeout)

        docker_cli.Docker.stream = stream  # type: ignore[method-assign]
    elif point == "export":
        real_sha = store_mod.fsutil.file_sha256
        calls = {"n": 0}

        def sha(path):
            if f"/{stage}/.tmp-" in str(path):
                calls["n"] += 1
                if calls["n"] >= 1:
                    die()
            return real_sha(path)

        store_mod.fsutil.file_sha256 = sha  # type: ignore[assignment]
    elif point == "rename":
        real_rename = os.rename

        def rename(src, dst):
            if f"/{stage}/.tmp-" in str(src):
                die()
            return real_rename(src, dst)

        store_mod.os.rename = rename  # type: ignore[assignment]
    else:
        sys.exit(f"unknown point {point}")
    from pipeline.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main()

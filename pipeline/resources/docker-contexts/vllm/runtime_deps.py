"""Resolve vLLM's runtime requirements (transformers, fastapi, openai, …), and FlashInfer's, right after
vLLM's wheel is built,
and download them into the store beside it, so the runtime image installs vLLM with every dependency
offline and the set is kept with the stage's key. Constrained to what our own stages built: the torch
family (base), Triton and FlashInfer are found in their store entries and pinned, never fetched again.

    python3 /inputs/context/runtime_deps.py OUT [PIP ARGS…]    # OUT holds the vLLM wheel; deps go to OUT/deps

It asks pip for the resolution without installing (`pip install --dry-run --report`), then downloads
exactly the packages our own stages do not provide.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

OURS = [Path("/wheels/base"), Path("/wheels/triton"), Path("/wheels/flashinfer")]


def name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def main(out: Path, pip_args: list[str]) -> None:
    [vllm] = sorted(out.glob("vllm-*.whl"))
    # FlashInfer's own runtime requirements (tabulate, nccl4py, cuda-python, …) too: the runtime image
    # installs its wheels --no-deps, and vLLM's requirements do not name them
    flashinfer = sorted(Path("/wheels/flashinfer").glob("flashinfer_python-*.whl"))
    ours = {name_version(w)[0]: name_version(w)[1] for d in OURS if d.is_dir() for w in d.glob("*.whl")}
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(ours.items())))
        links = [a for d in OURS if d.is_dir() for a in ("--find-links", str(d))]
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--quiet",
                "--report",
                str(report),
                "-c",
                str(constraints),
                *links,
                *pip_args,
                str(vllm),
                *map(str, flashinfer),
            ],
            check=True,
        )
        wanted = []
        for item in json.loads(report.read_text())["install"]:
            meta = item["metadata"]
            name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
            if name == "vllm" or name in ours:
                continue
            wanted.append(f"{meta['name']}=={meta['version']}")
    deps = out / "deps"
    deps.mkdir(exist_ok=True)
    (deps / "requirements.txt").write_text("".join(f"{w}\n" for w in sorted(wanted)))
    print(f"runtime_deps: {len(wanted)} packages beyond our own stages")
    if wanted:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--dest",
                str(deps),
                *pip_args,
                "-r",
                str(deps / "requirements.txt"),
            ],
            check=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])

"""Install what a source tree's pyproject.toml names as its build requirements ([build-system].requires),
before its wheel is built with --no-build-isolation (which installs nothing itself). Triton's root
setup.py imports pybind11, and needs cmake and ninja: without this step, `triton.source: git` fails.

    python3 /inputs/context/build_requires.py DIR [DIR…] [-- PIP ARGS…]

The torch family is left out: the toolchain's torch is the one every wheel is built against.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

TORCH = re.compile(r"^\s*(torch|torchvision|torchaudio)\b", re.I)


def requirements(tree: Path) -> list[str]:
    pyproject = tree / "pyproject.toml"
    if not pyproject.is_file():
        return []
    reqs = tomllib.loads(pyproject.read_text()).get("build-system", {}).get("requires", [])
    return [r for r in reqs if not TORCH.match(r)]


def main(argv: list[str]) -> None:
    cut = argv.index("--") if "--" in argv else len(argv)
    dirs, pip_args = argv[:cut], argv[cut + 1 :]
    wanted: list[str] = []
    for d in dirs:
        for req in requirements(Path(d)):
            if req not in wanted:
                wanted.append(req)
    if not wanted:
        print("build_requires: nothing to install")
        return
    print(f"build_requires: {', '.join(wanted)}")
    subprocess.run([sys.executable, "-m", "pip", "install", *pip_args, *wanted], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Base images the tool makes itself from a recipe: debootstrap + `docker import`, then the recipe's
wheels installed in one more layer. Used by the smoke stack (no registry needed anywhere).

The image is tagged by the recipe hash (see stages/images.py), so it is made once and reused while
the recipe holds; the Debian mirror is not part of the recipe (where the packages come from does not
change what they are). Making one needs root and debootstrap.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.core.ir import Image
from pipeline.engines.docker import Docker, tail
from pipeline.errors import DockerError, StepFailed, ToolMissing

ARCH = {"linux/amd64": ("amd64", "x86_64"), "linux/arm64": ("arm64", "aarch64")}
PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")


def debian_mirror() -> str:
    """The mirror apt already uses here (deb822 or one-line sources), or $SPARK_PIPELINE_DEBIAN_MIRROR."""
    env = os.environ.get("SPARK_PIPELINE_DEBIAN_MIRROR")
    if env:
        return env
    for f in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uri = None
        for line in f.read_text().splitlines():
            if line.startswith("URIs:"):
                uri = line.split()[1]
            if line.startswith("Suites:") and uri and "-" not in line.split()[1]:
                return uri
    return "http://deb.debian.org/debian"


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def recipe_of(image: Image) -> dict[str, object]:
    return {k: json.loads(v) for k, v in image.bootstrap or ()}


def ensure(image: Image, platform: str, docker: Docker, workdir: Path, say: Callable[[str], None]) -> None:
    """Make `image.ref` from its recipe unless the local Docker has it already."""
    if image.bootstrap is None or docker.image_id(image.ref):
        return
    workdir.mkdir(parents=True, exist_ok=True)
    lock_path = workdir / f"{image.ref.replace('/', '_').replace(':', '_')}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once make the image once
        if docker.image_id(image.ref):
            return
        _make(image, platform, docker, workdir, say)


def _log_of(workdir: Path, image: Image) -> Path:
    return workdir / f"{image.ref.replace('/', '_').replace(':', '_')}.log"


def _make(image: Image, platform: str, docker: Docker, workdir: Path, say: Callable[[str], None]) -> None:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise ToolMissing(f"making base image {image.ref} needs root and debootstrap "
                          "(apt-get install debootstrap); or point the stage at an image reference")
    recipe = recipe_of(image)
    log = _log_of(workdir, image)
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=workdir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(image, recipe, platform, rootfs, log, say)
        stage1 = f"{image.ref}-rootfs"
        _import(rootfs, stage1, platform, docker, image)
        ctx = Path(tmp) / "ctx"
        (ctx / "wheels").mkdir(parents=True)
        pip = _download_wheels(image, recipe, platform, ctx / "wheels", log, say)
        env = recipe.get("env")
        (ctx / "Dockerfile").write_text(_dockerfile(stage1, bool(pip), env if isinstance(env, dict) else {}))
        code = docker.stream(["build", "--network", "none", "--platform", platform, "-t", image.ref, str(ctx)], log)
        docker.run("rmi", stage1, check=False)
        if code != 0:
            raise DockerError(f"building base image {image.ref} failed; log: {log}\n{tail(log)}")
        say(f"base image {image.ref} ready")


def _debootstrap(image: Image, recipe: dict[str, object], platform: str, rootfs: Path, log: Path,
                 say: Callable[[str], None]) -> None:
    suite = str(recipe["suite"])
    deb_arch = ARCH[platform][0]
    include = ",".join(str(p) for p in _list(recipe.get("include")))
    mirror = debian_mirror()
    say(f"making base image {image.ref}: debootstrap {suite} ({deb_arch}) from {mirror} (about a minute)")
    argv = ["debootstrap", "--variant=minbase", f"--arch={deb_arch}"]
    if include:
        argv.append(f"--include={include}")
    argv += [suite, str(rootfs), mirror]
    with log.open("wb") as out:
        if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise StepFailed(f"debootstrap failed for {image.ref}; log: {log}\n{tail(log)}")
    for rel in TRIM:
        for p in (rootfs / rel).glob("*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _import(rootfs: Path, tag: str, platform: str, docker: Docker, image: Image) -> None:
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imp = subprocess.run(docker.cmd("import", "--platform", platform, "--change", "ENV LANG=C.UTF-8",
                                    "--change", 'CMD ["/bin/bash"]', "-", tag),
                         stdin=tar.stdout, capture_output=True, check=False)
    tar.wait()
    if imp.returncode != 0:
        raise DockerError(f"docker import failed for {image.ref}: {imp.stderr.decode(errors='replace')}")


def _download_wheels(image: Image, recipe: dict[str, object], platform: str, dest: Path, log: Path,
                     say: Callable[[str], None]) -> list[str]:
    pip = [str(p) for p in _list(recipe.get("pip"))]
    if not pip:
        return pip
    py_arch = ARCH[platform][1]
    say(f"downloading {len(pip)} wheels for {image.ref}")
    platforms = [f"--platform=manylinux{t}_{py_arch}" for t in ("2014", "_2_17", "_2_28", "_2_34", "_2_12")]
    dl = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
          f"--python-version={PYTHON.get(str(recipe['suite']), '3.11')}", *platforms, "-d", str(dest), *pip]
    with log.open("ab") as out:
        if subprocess.run(dl, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise StepFailed(f"pip download failed for {image.ref}; log: {log}\n{tail(log)}")
    return pip


def _dockerfile(stage1: str, wheels: bool, env: dict[object, object]) -> str:
    lines = [f"FROM {stage1}"]
    if wheels:
        lines.append("RUN --mount=type=bind,source=wheels,target=/tmp/wheels python3 -m pip install "
                     "--no-index --no-deps --no-cache-dir --break-system-packages /tmp/wheels/*.whl")
    lines += [f"ENV {k}={json.dumps(str(v))}" for k, v in sorted(env.items(), key=lambda kv: str(kv[0]))]
    return "\n".join(lines) + "\n"

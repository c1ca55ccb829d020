"""Base images the tool makes itself from a recipe: a debootstrap rootfs plus wheels unpacked on the
host (not installed: the image need not have python), assembled by `docker build` from scratch. Used by
the smoke stack as its stand-in for NVIDIA's CUDA devel image (Debian minbase + nvcc from PyPI: no
python3, no pip, no host compiler), so no registry is needed anywhere.

Why `docker build` FROM scratch and not `docker import`: an imported arm64 image carries no platform
variant, and Docker 20.10's BuildKit, asked to build `--platform linux/arm64` FROM it, does not match
it locally and looks the tag up on docker.io instead. An image BuildKit itself made for the platform
is found locally.

The image is tagged by platform and recipe hash (see stages/images.py), so it is made once and reused
while the recipe holds; the Debian mirror is not part of the recipe (where the packages come from does
not change what they are). Making one needs root and debootstrap.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from pipeline import paths
from pipeline.core.ir import Image
from pipeline.engines.docker import Docker, tail
from pipeline.errors import BootstrapFailed, DockerError, ToolMissing

ARCH = {"linux/amd64": ("amd64", "x86_64"), "linux/arm64": ("arm64", "aarch64")}
PYTHON = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
UNPACKED = "/opt/pip-wheels"  # where a recipe's wheels are unpacked in the image


def debian_mirror() -> str:
    """The mirror apt already uses here (deb822 or one-line sources), or $SPARK_PIPELINE_DEBIAN_MIRROR."""
    env = paths.env_matching(
        "SPARK_PIPELINE_DEBIAN_MIRROR",
        r"https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?",
        "an http(s) URL of a Debian mirror",
    )
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


def _name(image: Image) -> str:
    return image.ref.replace("/", "_").replace(":", "_")


def ensure(image: Image, platform: str, docker: Docker, workdir: Path, say: Callable[[str], None]) -> None:
    """Make `image.ref` from its recipe unless the local Docker has it already."""
    if image.bootstrap is None or docker.image_id(image.ref):
        return
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / f"{_name(image)}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two builds at once make the image once
        if docker.image_id(image.ref):
            return
        _make(image, platform, docker, workdir, say)


def _make(image: Image, platform: str, docker: Docker, workdir: Path, say: Callable[[str], None]) -> None:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise ToolMissing(
            f"making base image {image.ref} needs root and debootstrap "
            "(apt-get install debootstrap); or point the stage at an image reference"
        )
    recipe = recipe_of(image)
    log = workdir / f"{_name(image)}.log"
    with tempfile.TemporaryDirectory(prefix="bootstrap-", dir=workdir) as tmp:
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        _debootstrap(image, recipe, platform, Path(tmp) / "rootfs", log, say)
        with (ctx / "rootfs.tar").open("wb") as out:
            if subprocess.run(["tar", "-C", str(Path(tmp) / "rootfs"), "-c", "."], stdout=out, check=False).returncode:
                raise BootstrapFailed(f"cannot pack the rootfs of {image.ref}")
        _unpack_wheels(image, recipe, platform, Path(tmp) / "wheels", ctx / "pip-wheels", log, say)
        env = recipe.get("env")
        (ctx / "Dockerfile").write_text(_dockerfile(env if isinstance(env, dict) else {}))
        code = docker.stream(["build", "--network", "none", "--platform", platform, "-t", image.ref, str(ctx)], log)
        if code != 0:
            raise DockerError(f"building base image {image.ref} failed; log: {log}\n{tail(log)}")
        say(f"base image {image.ref} ready")


def _debootstrap(
    image: Image, recipe: dict[str, object], platform: str, rootfs: Path, log: Path, say: Callable[[str], None]
) -> None:
    suite = str(recipe["suite"])
    deb_arch = ARCH[platform][0]
    include = ",".join(str(p) for p in _list(recipe.get("include")))
    mirror = debian_mirror()
    how_long = "about a minute" if os.uname().machine == ARCH[platform][1] else "under qemu: a few minutes"
    say(f"making base image {image.ref}: debootstrap {suite} ({deb_arch}) from {mirror} ({how_long})")
    argv = ["debootstrap", "--variant=minbase", f"--arch={deb_arch}"]
    if include:
        argv.append(f"--include={include}")
    argv += [suite, str(rootfs), mirror]
    with log.open("wb") as out:
        if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise BootstrapFailed(f"debootstrap failed for {image.ref}; log: {log}\n{tail(log)}")
    for rel in TRIM:
        for p in (rootfs / rel).glob("*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _unpack_wheels(
    image: Image,
    recipe: dict[str, object],
    platform: str,
    download: Path,
    dest: Path,
    log: Path,
    say: Callable[[str], None],
) -> None:
    """Download the recipe's wheels for the image's platform and unpack them (a wheel is a zip) on the
    host, keeping the executable bits: the image gets their files without needing python."""
    dest.mkdir(parents=True)
    wheels = [str(p) for p in _list(recipe.get("unpack"))]
    if not wheels:
        return
    py_arch = ARCH[platform][1]
    say(f"downloading {len(wheels)} wheels for {image.ref}")
    platforms = [f"--platform=manylinux{t}_{py_arch}" for t in ("2014", "_2_17", "_2_28", "_2_34", "_2_12")]
    dl = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        f"--python-version={PYTHON.get(str(recipe['suite']), '3.11')}",
        *platforms,
        "-d",
        str(download),
        *wheels,
    ]
    with log.open("ab") as out:
        if subprocess.run(dl, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            raise BootstrapFailed(f"pip download failed for {image.ref}; log: {log}\n{tail(log)}")
    for whl in sorted(download.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            for info in z.infolist():
                if ".dist-info/" in info.filename or info.is_dir():
                    continue
                target = z.extract(info, dest)
                mode = (info.external_attr >> 16) & 0o777
                os.chmod(target, mode or 0o644)


def _dockerfile(env: dict[object, object]) -> str:
    lines = ["FROM scratch", "ADD rootfs.tar /", f"COPY pip-wheels/ {UNPACKED}/", "ENV LANG=C.UTF-8"]
    lines += [f"ENV {k}={json.dumps(str(v))}" for k, v in sorted(env.items(), key=lambda kv: str(kv[0]))]
    lines.append('CMD ["/bin/bash"]')
    return "\n".join(lines) + "\n"

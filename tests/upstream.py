"""Test-only: real upstream trees from PyPI sdists (vLLM, FlashInfer), downloaded once into a cache
kept between test runs and checked against PyPI's sha256, then turned into local git repositories
tagged like upstream, so the tool's real code paths (mirrors, auto versions, prepare) run on them.
An sdist can omit files the git tree has: the tests only rely on what these sdists hold."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

from examples.smoke import fixtures

CACHE = Path(os.environ.get("SPARK_PIPELINE_TEST_SDISTS", Path.home() / ".cache" / "spark-pipeline-tests" / "sdists"))
INDEX = "https://pypi.org/simple/{name}/"


def sdist(name: str, version: str) -> Path:
    """The sdist file of name==version, from the cache or PyPI (verified by PyPI's sha256)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    opener = urllib.request.build_opener()
    req = urllib.request.Request(INDEX.format(name=name), headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    files = json.load(opener.open(req, timeout=60))["files"]
    wanted = f"{name.replace('-', '_')}-{version}.tar.gz"
    entry = next(f for f in files if f["filename"].lower() in (wanted.lower(), f"{name}-{version}.tar.gz".lower()))
    path = CACHE / entry["filename"]
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
        tmp = path.with_suffix(".part")
        with opener.open(entry["url"], timeout=600) as r, tmp.open("wb") as out:
            shutil.copyfileobj(r, out)
        if hashlib.sha256(tmp.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
            raise AssertionError(f"{entry['filename']}: sha256 differs from PyPI's")
        tmp.rename(path)
    return path


def sdist_repo(name: str, version: str, dest: Path, tag: str | None = None) -> Path:
    """A git repository holding the sdist's tree, one commit on main, tagged v<version>."""
    with tarfile.open(sdist(name, version)) as t:
        t.extractall(dest.parent / f".{dest.name}-unpack", filter="data")
    [top] = (dest.parent / f".{dest.name}-unpack").iterdir()
    shutil.rmtree(dest, ignore_errors=True)
    top.rename(dest)
    shutil.rmtree(dest.parent / f".{dest.name}-unpack")
    fixtures.git(dest, "init", "-q", "-b", "main")
    fixtures.git(dest, "add", "-A")
    fixtures.git(dest, "commit", "-q", "-m", f"{name} {version} (PyPI sdist)")
    fixtures.git(dest, "tag", tag or f"v{version}")
    return dest

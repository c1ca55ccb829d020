"""What a package index offers for a project: version -> filenames. A URL is asked through the
simple repository API in its JSON form (PEP 691: PyPI, download.pytorch.org); a local directory of
wheels (air-gapped machines, the smoke stack) is listed. Used by plan to pin unpinned requirements."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from pipeline.errors import SourceError

PYPI = "https://pypi.org/simple"
ACCEPT = "application/vnd.pypi.simple.v1+json"


def _version(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except ValueError:
        return None


def files(name: str, index: str, timeout: float = 60) -> dict[str, list[str]]:
    """version -> filenames the index has for `name` (yanked files left out)."""
    project = canonicalize_name(name)
    names: list[str] = []
    if "://" not in index or index.startswith("file://"):
        root = Path(index.removeprefix("file://"))
        names = [p.name for p in root.glob("*")
                 if canonicalize_name(re.split(r"-\d", p.name, maxsplit=1)[0]) == project]
    else:
        url = f"{index.rstrip('/')}/{project}/"
        req = urllib.request.Request(url, headers={"Accept": ACCEPT})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = json.load(r)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise SourceError(f"cannot ask {url} which versions of {name} exist: {e}") from None
        names = [f["filename"] for f in data.get("files", []) if not f.get("yanked")]
    out: dict[str, list[str]] = {}
    for n in names:
        v = _version(n)
        if v is not None:
            out.setdefault(v, []).append(n)
    return out

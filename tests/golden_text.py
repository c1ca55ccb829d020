"""Test-only helpers for golden output: normalize what varies by run, compare with tests/golden/<name>,
and read the README's fenced blocks (the README must show the same text)."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden"


def normalize(text: str) -> str:
    """Keys (12 hex), short SHAs of a moved ref, times and store paths vary by run; trailing spaces do not
    matter."""
    text = re.sub(r"\b[0-9a-f]{12}\b", "<key>", text)
    text = re.sub(r"\b[0-9a-f]{7} → [0-9a-f]{7}\b", "<sha> → <sha>", text)
    text = re.sub(r"store: \S+", "store: <store>", text)
    text = re.sub(r"(: (fetching|cloning) .* from) \S+", r"\1 <url>", text)
    text = re.sub(r"\b\d+\.\d s\b", "<s> s", text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def check(name: str, text: str) -> str:
    path = GOLDEN / name
    got = normalize(text)
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 and check it in"
    assert got == path.read_text(), f"{name} changed:\n{got}"
    return got


def readme_blocks() -> list[str]:
    """The README's fenced blocks, normalized."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(normalize("\n".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    return blocks

"""Click types for flag values with a fixed shape: each refuses a bad value where it enters, with the
flag's name and what was expected (exit 2), instead of letting it fail later on a node."""

from __future__ import annotations

import re
from typing import Any

import click

from pipeline.contract import is_decimal, is_stage_key

PORT = click.IntRange(1, 65535)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # what `docker run --name` accepts


class _Checked(click.ParamType):
    """A string checked against a rule; `expected` says what a good value looks like."""

    expected = ""

    def ok(self, value: str) -> bool:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str) or not self.ok(value):
            self.fail(f"expected {self.expected}, got {value!r}", param, ctx)
        return value


class ContainerName(_Checked):
    name = "NAME"
    expected = "a container name (letters, digits, _ . -; starting with a letter or digit)"

    def ok(self, value: str) -> bool:
        return bool(_NAME_RE.match(value))


class ImageRef(_Checked):
    name = "IMAGE"
    expected = "an image reference such as vllm-node or registry:5000/vllm-node:tag (lowercase name)"

    def ok(self, value: str) -> bool:
        from pipeline.config.types import is_image_ref

        return is_image_ref(value)


class Volume(_Checked):
    name = "SRC:DST[:OPTS]"
    expected = "SRC:DST or SRC:DST:OPTS with an absolute DST (like docker run -v)"

    def ok(self, value: str) -> bool:
        parts = value.split(":")
        return len(parts) in (2, 3) and all(parts[:2]) and parts[1].startswith("/")


class Tail(_Checked):
    name = "N|all"
    expected = "a number of lines or all"

    def ok(self, value: str) -> bool:
        return value == "all" or is_decimal(value)


class StageKey(_Checked):
    name = "KEY"
    expected = "a stage key (64 hex digits, as `store ls` shows it)"

    def ok(self, value: str) -> bool:
        return is_stage_key(value)


class KeyPrefix(_Checked):
    name = "PREFIX"
    expected = "the start of a stage key (1 to 64 hex digits)"

    def ok(self, value: str) -> bool:
        return re.fullmatch(r"[0-9a-f]{1,64}", value) is not None

"""Loading spec files: YAML with line numbers, `--set key.path=value` overrides, and pydantic errors
turned into `file:dotted.key: what was expected` messages with "did you mean" hints.

Generic over the model, so build.yaml, cluster.yaml and recipes share one way of reporting errors.
"""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (YAML silently keeps the last one), or, where a format's
    files in the wild have them (the toolkit's recipes), notes them in `duplicates` and keeps the last."""

    duplicates: list[str] | None = None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain name, not a list or mapping", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen and loader.duplicates is None:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        if key in seen and loader.duplicates is not None:
            loader.duplicates.append(f"duplicate key {key!r} at lines {seen[key]} and {line}: the later one is used")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_index(node: yaml.Node | None, prefix: tuple[str, ...] = (), label: str = "") -> dict[tuple[str, ...], int]:
    """Map every dotted key path in a composed YAML document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise ConfigError(f"{label}:{k.start_mark.line + 1}: a key must be a plain name, not a list or mapping")
            path = (*prefix, str(k.value))
            out[path] = k.start_mark.line + 1
            out.update(_line_index(v, path, label))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            path = (*prefix, str(i))
            out[path] = v.start_mark.line + 1
            out.update(_line_index(v, path, label))
    return out


MAX_SPEC_BYTES = 1 << 20  # a spec file is a page of settings; megabytes are a mistake (and slow to parse)


def read_bytes(path: Path, label: str, limit: int = MAX_SPEC_BYTES) -> bytes:
    """A settings file's bytes: a regular file of at most `limit` bytes, or a located error. Opened without
    blocking and checked before a byte is read, so a FIFO never hangs and /dev/zero never fills memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found ({path})") from None
    except OSError as e:
        raise ConfigError(f"{label}: cannot read ({e.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{label}: is a directory, expected a file ({path})")
        raise ConfigError(f"{label}: not a regular file (a FIFO, device or socket): {path}")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ConfigError(f"{label}: cannot read ({e.strerror})") from None
    if len(data) > limit:
        size = f"{st.st_size / 1e6:.1f} MB" if st.st_size > limit else f"over {limit // 1024} KiB"
        raise ConfigError(f"{label}: {size}; expected a settings file of at most {limit // 1024} KiB")
    return data


def read_text(path: Path, label: str, limit: int = MAX_SPEC_BYTES) -> str:
    """A spec file's text: UTF-8, at most `limit` bytes, or a located error."""
    data = read_bytes(path, label, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{label}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


MAX_DEPTH = 64  # settings nest a few levels; thousands of `[` would exhaust the composer's recursion
MAX_ALIASES = 32  # anchors save typing; hundreds of aliases of aliases expand to gigabytes
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


def check_structure(text: str, label: str) -> None:
    """Walk the document's events (linear in its size, nothing expanded) and refuse what no settings file
    needs and what would hang or crash the loader: deep nesting, many aliases, explicit tags other than the
    plain types (`!!set` loads in a different order on every run, so a key made from it would move)."""
    depth = aliases = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            where = f"{label}:{event.start_mark.line + 1}" if event.start_mark else label
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"{where}: nested over {MAX_DEPTH} levels deep; expected a settings file")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise ConfigError(f"{where}: over {MAX_ALIASES} aliases (*name); expected a settings file")
            tag = getattr(event, "tag", None)
            if tag and tag != "!" and tag not in PLAIN_TAGS:
                raise ConfigError(
                    f"{where}: the tag {tag} is not allowed here (plain strings, numbers, booleans, "
                    "lists and mappings only)"
                )
    except yaml.YAMLError:
        return  # the loader below reports it, located


def read_yaml(
    path: Path, label: str, duplicates: list[str] | None = None
) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """Read a YAML mapping; returns the data and a key-path → line index. A duplicate key is an error,
    unless `duplicates` is given: then each is noted there (`label:line: …`) and the later one is used."""
    text = read_text(path, label)
    check_structure(text, label)
    try:
        loader = _Loader(text)
        noted: list[str] | None = [] if duplicates is not None else None
        loader.duplicates = noted
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
        if duplicates is not None and noted:
            duplicates += [f"{label}: {d}" for d in noted]
        lines = _line_index(yaml.compose(text, Loader=yaml.SafeLoader), label=label)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of keys at the top level, got a {type(data).__name__}")
    return data, lines


def parse_override(item: str) -> tuple[list[str], Any]:
    """`vllm.ref=v0.11.0` -> (['vllm', 'ref'], 'v0.11.0'); the value is read as a YAML scalar/flow."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE, e.g. --set vllm.ref=v0.11.0")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Set each dotted path in a copy of `data` (creating mappings on the way)."""
    import copy

    out = copy.deepcopy(data)
    for path, value in overrides:
        node: Any = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                nxt = {}
                node[part] = nxt
            elif not isinstance(nxt, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a mapping")
            node = nxt
        node[path[-1]] = value
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of `loc` (for "did you mean")."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):  # a list index: same item model
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    import typing

    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def format_errors(
    exc: ValidationError, model: type[BaseModel], label: str, lines: dict[tuple[str, ...], int]
) -> list[str]:
    messages: list[str] = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = tuple(p for p in loc if p not in ("str", "int", "list[...]", "dict[...]", "[key]"))
        dotted = ".".join(str(p) for p in loc)
        msg = err["msg"]
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            known = sorted(owner.model_fields) if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            msg = f"unknown key {str(loc[-1])!r}"
            msg += (
                f"; did you mean {guess[0]!r}?"
                if guess
                else (f"; expected one of: {', '.join(known)}" if known else "")
            )
        elif kind == "missing":
            msg = "missing required key"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"expected one of {expected}, got {_describe(err.get('input'))}"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"expected a mapping, got {_describe(err.get('input'))}"
        elif kind == "list_type":
            msg = f"expected a list, got {_describe(err.get('input'))}"
        elif kind == "too_short":
            msg = "expected at least one entry, got an empty list"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        line = lines.get(tuple(str(p) for p in loc))
        where = f"{label}:{dotted}" if dotted else label
        messages.append(f"{where}: {msg}" + (f" (line {line})" if line else ""))
    return list(dict.fromkeys(messages))


def _describe(value: Any) -> str:
    from pipeline.config.types import describe

    return describe(value)


def validate(model: type[M], data: dict[str, Any], label: str, lines: dict[tuple[str, ...], int] | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, model, label, lines or {})) from None

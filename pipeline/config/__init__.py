"""Spec files -> validated models. `load_build` reads build.yaml, applies CLI overrides, validates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.build import BuildSpec, VllmSpec
from pipeline.config.load import apply_overrides, parse_override, read_yaml, validate
from pipeline.contract import STAGES
from pipeline.errors import ConfigError

SECRET_NAMES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")


@dataclass(frozen=True)
class LoadedBuild:
    spec: BuildSpec
    path: Path  # the build.yaml
    label: str  # how messages name the file

    @property
    def root(self) -> Path:
        """Relative paths in build.yaml (local repos, wheel dirs, patches) resolve against this."""
        return self.path.parent


def load_build(
    path: Path,
    sets: list[str] | tuple[str, ...] = (),
    flags: dict[str, Any] | None = None,
    profiles: tuple[str, ...] = (),
) -> LoadedBuild:
    """Read `path`, apply its named `profiles`, then `--set` overrides, then explicit flag overrides
    (dotted key -> value)."""
    label = path.name
    data, lines = read_yaml(path, label)
    overrides = [parse_override(s) for s in profile_sets(data, profiles, label)]
    overrides += [parse_override(s) for s in sets]
    overrides += [(k.split("."), v) for k, v in (flags or {}).items() if v is not None]
    data = apply_overrides(data, overrides)
    spec = validate(BuildSpec, data, label, lines)
    problems = cross_checks(spec, label)
    if problems:
        raise ConfigError(problems)
    return LoadedBuild(spec=spec, path=path.resolve(), label=label)


def profile_sets(data: dict[str, Any], names: tuple[str, ...], label: str) -> list[str]:
    known = data.get("profiles") or {}
    if not isinstance(known, dict):
        raise ConfigError(f"{label}:profiles: expected a mapping of profile name -> list of KEY.PATH=VALUE")
    out: list[str] = []
    for name in names:
        items = known.get(name)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            have = ", ".join(sorted(str(k) for k in known)) or "none"
            raise ConfigError(f"{label}:profiles: no profile {name!r} (it has: {have})")
        out += items
    return out


def cross_checks(spec: BuildSpec, label: str) -> list[str]:
    """Checks across keys, after the schema (worded like the schema errors)."""
    out: list[str] = []
    default_vllm = VllmSpec()
    if spec.vllm.source_dir is not None:
        if spec.vllm.repo != default_vllm.repo:
            out.append(
                f"{label}:vllm.source_dir: cannot be combined with vllm.repo (a fork); "
                "build either a local source dir or a repository"
            )
        if spec.vllm.ref != default_vllm.ref:
            out.append(
                f"{label}:vllm.ref: cannot be combined with vllm.source_dir; "
                "the source dir's checked-out commit (HEAD) is what gets built"
            )
    if spec.vllm.preset_prs == "apply" and not spec.vllm.presets:
        out.append(f"{label}:vllm.preset_prs: is 'apply' but vllm.presets is empty")
    for section in STAGES:
        env = getattr(spec, section).env
        for name in env:
            if name in spec.secrets or name in SECRET_NAMES:
                out.append(
                    f"{label}:{section}.env.{name}: is a secret; secrets never go into env "
                    "(they would be stored in image layers and keys); list it under 'secrets'"
                )
    if spec.triton.source == "pip" and "triton" in {p.split("=")[0].split("[")[0] for p in spec.base.pip_packages}:
        out.append(
            f"{label}:base.pip_packages: lists triton while triton.source is 'pip'; "
            "Triton comes from torch's pin, or set triton.source: git"
        )
    return out

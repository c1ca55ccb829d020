"""Validated scalar types shared by every spec file (build.yaml, cluster.yaml, recipes).

Each type raises a ValueError whose text is the whole user-facing sentence ("expected …, got …"), so
that an error reads `build.yaml:vllm.ref: expected a branch, tag or 40-hex SHA, got 12`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict

from pipeline.contract import is_decimal, is_env_name, is_one_line

STRICT = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


def describe(value: Any) -> str:
    """How a bad value is shown after 'got'."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def expect(what: str, check: Callable[[Any], bool], convert: Callable[[Any], Any] = lambda v: v) -> BeforeValidator:
    """A validator that accepts values passing `check` and otherwise says what was expected."""

    def validate(value: Any) -> Any:
        if not check(value):
            raise ValueError(f"expected {what}, got {describe(value)}")
        return convert(value)

    return BeforeValidator(validate)


_REF_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/+-]+(?<![./])$")
_ARCH_RE = re.compile(r"^\d{1,2}\.\d[af]?$")
_IMAGE_RE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_PR_URL_RE = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+)/pull/(?P<num>[1-9]\d*)/?$")
_PKG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-\[\],<>=!~*+ ;:'\"/@]*$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!-]*$")


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def is_git_ref(v: Any) -> bool:
    return _is_str(v) and bool(_REF_RE.match(v)) and "@{" not in v and not v.endswith(".lock")


# What `nvcc --list-gpu-arch` of CUDA 13.0 knows (Maxwell, Pascal and Volta are gone); `a` (arch-specific)
# exists from 9.0, `f` (family) from Blackwell's 10.0.
NVCC_ARCHS = ("7.5", "8.0", "8.6", "8.7", "8.8", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1")


def _arch_known(arch: str) -> bool:
    base, suffix = arch.rstrip("af"), arch[len(arch.rstrip("af")) :]
    if base not in NVCC_ARCHS:
        return False
    major = int(base.split(".")[0])
    return suffix == "" or (suffix == "a" and major >= 9) or (suffix == "f" and major >= 10)


def is_gpu_arch(v: Any) -> bool:
    parts = [p for p in re.split(r"[;\s]+", v.strip()) if p] if _is_str(v) else []
    if not (parts and all(_ARCH_RE.match(p) and _arch_known(p) for p in parts)):
        return False
    plain = next((p for p in parts if int(p.split(".")[0]) >= 10 and p[-1].isdigit()), None)
    if plain is not None:
        # vLLM's CMake would then compile its FP4/FP8 CUTLASS families for plain sm_121: no arch-specific
        # instructions (FP4 MMA) on GB10. Say which suffix means what rather than guess.
        raise ValueError(
            f"{plain} has no a/f suffix: write {plain}a (code for this GPU only, with its "
            f"arch-specific instructions: what DGX Spark wants for 12.1) or {plain}f (the {plain[:-2]}.x "
            "family); a plain arch from 10.0 on leaves out the instructions vLLM's FP4/FP8 kernels use"
        )
    return True


def _version_text(v: Any) -> bool:
    """A version written as text. YAML reads an unquoted 2.10 as the number 2.1: refused with a hint."""
    if isinstance(v, float | int) and not isinstance(v, bool):
        raise ValueError(
            f'expected a version as a string, got the number {v}: quote it ("{v}" may not be '
            "what you wrote: YAML reads 2.10 as 2.1)"
        )
    return isinstance(v, str) and bool(_VERSION_RE.match(v))


def is_image_ref(v: Any) -> bool:
    """A Docker image reference, at most 255 characters (Docker's own limit for a whole reference)."""
    return _is_str(v) and len(v) <= 255 and bool(_IMAGE_RE.match(v))


def image_digest(ref: str) -> str | None:
    m = _IMAGE_RE.match(ref)
    return m.group("digest") if m else None


def parse_pr(v: Any) -> int | str:
    """A PR is a positive number (of the stage's repo) or a full GitHub pull-request URL."""
    if isinstance(v, bool):
        raise ValueError("expected a PR number or https://github.com/OWNER/REPO/pull/N, got " + describe(v))
    if isinstance(v, int) and v > 0:
        return v
    if isinstance(v, str) and is_decimal(v) and int(v) > 0:
        return int(v)
    if isinstance(v, str) and _PR_URL_RE.match(v):
        return v.rstrip("/")
    raise ValueError(f"expected a PR number or https://github.com/OWNER/REPO/pull/N, got {describe(v)}")


def pr_url_parts(url: str) -> tuple[str, int]:
    """`https://github.com/o/r/pull/7` -> (`https://github.com/o/r.git`, 7)."""
    m = _PR_URL_RE.match(url)
    if m is None:
        raise ValueError(f"expected a PR number or https://github.com/OWNER/REPO/pull/N, got {describe(url)}")
    return f"https://github.com/{m['owner']}/{m['repo']}.git", int(m["num"])


GitRef = Annotated[str, expect("a branch, tag or 40-hex SHA", is_git_ref)]
GpuArch = Annotated[
    str,
    expect(
        "a CUDA arch nvcc 13 knows, such as 12.1a, 12.0f or 12.1a;12.0f "
        f"({', '.join(NVCC_ARCHS)}; a from 9.0, f from 10.0)",
        is_gpu_arch,
    ),
]
ImageRef = Annotated[
    str, expect("an image reference such as nvidia/cuda:13.0.2-devel-ubuntu24.04@sha256:…", is_image_ref)
]
PullRequest = Annotated[int | str, BeforeValidator(parse_pr)]
EnvName = Annotated[
    str, expect("an environment variable name (letters, digits, _)", lambda v: _is_str(v) and is_env_name(v))
]
EnvValue = Annotated[
    str,
    expect(
        "a string, number or boolean value (one line: a line break would start a line of its own in an env file "
        "or a Dockerfile)",
        lambda v: isinstance(v, int | float | bool) or (isinstance(v, str) and is_one_line(v)),
        lambda v: ("true" if v else "false") if isinstance(v, bool) else str(v),
    ),
]
Package = Annotated[
    str, expect("a pip requirement such as ray[default]==2.60.0", lambda v: _is_str(v) and bool(_PKG_RE.match(v)))
]
AptPackage = Annotated[
    str, expect("a Debian package name", lambda v: _is_str(v) and bool(re.match(r"^[a-z0-9][a-z0-9+.-]+(=\S+)?$", v)))
]
Version = Annotated[str, expect("a version such as 2.13.0", _version_text)]
AutoVersion = Annotated[
    str, expect("a version such as 2.14.0, or auto (vLLM's pin)", lambda v: v == "auto" or _version_text(v))
]
OptionalVersion = Annotated[
    str,
    expect("a version such as 2.11.0, none, or auto (vLLM's pin)", lambda v: v in ("none", "auto") or _version_text(v)),
]
RepoUrl = Annotated[
    str,
    expect(
        "a git URL (https://…, ssh, file://…) or a local path",
        lambda v: _is_str(v) and " " not in v.strip() and "\n" not in v,
    ),
]
PositiveInt = Annotated[
    int, expect("a whole number ≥ 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1)
]
Flag = Annotated[bool, expect("true or false", lambda v: isinstance(v, bool))]
AutoFlag = Annotated[bool | str, expect("true, false or auto", lambda v: isinstance(v, bool) or v == "auto")]
NonEmptyStr = Annotated[str, expect("a non-empty string", _is_str)]
PythonMinor = Annotated[
    str,
    expect(
        'a Python version in quotes, such as "3.12" (YAML reads 3.10 as the number 3.1)',
        lambda v: _is_str(v) and bool(re.fullmatch(r"3\.\d{1,2}", v)),
    ),
]
GlibcVersion = Annotated[
    str,
    expect(
        'a glibc version in quotes, such as "2.39" (Ubuntu 24.04)',
        lambda v: _is_str(v) and bool(re.fullmatch(r"2\.\d{1,2}", v)),
    ),
]
# A login name as POSIX and useradd take it: it becomes USER@HOST in ssh's and rsync's argv, where a name
# starting with `-` would be read as an option (-oProxyCommand=…).
UserName = Annotated[
    str,
    expect(
        "a user name (letters, digits, _ . -; not starting with - or .; at most 32 characters)",
        lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?", v) is not None,
    ),
]

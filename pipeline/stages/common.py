"""Pieces every stage module uses: paths inside build containers and recurring steps."""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.config.pins import label
from pipeline.core.ir import CA_BUNDLE, CA_ENV_NAMES, Cache, Input, Step

OUT = "/out"


def wheels_path(stage: str) -> str:
    return f"/wheels/{stage}"


def src_path(name: str) -> str:
    return f"/src/{name}"


def stage_input(stage: str) -> Input:
    """An upstream stage's exported wheels, bind-mounted read-only where a step asks for them."""
    return Input(name=stage, kind="stage", ref=stage, path=wheels_path(stage), mode="mount")


def source_input(name: str) -> Input:
    """A source tree copied into the image at /src/<name> (builds write into their tree)."""
    return Input(name=f"src-{name}", kind="source", ref=name, path=src_path(name), mode="copy")


def context_input(stage: str, path: str) -> Input:
    """docker-contexts/<stage>/ (next to build.yaml, else the tool's own): the scripts and patches a
    stage uses, mounted read-only where a step asks for them; their content is in the key."""
    return Input(name="context", kind="dir", ref=f"docker-contexts/{stage}", path=path, mode="mount")


def install_wheels(*stages: str, deps: bool = True, layer: str = "") -> Step:
    """Install every wheel exported by `stages`, offline (`--no-index`): the store is the only index."""
    find = " ".join(f"--find-links {wheels_path(s)}" for s in stages)
    files = " ".join(f"{wheels_path(s)}/*.whl" for s in stages)
    nodeps = "" if deps else " --no-deps"
    return Step(
        argv=("sh", "-c", f"python3 -m pip install --no-index{nodeps} {find} {files}"),
        mounts=stages,
        layer=layer,
        kind="install-wheels",
    )


# The source tree's version file (see build/checkout.py): setuptools-scm reads no .git in a build
# container, so the version git would give is handed over this way. $0 is the source directory.
WHEEL_SCRIPT = (
    'v="$(cat "$0/.scm-version" 2>/dev/null || true)"; '
    'if [ -n "$v" ]; then export SETUPTOOLS_SCM_PRETEND_VERSION="$v"; fi; '
    f'exec python3 -m pip wheel --no-build-isolation --no-deps --wheel-dir {OUT} "$0"'
)


def pip_wheel(src: str, mounts: tuple[str, ...] = ()) -> Step:
    """Build one wheel from a source directory with the already-installed torch (no build isolation)."""
    return Step(argv=("sh", "-c", WHEEL_SCRIPT, src), mounts=mounts, kind="pip-wheel")


def compile_build_env(spec: BuildSpec) -> tuple[tuple[str, str], ...]:
    """Parallelism knobs (toolkit: BUILD_JOBS). They change how fast, not what: never in a key."""
    jobs = str(spec.build_jobs)
    return (
        ("MAX_JOBS", jobs),
        ("CMAKE_BUILD_PARALLEL_LEVEL", jobs),
        ("NINJAFLAGS", f"-j{jobs}"),
        ("MAKEFLAGS", f"-j{jobs}"),
        ("CARGO_BUILD_JOBS", jobs),
    )


def compiler_caches() -> tuple[Cache, ...]:
    """ccache and pip caches (their volumes are per platform: engines.cache_id)."""
    return (Cache(name="ccache", path="/root/.ccache"), Cache(name="pip", path="/root/.cache/pip"))


COMMON_ENV = (
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("PIP_BREAK_SYSTEM_PACKAGES", "1"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    ("PIP_NO_INPUT", "1"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
)

CCACHE_ENV = (
    ("CCACHE_DIR", "/root/.ccache"),
    ("CCACHE_MAXSIZE", "50G"),
    ("CCACHE_COMPRESS", "1"),
    ("CMAKE_CXX_COMPILER_LAUNCHER", "ccache"),
    ("CMAKE_CUDA_COMPILER_LAUNCHER", "ccache"),
)


def pip_knobs(section: str, packages: list[str]) -> tuple[tuple[str, str], ...]:
    """`base.pip_packages ray[default]` -> `ray[default]==2.60.0`: plan names a moved pin as the reason."""
    return tuple((f"{section}.pip_packages {label(p)}", p) for p in packages)


def list_knobs(key: str, items: list[str]) -> tuple[tuple[str, str], ...]:
    """`base.apt_packages` -> one entry per item, so plan names what was added or removed."""
    return tuple((f"{key} {item}", item) for item in items)


def ca_env(spec: BuildSpec) -> tuple[tuple[str, str], ...]:
    """With build.yaml's ca_bundle: pip, requests, curl, git and cargo trust the mounted bundle."""
    return tuple((name, CA_BUNDLE) for name in CA_ENV_NAMES) if spec.ca_bundle else ()


def env_items(extra: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(extra.items()))


def env_knobs(section: str, extra: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """`vllm.env.FOO` -> value, so plan can name an env change as the reason for a rebuild."""
    return tuple((f"{section}.env.{k}", v) for k, v in sorted(extra.items()))


# Keep the downloaded .debs (a cache volume) instead of deleting them after each install.
APT_KEEP = (
    "rm -f /etc/apt/apt.conf.d/docker-clean && "
    "echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' > /etc/apt/apt.conf.d/keep-cache"
)


def apt_step(packages: list[str], layer: str = "") -> Step:
    """apt-get install from the image's own mirror, with the .debs and lists kept in cache volumes."""
    import shlex

    return Step(
        argv=(
            "sh",
            "-c",
            f"{APT_KEEP} && apt-get update && apt-get install -y --no-install-recommends " + shlex.join(packages),
        ),
        layer=layer,
        kind="apt",
    )


def apt_caches() -> tuple[Cache, ...]:
    """apt's downloaded .debs and package lists; one writer at a time (apt locks them)."""
    return (
        Cache(name="apt", path="/var/cache/apt", sharing="locked"),
        Cache(name="apt-lists", path="/var/lib/apt/lists", sharing="locked"),
    )

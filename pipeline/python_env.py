"""The build's Python environment at plan time: collect every stage's requirements (core/pyenv.py),
resolve them together for the target (sources/pyresolve.py), and hand the result to the stages.

The resolved set is written once per content as `constraints.txt` in the cache (python-env/<digest>/),
a directory input of the stages that run pip: its digest is in their keys, and PIP_CONSTRAINT holds
every pip in them (the toolchain's, vLLM's build requirements, its runtime requirements, a build's own
installs) to exactly those versions. build.lock keeps the set with its hashes; `--offline` plans reuse
it when the requirements are the ones it was resolved for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fsutil
from pipeline.config import LoadedBuild
from pipeline.config.auto import VllmFacts
from pipeline.config.build import BuildSpec
from pipeline.contract import STORED_STAGES
from pipeline.core import pyenv
from pipeline.core.ir import Input, Stage, Step
from pipeline.core.keys import canonical_json, sha256_text
from pipeline.core.lockfile import Lock
from pipeline.core.pyenv import Pinned, Req, Target
from pipeline.errors import ConfigError
from pipeline.sources import pyresolve

INPUT = "python-env"
PATH = "/inputs/python-env"
CONSTRAINTS = f"{PATH}/constraints.txt"
# The stages whose image is the toolchain: PIP_CONSTRAINT stays in that image, which never leaves the
# build machine. The runtime image passes `-c` to its own pip steps instead (no ENV left in what ships).
TOOLCHAIN_STAGES = STORED_STAGES
# Stages whose build requirements this module installs (a step first); Triton's build_requires.py does it.
INSTALLS_OWN = ("flashinfer",)
FLASHINFER_RUNTIME = "flashinfer-runtime"  # FlashInfer's requirements.txt: resolved with the set, not a stage


@dataclass(frozen=True)
class PythonEnv:
    target: Target
    inputs: str  # digest of the requirements resolved, with their origins
    packages: dict[str, Pinned]
    directory: Path  # the whole set's constraints.txt (and <stage>.txt for each stage in `own`)
    own: tuple[str, ...] = ()  # stages that install requirements of their own (flashinfer: its build-system)
    # per stage: a directory with the part of the set that stage (and what it starts from) installs, so a
    # change to vLLM's requirements moves the vllm and runtime keys, not the toolchain's
    stage_dirs: dict[str, Path] = dataclasses.field(default_factory=dict)

    def dir_for(self, stage: str) -> Path:
        return self.stage_dirs.get(stage, self.directory)

    def lock(self) -> dict[str, Any]:
        return {
            "target": {"platform": self.target.platform, "python": self.target.python},
            "inputs": self.inputs,
            "packages": {
                n: {"version": p.version, "hashes": list(p.hashes), "needed_by": list(p.needed_by)}
                for n, p in sorted(self.packages.items())
            },
        }


def locked(lock: Lock | None, tgt: Target, inputs: str) -> dict[str, Pinned]:
    """build.lock's set for this target and these requirements; empty when it has none."""
    py = lock.python if lock else {}
    if py.get("target") != {"platform": tgt.platform, "python": tgt.python} or py.get("inputs") != inputs:
        return {}
    try:
        return {
            n: Pinned(
                version=str(p["version"]), hashes=tuple(p.get("hashes", ())), needed_by=tuple(p.get("needed_by", ()))
            )
            for n, p in dict(py.get("packages", {})).items()
        }
    except (TypeError, KeyError, AttributeError):
        return {}


def requirements(build: LoadedBuild, spec: BuildSpec, facts: VllmFacts, vllm_label: str) -> list[Req]:
    return pyenv.spec_reqs(spec, build.spec, vllm_label) + pyenv.vllm_reqs(facts.files, vllm_label)


def local_indexes(build: LoadedBuild, spec: BuildSpec) -> dict[str, str]:
    """build.yaml's wheel directories (an index that is not a URL) -> absolute paths; ConfigError for one
    that is not there."""
    out = {}
    for key, where in (
        ("base.torch.index", spec.base.torch.index),
        ("runtime.pip_index", spec.runtime.pip_index),
        ("vllm.deps_index", spec.vllm.deps_index),
    ):
        if where is not None and pyenv.is_local(where):
            path = Path(where.removeprefix("file://"))
            path = path if path.is_absolute() else (build.root / path).resolve()
            if not path.is_dir():
                raise ConfigError(
                    f"{build.label}:{key}: {where} is neither a URL nor a directory of wheels ({path} does not exist)"
                )
            out[where] = str(path)
    return out


def resolve_env(
    build: LoadedBuild,
    spec: BuildSpec,
    facts: VllmFacts,
    vllm_label: str,
    offline: bool,
    lock: Lock | None,
    cache: Path,
    stage_reqs: Mapping[str, list[Req]] | None = None,
) -> tuple[PythonEnv | None, list[str]]:
    """`stage_reqs`: what a stage installs itself beyond build.yaml's and vLLM's (FlashInfer's build
    requirements), resolved with the rest and written as <stage>.txt beside constraints.txt."""
    own = {stage: rs for stage, rs in (stage_reqs or {}).items() if rs}
    tgt = pyenv.target(spec, local_indexes(build, spec), stage_reqs=bool(own))
    reqs = requirements(build, spec, facts, vllm_label) + [r for rs in own.values() for r in rs]
    inputs = sha256_text(canonical_json([[r.line, r.origin] for r in reqs]))
    if offline:
        packages = locked(lock, tgt, inputs)
        if not packages:
            return None, [
                f"--offline and build.lock has no Python environment resolved for these requirements "
                f"({tgt.platform}, Python {tgt.python}): each pip step resolves on its own"
            ]
    else:
        packages = pyresolve.resolve(reqs, tgt)
    own_files = {f"{stage}.txt": pyenv.input_text(rs) for stage, rs in sorted(own.items())}
    directory = _write(cache, {"constraints.txt": pyenv.constraints(packages), **own_files})
    roots = stage_roots(reqs, own, vllm_label)
    stage_dirs = {
        stage: _write(
            cache,
            {
                "constraints.txt": pyenv.constraints(pyenv.closure(packages, names)),
                **({f"{stage}.txt": own_files[f"{stage}.txt"]} if stage in own else {}),
            },
        )
        for stage, names in roots.items()
    }
    return PythonEnv(
        target=tgt, inputs=inputs, packages=packages, directory=directory, own=tuple(sorted(own)), stage_dirs=stage_dirs
    ), []


def stage_roots(reqs: list[Req], own: Mapping[str, list[Req]], vllm_label: str) -> dict[str, set[str]]:
    """The requirements each stage's image holds: its own and those of the images it starts from."""

    def named(*prefixes: str) -> set[str]:
        return {r.name for r in reqs if r.origin.startswith(prefixes)}

    base = named("build.yaml base.")
    # the vllm stage downloads FlashInfer's runtime requirements with vLLM's; the runtime installs both
    vllm = base | named(vllm_label) | {r.name for r in own.get(FLASHINFER_RUNTIME, [])}
    out = {"base": base, "vllm": vllm, "runtime": vllm | named("build.yaml runtime.")}
    for stage in ("triton", "flashinfer"):
        out[stage] = base | {r.name for r in own.get(stage, [])}
    return out


def _write(cache: Path, files: Mapping[str, str]) -> Path:
    """A directory named by its content, written once (atomically per file)."""
    directory = cache / "python-env" / sha256_text(canonical_json(dict(files)))[:32]
    if not all((directory / name).is_file() for name in files):
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            fsutil.write_atomic(directory / name, text)
    return directory


# After a stage's pip steps: every distribution pip put in the image (under /usr/local; apt's stay in
# /usr/lib) is in the resolved set at its version, or one of our own wheels ($2..). Constraints hold
# versions; this refuses a package outside the set (a build's own install, a dependency nobody resolved).
SET_CHECK = """import re, sys
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
want = dict(line.strip().split("==", 1) for line in open(sys.argv[1]) if "==" in line)
ours = {norm(n) for n in sys.argv[2:]}
bad = []
for d in distributions():
    name, where = norm(d.metadata["Name"] or "?"), str(d.locate_file(""))
    if not where.startswith("/usr/local/") or name in ours:
        continue
    if name not in want:
        bad.append(f"{name} {d.version} is not in the resolved set")
    elif d.version.split("+")[0] != want[name].split("+")[0]:
        bad.append(f"{name} {d.version}, but the resolved set has {want[name]}")
if bad:
    sys.exit("python env: " + "; ".join(sorted(bad)) + " (plan resolves every pip install; see build.lock)")
print("python env: every installed package is in the resolved set")
"""
OURS = ("flashinfer-python", "flashinfer-cubin", "flashinfer-jit-cache", "vllm")


def set_check(mounts: tuple[str, ...] = ()) -> Step:
    return Step(argv=("python3", "-c", SET_CHECK, CONSTRAINTS, *OURS), mounts=mounts, kind="python-env-check")


def _runtime_pip(step: Step) -> Step:
    argv = list(step.argv)
    if step.kind != "pip-install" or argv[:4] != ["python3", "-m", "pip", "install"]:
        return step
    return dataclasses.replace(step, argv=(*argv[:4], "-c", CONSTRAINTS, *argv[4:]), mounts=(*step.mounts, INPUT))


def _before_checks(steps: tuple[Step, ...], check: Step) -> tuple[Step, ...]:
    """`check` before the runtime's import checks, so it lands in their layer and fails before tagging."""
    at = next((i for i, s in enumerate(steps) if s.kind == "import-check"), len(steps))
    layer = steps[at].layer if at < len(steps) else ""
    return (*steps[:at], dataclasses.replace(check, layer=layer), *steps[at:])


def with_python_env(stage: Stage, env: PythonEnv) -> Stage:
    """The stage held to the resolved set: constraints.txt as an input (its digest in the key)."""
    if stage.name in TOOLCHAIN_STAGES:
        inp = Input(name=INPUT, kind="dir", ref=str(env.dir_for(stage.name)), path=PATH, mode="copy")
        steps = stage.steps
        # its own build requirements first (it builds without isolation); Triton's prepare step installs its own
        if stage.name in env.own and stage.name in INSTALLS_OWN:
            steps = (
                Step(argv=("python3", "-m", "pip", "install", "-r", f"{PATH}/{stage.name}.txt"), kind="pip-install"),
                *steps,
            )
        return dataclasses.replace(
            stage,
            inputs=(*stage.inputs, inp),
            steps=(*steps, set_check()),
            env=(*stage.env, ("PIP_CONSTRAINT", CONSTRAINTS)),
        )
    if stage.name == "runtime":
        steps = tuple(_runtime_pip(s) for s in stage.steps)
        inp = Input(name=INPUT, kind="dir", ref=str(env.dir_for(stage.name)), path=PATH, mode="mount")
        return dataclasses.replace(stage, inputs=(*stage.inputs, inp), steps=_before_checks(steps, set_check((INPUT,))))
    return stage


def unpinned_versions(spec: BuildSpec, env: PythonEnv) -> tuple[dict[str, str], list[str]]:
    """build.yaml requirements without an exact version -> the version resolved for them, and one note."""
    from pipeline.config import pins

    chosen = {u.key: env.packages[u.name].version for u in pins.unpinned(spec) if u.name in env.packages}
    if not chosen:
        return {}, []
    listed = ", ".join(f"{k.split(' ', 1)[1]}=={v}" for k, v in chosen.items())
    return chosen, [
        f"not pinned in build.yaml, built as resolved with vLLM's requirements for "
        f"{env.target.platform}, Python {env.target.python}: {listed}; pin them there to choose "
        "when they change"
    ]


def changes(lock: Lock | None, env: PythonEnv) -> list[str]:
    """What moved in the resolved set since build.lock, one `name a → b` each (added: `→ b`, gone: `a →`)."""
    before = {
        n: str(p.get("version", ""))
        for n, p in dict((lock.python if lock else {}).get("packages", {})).items()
        if isinstance(p, dict)
    }
    if not before:
        return []
    now = {n: p.version for n, p in env.packages.items()}
    return [
        f"{n} {before.get(n, '')} → {now.get(n, '')}".replace("  ", " ")
        for n in sorted(before.keys() | now.keys())
        if before.get(n) != now.get(n)
    ]

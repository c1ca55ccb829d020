"""The stage IR: what one stage is, as frozen data that both engines read.

A Stage says which image it starts from, its environment, its named inputs (upstream stage outputs,
source trees, local directories), its cache mounts, its steps (argv lists) and its output. Nothing here
does I/O; the digests of inputs are found elsewhere (sources.py) and combined in keys.py.

What is *not* part of a stage's key is kept in fields of its own (`build_env`, `caches`, `secrets`),
so keys.py can leave them out by name rather than by convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

InputKind = Literal["stage", "source", "dir"]
InputMode = Literal["copy", "mount"]


@dataclass(frozen=True)
class Image:
    """The image a stage starts from.

    `ref` is what engines use (`FROM ref`); `bootstrap` is set when the tool makes the image itself
    (debootstrap + docker build) from a recipe, in which case `ref` is a local tag derived from it;
    `stage` names the upstream stage whose toolchain image this is (the builder fills in `ref`, a tag
    derived from that stage's key, before the stage runs). `local` images exist only in the local
    Docker: engines must never look them up in a registry.
    """

    ref: str
    bootstrap: tuple[tuple[str, str], ...] | None = None  # canonical recipe (sorted key -> json value)
    stage: str = ""
    local: bool = False


@dataclass(frozen=True)
class Input:
    """A named input. `ref` names what it is: a stage name, a source name, or a directory path
    (relative to build.yaml). Copy inputs are placed into the image (the build may write there);
    mount inputs are bind-mounted read-only into the steps that list them."""

    name: str
    kind: InputKind
    ref: str
    path: str
    mode: InputMode = "mount"


@dataclass(frozen=True)
class Cache:
    """A persistent cache mount (ccache, pip, cubins). Never part of a key."""

    name: str
    path: str
    # locked: one writer at a time (a download directory); shared: safe for concurrent use (ccache, pip).
    sharing: Literal["shared", "locked"] = "shared"


@dataclass(frozen=True)
class Step:
    """One command. argv is run without a shell unless argv[0] is `sh` (stages say so explicitly).

    `mounts` names the mount-mode inputs this step sees; `layer` names the image layer the step makes
    (the runtime stage's layers by change frequency). `kind` says what the step does (apt, pip-wheel,
    …): the smoke stack and the real build must have the same kinds in the same order; not in the key."""

    argv: tuple[str, ...]
    mounts: tuple[str, ...] = ()
    workdir: str = ""
    layer: str = ""
    kind: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise TypeError(f"Step argv must be a non-empty list of str, got {self.argv!r}")

    def show(self) -> str:
        import shlex

        return shlex.join(self.argv)


@dataclass(frozen=True)
class Output:
    """`wheels`: the directory `path` is exported to the store. `image`: the stage's container is the
    product, tagged `tag`, with `env` set last (so env changes do not rebuild the layers). `toolchain`:
    both: `path` is exported to the store, and the container is kept as the toolchain image the
    compiling stages run in (tagged by the stage's key, see `toolchain_tag`)."""

    kind: Literal["wheels", "image", "toolchain"]
    path: str = "/out"
    tag: str = ""
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    doc: str
    platform: str
    base: Image
    steps: tuple[Step, ...]
    output: Output
    env: tuple[tuple[str, str], ...] = ()
    inputs: tuple[Input, ...] = ()
    network: bool = True
    # Spec keys (dotted) and values that shaped this stage: shown by `stages`, used to explain rebuilds.
    knobs: tuple[tuple[str, str], ...] = ()
    # --- not part of the key ---
    build_env: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    caches: tuple[Cache, ...] = field(default=(), compare=False)
    secrets: tuple[str, ...] = field(default=(), compare=False)
    # build.yaml's ca_bundle: mounted at CA_BUNDLE in every step (TLS-inspecting proxies); build_env points
    # pip, curl, git and cargo at it. Trust, not content: never part of a key.
    ca_bundle: bool = field(default=False, compare=False)

    @property
    def reads(self) -> tuple[str, ...]:
        """The build.yaml keys this stage's key depends on (besides its inputs: sources, files, upstream
        stages), each once: what `stages` prints and what plan's reasons are made of."""
        keys = (label.split(" ", 1)[0] for label, _ in self.knobs)  # `base.pip_packages ray` -> base.pip_packages
        return tuple(dict.fromkeys(k.split(".env.", 1)[0] + ".env" if ".env." in k else k for k in keys))

    def input(self, name: str) -> Input:
        for i in self.inputs:
            if i.name == name:
                return i
        raise KeyError(name)

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(i.ref for i in self.inputs if i.kind == "stage")

    def validate(self) -> None:
        """Internal consistency: names unique, mounts refer to mount inputs. Raises ValueError."""
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name}: duplicate input names {names}")
        mountable = {i.name for i in self.inputs if i.mode == "mount"}
        for step in self.steps:
            missing = set(step.mounts) - mountable
            if missing:
                raise ValueError(f"stage {self.name}: step {step.show()!r} mounts unknown inputs {missing}")


@dataclass(frozen=True)
class SourceSpec:
    """A source tree a stage builds from: a repository at a ref with PRs and local patches applied,
    or a local git checkout (`source_dir`) at its HEAD. Resolved to commit SHAs by sources.py."""

    name: str
    repo: str
    ref: str
    prs: tuple[int | str, ...] = ()
    patches: tuple[str, ...] | None = None  # None: every *.patch / *.diff in docker-contexts/<name>/patches/
    source_dir: str | None = None
    # vLLM tolerates PR conflicts in these paths (docs, tests); any other conflict fails.
    tolerate_conflicts: tuple[str, ...] = ()


CA_BUNDLE = "/etc/ssl/certs/spark-pipeline-ca.pem"
CA_ENV_NAMES = (
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
)


def toolchain_tag(platform: str, key: str) -> str:
    """The local tag of a toolchain image: named by platform and key, so an arm64 and an amd64 build,
    or two versions of the toolchain, never share a tag."""
    return f"spark-pipeline-toolchain:{platform.split('/')[-1]}-{key[:16]}"


def with_toolchain(stage: Stage, toolchain_key: str) -> Stage:
    """The stage as an engine runs it: a toolchain base gets the tag of the toolchain stage's image."""
    if not stage.base.stage:
        return stage
    return replace(stage, base=replace(stage.base, ref=toolchain_tag(stage.platform, toolchain_key)))

"""base — the toolchain: the CUDA devel image plus everything the compiling stages need, and the
torch family's wheels plus NCCL for the runtime.

Starts from: `base.image` (NVIDIA's CUDA devel image on a Spark: nvcc and CUDA headers, but no
python3, no pip and no host compiler).

Produces: (1) the toolchain image, tagged by this stage's key (`spark-pipeline-toolchain:<arch>-<key>`),
which triton, flashinfer and vllm run in, as the toolkit's `FROM base AS builder` does: the CUDA image
plus `base.apt_packages` (python3, pip, compilers, cuDNN, RDMA), the Rust toolchain and protoc when
vLLM builds a Rust frontend (`base.rust`), and torch, torchvision, torchaudio and `base.pip_packages`
installed; (2) in the store: every wheel `pip download` resolved for those (from `base.torch.index`),
which the runtime stage installs offline, and with `nccl.enabled` NCCL built from source for the GPU
arch as a `.txz` package under `nccl/`. apt's downloaded .debs stay in a cache volume between builds.

Key changes with: base.image, base.apt_packages, base.pip_packages, base.torch.*, base.rust.*, base.env,
gpu_arch (TORCH_CUDA_ARCH_LIST, NCCL gencode), nccl.enabled/repo/ref (the resolved commit), platform,
network.
"""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.core.ir import Input, Output, SourceSpec, Stage, Step
from pipeline.stages import common
from pipeline.stages.images import image_of

NAME = "base"
TORCH_INDEX = "/inputs/torch-index"
RUST_INSTALLER = "/inputs/rust-installer"
RUST_ENV = (("RUSTUP_HOME", "/opt/rustup"), ("CARGO_HOME", "/opt/cargo"))
# Not /out: the compiling stages start from this stage's image and export their own /out. The wheels
# stay in the toolchain image too (it never leaves the build machine; the runtime image installs them
# from the store).
OUT = "/opt/spark-pipeline/base-out"


def is_url(index: str) -> bool:
    return "://" in index and not index.startswith("file://")


def requirements(spec: BuildSpec) -> list[str]:
    t = spec.base.torch
    reqs = [f"torch=={t.version}"]
    reqs += [
        f"{name}=={v}" for name, v in (("torchvision", t.torchvision), ("torchaudio", t.torchaudio)) if v != "none"
    ]
    return reqs + list(spec.base.pip_packages)


def index_args(spec: BuildSpec) -> list[str]:
    index = spec.base.torch.index
    if is_url(index):
        # torch's own dependencies (nvidia-*, sympy, …) come from PyPI, as with the toolkit's uv install.
        return ["--index-url", index, "--extra-index-url", "https://pypi.org/simple"]
    return ["--no-index", "--find-links", TORCH_INDEX]


def rust_enabled(spec: BuildSpec) -> bool:
    """`auto` is resolved from the vLLM tree at plan time (spec.auto); unresolved, it means yes."""
    return spec.base.rust.enabled is not False


def sources(spec: BuildSpec) -> list[SourceSpec]:
    if not spec.nccl.enabled:
        return []
    return [SourceSpec(name="nccl", repo=spec.nccl.repo, ref=spec.nccl.ref)]


def apt_packages(spec: BuildSpec) -> list[str]:
    pkgs = list(spec.base.apt_packages)
    if rust_enabled(spec):
        pkgs += [
            p
            for p in ("curl", "ca-certificates", "pkg-config", "protobuf-compiler", "libprotobuf-dev")
            if p not in pkgs
        ]
    return pkgs


def rust_step(spec: BuildSpec) -> tuple[Step, list[Input]]:
    """rustup's installer (the toolkit's way), a pinned toolchain, the proxies linked onto PATH."""
    installer = spec.base.rust.installer
    inputs: list[Input] = []
    if is_url(installer):
        fetch = 'curl --proto =https -sSf "$1" -o /tmp/rustup-init.sh'
    else:  # a directory holding rustup-init.sh (an input: its content is in the key)
        inputs.append(
            Input(
                name="rust-installer",
                kind="dir",
                ref=installer.removeprefix("file://"),
                path=RUST_INSTALLER,
                mode="mount",
            )
        )
        fetch = f"cp {RUST_INSTALLER}/rustup-init.sh /tmp/rustup-init.sh"
    script = (
        f"{fetch} && sh /tmp/rustup-init.sh -y --no-modify-path --profile minimal "
        '--default-toolchain "$2" && rm /tmp/rustup-init.sh && ln -sf /opt/cargo/bin/* /usr/local/bin/ && '
        "rustc --version && cargo --version && protoc --version"
    )
    mounts = ("rust-installer",) if inputs else ()
    return Step(
        argv=("sh", "-c", script, "sh", installer, spec.base.rust.toolchain), mounts=mounts, kind="rust"
    ), inputs


def steps_and_inputs(spec: BuildSpec) -> tuple[list[Step], list[Input]]:
    inputs: list[Input] = []
    mounts: tuple[str, ...] = ()
    index = spec.base.torch.index
    if not is_url(index):
        inputs.append(
            Input(name="torch-index", kind="dir", ref=index.removeprefix("file://"), path=TORCH_INDEX, mode="mount")
        )
        mounts = ("torch-index",)
    steps = [common.apt_step(apt_packages(spec))]
    if rust_enabled(spec):
        step, extra = rust_step(spec)
        steps.append(step)
        inputs += extra
    reqs = requirements(spec)
    steps += [
        Step(
            argv=("python3", "-m", "pip", "download", "--dest", OUT, *index_args(spec), *reqs),
            mounts=mounts,
            kind="pip-download",
        ),
        Step(argv=("python3", "-m", "pip", "install", "--no-index", "--find-links", OUT, *reqs), kind="pip-install"),
    ]
    if spec.nccl.enabled:
        inputs.append(common.source_input("nccl"))
        src = common.src_path("nccl")
        steps += [
            Step(argv=("make", "-C", src, "src.build", f"NVCC_GENCODE={spec.nccl_gencode}"), kind="make"),
            Step(argv=("make", "-C", src, "pkg.txz.build", f"NVCC_GENCODE={spec.nccl_gencode}"), kind="make"),
            Step(argv=("sh", "-c", f"mkdir -p {OUT}/nccl && cp {src}/build/pkg/txz/*.txz {OUT}/nccl/"), kind="export"),
        ]
    return steps, inputs


def knobs(spec: BuildSpec) -> list[tuple[str, str]]:
    t = spec.base.torch
    out = [
        ("gpu_arch", spec.gpu_arch),
        ("platform", spec.platform),
        ("base.torch.version", t.version),
        ("base.torch.torchvision", t.torchvision),
        ("base.torch.torchaudio", t.torchaudio),
        ("base.torch.index", t.index),
        ("base.rust", spec.base.rust.toolchain if rust_enabled(spec) else "off"),
    ]
    if spec.nccl.enabled:
        out.append(("nccl.gencode", spec.nccl_gencode))
    return [
        *out,
        ("base.python", spec.base.python),
        ("base.glibc", spec.base.glibc),
        *common.list_knobs("base.apt_packages", apt_packages(spec)),
        *common.pip_knobs("base", spec.base.pip_packages),
        *common.env_knobs("base", spec.base.env),
    ]


def stage(spec: BuildSpec) -> Stage:
    steps, inputs = steps_and_inputs(spec)
    env = [*common.COMMON_ENV, ("TORCH_CUDA_ARCH_LIST", spec.torch_arch_list), ("NCCL_NVCC_GENCODE", spec.nccl_gencode)]
    if rust_enabled(spec):
        env += RUST_ENV
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=image_of(spec.base.image, spec.platform),
        env=(*env, *common.env_items(spec.base.env)),
        inputs=tuple(inputs),
        steps=tuple(steps),
        output=Output(kind="toolchain", path=OUT),
        network=spec.base.network if spec.base.network is not None else spec.network,
        knobs=tuple(knobs(spec)),
        build_env=(*common.compile_build_env(spec), *common.ca_env(spec)),
        caches=(*common.compiler_caches(), *common.apt_caches()),
        secrets=tuple(spec.secrets),
        ca_bundle=spec.ca_bundle is not None,
    )

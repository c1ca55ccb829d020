"""base — the PyTorch base: the torch family's wheels (and their dependencies) plus NCCL.

Produces: every wheel that `pip download` resolves for torch, torchvision, torchaudio (unless `none`)
and `base.pip_packages`, from `base.torch.index`, into the store; with `nccl.enabled`, NCCL built
from source for the GPU arch as a `.txz` package under `nccl/`. Every later stage installs these
wheels offline, so the store — not an image layer — is what they share.

Key changes with: base.image, base.apt_packages, base.pip_packages, base.torch.*, base.env, gpu_arch
(TORCH_CUDA_ARCH_LIST, NCCL gencode), nccl.enabled/repo/ref (the resolved commit), platform, network.
"""

from __future__ import annotations

import shlex

from pipeline.core.ir import Input, Output, SourceSpec, Stage, Step
from pipeline.spec.build import BuildSpec
from pipeline.stages import common
from pipeline.stages.images import image_of

NAME = "base"
TORCH_INDEX = "/inputs/torch-index"


def is_url(index: str) -> bool:
    return "://" in index and not index.startswith("file://")


def requirements(spec: BuildSpec) -> list[str]:
    t = spec.base.torch
    reqs = [f"torch=={t.version}"]
    reqs += [f"{name}=={v}" for name, v in (("torchvision", t.torchvision), ("torchaudio", t.torchaudio))
             if v != "none"]
    return reqs + list(spec.base.pip_packages)


def index_args(spec: BuildSpec) -> list[str]:
    index = spec.base.torch.index
    if is_url(index):
        # torch's own dependencies (nvidia-*, sympy, …) come from PyPI, as with the toolkit's uv install.
        return ["--index-url", index, "--extra-index-url", "https://pypi.org/simple"]
    return ["--no-index", "--find-links", TORCH_INDEX]


def sources(spec: BuildSpec) -> list[SourceSpec]:
    if not spec.nccl.enabled:
        return []
    return [SourceSpec(name="nccl", repo=spec.nccl.repo, ref=spec.nccl.ref)]


def stage(spec: BuildSpec) -> Stage:
    inputs: list[Input] = []
    steps: list[Step] = []
    mounts: tuple[str, ...] = ()
    index = spec.base.torch.index
    if not is_url(index):
        inputs.append(Input(name="torch-index", kind="dir", ref=index.removeprefix("file://"),
                            path=TORCH_INDEX, mode="mount"))
        mounts = ("torch-index",)
    if spec.base.apt_packages:
        steps.append(Step(argv=("sh", "-c", "apt-get update && apt-get install -y --no-install-recommends "
                                + shlex.join(spec.base.apt_packages) + " && rm -rf /var/lib/apt/lists/*")))
    steps.append(Step(argv=("python3", "-m", "pip", "download", "--dest", common.OUT,
                            *index_args(spec), *requirements(spec)), mounts=mounts))
    if spec.nccl.enabled:
        inputs.append(common.source_input("nccl"))
        src = common.src_path("nccl")
        steps += [
            Step(argv=("make", "-C", src, "src.build", f"NVCC_GENCODE={spec.nccl_gencode}")),
            Step(argv=("make", "-C", src, "pkg.txz.build", f"NVCC_GENCODE={spec.nccl_gencode}")),
            Step(argv=("sh", "-c", f"mkdir -p {common.OUT}/nccl && cp {src}/build/pkg/txz/*.txz {common.OUT}/nccl/")),
        ]
    knobs = [("gpu_arch", spec.gpu_arch), ("platform", spec.platform),
             ("base.torch.version", spec.base.torch.version),
             ("base.torch.torchvision", spec.base.torch.torchvision),
             ("base.torch.torchaudio", spec.base.torch.torchaudio),
             ("base.torch.index", index)]
    if spec.nccl.enabled:
        knobs.append(("nccl.gencode", spec.nccl_gencode))
    knobs += common.env_knobs("base", spec.base.env)
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=image_of(spec.base.image),
        env=(*common.COMMON_ENV, ("TORCH_CUDA_ARCH_LIST", spec.gpu_arch),
             ("NCCL_NVCC_GENCODE", spec.nccl_gencode), *common.env_items(spec.base.env)),
        inputs=tuple(inputs),
        steps=tuple(steps),
        output=Output(kind="wheels", path=common.OUT),
        network=spec.network,
        knobs=tuple(knobs),
        build_env=common.compile_build_env(spec),
        caches=common.compiler_caches(spec.platform),
        secrets=tuple(spec.secrets),
    )

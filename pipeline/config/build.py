"""build.yaml: what to build. Every knob of the bash toolkit that changes the build has a key here.

Defaults live in the repo's build.yaml (with a why comment each); the model's own defaults are the same
values so that a minimal file works too.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from pipeline.config.types import (
    STRICT,
    AptPackage,
    AutoFlag,
    AutoVersion,
    EnvName,
    EnvValue,
    Flag,
    GitRef,
    GlibcVersion,
    GpuArch,
    ImageRef,
    NonEmptyStr,
    OptionalVersion,
    Package,
    PositiveInt,
    PullRequest,
    PythonMinor,
    RepoUrl,
)
from pipeline.contract import IMAGE


def split_arches(arch_list: str) -> list[str]:
    """`12.1a;12.0f` or `12.1a 12.0f` -> ['12.1a', '12.0f'] (GpuArch accepts either separator)."""
    return [a for a in re.split(r"[;\s]+", arch_list.strip()) if a]


FALLBACK_RUST = "1.91.1"  # a vLLM tree with rust/ but no rust-toolchain.toml


class Bootstrap(BaseModel):
    """A base image the tool makes itself (debootstrap + wheels unpacked, from scratch), keyed by this recipe."""

    model_config = STRICT
    suite: NonEmptyStr = "bookworm"
    include: list[AptPackage] = Field(default_factory=list)
    # Wheels unpacked (not installed: the image need not have python) under /opt/pip-wheels, e.g. nvcc
    # from PyPI for the smoke stack's stand-in of the CUDA devel image.
    unpack: list[Package] = Field(default_factory=list)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


class ImageSpec(BaseModel):
    """Exactly one of `ref` (an image from a registry or the local Docker) or `bootstrap`."""

    model_config = STRICT
    ref: ImageRef | None = None
    bootstrap: Bootstrap | None = None

    @model_validator(mode="after")
    def _one(self) -> ImageSpec:
        if (self.ref is None) == (self.bootstrap is None):
            raise ValueError("expected exactly one of 'ref' or 'bootstrap'")
        return self


def _with_image(v: object) -> object:
    """`image: nvidia/cuda:…` is shorthand for `image: {ref: nvidia/cuda:…}`."""
    if isinstance(v, dict) and isinstance(v.get("image"), str):
        return {**v, "image": {"ref": v["image"]}}
    return v


class TorchSpec(BaseModel):
    """The torch family; `auto` (the default) follows the pins of the vLLM ref being built."""

    model_config = STRICT
    version: AutoVersion = "auto"
    torchvision: OptionalVersion = "auto"
    torchaudio: OptionalVersion = "auto"
    # A package index URL, or a local directory of wheels (tests, air-gapped machines).
    index: NonEmptyStr = "https://download.pytorch.org/whl/cu130"


class NcclSpec(BaseModel):
    model_config = STRICT
    enabled: Flag = True
    repo: RepoUrl = "https://github.com/NVIDIA/nccl.git"
    ref: GitRef = "v2.30u1"


class RustSpec(BaseModel):
    """The Rust toolchain (+ protoc) vLLM's Rust frontend needs, installed into the toolchain image."""

    model_config = STRICT
    # auto: when the vLLM tree being built has a rust/ workspace (vLLM >= 0.26).
    enabled: AutoFlag = "auto"
    # auto: the channel of the vLLM ref's rust-toolchain.toml (1.95 for vLLM 0.34.0), else FALLBACK_RUST;
    # never `stable`, which moves without changing any key. Installed in the toolchain image, not mid-stage.
    toolchain: AutoVersion = "auto"
    # rustup's installer: a URL (fetched in the build container) or a directory holding rustup-init.sh.
    installer: NonEmptyStr = "https://sh.rustup.rs"


class BaseStageSpec(BaseModel):
    model_config = STRICT
    image: ImageSpec = Field(default_factory=lambda: ImageSpec(ref="nvidia/cuda:13.0.2-devel-ubuntu24.04"))
    apt_packages: list[AptPackage] = Field(default_factory=list)
    pip_packages: list[Package] = Field(default_factory=list)
    torch: TorchSpec = Field(default_factory=TorchSpec)
    rust: RustSpec = Field(default_factory=RustSpec)
    # The Python and glibc of base.image and runtime.image: plan resolves every pip install for them
    # (linux/<arch>, manylinux_<glibc>), not for the machine that plans.
    python: PythonMinor = "3.12"
    glibc: GlibcVersion = "2.39"
    # null: the top-level `network`. The smoke stack sets true here: apt reaches Debian's mirror.
    network: Flag | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _image_shorthand(cls, v: object) -> object:
        return _with_image(v)


class TritonSpec(BaseModel):
    model_config = STRICT
    source: Literal["pip", "git"] = "pip"
    repo: RepoUrl = "https://github.com/triton-lang/triton.git"
    ref: GitRef = "v3.6.0"
    wheels: list[NonEmptyStr] = Field(default_factory=lambda: [".", "python/triton_kernels"], min_length=1)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


class FlashInferSpec(BaseModel):
    model_config = STRICT
    repo: RepoUrl = "https://github.com/flashinfer-ai/flashinfer.git"
    ref: GitRef = "auto"  # auto: the v<version> tag of the flashinfer-python the vLLM ref pins
    prs: list[PullRequest] = Field(default_factory=list)
    arch_list: GpuArch | None = None
    cubin_cache: Flag = True
    wheels: list[NonEmptyStr] = Field(
        default_factory=lambda: [".", "flashinfer-cubin", "flashinfer-jit-cache"], min_length=1
    )
    patches: list[NonEmptyStr] | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


class VllmSpec(BaseModel):
    model_config = STRICT
    repo: RepoUrl = "https://github.com/vllm-project/vllm.git"
    ref: GitRef = "main"
    prs: list[PullRequest] = Field(default_factory=list)
    preset_prs: Literal["auto", "apply", "skip"] = "auto"
    presets: list[PullRequest] = Field(default_factory=list)
    patches: list[NonEmptyStr] | None = None
    source_dir: NonEmptyStr | None = None
    # Run in the source tree before the wheel build; docker-contexts/vllm/ is mounted at /inputs/context.
    prepare: list[list[NonEmptyStr]] = Field(default_factory=lambda: [["python3", "/inputs/context/prepare.py"]])
    # Where vLLM's runtime requirements come from: null = the package index (PyPI) over the stage's
    # network; a directory of wheels = offline (air-gapped machines, the smoke stack).
    deps_index: NonEmptyStr | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


class RuntimeSpec(BaseModel):
    model_config = STRICT
    image: ImageSpec = Field(default_factory=lambda: ImageSpec(ref="nvidia/cuda:13.0.2-devel-ubuntu24.04"))
    apt_packages: list[AptPackage] = Field(default_factory=list)
    pip_packages: list[Package] = Field(default_factory=list)
    # A local directory of wheels to install pip_packages from, offline (air-gapped machines, tests).
    pip_index: NonEmptyStr | None = None
    # null: the top-level `network`. The smoke stack sets true here: apt reaches Debian's mirror.
    network: Flag | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    tag: ImageRef = IMAGE

    @model_validator(mode="before")
    @classmethod
    def _image_shorthand(cls, v: object) -> object:
        return _with_image(v)


class BuildSpec(BaseModel):
    model_config = STRICT
    gpu_arch: GpuArch = "12.1a"
    platform: Literal["linux/arm64", "linux/amd64"] = "linux/arm64"
    build_jobs: PositiveInt = 16
    engine: Literal["auto", "dagger", "buildkit"] = "auto"
    network: Flag = True
    secrets: list[EnvName] = Field(default_factory=list)
    # A PEM bundle on this machine that build steps trust for HTTPS (behind a TLS-inspecting proxy:
    # include the proxy's CA and the usual roots). Mounted per step, never in an image layer or a key.
    ca_bundle: NonEmptyStr | None = None
    base: BaseStageSpec = Field(default_factory=BaseStageSpec)
    nccl: NcclSpec = Field(default_factory=NcclSpec)
    triton: TritonSpec = Field(default_factory=TritonSpec)
    flashinfer: FlashInferSpec = Field(default_factory=FlashInferSpec)
    vllm: VllmSpec = Field(default_factory=VllmSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    # A shared store on an OCI registry (oci://HOST[:PORT]/REPO): entries the local store lacks are pulled
    # from it, stages built here are pushed to it. `build --remote-store` overrides it.
    remote_store: NonEmptyStr | None = None
    # Named sets of overrides (KEY.PATH=VALUE, as --set), chosen with `build --profile NAME` or by a
    # recipe's build_args (`--exp-b12x` -> profile exp-b12x). Applied before validation.
    profiles: dict[NonEmptyStr, list[NonEmptyStr]] = Field(default_factory=dict)

    # --- derived knobs -------------------------------------------------------------------------
    @property
    def arches(self) -> list[str]:
        return split_arches(self.gpu_arch)

    @property
    def torch_arch_list(self) -> str:
        """vLLM's and torch's spelling (TORCH_CUDA_ARCH_LIST): `12.1a;12.0f`."""
        return ";".join(self.arches)

    @property
    def flashinfer_arch_list(self) -> str:
        """FlashInfer's spelling (FLASHINFER_CUDA_ARCH_LIST): split on spaces, `12.1a 12.0f` (a `;` makes
        its `major, minor = arch.split('.')` fail)."""
        chosen = self.flashinfer.arch_list or self.gpu_arch
        return " ".join(split_arches(chosen))

    def compiler_archs(self) -> dict[str, str]:
        """What each compiler receives for gpu_arch, in its own spelling (shown by `stages` and `plan`)."""
        out = {
            "vllm TORCH_CUDA_ARCH_LIST": self.torch_arch_list,
            "flashinfer FLASHINFER_CUDA_ARCH_LIST": self.flashinfer_arch_list,
        }
        if self.nccl.enabled:
            out["nccl NVCC_GENCODE"] = self.nccl_gencode
        return out

    @property
    def nccl_gencode(self) -> str:
        """The toolkit's rule: drop the a/f suffix and the dot (12.1a -> compute_121/sm_121)."""
        parts = []
        for arch in self.arches:
            num = arch.rstrip("af").replace(".", "")
            parts.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        return " ".join(dict.fromkeys(parts))

    def vllm_prs(self) -> list[int | str]:
        """The PRs to apply to vLLM: the union of `prs` and, when the preset policy says so, `presets`."""
        apply_presets = {
            "apply": True,
            "skip": False,
            "auto": not self.vllm.prs and self.vllm.ref == "main" and self.vllm.source_dir is None,
        }[self.vllm.preset_prs]
        chosen = list(self.vllm.presets) + list(self.vllm.prs) if apply_presets else list(self.vllm.prs)
        return list(dict.fromkeys(chosen))

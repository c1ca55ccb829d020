"""vllm — vLLM built from source at any ref, with upstream PRs and local patches applied.

Starts from: the toolchain image (base: torch, compilers, Rust + protoc), with the triton and
flashinfer stages' wheels installed.

Produces: the vLLM wheel, compiled for TORCH_CUDA_ARCH_LIST = gpu_arch against the toolchain's torch,
the triton stage's Triton and the flashinfer stage's FlashInfer, and under deps/ vLLM's runtime
requirements (transformers, fastapi, openai, …) resolved against those and downloaded, so the runtime
image installs them offline. Before the build, the `vllm.prepare` commands run in the source tree:
docker-contexts/vllm/prepare.py keeps the toolchain's torch, drops the FlashInfer pins and installs the
build requirements, for every layout vLLM has had (0.11's root script and requirements/build.txt, the
2026-04 requirements/build/, 2026-10's tools/use_existing_torch.py), and docker-contexts/vllm/cuda_archs.py
adds gpu_arch to vLLM's CUDA_SUPPORTED_ARCHS where the tree's CMake would filter it down (12.1a -> 12.0
in vLLM 0.33/0.34). After the compile, check_gpu_code.py reads the wheel's shared libraries with
cuobjdump and fails the stage when code for gpu_arch is missing; what it found is gpu-code.json, beside
the wheel, and a label of the runtime image.

Sources: `vllm.repo` at `vllm.ref`, or a clean local checkout (`vllm.source_dir`) at its HEAD; then the
PRs (`vllm.prs`, plus `vllm.presets` as `vllm.preset_prs` decides) merged the toolkit's way, conflicts
tolerated only in tests/, docs/, *.md, *.rst; then docker-contexts/vllm/patches/.

Key changes with: the resolved vLLM commit, each PR's head commit, each patch's content, vllm.prepare,
vllm.env, gpu_arch, the base, triton and flashinfer stages' keys, platform, network.
"""

from __future__ import annotations

import shlex

from pipeline.config.build import BuildSpec
from pipeline.core.ir import Input, Output, SourceSpec, Stage, Step
from pipeline.stages import common
from pipeline.stages.images import toolchain_of

NAME = "vllm"
TOLERATED = ("tests/*", "docs/*", "*.md", "*.rst")


def sources(spec: BuildSpec) -> list[SourceSpec]:
    v = spec.vllm
    return [
        SourceSpec(
            name="vllm",
            repo=v.repo,
            ref=v.ref,
            prs=tuple(spec.vllm_prs()),
            patches=tuple(v.patches) if v.patches is not None else None,
            source_dir=v.source_dir,
            tolerate_conflicts=TOLERATED,
        )
    ]


CONTEXT = "/inputs/context"
DEPS_INDEX = "/inputs/deps-index"


def deps_step(spec: BuildSpec) -> tuple[Step, list[Input]]:
    """vLLM's runtime requirements into <out>/deps, constrained to our own torch, Triton and FlashInfer."""
    inputs: list[Input] = []
    args: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ("context", "base", "triton", "flashinfer")
    if spec.vllm.deps_index is not None:
        inputs.append(Input(name="deps-index", kind="dir", ref=spec.vllm.deps_index, path=DEPS_INDEX))
        args = ("--no-index", "--find-links", DEPS_INDEX)
        mounts += ("deps-index",)
    return Step(
        argv=("python3", f"{CONTEXT}/runtime_deps.py", common.OUT, *args), mounts=mounts, kind="runtime-deps"
    ), inputs


def rust_env(spec: BuildSpec) -> tuple[tuple[str, str], ...]:
    """The toolchain base installed, never another: without these, the tree's rust-toolchain.toml makes
    rustup download a toolchain mid-stage that no key records."""
    if spec.base.rust.enabled is False:
        return ()
    return (("RUSTUP_TOOLCHAIN", spec.base.rust.toolchain), ("RUSTUP_AUTO_INSTALL", "0"))


def stage(spec: BuildSpec) -> Stage:
    src = common.src_path("vllm")
    steps = [common.install_wheels("triton", "flashinfer", deps=False)]
    steps += [Step(argv=tuple(cmd), workdir=src, mounts=("context",), kind="prepare") for cmd in spec.vllm.prepare]
    steps.append(common.pip_wheel(src))
    # The wheel's own GPU code, read back: a CMake filter upstream can never ship sm_120 for 12.1a silently.
    steps.append(
        Step(argv=("python3", f"{CONTEXT}/check_gpu_code.py", common.OUT), mounts=("context",), kind="gpu-code-check")
    )
    deps, extra = deps_step(spec)
    steps.append(deps)
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=toolchain_of("base"),
        env=(
            *common.COMMON_ENV,
            ("TORCH_CUDA_ARCH_LIST", spec.torch_arch_list),
            ("VLLM_TARGET_DEVICE", "cuda"),
            *rust_env(spec),
            *common.env_items(spec.vllm.env),
        ),
        inputs=(
            common.stage_input("base"),
            common.stage_input("triton"),
            common.stage_input("flashinfer"),
            common.source_input("vllm"),
            common.context_input("vllm", CONTEXT),
            *extra,
        ),
        steps=tuple(steps),
        output=Output(kind="wheels", path=common.OUT),
        network=spec.network,
        knobs=(
            ("gpu_arch", spec.gpu_arch),
            ("vllm.preset_prs", spec.vllm.preset_prs),
            *common.list_knobs("vllm.prepare", [shlex.join(cmd) for cmd in spec.vllm.prepare]),
            ("platform", spec.platform),
            *common.env_knobs("vllm", spec.vllm.env),
        ),
        build_env=(*common.compile_build_env(spec), *common.CCACHE_ENV, *common.ca_env(spec)),
        caches=common.compiler_caches(),
        secrets=tuple(spec.secrets),
        ca_bundle=spec.ca_bundle is not None,
    )

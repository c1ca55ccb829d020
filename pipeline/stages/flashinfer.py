"""flashinfer — FlashInfer built from source: flashinfer-python, flashinfer-cubin, flashinfer-jit-cache.

Starts from: the toolchain image (base), with the triton stage's wheels installed.

Produces: one wheel per directory in `flashinfer.wheels`, built against the toolchain's torch with
FLASHINFER_CUDA_ARCH_LIST = `flashinfer.arch_list` (default: gpu_arch). The tree comes with its git
submodules (3rdparty/cutlass, spdlog, …) at the commits FlashInfer records: flashinfer-python ships
their headers. `flashinfer.ref: auto` builds the release the vLLM ref pins.

Cubin cache (toolkit §1.4, our form): with `flashinfer.cubin_cache`, a persistent cache volume is
mounted over flashinfer-cubin's download directory. FlashInfer's downloader (0.7.2) keeps the cubins
that are there with a valid checksum and drops every file of other pins (and its .lock files) before
the wheel is packed; docker-contexts/flashinfer/patches/0001-reuse-verified-cubin-manifests.patch
makes it keep the pins' checksums.txt too, so a rebuild downloads nothing it has (tested with
FlashInfer's own code on a loopback artifactory). The cache is never part of the key: the cubins'
content is pinned by the checksums in the source tree.

Key changes with: flashinfer.repo/ref/prs (resolved commits), its patches' contents, arch_list /
gpu_arch, flashinfer.wheels, flashinfer.env, the triton and base stages' keys, platform, network.
"""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.core.ir import Cache, Output, SourceSpec, Stage
from pipeline.stages import common
from pipeline.stages.images import toolchain_of

NAME = "flashinfer"
CUBIN_SUBDIR = "flashinfer-cubin"
CUBIN_DIR = f"{common.src_path('flashinfer')}/{CUBIN_SUBDIR}/flashinfer_cubin/cubins"


def sources(spec: BuildSpec) -> list[SourceSpec]:
    fi = spec.flashinfer
    return [
        SourceSpec(
            name="flashinfer",
            repo=fi.repo,
            ref=fi.ref,
            prs=tuple(fi.prs),
            patches=tuple(fi.patches) if fi.patches is not None else None,
        )
    ]


def stage(spec: BuildSpec) -> Stage:
    fi = spec.flashinfer
    src = common.src_path("flashinfer")
    caches = common.compiler_caches()
    if fi.cubin_cache and CUBIN_SUBDIR in fi.wheels:
        caches += (Cache(name="flashinfer-cubins", path=CUBIN_DIR, sharing="locked"),)
    steps = [common.install_wheels("triton", deps=False)]
    steps += [common.pip_wheel(src if sub in (".", "") else f"{src}/{sub}") for sub in fi.wheels]
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=toolchain_of("base"),
        # FLASHINFER_BUILD_NO_PIP: FlashInfer >= 0.7.4's build hooks pip-install nvcc, NCCL and nixl wheels
        # themselves unless told not to; what a build installs comes from the plan's resolved set only.
        env=(
            *common.COMMON_ENV,
            ("TORCH_CUDA_ARCH_LIST", spec.torch_arch_list),
            ("FLASHINFER_CUDA_ARCH_LIST", spec.flashinfer_arch_list),
            ("FLASHINFER_BUILD_NO_PIP", "1"),
            *common.env_items(fi.env),
        ),
        inputs=(common.stage_input("base"), common.stage_input("triton"), common.source_input("flashinfer")),
        steps=tuple(steps),
        output=Output(kind="wheels", path=common.OUT),
        network=spec.network,
        knobs=(
            ("gpu_arch", spec.gpu_arch),
            ("flashinfer.arch_list", spec.flashinfer_arch_list),
            ("flashinfer.wheels", ",".join(fi.wheels)),
            ("platform", spec.platform),
            *common.env_knobs("flashinfer", fi.env),
        ),
        build_env=(*common.compile_build_env(spec), *common.CCACHE_ENV, *common.ca_env(spec)),
        caches=caches,
        secrets=tuple(spec.secrets),
        ca_bundle=spec.ca_bundle is not None,
    )

"""triton — the Triton wheel(s) every later stage and the runtime use.

Produces: with `triton.source: pip`, the Triton wheel that torch pins, taken from the base stage's
download (so Triton always matches torch); with `triton.source: git`, wheels built from source at
`triton.ref` for each directory in `triton.wheels` (the toolkit's January build: triton +
triton_kernels), after the build requirements each directory's pyproject.toml names
(docker-contexts/triton/build_requires.py).

Starts from: the toolchain image (base).

Key changes with: triton.source; for git: triton.repo/ref (the resolved commit), triton.wheels,
triton.env, gpu_arch; the base stage's key (torch is built against); platform, network.
"""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.core.ir import Output, SourceSpec, Stage, Step
from pipeline.stages import common
from pipeline.stages.images import toolchain_of

NAME = "triton"
CONTEXT = "/inputs/context"


def sources(spec: BuildSpec) -> list[SourceSpec]:
    if spec.triton.source != "git":
        return []
    return [SourceSpec(name="triton", repo=spec.triton.repo, ref=spec.triton.ref)]


def stage(spec: BuildSpec) -> Stage:
    inputs = [common.stage_input("base")]
    env: list[tuple[str, str]] = [*common.COMMON_ENV, ("TORCH_CUDA_ARCH_LIST", spec.gpu_arch)]
    knobs: list[tuple[str, str]] = [("triton.source", spec.triton.source), ("platform", spec.platform)]
    if spec.triton.source == "pip":
        steps = [
            Step(
                argv=(
                    "sh",
                    "-c",
                    f"mkdir -p {common.OUT} && cp {common.wheels_path('base')}/triton-*.whl {common.OUT}/",
                ),
                mounts=("base",),
                kind="export",
            )
        ]
    else:
        inputs.append(common.source_input("triton"))
        env += [("TRITON_BUILD_WITH_CCACHE", "true"), *common.env_items(spec.triton.env)]
        src = common.src_path("triton")
        dirs = [src if sub in (".", "") else f"{src}/{sub}" for sub in spec.triton.wheels]
        inputs.append(common.context_input("triton", CONTEXT))
        # Triton's pyproject names its build requirements (pybind11, cmake, ninja): --no-build-isolation
        # installs none of them, so they are installed first.
        steps = [Step(argv=("python3", f"{CONTEXT}/build_requires.py", *dirs), mounts=("context",), kind="prepare")]
        steps += [common.pip_wheel(d) for d in dirs]
        knobs += [
            ("gpu_arch", spec.gpu_arch),
            ("triton.wheels", ",".join(spec.triton.wheels)),
            *common.env_knobs("triton", spec.triton.env),
        ]
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=toolchain_of("base"),
        env=tuple(env),
        inputs=tuple(inputs),
        steps=tuple(steps),
        output=Output(kind="wheels", path=common.OUT),
        network=spec.network,
        knobs=tuple(knobs),
        build_env=(*common.compile_build_env(spec), *common.CCACHE_ENV, *common.ca_env(spec)),
        caches=common.compiler_caches(),
        secrets=tuple(spec.secrets),
        ca_bundle=spec.ca_bundle is not None,
    )

"""runtime — the image that runs vLLM, layered by how often each part changes.

Starts from: `runtime.image` (NVIDIA's CUDA image: no python3 until `runtime.apt_packages` installs it).

Produces: a container image tagged `runtime.tag` (default vllm-node), one layer per change frequency:
OS packages (`runtime.apt_packages`), torch (+ NCCL), runtime extras (`runtime.pip_packages`, e.g. ray),
Triton + FlashInfer, vLLM's requirements, vLLM, then scripts (docker-contexts/runtime/) and build
metadata. Its last steps import torch, triton, flashinfer and vllm, and check that FlashInfer's kernel
packages (flashinfer-cubin, flashinfer-jit-cache: what `vllm download-kernels` would fetch) are there at
flashinfer-python's version: an image that fails either is never tagged. Wheels are
bind-mounted from the store while they install, never copied into a layer, so a vLLM bump changes only
the last layers and a node that has the previous image receives only those bytes. `runtime.env` is
set last, so changing it rebuilds no layer.

Key changes with: runtime.image, runtime.apt_packages, runtime.pip_packages, runtime.env, the contents
of docker-contexts/runtime/, every upstream stage's key, gpu_arch, nccl.enabled, platform, network.
"""

from __future__ import annotations

from pipeline.config.build import BuildSpec
from pipeline.core.ir import Input, Output, Stage, Step
from pipeline.stages import common
from pipeline.stages.images import image_of

NAME = "runtime"
WORKDIR = "/workspace/vllm"
SCRIPTS_DIR = "docker-contexts/runtime"
METADATA = "/workspace/build-metadata.json"
IMPORT_CHECK = (
    "import torch, triton, flashinfer, vllm; "
    "print('import check: torch', torch.__version__, 'vllm', getattr(vllm, '__version__', '?'))"
)
# FlashInfer's kernel packages at flashinfer-python's own version: what vLLM (>= 0.32) checks at startup
# before it tells a node to run `vllm download-kernels`, which an offline node cannot. $1.. name them.
KERNEL_CHECK = """import sys
from importlib.metadata import PackageNotFoundError, version
want = version("flashinfer-python")
bad = []
for name in sys.argv[1:]:
    try:
        got = version(name)
    except PackageNotFoundError:
        got = "missing"
    if got != want:
        bad.append(f"{name} {got}")
if bad:
    sys.exit(f"FlashInfer kernels: {', '.join(bad)} but flashinfer-python is {want}: a node would have to "
             "download them (vllm download-kernels)")
print("kernels:", ", ".join(f"{n} {want}" for n in sys.argv[1:]), "= flashinfer-python", want)
"""
KERNEL_PACKAGES = {"flashinfer-cubin": "flashinfer-cubin", "flashinfer-jit-cache": "flashinfer-jit-cache"}


def stage(spec: BuildSpec) -> Stage:
    rt = spec.runtime
    steps: list[Step] = []
    apt = list(rt.apt_packages)
    if spec.nccl.enabled and "xz-utils" not in apt:
        apt.append("xz-utils")  # NCCL's package is a .txz; the CUDA image need not have xz
    if apt:
        steps.append(common.apt_step(apt, layer="os"))
    steps.append(common.install_wheels("base", layer="torch"))
    if spec.nccl.enabled:
        # The custom NCCL replaces the one pip brought, as the toolkit does (multi-node hangs, vllm#42354).
        steps.append(
            Step(
                argv=(
                    "sh",
                    "-c",
                    "mkdir -p /opt/nccl && for f in /wheels/base/nccl/*.txz; do "
                    'tar -xJf "$f" -C /opt/nccl --strip-components=1; done && '
                    "echo /opt/nccl/lib > /etc/ld.so.conf.d/nccl.conf && ldconfig && "
                    'for lib in $(python3 -c \'import glob,site;print(" ".join(glob.glob('
                    'site.getsitepackages()[0]+"/nvidia/nccl/lib/libnccl.so.2")))\'); do '
                    'ln -sf /opt/nccl/lib/libnccl.so.2 "$lib"; done',
                ),
                mounts=("base",),
                layer="torch",
                kind="nccl-install",
            )
        )
    extra_inputs: list[Input] = []
    if rt.pip_packages and rt.pip_index:
        extra_inputs.append(Input(name="pip-index", kind="dir", ref=rt.pip_index, path="/inputs/pip-index"))
        steps.append(
            Step(
                argv=(
                    "python3",
                    "-m",
                    "pip",
                    "install",
                    "--no-cache-dir",
                    "--no-index",
                    "--find-links",
                    "/inputs/pip-index",
                    *rt.pip_packages,
                ),
                mounts=("pip-index",),
                layer="extras",
                kind="pip-install",
            )
        )
    elif rt.pip_packages:
        steps.append(
            Step(
                argv=("python3", "-m", "pip", "install", "--no-cache-dir", *rt.pip_packages),
                layer="extras",
                kind="pip-install",
            )
        )
    steps.append(common.install_wheels("triton", "flashinfer", deps=False, layer="triton-flashinfer"))
    # vLLM's runtime requirements, resolved and downloaded by the vllm stage: installed offline.
    steps.append(
        Step(
            argv=(
                "python3",
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                "--no-index",
                "--find-links",
                "/wheels/vllm/deps",
                "-r",
                "/wheels/vllm/deps/requirements.txt",
            ),
            mounts=("vllm",),
            layer="vllm-deps",
            kind="pip-install",
        )
    )
    steps.append(common.install_wheels("vllm", deps=False, layer="vllm"))
    steps.append(
        Step(
            argv=("sh", "-c", f"mkdir -p {WORKDIR} && cp -a /inputs/scripts/. /workspace/"),
            mounts=("scripts",),
            layer="scripts",
            kind="scripts",
        )
    )
    # A broken image is never tagged: everything the server imports first must import.
    steps.append(Step(argv=("python3", "-c", IMPORT_CHECK), layer="check", kind="import-check"))
    kernels = [KERNEL_PACKAGES[w] for w in spec.flashinfer.wheels if w in KERNEL_PACKAGES]
    if kernels:
        steps.append(Step(argv=("python3", "-c", KERNEL_CHECK, *kernels), layer="check", kind="import-check"))
    out_env = (
        ("TORCH_CUDA_ARCH_LIST", spec.torch_arch_list),
        ("FLASHINFER_CUDA_ARCH_LIST", spec.flashinfer_arch_list),
        ("VLLM_BASE_DIR", WORKDIR),
        *common.env_items(rt.env),
    )
    return Stage(
        name=NAME,
        doc=__doc__ or "",
        platform=spec.platform,
        base=image_of(rt.image, spec.platform),
        env=common.COMMON_ENV,
        inputs=(
            common.stage_input("base"),
            common.stage_input("triton"),
            common.stage_input("flashinfer"),
            common.stage_input("vllm"),
            Input(name="scripts", kind="dir", ref=SCRIPTS_DIR, path="/inputs/scripts", mode="mount"),
            *extra_inputs,
        ),
        steps=tuple(steps),
        output=Output(kind="image", path=METADATA, tag=rt.tag, env=out_env, workdir=WORKDIR),
        network=rt.network if rt.network is not None else spec.network,
        caches=common.apt_caches(),
        # runtime.tag is a name for the result, not part of it: a build under another tag reuses the image
        knobs=(
            ("gpu_arch", spec.gpu_arch),
            ("platform", spec.platform),
            *common.list_knobs("runtime.apt_packages", apt),
            *common.pip_knobs("runtime", rt.pip_packages),
            *common.env_knobs("runtime", rt.env),
        ),
        build_env=common.ca_env(spec),
        secrets=tuple(spec.secrets),
        ca_bundle=spec.ca_bundle is not None,
    )

"""Benchmark: cold, warm no-change and vLLM-change build times of the smoke stack, each next to the
same work done the toolkit's way (one multi-stage Dockerfile, `docker build`, BuildKit cache).

    python bench/build.py           # needs a running Docker daemon (examples/smoke/setup.sh)
    python bench/build.py --small   # tiny sources, one warm run: what the test runs so it cannot rot

Targets (issue: BuildKit engine): the no-change build ≤ 1 s and ≥ 3× faster than the cached
`docker build`. The toolkit's Dockerfile here is generated from the same stages (same base image,
same steps), with upstream wheels passed between stages by `--mount=type=bind,from=<stage>` instead of
our artifact store, so the comparison is about the mechanism, not the work.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from examples.smoke import fixtures  # noqa: E402
from pipeline import paths  # noqa: E402
from pipeline.config import load_build  # noqa: E402
from pipeline.engines.buildkit import context_path, dockerfile  # noqa: E402
from pipeline.engines.docker import Docker  # noqa: E402
from pipeline.resolution import resolve  # noqa: E402
from pipeline.sources.checkout import checkout  # noqa: E402
from pipeline.sources.mirror import Mirrors  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def toolkit_context(build_yaml: Path, cache: Path, ctx: Path) -> None:
    """One context + one multi-stage Dockerfile doing what our stages do, the toolkit's way."""
    loaded = load_build(build_yaml)
    res = resolve(loaded, Mirrors(cache))
    parts = []
    ctx.mkdir(parents=True, exist_ok=True)
    for stage in res.stages:
        if stage.base.stage:  # built on an upstream stage's toolchain: one stage of the same Dockerfile here
            stage = dataclasses.replace(stage, base=dataclasses.replace(stage.base, ref=stage.base.stage))
        text = dockerfile(stage, "toolkit")
        text = text.replace(" AS stage", f" AS {stage.name}").replace("--from=stage", f"--from={stage.name}")
        text = text.replace("AS export", f"AS {stage.name}-export")
        for up in stage.upstream:
            text = text.replace(f"source=inputs/{up},", f"from={up}-export,")
        for inp in stage.inputs:
            where = context_path(stage, inp.name)
            if inp.kind == "dir":  # each stage has its own (its part of the resolved set, its context)
                own = f"{where}-{stage.name}"
                text = text.replace(f"COPY {where} ", f"COPY {own} ").replace(f"source={where},", f"source={own},")
                where = own
            if (ctx / where).exists() or inp.kind == "stage":
                continue
            if inp.kind == "source":
                shutil.copytree(checkout(res.sources[inp.ref], cache), ctx / where)
            elif (found := paths.input_dir(loaded.root, inp.ref)) is not None and found.exists():  # as the builder
                shutil.copytree(found, ctx / where)
            else:
                (ctx / where).mkdir(parents=True)
        text = re.sub(r"(?m)^ARG (\w+)$", lambda m: f"ARG {m[1]}=2", text)
        if stage.output.kind == "image":  # the metadata file our builder writes; the same bytes here
            (ctx / "meta").mkdir(exist_ok=True)
            (ctx / "meta" / "build-metadata.json").write_text("{}\n")
        parts.append(text)
    (ctx / "Dockerfile").write_text("\n".join(parts))


def run(label: str, filler_mb: int, repeat: int = 3) -> None:
    docker = Docker().binary
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_yaml = fixtures.generate(root / "smoke")
        if filler_mb:
            # vLLM's real source tree is ~60 MB in ~4,000 files: the toolkit's docker build must send and
            # checksum it on every run, ours only resolves a commit.
            per = 16 * 1024
            files = {
                f"vllm/filler/m{i // 100}/f{i}.py": f"# {i}\n" + "x = 1\n" * (per // 6)
                for i in range(filler_mb * 1024 * 1024 // per)
            }
            fixtures.commit(root / "smoke" / "repos" / "vllm", files, "vLLM-sized tree")
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        os.environ["SPARK_PIPELINE_CACHE_NAMESPACE"] = ns + "-toolkit"  # fresh cache ids for the toolkit's RUNs too
        env = {
            **os.environ,
            "SPARK_PIPELINE_CACHE": str(root / "cache"),
            "PYTHONPATH": str(REPO),
            "SPARK_PIPELINE_CACHE_NAMESPACE": ns,
            "DOCKER_BUILDKIT": "1",
        }
        ours = [sys.executable, "-m", "pipeline", "build", "-f", str(build_yaml)]
        ctx = root / "toolkit"
        toolkit_context(build_yaml, root / "cache", ctx)  # same sources as ours, before either changes
        # The base image is made once by either way; make it first so neither pays for it.
        timed(ours, env)
        shutil.rmtree(root / "cache" / "store")
        env["SPARK_PIPELINE_CACHE_NAMESPACE"] = ns + "-2"
        ours_cold = timed(ours, env)
        ours_warm = min(timed(ours, env) for _ in range(repeat))
        fixtures.commit(root / "smoke" / "repos" / "vllm", {"vllm/bench.py": "B = 1\n"}, "vllm moved")
        ours_vllm = timed(ours, env)

        tk = [docker, "build", "-t", f"toolkit-smoke:{ns}", str(ctx)]  # default network: apt as in ours
        tk_cold = timed([*tk[:2], "--no-cache", *tk[2:]], env)
        tk_warm = min(timed(tk, env) for _ in range(repeat))
        (ctx / "src" / "src-vllm" / "vllm" / "bench.py").write_text("B = 1\n")  # the same vLLM change
        tk_vllm = timed(tk, env)
        subprocess.run([docker, "rmi", f"toolkit-smoke:{ns}"], capture_output=True, check=False)

    print(f"\n{label}")
    print(f"{'':28}{'spark-pipeline':>16}{'toolkit way':>14}{'speed-up':>10}")
    for name, a, b in (
        ("cold build", ours_cold, tk_cold),
        ("warm, nothing changed", ours_warm, tk_warm),
        ("vLLM changed", ours_vllm, tk_vllm),
    ):
        print(f"{name:28}{a:>14.2f} s{b:>12.2f} s{b / a:>9.1f}×")


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-mb", type=int, default=60, help="size of the vLLM-sized variant's source tree")
    ap.add_argument("--small", action="store_true", help="tiny sources only, one warm run (the test's mode)")
    args = ap.parse_args()
    Docker().check_daemon()
    run("smoke stack, tiny fixture sources", 0, repeat=1 if args.small else 3)
    if not args.small:
        run(f"smoke stack, vLLM source tree padded to {args.vllm_mb} MB", args.vllm_mb)
    print("\ntargets: no-change build ≤ 1 s and ≥ 3× faster than the cached docker build")


if __name__ == "__main__":
    main()

"""The five mods the recipes use, run the way deploy runs them (a copy of the mod directory as the
working directory, WORKSPACE_DIR set, `sh run.sh`), against file trees shaped like an installed vLLM,
Triton and torch. Each test checks what the mod changes, and that running it twice changes nothing more."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest

from tests.conftest import REPO

MODS = REPO / "mods"
ARG_UTILS = """
import argparse
from dataclasses import dataclass, fields


@dataclass
class EngineArgs:
    model: str = "m"
    gpu_memory_utilization: float = 0.9

    @staticmethod
    def add_cli_args(parser):
        parser.add_argument("--model", default="m")
        parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
        return parser

    @classmethod
    def from_cli_args(cls, args):
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


class AsyncEngineArgs(EngineArgs):
    @staticmethod
    def add_cli_args(parser, async_args_only=False):
        return EngineArgs.add_cli_args(parser)
"""
LOADER = """
from dataclasses import dataclass

CALLS = []


class Loader:
    def __init__(self, load_config):
        self.load_config = load_config

    def load_model(self, vllm_config, model_config):
        CALLS.append((model_config.model, self.load_config.load_format))
        return model_config.model


def get_model_loader(load_config):
    return Loader(load_config)


def get_model(*, vllm_config, model_config=None):
    model_config = model_config or vllm_config.model_config
    return get_model_loader(vllm_config.load_config).load_model(vllm_config=vllm_config, model_config=model_config)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """site-packages with a vLLM-, Triton- and torch-shaped package."""
    s = tmp_path / "site-packages"
    files = {
        "vllm/__init__.py": "",
        "vllm/engine/__init__.py": "",
        "vllm/engine/arg_utils.py": ARG_UTILS,
        "vllm/model_executor/__init__.py": "",
        "vllm/model_executor/model_loader/__init__.py": LOADER,
        "triton/__init__.py": "ALLOCATOR = None\n\ndef set_allocator(fn):\n    global ALLOCATOR\n    ALLOCATOR = fn\n",
        "torch/__init__.py": (
            "int8 = 'int8'\n\ndef empty(size, dtype, device):\n    return ('tensor', size, dtype, device)\n"
        ),
    }
    for rel, text in files.items():
        (s / rel).parent.mkdir(parents=True, exist_ok=True)
        (s / rel).write_text(textwrap.dedent(text))
    return s


def env_for(site: Path, tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    ws = tmp_path / "workspace"
    ws.mkdir(exist_ok=True)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "WORKSPACE_DIR": str(ws),
        "HOME": str(tmp_path),
    }


def run_mod(name: str, site: Path, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """As deploy does: the mod's directory copied (symlinks followed) and run.sh run inside it."""
    work = tmp_path / "mods" / name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(MODS / name, work)
    proc = subprocess.run(["sh", "run.sh"], cwd=work, env=env_for(site, tmp_path), capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def python_in(site: Path, tmp_path: Path, code: str, **extra: str) -> str:
    """A new interpreter in which `site` is a site directory (its .pth files run, as in the container)."""
    prog = f"import site; site.addsitedir({str(site)!r})\n" + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", prog], env={**env_for(site, tmp_path), **extra}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_gpu_mem_util_gb_turns_gib_into_the_fraction(site: Path, tmp_path: Path) -> None:
    out = run_mod("gpu-mem-util-gb", site, tmp_path).stdout
    assert "spark_gpu_mem_gb: installed in" in out
    assert (site / "spark_gpu_mem_gb.pth").read_text().strip() == "import spark_gpu_mem_gb"
    code = """
        import argparse
        from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
        p = AsyncEngineArgs.add_cli_args(argparse.ArgumentParser())
        a = AsyncEngineArgs.from_cli_args(p.parse_args(["--gpu-memory-utilization-gb", "96"]))
        b = EngineArgs.from_cli_args(EngineArgs.add_cli_args(argparse.ArgumentParser()).parse_args([]))
        print(type(a).__name__, a.gpu_memory_utilization, b.gpu_memory_utilization)
    """
    out = python_in(site, tmp_path, code, SPARK_GPU_TOTAL_BYTES=str(128 << 30))
    assert out.splitlines()[-1] == "AsyncEngineArgs 0.75 0.9"
    assert "96.0 GiB -> --gpu-memory-utilization 0.75" in out
    run_mod("gpu-mem-util-gb", site, tmp_path)  # idempotent: still one flag, same result
    again = python_in(site, tmp_path, code, SPARK_GPU_TOTAL_BYTES=str(128 << 30))
    assert again.splitlines()[-1] == out.splitlines()[-1]
    too_much = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import site; site.addsitedir({str(site)!r})\n"
            "import argparse\nfrom vllm.engine.arg_utils import EngineArgs as E\n"
            "E.from_cli_args(E.add_cli_args(argparse.ArgumentParser()).parse_args("
            "['--gpu-memory-utilization-gb', '200']))",
        ],
        env={**env_for(site, tmp_path), "SPARK_GPU_TOTAL_BYTES": str(128 << 30)},
        capture_output=True,
        text=True,
    )
    assert "is more than the device's 128.0 GiB" in too_much.stderr


def test_draft_loader_switches_only_the_draft_and_only_for_instanttensor(site: Path, tmp_path: Path) -> None:
    run_mod("instanttensor-hybrid-draft-loader", site, tmp_path)
    code = """
        from types import SimpleNamespace as NS
        from dataclasses import dataclass
        @dataclass
        class Load:
            load_format: str
        from vllm.model_executor import model_loader as ml
        for fmt in ("instanttensor", "safetensors"):
            target, draft = NS(model="target"), NS(model="draft")
            cfg = NS(model_config=target, load_config=Load(fmt))
            ml.get_model(vllm_config=cfg)
            ml.get_model(vllm_config=cfg, model_config=draft)
        print(ml.CALLS)
    """
    calls = python_in(site, tmp_path, code).splitlines()[-1]
    assert calls == str(
        [("target", "instanttensor"), ("draft", "safetensors"), ("target", "safetensors"), ("draft", "safetensors")]
    )
    off = python_in(site, tmp_path, code, INSTANTTENSOR_DRAFT_LOADER="off").splitlines()[-1]
    assert off.startswith("[('target', 'instanttensor'), ('draft', 'instanttensor')")


def test_qwen3_coder_next_gives_triton_torch_s_allocator(site: Path, tmp_path: Path) -> None:
    run_mod("fix-qwen3-coder-next", site, tmp_path)
    run_mod("fix-qwen3-coder-next", site, tmp_path)
    out = python_in(site, tmp_path, "import triton\nprint(triton.ALLOCATOR(4096, 128, None))")
    assert out.strip() == "('tensor', 4096, 'int8', 'cuda')"
    assert sorted(p.name for p in site.glob("*.pth")) == ["spark_triton_alloc.pth"]


def test_a_hook_mod_without_its_package_fails_clearly(tmp_path: Path) -> None:
    empty = tmp_path / "empty-site"
    empty.mkdir()
    proc = run_mod("gpu-mem-util-gb", empty, tmp_path, check=False)
    assert proc.returncode == 1 and "vllm is not installed in this container's python3" in proc.stderr


def test_diffusiongemma_checks_support_then_writes_its_template(site: Path, tmp_path: Path) -> None:
    proc = run_mod("diffusiongemma", site, tmp_path, check=False)
    assert proc.returncode == 1 and "no DiffusionGemma support" in proc.stderr
    assert "model_executor/models/diffusion_gemma.py" in proc.stderr
    models = site / "vllm/model_executor/models"
    models.mkdir(parents=True)
    (models / "diffusion_gemma.py").write_text("class DiffusionGemmaForConditionalGeneration:\n    pass\n")
    (models / "registry.py").write_text('_MODELS = {"DiffusionGemmaForBlockDiffusion": ("diffusion_gemma", "X")}\n')
    (site / "vllm/transformers_utils").mkdir()
    (site / "vllm/transformers_utils/config.py").write_text('_CONFIGS = {"diffusion_gemma": None}\n')
    assert "serves DiffusionGemma" in run_mod("diffusiongemma", site, tmp_path).stdout
    template = (tmp_path / "workspace/diffusiongemma.jinja").read_text()
    text = jinja2.Template(template).render(
        bos_token="<bos>",
        add_generation_prompt=True,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_qwen35_template_renders_tools_calls_results_and_thinking(site: Path, tmp_path: Path) -> None:
    run_mod("fix-qwen3.5-chat-template", site, tmp_path)
    env = jinja2.Environment()
    env.filters["tojson"] = lambda v: json.dumps(v)
    t = env.from_string((tmp_path / "workspace/qwen3.5.jinja").read_text())
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    msgs = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "old thought",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "21C"},
        {"role": "user", "content": "And now?"},
    ]
    text = t.render(messages=msgs, tools=tools, add_generation_prompt=True, enable_thinking=False)
    assert text.startswith("<|im_start|>system\nYou help.\n\n# Tools") and '"name": "weather"' in text
    assert '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert (
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n21C\n</tool_response>"
        "<|im_end|>" in text
    )
    assert "old thought" not in text  # reasoning before the last user turn is dropped
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert os.path.exists(tmp_path / "workspace/qwen3.5.jinja")

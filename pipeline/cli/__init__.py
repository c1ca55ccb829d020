"""The command line: `python -m pipeline <command>`. One module per command group.

Commands are imported when they run, not when the tool starts (a lazy click group), so `--help` and a
`plan` do not pay for Fabric, paramiko or dagger-io. Errors reach the user here and only here: each
class of `pipeline.errors` maps to its exit code, with a located message and no traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from pipeline import __version__

# command -> (module, attribute, one-line help shown by `--help` without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "plan": (
        "pipeline.cli.build",
        "plan",
        "Show each stage, its key, whether the store has it, and why it must rebuild.",
    ),
    "build": ("pipeline.cli.build", "build", "Build the stages the store lacks, then the runtime image."),
    "stages": ("pipeline.cli.build", "stages", "What each stage produces and which build.yaml knobs change its key."),
    "store": (
        "pipeline.cli.store",
        "store",
        "The artifact store: list entries, make room, share them through an OCI registry.",
    ),
    "doctor": (
        "pipeline.cli.nodes",
        "doctor",
        "Check every node: SSH, Docker, disk, GPU, RoCE links, interfaces, image.",
    ),
    "ship": ("pipeline.cli.nodes", "ship", "Put the image on every node (only the layers a node lacks)."),
    "cluster": ("pipeline.cli.nodes", "cluster", "cluster.yaml helpers (import the toolkit's .env)."),
    "deploy": (
        "pipeline.cli.deploy",
        "deploy",
        "Ship the image, start the cluster, run the command, wait until it answers.",
    ),
    "stop": ("pipeline.cli.deploy", "stop", "Remove the deployment's container on every node."),
    "status": ("pipeline.cli.deploy", "status", "Per node: container, image, role, exit status, health."),
    "logs": ("pipeline.cli.deploy", "logs", "The container log of one node."),
    "exec": ("pipeline.cli.deploy", "exec_", "Run a command in the deployment's container."),
    "recipe": ("pipeline.cli.recipe", "recipe", "Model presets: list them, show what one runs, run one."),
    "model": (
        "pipeline.cli.model",
        "model",
        "Hugging Face models: download once, copy to the nodes that lack them, list per node.",
    ),
    "bench": ("pipeline.cli.bench", "bench", "Benchmark a served model with llama-benchy; list and compare results."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="spark-pipeline")
@click.option("--debug", is_flag=True, help="Show tracebacks (also SPARK_PIPELINE_DEBUG=1).")
def cli(debug: bool) -> None:
    """Build vLLM from source for NVIDIA DGX Spark (GB10, sm_121a, aarch64, CUDA 13), and run it.

    \b
    What to build is declared in build.yaml (see `stages` for what each stage produces); every
    stage is content-addressed: its key is the hash of everything that defines it, its wheels are
    kept in the artifact store, and a stage whose key is in the store is never rebuilt.

    \b
    Typical use:
      python -m pipeline plan                 # keys, cached or not, and why
      python -m pipeline build --gpu-arch 12.1a
      dagger run python -m pipeline build     # the same stages as Dagger pipelines
    """
    if debug:
        os.environ["SPARK_PIPELINE_DEBUG"] = "1"


def _debug() -> bool:
    return os.environ.get("SPARK_PIPELINE_DEBUG", "") not in ("", "0")


def report_error(exc: BaseException) -> int:
    """Print what went wrong the way its class says, and return the exit code (one place for both)."""
    from rich.markup import escape

    from pipeline.cli.console import console
    from pipeline.errors import PipelineError, exit_code

    code = exit_code(exc)
    if isinstance(exc, KeyboardInterrupt):
        console.print("[red]interrupted[/red]")
    elif isinstance(exc, PipelineError):
        if _debug():
            console.print_exception()
        lines = str(exc).splitlines() or [type(exc).__name__]
        console.print(f"[red]error:[/red] {escape(lines[0])}", soft_wrap=True)
        for line in lines[1:]:
            console.print(f"  {escape(line)}", soft_wrap=True)
    else:
        console.print_exception()
        console.print(
            "[red]internal error[/red]: this is a bug in spark-pipeline; please report it with the traceback above."
        )
    return code


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="python -m pipeline", standalone_mode=False)
    except click.exceptions.Abort:  # click's form of Ctrl-C (and of EOF at a prompt)
        sys.exit(report_error(KeyboardInterrupt()))
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:  # a path that is a directory, a device, unwritable …: located, not a bug
        if _debug() and not _is_pipeline_error(e):
            raise
        sys.exit(report_error(_located(e)))
    except Exception as e:  # every error reaches the user through report_error, with its exit code
        if _debug() and not _is_pipeline_error(e):
            raise
        sys.exit(report_error(e))
    except KeyboardInterrupt as e:
        sys.exit(report_error(e))


def _located(e: OSError) -> BaseException:
    """An OSError that names a file is the machine's answer about a path the user gave (a directory where a
    file belongs, no permission, a full disk): said with the path, exit 2. Without a filename it is ours."""
    from pipeline.errors import FileRefused

    if e.filename is None or _is_pipeline_error(e):
        return e
    what = e.strerror or type(e).__name__
    where = f"{e.filename} -> {e.filename2}" if e.filename2 else str(e.filename)
    return FileRefused(f"{where}: {what}")


def _is_pipeline_error(e: Any) -> bool:
    from pipeline.errors import PipelineError

    return isinstance(e, PipelineError)

"""The command line: `python -m pipeline <command>`. One module per command group."""

from __future__ import annotations

import os
import sys

import click
from rich.markup import escape

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.ui import console


def _debug() -> bool:
    return os.environ.get("SPARK_PIPELINE_DEBUG", "") not in ("", "0")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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


def _register() -> None:
    from pipeline.cli import build as build_cmds
    from pipeline.cli import deploy as deploy_cmds
    from pipeline.cli import nodes as node_cmds
    from pipeline.cli import store as store_cmds

    build_cmds.register(cli)
    store_cmds.register(cli)
    node_cmds.register(cli)
    deploy_cmds.register(cli)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="python -m pipeline", standalone_mode=False)
    except click.exceptions.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except PipelineError as e:
        if _debug():
            console.print_exception()
        lines = str(e).splitlines() or [type(e).__name__]
        console.print(f"[red]error:[/red] {escape(lines[0])}", soft_wrap=True)
        for line in lines[1:]:
            console.print(f"  {escape(line)}", soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception:
        if _debug():
            raise
        console.print_exception()
        console.print("[red]internal error[/red]: this is a bug in spark-pipeline; please report it "
                      "with the traceback above.")
        sys.exit(70)

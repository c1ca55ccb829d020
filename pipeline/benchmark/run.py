"""Run llama-benchy against an endpoint and keep what it measured. I/O.

llama-benchy would download two things on its own: the tokenizer (from the Hugging Face hub, by model
name) and a book to cut prompts from (Project Gutenberg). We hand it local files instead: the tokenizer
of the model in the Hugging Face cache (`model download` put it there) or a path, and the corpus through
a one-file HTTP server on loopback (llama-benchy only reads a URL). It runs with HF_HUB_OFFLINE=1, so a
missing tokenizer is an error here, never a download.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import paths
from pipeline.benchmark.chart import write_png
from pipeline.benchmark.profiles import BenchArgs, llama_benchy_argv
from pipeline.benchmark.results import Record, Startup, rows_of, table_md
from pipeline.contract import CONTAINER
from pipeline.errors import BenchFailed, ConfigError

GUTENBERG = "https://www.gutenberg.org/files/1661/1661-0.txt"  # llama-benchy's own default book


def local_tokenizer(model: str, given: Path | None) -> Path:
    if given is not None:
        if not given.exists():
            raise ConfigError(f"tokenizer {given}: no such file or directory")
        return given
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ConfigError(
            f"model {model}: not in the Hugging Face cache, so there is no tokenizer to count "
            f"tokens with; run `python -m pipeline model download {model}` or give "
            "-b tokenizer=PATH"
        ) from None
    if (snap / "tokenizer.json").exists():
        return snap / "tokenizer.json"
    if (snap / "tokenizer_config.json").exists():
        return snap
    raise ConfigError(f"model {model}: its snapshot {snap} has no tokenizer.json; give -b tokenizer=PATH")


@contextmanager
def corpus_url(corpus: Path | None) -> Iterator[str]:
    """A loopback URL serving `corpus` (named by its hash, so llama-benchy's URL-keyed cache never serves
    a stale text), or llama-benchy's default book when none is given."""
    if corpus is None:
        yield GUTENBERG
        return
    if not corpus.is_file():
        raise ConfigError(f"corpus {corpus}: no such file")
    data = corpus.read_bytes()
    path = f"/corpus/{hashlib.sha256(data).hexdigest()[:16]}.txt"

    class One(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == path
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(data) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(data)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), One)
    t = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )  # shutdown waits one poll
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}{path}"
    finally:
        srv.shutdown()
        srv.server_close()


# llama-benchy takes its API key as --api-key only: this starts it with the key appended to its sys.argv
# from the environment, so the key is in no process's command line (`ps` on a shared machine).
WITH_KEY = (
    "import os, runpy, sys; key = os.environ.pop('SPARK_PIPELINE_BENCH_KEY', ''); "
    "sys.argv = ['llama-benchy', *sys.argv[1:], *(['--api-key', key] if key else [])]; "
    "runpy.run_module('llama_benchy', run_name='__main__', alter_sys=True)"
)


def last_startup(base_url: str) -> Startup | None:
    """How the default deployment last started (`deploy` keeps it), when it serves `base_url`'s port."""
    try:
        found = Startup.model_validate_json(paths.startup_file(CONTAINER).read_text()[:65536])
    except (OSError, ValueError):
        return None
    return found if urlsplit(found.url).port == urlsplit(base_url).port else None


def api_key() -> str:
    """The server's API key: VLLM_API_KEY here, else the one `deploy --api-key auto` made for the default
    deployment ('' when neither: a server without a key)."""
    if os.environ.get("VLLM_API_KEY"):
        return os.environ["VLLM_API_KEY"]
    try:
        return paths.api_key_file(CONTAINER).read_text().strip()
    except OSError:
        return ""


def run_llama_benchy(argv: list[str], timeout: float, on_line: Callable[[str], None]) -> None:
    """llama-benchy with argv; the server's API key (VLLM_API_KEY in this environment, as deploy reads
    it) goes with it, never on a command line."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "SPARK_PIPELINE_BENCH_KEY": api_key(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WITH_KEY, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-19:], line.rstrip()]
            on_line(line.rstrip())
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if rc != 0:
        why = f"stopped after {timeout:.0f} s (--timeout)" if rc < 0 else f"exited {rc}"
        raise BenchFailed("llama-benchy " + why + ":\n  " + "\n  ".join(tail))


def benchmark(
    args: BenchArgs,
    *,
    base_url: str,
    model: str,
    served_name: str,
    tokenizer: Path,
    corpus: Path | None,
    results: Path,
    key: dict[str, str | int],
    timeout: float,
    on_line: Callable[[str], None],
    startup: Startup | None = None,
) -> tuple[Record, Path]:
    """Run, then write the record's directory whole (record.json, table.md, chart.png, llama-benchy.json)."""
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results.mkdir(parents=True, exist_ok=True)
    work = results / f".run-{started}-{os.getpid()}"
    work.mkdir()
    raw = work / "llama-benchy.json"
    t0 = time.monotonic()
    with corpus_url(corpus) as book:
        argv = llama_benchy_argv(
            args,
            base_url=base_url,
            model=model,
            served_name=served_name,
            tokenizer=str(tokenizer),
            book_url=book,
            result_file=str(raw),
        )
        run_llama_benchy(argv, timeout, on_line)
    report = json.loads(raw.read_text())
    record = Record(
        build_key=str(key["build_key"]),
        recipe=str(key["recipe"]),
        nodes=int(key["nodes"]),
        model=model,
        profile=args.profile,
        endpoint=base_url,
        started=started,
        seconds=round(time.monotonic() - t0, 1),
        llama_benchy=str(report.get("version", "")),
        rows=rows_of(report),
        startup=startup,
    )
    if not record.rows:
        raise BenchFailed(f"llama-benchy wrote no results (see {raw})")
    (work / "record.json").write_text(record.model_dump_json(indent=2) + "\n")
    (work / "table.md").write_text(table_md(record))
    write_png(record, work / "chart.png")
    dest = results / record.dirname()
    if not dest.resolve().is_relative_to(results.resolve()):
        raise BenchFailed(f"results for {record.recipe!r} would land outside {results}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work.replace(dest)
    return record, dest


def load_records(results: Path) -> list[tuple[Record, Path]]:
    out = []
    for f in sorted(results.glob("**/record.json")):
        try:
            out.append((Record.model_validate_json(f.read_text()), f.parent))
        except ValueError:
            continue
    return out


def find_record(results: Path, which: str) -> tuple[Record, Path]:
    """A record by directory, or the newest whose build key starts with `which` or whose recipe is it."""
    p = Path(which)
    if (p / "record.json").is_file():
        return Record.model_validate_json((p / "record.json").read_text()), p
    hits = [(r, d) for r, d in load_records(results) if r.build_key.startswith(which) or r.recipe == which]
    if not hits:
        raise ConfigError(
            f"bench compare: no result matches {which!r} under {results} "
            "(a result directory, a build key prefix or a recipe name; `bench ls` lists them)"
        )
    return max(hits, key=lambda h: h[0].started)

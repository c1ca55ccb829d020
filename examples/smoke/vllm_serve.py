"""SMOKE-STACK FIXTURE: the vLLM fixture's `vllm serve`. It speaks the OpenAI API the way vLLM does
(/health, /v1/models, /v1/completions, /v1/chat/completions with streaming, usage and token ids) so that
deploy, `bench` and llama-benchy run against it, but it is no model: its "tokens" are whitespace-separated
words and its replies are words drawn from a fixed list, seeded by the prompt, so the same request always
gets the same answer. It knows exactly one fact (llama-benchy's coherence question). It paces itself
(SMOKE_PREFILL_TPS, SMOKE_DECODE_TPS; decoding slows as the context grows) so a benchmark has something
to measure. Standard library only: it runs in the smoke runtime image, whose python3 has nothing else.

Like vLLM with HF_HUB_OFFLINE=1, it looks for the model's snapshot in the Hugging Face cache and logs
what it found; unlike vLLM it serves without one.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

WORDS = [
    "the",
    "spark",
    "runs",
    "a",
    "model",
    "on",
    "one",
    "node",
    "or",
    "many",
    "and",
    "tokens",
    "flow",
    "through",
    "network",
    "while",
    "kernels",
    "compute",
    "every",
    "layer",
    "of",
    "transformer",
    "in",
    "order",
]
FACTS = {"capital of france": "Paris."}


def log(msg: str) -> None:
    print(f"(smoke vllm) {msg}", flush=True)


def tokens(text: str) -> list[str]:
    return text.split()


def reply(prompt: str, max_tokens: int) -> list[str]:
    for question, answer in FACTS.items():
        if question in prompt.lower():
            return tokens(answer)[:max_tokens]
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    return [WORDS[(seed + i * 7) % len(WORDS)] for i in range(max_tokens)]


def snapshot_of(model: str) -> Path | None:
    if Path(model).is_dir():
        return Path(model)
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snaps = home / "hub" / f"models--{model.replace('/', '--')}" / "snapshots"
    found = sorted(p for p in snaps.glob("*") if p.is_dir()) if snaps.is_dir() else []
    return found[0] if found else None


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model = args.model
        self.name = args.served_model_name or args.model
        self.max_model_len = args.max_model_len
        self.api_key = args.api_key or os.environ.get("VLLM_API_KEY", "")
        self.prefill = float(os.environ.get("SMOKE_PREFILL_TPS", "20000"))
        self.decode = float(os.environ.get("SMOKE_DECODE_TPS", "400"))

    def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.name,
                    "object": "model",
                    "root": self.model,
                    "owned_by": "vllm",
                    "max_model_len": self.max_model_len,
                }
            ],
        }

    def prompt_of(self, body: dict[str, Any], chat: bool) -> str:
        if not chat:
            p = body.get("prompt", "")
            return " ".join(p) if isinstance(p, list) else str(p)
        parts = []
        for m in body.get("messages", []):
            c = m.get("content", "")
            text = " ".join(x.get("text", "") for x in c if isinstance(x, dict)) if isinstance(c, list) else str(c)
            parts.append(text)
        return " ".join(parts)

    def complete(self, handler: Handler, body: dict[str, Any], chat: bool) -> None:
        prompt = self.prompt_of(body, chat)
        n_prompt = len(tokens(prompt))
        if n_prompt + 1 > self.max_model_len:
            handler.send_json(
                400,
                {
                    "object": "error",
                    "type": "BadRequestError",
                    "message": f"This model's maximum context length is {self.max_model_len} tokens.",
                },
            )
            return
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        out = reply(prompt, max(1, min(max_tokens, self.max_model_len - n_prompt)))
        time.sleep(n_prompt / self.prefill)
        # like a real server, decoding slows as the context grows (attention reads every cached token)
        decode = self.decode / (1 + n_prompt / 16384)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        usage = {"prompt_tokens": n_prompt, "completion_tokens": len(out), "total_tokens": n_prompt + len(out)}
        kind = "chat.completion" if chat else "text_completion"
        finish = "stop" if len(out) < max_tokens else "length"
        if not body.get("stream"):
            time.sleep(len(out) / decode)
            text = " ".join(out)
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": text}} if chat else {"index": 0, "text": text}
            )
            handler.send_json(
                200,
                {
                    "id": rid,
                    "object": kind,
                    "created": int(time.time()),
                    "model": self.name,
                    "choices": [{**choice, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return
        handler.start_stream()
        for i, word in enumerate(out):
            time.sleep(1 / decode)
            text = word if i == 0 else f" {word}"
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            if body.get("return_token_ids"):
                choice["token_ids"] = [WORDS.index(word) if word in WORDS else 0]
            last = i == len(out) - 1
            choice["finish_reason"] = finish if last else None
            handler.event({"id": rid, "object": f"{kind}.chunk", "model": self.name, "choices": [choice]})
        if (body.get("stream_options") or {}).get("include_usage"):
            handler.event({"id": rid, "object": f"{kind}.chunk", "model": self.name, "choices": [], "usage": usage})
        handler.send_raw(b"data: [DONE]\n\n")


class Handler(http.server.BaseHTTPRequestHandler):
    server_state: Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def send_json(self, code: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def event(self, doc: dict[str, Any]) -> None:
        self.send_raw(f"data: {json.dumps(doc)}\n\n".encode())

    def send_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def refused(self) -> bool:
        """As vLLM: with an API key (--api-key or VLLM_API_KEY), every /v1 route wants it as a Bearer token."""
        key = self.server_state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.send_json(401, {"error": "Unauthorized"})
            return True
        return False

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.refused():
            return
        elif self.path in ("/v1/models", "/models"):
            self.send_json(200, self.server_state.models())
        else:
            self.send_json(404, {"object": "error", "message": f"no route {self.path}"})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        except ValueError:
            self.send_json(400, {"object": "error", "type": "BadRequestError", "message": "body is not JSON"})
            return
        if self.refused():
            return
        if self.path.rstrip("/") in ("/v1/chat/completions", "/v1/completions"):
            self.server_state.complete(self, body, chat="chat" in self.path)
        else:
            self.send_json(404, {"object": "error", "message": f"no route {self.path}"})

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


def warm_up(spec: str) -> None:
    """vLLM's start, in vLLM's own log words: loading the weight shards, then compiling and capturing
    graphs, then the API server. SMOKE_START_SECONDS="weights=3,compile=2" makes each phase take that
    long (a deploy's phased wait is tested against it); by default they pass at once."""
    took = {
        k: float(v) for k, _, v in (p.partition("=") for p in spec.split(",") if p) if v.replace(".", "", 1).isdigit()
    }
    log("Starting to load model (the fixture has no weights to load)")
    shards = 3
    for i in range(shards + 1):
        log(f"Loading safetensors checkpoint shards: {100 * i // shards}% Completed | {i}/{shards}")
        if i < shards:
            time.sleep(took.get("weights", 0) / shards)
    log(f"Loading weights took {took.get('weights', 0):.2f} seconds")
    log("Capturing CUDA graphs (decode, FULL): the fixture captures none")
    time.sleep(took.get("compile", 0))
    log(f"Graph capturing finished in {took.get('compile', 0):.0f} secs")
    log("Starting vLLM API server 0")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "serve":
        sys.exit("the smoke stack's vllm fixture only implements `vllm serve MODEL`")
    p = argparse.ArgumentParser(prog="vllm serve")
    p.add_argument("model")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--api-key", default="")
    args, ignored = p.parse_known_args(argv[1:])
    snap = snapshot_of(args.model)
    log(
        f"model files: {snap} ({sum(1 for f in snap.rglob('*') if f.is_file())} files)"
        if snap
        else f"model files: none for {args.model} in the Hugging Face cache (the fixture serves anyway)"
    )
    if ignored:
        log(f"accepted and ignored: {' '.join(ignored)}")
    warm_up(os.environ.get("SMOKE_START_SECONDS", ""))
    Handler.server_state = Server(args)
    srv = http.server.ThreadingHTTPServer((args.host, args.port), Handler)
    log(f"serving {Handler.server_state.name} on http://{args.host}:{args.port}")
    srv.serve_forever()


if __name__ == "__main__":
    main()

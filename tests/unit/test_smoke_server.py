"""The smoke stack's `vllm serve` fixture speaks the OpenAI API the way llama-benchy and deploy use it:
health, models, completions and chat completions, streamed or not, deterministic."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from examples.smoke import vllm_serve


def serve(api_key: str = "") -> tuple[http.server.ThreadingHTTPServer, str]:
    args = vllm_serve.argparse.Namespace(
        model="spark-pipeline/smoke-tiny", served_model_name=None, max_model_len=64, api_key=api_key
    )
    vllm_serve.Handler.server_state = vllm_serve.Server(args)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), vllm_serve.Handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SMOKE_DECODE_TPS", "100000")
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    srv, base = serve()
    yield base
    srv.shutdown()
    srv.server_close()


def test_with_a_key_every_v1_route_wants_it_and_health_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "k3y")  # as vLLM, from the environment when --api-key is not given
    srv, url = serve()
    try:
        assert urllib.request.urlopen(url + "/health", timeout=5).status == 200
        assert post(url, "/v1/completions", {"prompt": "a", "max_tokens": 1})[0] == 401
        req = urllib.request.Request(url + "/v1/models", headers={"Authorization": "Bearer k3y"})
        assert urllib.request.urlopen(req, timeout=5).status == 200
    finally:
        srv.shutdown()
        srv.server_close()


def post(url: str, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_health_and_models(url: str) -> None:
    assert urllib.request.urlopen(url + "/health", timeout=5).status == 200
    models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=5).read())
    assert models["data"][0]["id"] == "spark-pipeline/smoke-tiny" and models["data"][0]["max_model_len"] == 64


def test_chat_is_deterministic_and_counts_tokens(url: str) -> None:
    body = {"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 5}
    a, b = (json.loads(post(url, "/v1/chat/completions", body)[1]) for _ in range(2))
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    paris = json.loads(
        post(
            url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
        )[1]
    )
    assert paris["choices"][0]["message"]["content"] == "Paris." and paris["choices"][0]["finish_reason"] == "stop"


def test_streamed_chat_sends_token_ids_and_usage_then_done(url: str) -> None:
    code, raw = post(
        url,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "hi there"}],
            "max_tokens": 3,
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert code == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [len(c["choices"][0]["token_ids"]) for c in chunks[:3]] == [1, 1, 1]
    assert chunks[2]["choices"][0]["finish_reason"] == "length" and chunks[3]["usage"]["completion_tokens"] == 3


def test_completions_and_the_context_limit(url: str) -> None:
    done = json.loads(post(url, "/v1/completions", {"prompt": "a b c", "max_tokens": 2})[1])
    assert done["object"] == "text_completion" and len(done["choices"][0]["text"].split()) == 2
    code, raw = post(url, "/v1/completions", {"prompt": "word " * 100})
    assert code == 400 and b"maximum context length is 64" in raw

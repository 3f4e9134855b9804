"""The real engine on its own: what the gateway sits in front of in test_gateway_llama.py.

Pins down the upstream behaviour the gateway relies on: non-streamed chat completions carry
exact `usage`; streamed ones carry none (even with stream_options.include_usage), which is
what forces the gateway's "count it yourself, mark it estimated" path.
"""

from __future__ import annotations

import json

import httpx
import pytest

from engine_procs import MODEL_ALIAS

pytestmark = pytest.mark.engine


def chat(base_url: str, content: str, **extra) -> httpx.Response:
    body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": content}],
            "max_tokens": 8, "temperature": 0.0, **extra}
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=60)


def sse_payloads(text: str) -> list[str]:
    return [line[len("data:"):].strip() for line in text.splitlines() if line.startswith("data:")]


def test_models_lists_the_alias(llama_server: str) -> None:
    resp = httpx.get(f"{llama_server}/models", timeout=10)
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["data"]] == [MODEL_ALIAS]


def test_chat_completion_has_exact_usage(llama_server: str) -> None:
    resp = chat(llama_server, "hello")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    usage = body["usage"]
    assert usage["prompt_tokens"] > len("hello")  # template + the 5 bytes of "hello"
    # llama-cpp-python may run up to 3 byte tokens past max_tokens to finish a UTF-8 character
    # (seen here: max_tokens 8 -> 10 completion tokens); the gateway must bill what it reports.
    assert 1 <= usage["completion_tokens"] <= 8 + 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompt_tokens_are_one_per_byte(llama_server: str) -> None:
    # The vocabulary is bytes only, so 10 more ASCII bytes are exactly 10 more prompt tokens:
    # proof that usage is really counted by the engine, not made up.
    short = chat(llama_server, "a" * 10).json()["usage"]["prompt_tokens"]
    long = chat(llama_server, "a" * 20).json()["usage"]["prompt_tokens"]
    assert long - short == 10


def test_stream_has_content_and_no_usage_chunk(llama_server: str) -> None:
    resp = chat(llama_server, "hello", stream=True, stream_options={"include_usage": True})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(resp.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    n_content = sum(1 for d in deltas if d.get("content"))
    assert 1 <= n_content <= 8 + 3  # see the UTF-8 overrun note above
    # llama-cpp-python never reports usage on streams: the gateway must estimate it.
    assert all(c.get("usage") is None for c in chunks)

"""Bad input -> OpenAI-style JSON errors naming the field; unknown names."""

from __future__ import annotations

import httpx
import pytest

from tokenomy.emulator import EmulatorConfig, build_app
from tokenomy.errors import TokenomyError, UnknownNameError

MSG = [{"role": "user", "content": "hi"}]


async def _post(base_url: str, path: str, content: bytes | None = None, json: object = None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base_url}{path}", content=content, json=json,
                               headers={"content-type": "application/json"})


def _error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/chat/completions", {"messages": MSG}, "model", "model"),
        ("/chat/completions", {"model": "llama-3-8b"}, "messages", "messages"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": []}, "messages", "messages"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": "hi"}, "messages", "messages"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": [{"content": "x"}]}, "messages[0].role", "role"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": [{"role": "bot", "content": "x"}]},
         "messages[0].role", "role"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content", "content"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "max_tokens": "ten"}, "max_tokens", "integer"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "max_tokens": 0}, "max_tokens", ">= 1"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "max_completion_tokens": 1.5},
         "max_completion_tokens", "integer"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "n": 129}, "n", "Expected a value <= 128"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "n": "2"}, "n", "integer"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "stream": "yes"}, "stream", "boolean"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "temperature": "hot"}, "temperature", "number"),
        ("/chat/completions", {"model": "llama-3-8b", "messages": MSG, "stream_options": {"include_usage": 1}},
         "stream_options.include_usage", "boolean"),
        ("/completions", {"model": "llama-3-8b"}, "prompt", "prompt"),
        ("/completions", {"model": "llama-3-8b", "prompt": {"a": 1}}, "prompt", "prompt"),
        ("/completions", {"model": "llama-3-8b", "prompt": ["a", "b"]}, "prompt", "batched"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(emu, path: str, body: dict, param: str, words: str) -> None:
    base_url, _ = emu
    r = await _post(base_url, path, json=body)
    assert r.status_code == 400
    err = _error(r)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert words in err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
async def test_bad_json_is_400(emu, raw: bytes) -> None:
    base_url, _ = emu
    r = await _post(base_url, "/chat/completions", content=raw)
    assert r.status_code == 400
    assert _error(r)["code"] == "invalid_json"


async def test_unknown_model_is_404(emu) -> None:
    base_url, _ = emu
    r = await _post(base_url, "/chat/completions", json={"model": "gpt-9", "messages": MSG})
    assert r.status_code == 404
    err = _error(r)
    assert err["code"] == "model_not_found" and "gpt-9" in err["message"]


async def test_unknown_route_is_json_404(emu) -> None:
    base_url, _ = emu
    r = await _post(base_url, "/images/generations", json={})
    assert r.status_code == 404
    assert _error(r)["code"] == "not_found"


async def test_embeddings_bad_input_is_an_openai_400(emu) -> None:
    base_url, _ = emu
    r = await _post(base_url, "/embeddings", json={})
    assert r.status_code == 400 and _error(r)["param"] == "model"
    r = await _post(base_url, "/embeddings", json={"model": "llama-3-8b", "input": ""})
    assert r.status_code == 400 and (_error(r)["param"], _error(r)["code"]) == ("input", "invalid_value")
    r = await _post(base_url, "/embeddings", json={"model": "llama-3-8b", "input": "x", "dimensions": 1537})
    assert r.status_code == 400 and _error(r)["param"] == "dimensions"
    r = await _post(base_url, "/embeddings", json={"model": "llama-3-8b", "input": "word " * 9000})
    assert r.status_code == 400 and _error(r)["code"] == "context_length_exceeded"
    r = await _post(base_url, "/embeddings", json={"model": "gpt-9", "input": "x"})
    assert r.status_code == 404 and _error(r)["code"] == "model_not_found"


async def test_body_size_limit_is_413(make_emulator) -> None:
    async with make_emulator(max_body_bytes=4096) as (base_url, _):
        r = await _post(base_url, "/chat/completions",
                        json={"model": "llama-3-8b", "messages": [{"role": "user", "content": "x" * 10_000}]})
    assert r.status_code == 413
    assert "too large" in _error(r)["message"]


def test_unknown_catalog_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_app(EmulatorConfig(model="lama-3-8b"))
    assert "llama-3-8b" in str(info.value)
    with pytest.raises(UnknownNameError):
        build_app(EmulatorConfig(accelerator="h1000"))
    with pytest.raises(TokenomyError):  # does not fit
        build_app(EmulatorConfig(model="llama-3-70b", accelerator="l4"))

"""OpenAI-compatible surface: chat and completions (stream and not), usage, models, health."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tokenomy.emulator.textgen import OUTPUT_TOKENS_PERCENTILES
from tokenomy.tokens import count_chat_tokens, count_tokens

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Explain continuous batching in one paragraph."}]


async def test_chat_non_stream_usage_exact(emu) -> None:
    _, client = emu
    r = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=5)
    assert r.object == "chat.completion"
    assert r.model == "llama-3-8b"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "length"  # the shortest natural output in the trace is 7 tokens
    assert r.usage.prompt_tokens == count_chat_tokens(MESSAGES)
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5
    # the synthetic text tokenizes back to exactly the reported count
    assert count_tokens(choice.message.content) == 5


async def test_chat_stops_naturally_and_is_deterministic(emu) -> None:
    _, client = emu
    a = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4000)
    b = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=4000)
    assert a.choices[0].finish_reason == "stop"
    n = a.usage.completion_tokens
    assert OUTPUT_TOKENS_PERCENTILES[0] <= n <= OUTPUT_TOKENS_PERCENTILES[-1]
    assert count_tokens(a.choices[0].message.content) == n
    assert b.choices[0].message.content == a.choices[0].message.content
    other = await client.chat.completions.create(
        model="llama-3-8b", messages=[{"role": "user", "content": "Something else entirely."}], max_tokens=4000)
    assert other.choices[0].message.content != a.choices[0].message.content


async def test_max_completion_tokens_wins(emu) -> None:
    _, client = emu
    r = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_completion_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


async def test_output_lengths_follow_the_trace_distribution(emu) -> None:
    _, client = emu
    lengths = []
    for i in range(40):
        r = await client.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": f"question number {i}"}], max_tokens=4000)
        lengths.append(r.usage.completion_tokens)
    lengths.sort()
    median = lengths[len(lengths) // 2]
    assert 60 <= median <= 300  # trace median: 129
    assert len(set(lengths)) > 20


async def test_chat_stream_with_usage_chunk(emu) -> None:
    _, client = emu
    whole = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=12)
    stream = await client.chat.completions.create(
        model="llama-3-8b", messages=MESSAGES, max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    pieces, finish, usage, roles = [], None, None, []
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert roles == ["assistant"]
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == len(pieces) == 12
    assert usage.prompt_tokens == count_chat_tokens(MESSAGES)
    assert "".join(pieces) == whole.choices[0].message.content


async def test_chat_stream_without_usage(emu) -> None:
    base_url, _ = emu
    body = {"model": "llama-3-8b", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{base_url}/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [orjson.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in c for c in chunks)
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) == 4
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["x_energy_joules"] > 0


async def test_completions_non_stream_and_stream(emu) -> None:
    _, client = emu
    prompt = "The cheapest way to serve a language model is"
    r = await client.completions.create(model="llama-3-8b", prompt=prompt, max_tokens=7)
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == count_tokens(prompt)
    assert r.usage.completion_tokens == 7 == count_tokens(r.choices[0].text)
    stream = await client.completions.create(model="llama-3-8b", prompt=prompt, max_tokens=7, stream=True,
                                             stream_options={"include_usage": True})
    texts, usage = [], None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.text:
                texts.append(c.text)
    assert usage.completion_tokens == len(texts) == 7
    assert "".join(texts) == r.choices[0].text


async def test_completions_default_max_tokens_and_token_ids(emu) -> None:
    _, client = emu
    r = await client.completions.create(model="llama-3-8b", prompt=[1, 2, 3, 4, 5])
    assert r.usage.prompt_tokens == 5
    assert r.usage.completion_tokens <= 16  # OpenAI's legacy default max_tokens


async def test_models_and_health(emu) -> None:
    base_url, client = emu
    models = await client.models.list()
    assert [m.id for m in models.data] == ["llama-3-8b"]
    async with httpx.AsyncClient() as http:
        health = await http.get(base_url.removesuffix("/v1") + "/health")
        stats = await http.get(base_url.removesuffix("/v1") + "/emulator/stats")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert stats.json()["accelerator"] == "h100" and stats.json()["max_kv_tokens"] > 100_000


async def test_served_model_name(make_emulator) -> None:
    async with make_emulator(served_model_name="small-fast") as (_, client):
        assert [m.id for m in (await client.models.list()).data] == ["small-fast"]
        r = await client.chat.completions.create(model="small-fast", messages=MESSAGES, max_tokens=2)
        assert r.model == "small-fast"


async def test_energy_reported_and_sums_to_engine_total(emu) -> None:
    base_url, _ = emu
    total = 0.0
    async with httpx.AsyncClient() as http:
        for i in range(3):
            body = {"model": "llama-3-8b", "messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 10}
            r = await http.post(f"{base_url}/chat/completions", json=body)
            data = r.json()
            assert float(r.headers["x-emulator-energy-j"]) == pytest.approx(data["x_energy_joules"], abs=1e-5)
            assert data["x_energy_joules"] > 0
            total += data["x_emulator"]["energy_joules"]
        stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
    assert stats["energy_joules"] == pytest.approx(total, rel=1e-9)
    # J/token at batch 1 on an H100 is of order joules, not milli- or kilo-joules
    assert 0.1 < total / 30 < 20


async def test_weight_and_kv_formats_set_the_twins_kv_capacity(make_emulator) -> None:
    """The emulator builds the same step model as the simulator: int4 weights + fp8 KV hold far
    more KV tokens on an L4 than bf16 (and /emulator/stats says which formats it runs)."""
    caps = {}
    for dtype, kv in (("bf16", "bf16"), ("int4-awq", "fp8")):
        async with make_emulator(accelerator="l4", dtype=dtype, kv_dtype=kv) as (base_url, client):
            r = await client.chat.completions.create(model="llama-3-8b", messages=MESSAGES, max_tokens=2)
            assert r.usage.completion_tokens == 2
            async with httpx.AsyncClient() as http:
                stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
            assert (stats["dtype"], stats["kv_dtype"]) == (dtype, kv)
            caps[dtype] = stats["max_kv_tokens"]
    assert caps["int4-awq"] > 3 * caps["bf16"]

"""Fault injection: x-emulator-fault header and seeded random fault rates."""

from __future__ import annotations

import asyncio

import httpx
import openai
import orjson
import pytest

BODY = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def _root(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def test_fault_500(emu) -> None:
    _, client = emu
    with pytest.raises(openai.InternalServerError) as info:
        await client.chat.completions.create(**BODY, extra_headers={"x-emulator-fault": "500"})
    assert info.value.status_code == 500
    assert info.value.body["type"] == "server_error"


async def test_fault_429_has_retry_after(emu) -> None:
    _, client = emu
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(**BODY, extra_headers={"x-emulator-fault": "429"})
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.body["code"] == "rate_limit_exceeded"


async def test_fault_garbage_non_stream(emu) -> None:
    base_url, _ = emu
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base_url}/chat/completions", json=BODY, headers={"x-emulator-fault": "garbage"})
    assert r.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)


async def test_fault_garbage_stream(emu) -> None:
    base_url, _ = emu
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", f"{base_url}/chat/completions", json={**BODY, "stream": True},
                               headers={"x-emulator-fault": "garbage"}) as r:
            assert r.status_code == 200
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(lines[0][6:])


async def test_fault_broken_stream(emu) -> None:
    base_url, _ = emu
    got: list[str] = []
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", f"{base_url}/chat/completions", json={**BODY, "stream": True},
                                   headers={"x-emulator-fault": "broken-stream"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        got.append(line)
    assert "data: [DONE]" not in got
    contents = [orjson.loads(g[6:])["choices"][0]["delta"].get("content") for g in got]
    assert sum(1 for c in contents if c) == 3  # a few chunks arrived before the connection dropped


async def test_fault_broken_non_stream(emu) -> None:
    base_url, _ = emu
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"{base_url}/chat/completions", json=BODY,
                            headers={"x-emulator-fault": "broken-stream"})


async def test_fault_hang_until_client_leaves(emu) -> None:
    base_url, client = emu
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"{base_url}/chat/completions", json=BODY,
                            headers={"x-emulator-fault": "hang"}, timeout=0.3)
    # the server is still serving
    r = await client.chat.completions.create(**BODY)
    assert r.usage.completion_tokens == 8


async def test_fault_slow_is_ten_times_slower(emu) -> None:
    base_url, _ = emu
    async with httpx.AsyncClient() as http:
        normal = (await http.post(f"{base_url}/chat/completions", json=BODY)).json()
        slow = (await http.post(f"{base_url}/chat/completions", json=BODY,
                                headers={"x-emulator-fault": "slow"})).json()
    assert slow["usage"] == normal["usage"]
    ratio_ttft = slow["x_emulator"]["ttft_seconds"] / normal["x_emulator"]["ttft_seconds"]
    ratio_tpot = slow["x_emulator"]["tpot_seconds"] / normal["x_emulator"]["tpot_seconds"]
    assert ratio_ttft == pytest.approx(10, rel=0.05)
    assert ratio_tpot == pytest.approx(10, rel=0.05)


async def test_unknown_fault_is_400(emu) -> None:
    _, client = emu
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(**BODY, extra_headers={"x-emulator-fault": "explode"})
    assert info.value.body["param"] == "x-emulator-fault"


async def _statuses(base_url: str, n: int) -> list[int]:
    async with httpx.AsyncClient() as http:
        return [(await http.post(f"{base_url}/chat/completions", json=BODY)).status_code for _ in range(n)]


async def test_random_fault_rates_are_seeded(make_emulator) -> None:
    async with make_emulator(fault_rate_500=0.3, fault_rate_429=0.2, seed=7) as (base_url, _):
        first = await _statuses(base_url, 40)
    async with make_emulator(fault_rate_500=0.3, fault_rate_429=0.2, seed=7) as (base_url, _):
        again = await _statuses(base_url, 40)
    assert first == again
    assert set(first) == {200, 429, 500}
    assert 4 <= first.count(500) <= 20 and 2 <= first.count(429) <= 16


async def test_stream_client_disconnect_frees_the_batch(make_emulator) -> None:
    async with make_emulator(time_scale=0.2) as (base_url, _):
        async with httpx.AsyncClient() as http:
            async with http.stream("POST", f"{base_url}/chat/completions",
                                   json={**BODY, "max_tokens": 500, "stream": True}) as r:
                async for line in r.aiter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        break  # first token: leave
            for _ in range(100):
                stats = (await http.get(_root(base_url) + "/emulator/stats")).json()
                if stats["running"] == 0:
                    break
                await asyncio.sleep(0.02)
    assert stats["running"] == 0 and stats["kv_tokens_reserved"] == 0
    assert stats["decode_tokens"] < 500

"""Timing from the perf model under the real load (continuous batching).

Model-time figures (`x_emulator`, sums of the step model's step times) are compared exactly
with the step model's own prediction; wall time is checked only from below (never a timing upper bound).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tokenomy.emulator.stepmodel import resolve_step_model
from tokenomy.emulator import EmulatorConfig
from tokenomy.tokens import count_chat_tokens


def _step_model(**cfg: object):  # type: ignore[no-untyped-def]
    sm, _, _ = resolve_step_model(EmulatorConfig(**cfg))
    return sm


def _body(content: str, max_tokens: int, **extra: object) -> dict:
    return {"model": "llama-3-8b", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **extra}


def _predicted_single(sm, prompt_tokens: int, n_out: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """TTFT and mean TPOT of one request alone: one prefill step, then batch-1 decode steps."""
    ttft = sm.step_seconds(prefill_tokens=prompt_tokens)
    decode = [sm.step_seconds(decode_seqs=1, kv_tokens=prompt_tokens + k) for k in range(1, n_out)]
    return ttft, sum(decode) / len(decode)


async def test_low_load_ttft_is_prefill_and_tpot_is_batch1_step(emu) -> None:
    base_url, _ = emu
    sm = _step_model()
    async with httpx.AsyncClient() as http:
        data = (await http.post(f"{base_url}/chat/completions", json=_body("word " * 1500, 50))).json()
    p, n = data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]
    assert n == 50 and p > 1500
    ttft, tpot = _predicted_single(sm, p, n)
    got = data["x_emulator"]
    assert got["queue_seconds"] == 0
    assert got["ttft_seconds"] == pytest.approx(ttft, rel=1e-9)
    assert got["tpot_seconds"] == pytest.approx(tpot, rel=1e-9)
    # a long prompt costs more TTFT than a short one (prefill is compute bound)
    assert ttft > sm.step_seconds(prefill_tokens=16)


async def test_chunked_prefill_splits_long_prompts(make_emulator) -> None:
    async with make_emulator(prefill_chunk_tokens=512) as (base_url, _):
        sm = _step_model(prefill_chunk_tokens=512)
        async with httpx.AsyncClient() as http:
            data = (await http.post(f"{base_url}/chat/completions", json=_body("word " * 1500, 5))).json()
    p = data["usage"]["prompt_tokens"]
    chunks = [512] * (p // 512) + ([p % 512] if p % 512 else [])
    # Each chunk's attention reads the prompt already prefilled (the shared engine model's
    # chunked prefill, the same as the fleet simulator's).
    expected = sum(sm.step_seconds(prefill_tokens=c, prefill_context=512 * i, prefill_seqs=1)
                   for i, c in enumerate(chunks))
    assert data["x_emulator"]["ttft_seconds"] == pytest.approx(expected, rel=1e-9)


async def test_wall_clock_follows_the_model_with_time_scale(make_emulator, monkeypatch) -> None:
    """Every step waits `step_seconds x time_scale` of wall time. Asserted on the waits the engine
    asks for (exact) and, for real time, only as a lower bound: a sleep never ends early, but a busy
    machine may run any step late, so no upper bound on wall time is asserted."""
    from tokenomy.emulator.engine import Engine

    sm = _step_model()
    step_s = sm.step_seconds(decode_seqs=1, kv_tokens=100)
    scale = 0.02 / step_s  # stretch a batch-1 step to ~20 ms of wall time
    waits: list[float] = []
    real_sleep = Engine._sleep

    async def recorded_sleep(self, loop, wall_s):  # type: ignore[no-untyped-def]
        waits.append(wall_s)
        await real_sleep(self, loop, wall_s)

    monkeypatch.setattr(Engine, "_sleep", recorded_sleep)
    async with make_emulator(time_scale=scale) as (base_url, _):
        arrivals: list[float] = []
        async with httpx.AsyncClient() as http:
            t0 = time.perf_counter()
            async with http.stream("POST", f"{base_url}/chat/completions",
                                   json=_body("hello", 12, stream=True)) as r:
                async for line in r.aiter_lines():
                    if '"content":"' in line and '"content":""' not in line:
                        arrivals.append(time.perf_counter())
    assert len(arrivals) == 12
    prompt_tokens = count_chat_tokens(_body("hello", 12)["messages"])  # as the emulator counts it
    ttft_pred, tpot_pred = _predicted_single(sm, prompt_tokens, 12)
    # one prefill step, then 11 batch-1 decode steps, each waiting its model time x scale
    assert len(waits) == 12
    assert waits[0] == pytest.approx(ttft_pred * scale, rel=1e-9)
    assert sum(waits[1:]) / 11 == pytest.approx(tpot_pred * scale, rel=1e-9)
    # real time: at least the scheduled waits (less the engine's small catch-up allowance)
    assert arrivals[-1] - arrivals[0] >= 0.7 * sum(waits[1:])
    assert arrivals[0] - t0 >= 0.7 * ttft_pred * scale


async def _concurrent(base_url: str, n: int, max_tokens: int, prompt: str = "") -> list[dict]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as http:
        async def one(i: int) -> dict:
            r = await http.post(f"{base_url}/chat/completions", json=_body(f"{prompt}request {i}", max_tokens))
            return r.json()
        return await asyncio.gather(*(one(i) for i in range(n)))


LONG = "word " * 800  # ~800-token prompts: the KV cache read grows with the batch


async def test_tpot_grows_with_the_batch(make_emulator) -> None:
    sm = _step_model()
    async with make_emulator(time_scale=1.0) as (base_url, _):
        solo = (await _concurrent(base_url, 1, 20, LONG))[0]
        crowd = await _concurrent(base_url, 32, 20, LONG)
        async with httpx.AsyncClient() as http:
            stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
    assert stats["max_running_seen"] >= 24  # they really shared the batch
    crowd_tpot = sum(d["x_emulator"]["tpot_seconds"] for d in crowd) / len(crowd)
    ratio = crowd_tpot / solo["x_emulator"]["tpot_seconds"]
    context = solo["usage"]["prompt_tokens"] + 10
    predicted = (sm.step_seconds(decode_seqs=32, kv_tokens=32 * context)
                 / sm.step_seconds(decode_seqs=1, kv_tokens=context))
    assert predicted > 1.1
    assert ratio > 1.0 + 0.5 * (predicted - 1.0)
    # energy per request falls with the batch (the weights are read once per step for everyone)
    crowd_j = sum(d["x_energy_joules"] for d in crowd) / len(crowd)
    assert crowd_j < solo["x_energy_joules"] / 2


async def test_requests_queue_when_the_batch_is_full(make_emulator) -> None:
    async with make_emulator(max_batch=2, time_scale=0.0) as (base_url, _):
        results = await _concurrent(base_url, 6, 10)
        async with httpx.AsyncClient() as http:
            stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
    assert stats["max_running_seen"] == 2
    queued = sorted(d["x_emulator"]["queue_seconds"] for d in results)
    assert queued[:2] == [0, 0]
    assert all(q > 0 for q in queued[2:])  # the other four waited for a slot
    # who waited longest waited at least two generations of the batch
    assert queued[-1] > queued[2]
    ttfts = [d["x_emulator"]["ttft_seconds"] for d in results]
    assert max(ttfts) > 3 * min(ttfts)


async def test_kv_capacity_limits_admission(make_emulator) -> None:
    # Each request reserves prompt + output tokens of KV; a 2,000-token cache holds two of them
    # (without prefix caching: with it their shared prompt is held once, test_emulator_prefix).
    async with make_emulator(time_scale=0.0, kv_cache_tokens=2000, prefix_caching=False) as (base_url, _):
        results = await _concurrent(base_url, 5, 10, "word " * 800)
        async with httpx.AsyncClient() as http:
            stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
            too_long = await http.post(f"{base_url}/chat/completions", json=_body("word " * 1990, 20))
    assert all(d["usage"]["completion_tokens"] == 10 for d in results)
    assert stats["max_running_seen"] == 2
    assert sum(1 for d in results if d["x_emulator"]["queue_seconds"] > 0) == 3
    assert stats["kv_tokens_reserved"] == 0
    # a request that can never fit is refused up front, naming the context limit
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    assert "2000" in too_long.json()["error"]["message"]

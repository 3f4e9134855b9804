"""The emulator's prefix cache: hashes from the real prompt text, hits reported as cached tokens."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tokenomy.emulator import EmulatorConfig
from tokenomy.emulator.stepmodel import resolve_step_model

SYSTEM = "You are a careful assistant for a bicycle repair shop. " * 40  # ~440 tokens, shared


def _body(messages: list[dict], max_tokens: int = 5) -> dict:
    return {"model": "llama-3-8b", "messages": messages, "max_tokens": max_tokens}


async def test_a_repeated_prefix_is_served_from_cache_and_skips_prefill(make_emulator) -> None:
    sm, _, _ = resolve_step_model(EmulatorConfig())
    turn1 = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "My chain skips. Why?"}]
    async with make_emulator(time_scale=0.0) as (base_url, _):
        async with httpx.AsyncClient() as http:
            a = (await http.post(f"{base_url}/chat/completions", json=_body(turn1))).json()
            turn2 = turn1 + [{"role": "assistant", "content": a["choices"][0]["message"]["content"]},
                             {"role": "user", "content": "And the brakes squeal too."}]
            b = (await http.post(f"{base_url}/chat/completions", json=_body(turn2))).json()
            other = [{"role": "user", "content": "Completely unrelated question about tax law " * 30}]
            c = (await http.post(f"{base_url}/chat/completions", json=_body(other))).json()
            stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
    assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = b["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached % 16 == 0 and cached >= 0.8 * a["usage"]["prompt_tokens"]  # turn 1 is turn 2's prefix
    assert cached < b["usage"]["prompt_tokens"]
    assert c["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # the hit skips prefill compute: one step of the uncached rest, reading the cached context
    p = b["usage"]["prompt_tokens"]
    expected = sm.step_seconds(prefill_tokens=p - cached, prefill_context=cached, prefill_seqs=1)
    assert b["x_emulator"]["ttft_seconds"] == pytest.approx(expected, rel=1e-9)
    assert stats["prefix_cache_hit_tokens"] == cached and stats["prefix_cache_tokens"] > 0


async def test_shared_prefix_is_held_once_in_kv() -> None:
    # 2,000 tokens of KV (reserve policy): five 810-token prompts sharing a 800-token head fit
    # together once the head is cached; without caching only two fit at a time.
    from tokenomy.emulator.engine import Engine
    from tokenomy.emulator.prefix import prompt_block_hashes

    sm, _, _ = resolve_step_model(EmulatorConfig())

    async def run(caching: bool) -> tuple[int, list[int]]:
        eng = Engine(sm, max_batch=64, max_kv_tokens=2000, time_scale=0.0, prefix_caching=caching)
        eng.start()
        try:
            text = lambda i: ("word " * 800 + f"request {i}").encode()  # noqa: E731
            warm = eng.submit(810, 10, block_hashes=prompt_block_hashes(text(-1), 16))
            await warm.done.wait()
            seqs = [eng.submit(810, 10, block_hashes=prompt_block_hashes(text(i), 16)) for i in range(5)]
            await asyncio.gather(*(s.done.wait() for s in seqs))
            return eng.max_running_seen, [s.cached_tokens for s in seqs]
        finally:
            await eng.stop()

    running, cached = await run(True)
    assert running == 5 and all(c >= 784 for c in cached)
    running, cached = await run(False)
    assert running == 2 and cached == [0] * 5

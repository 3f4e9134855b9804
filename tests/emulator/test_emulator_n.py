"""OpenAI's `n` on the emulator: n choices (index 0..n-1), each its own reproducible text, length,
finish reason and logprobs; usage counts the prompt once and sums the completions; streams
interleave the choices; the n sequences share one prefill in the engine's batch. Checked with the
official openai SDK; counts and model-time figures, never wall-clock timings."""

from __future__ import annotations

import httpx
import orjson
import pytest
from openai import BadRequestError

from tokenomy.emulator import EmulatorConfig
from tokenomy.emulator.prefix import prompt_block_hashes
from tokenomy.emulator.stepmodel import resolve_step_model
from tokenomy.tokens import count_chat_tokens, count_tokens

MODEL = "llama-3-8b"
MSG = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]


async def test_n_choices_are_distinct_reproducible_and_billed_as_a_sum(emu) -> None:
    _, client = emu
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, n=4)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) == 4
    # each choice its own natural length: two stop on their own, two hit max_tokens
    assert [(c.finish_reason, count_tokens(c.message.content)) for c in r.choices] == [
        ("stop", 26), ("length", 60), ("length", 60), ("stop", 31)]
    assert r.usage.prompt_tokens == count_chat_tokens(MSG) == 25  # the prompt once
    assert r.usage.completion_tokens == 177 and r.usage.total_tokens == 202
    again = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, n=4)
    assert [c.message.content for c in again.choices] == texts  # reproducible
    one = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60)
    assert [c.message.content for c in one.choices] == texts[:1]  # choice 0 is the n=1 answer
    seeded = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, n=4, seed=7)
    assert not set(c.message.content for c in seeded.choices) & set(texts)  # the request's seed moves all


async def test_logprobs_per_choice(emu) -> None:
    _, client = emu
    r = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20, n=3, logprobs=True,
                                             top_logprobs=2)
    for c in r.choices:
        lp = c.logprobs.content
        assert "".join(t.token for t in lp) == c.message.content and len(lp) == count_tokens(c.message.content)
        assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == t.logprob for t in lp)
    assert len({tuple(t.logprob for t in c.logprobs.content) for c in r.choices}) == 3
    # legacy completions: `logprobs: 1` per choice, offsets into each choice's own text
    r = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, n=3, logprobs=1)
    assert [c.index for c in r.choices] == [0, 1, 2] and len({c.text for c in r.choices}) == 3
    for c in r.choices:
        assert "".join(c.logprobs.tokens) == c.text and len(c.logprobs.tokens) == 12 and c.finish_reason == "length"
        assert c.logprobs.text_offset[0] == 0 and all(len(t) == 1 for t in c.logprobs.top_logprobs)
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 36


async def test_stream_interleaves_choices_with_their_index(emu) -> None:
    _, client = emu
    whole = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, n=4)
    s = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, n=4, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [c async for c in s]
    content: dict[int, str] = {i: "" for i in range(4)}
    finishes: dict[int, list[str]] = {i: [] for i in range(4)}
    seen_before_first_finish: set[int] = set()
    for ch in chunks[:-1]:
        (c,) = ch.choices  # one choice per chunk
        content[c.index] += c.delta.content or ""
        if c.finish_reason is not None:
            finishes[c.index].append(c.finish_reason)
        elif not any(finishes.values()) and c.delta.content:
            seen_before_first_finish.add(c.index)
    assert [content[i] for i in range(4)] == [c.message.content for c in whole.choices]
    assert finishes == {0: ["stop"], 1: ["length"], 2: ["length"], 3: ["stop"]}
    assert seen_before_first_finish == {0, 1, 2, 3}  # interleaved: every choice decodes in the same steps
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 177
    # logprobs stream per choice too
    s = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=10, n=2, stream=True,
                                             logprobs=True)
    toks: dict[int, list[str]] = {0: [], 1: []}
    async for ch in s:
        for c in ch.choices:
            if c.logprobs is not None and c.logprobs.content:
                toks[c.index] += [t.token for t in c.logprobs.content]
    assert all(len(toks[i]) == 10 for i in (0, 1)) and toks[0] != toks[1]


async def test_tool_calls_per_choice(emu) -> None:
    _, client = emu
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}]
    r = await client.chat.completions.create(model=MODEL, messages=MSG, tools=tools, tool_choice="required", n=3)
    calls = [c.message.tool_calls[0] for c in r.choices]
    assert len({c.id for c in calls}) == 3 and all(c.function.name == "add" for c in calls)
    assert all(set(orjson.loads(c.function.arguments)) == {"a", "b"} for c in calls)
    assert [c.finish_reason for c in r.choices] == ["tool_calls"] * 3
    s = await client.chat.completions.create(model=MODEL, messages=MSG, tools=tools, tool_choice="required", n=3,
                                             stream=True)
    args = {i: "" for i in range(3)}
    async for ch in s:
        for c in ch.choices:
            for tc in c.delta.tool_calls or ():
                args[c.index] += tc.function.arguments or ""
    assert [args[i] for i in range(3)] == [c.function.arguments for c in calls]


@pytest.mark.parametrize("n, code, words", [
    (0, "integer_below_min_value", "Expected a value >= 1, but got 0 instead."),
    (129, "integer_above_max_value", "Expected a value <= 128, but got 129 instead."),
    ("2", "invalid_type", "'n' must be an integer"),
    (True, "invalid_type", "'n' must be an integer"),
    (2.5, "invalid_type", "'n' must be an integer"),
])
async def test_bad_n_is_an_openai_400(emu, n, code, words) -> None:
    base_url, client = emu
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base_url}/chat/completions", json={"model": MODEL, "messages": MSG, "n": n})
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "n", code) and words in err["message"]
    if n == 129:
        with pytest.raises(BadRequestError) as ei:
            await client.completions.create(model=MODEL, prompt="x", n=n)
        assert ei.value.body["code"] == code
    ok = await client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=1, n=128)
    assert len(ok.choices) == 128 and ok.usage.completion_tokens == 128


@pytest.mark.parametrize("caching", [True, False])
async def test_n_sequences_share_one_prefill_and_decode_as_a_batch(make_emulator, caching) -> None:
    sm, _, _ = resolve_step_model(EmulatorConfig())
    p = count_chat_tokens(MSG)
    blocks = min(len(prompt_block_hashes(orjson.dumps(MSG, option=orjson.OPT_SORT_KEYS), 16)), (p - 1) // 16)
    assert (p, blocks) == (25, 1)
    async with make_emulator(time_scale=0.0, prefix_caching=caching) as (base_url, _):
        async with httpx.AsyncClient() as http:
            r = (await http.post(f"{base_url}/chat/completions", json={
                "model": MODEL, "messages": MSG, "max_tokens": 8, "ignore_eos": True, "n": 4})).json()
            stats = (await http.get(base_url.removesuffix("/v1") + "/emulator/stats")).json()
    hit = 16 * blocks if caching else 0
    # one prefill of the prompt; the 3 siblings compute only what the cache cannot give them
    assert stats["prefill_tokens"] == p + 3 * (p - hit) == (52 if caching else 100)
    assert stats["prefix_cache_hit_tokens"] == 3 * hit and stats["max_running_seen"] == 4
    assert stats["decode_tokens"] == r["usage"]["completion_tokens"] == 32 and stats["steps"] == 8
    assert r["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # the first sequence found nothing cached
    # all four prefill in the first step, and every choice's first token comes out of it
    first = sm.step_seconds(prefill_tokens=p + 3 * (p - hit), prefill_context=3 * hit, prefill_seqs=4)
    assert r["x_emulator"]["ttft_seconds"] == pytest.approx(first, rel=1e-9)
    # then 7 decode steps of a batch of 4 (each reading its own context, the shared prompt included)
    decode = sum(sm.step_seconds(decode_seqs=4, kv_tokens=4 * (p + j)) for j in range(1, 8))
    assert r["x_emulator"]["total_seconds"] == pytest.approx(first + decode, rel=1e-9)
    # the request's energy is the engine's (it ran alone): the choices' shares add up
    assert r["x_energy_joules"] == pytest.approx(stats["energy_joules"], abs=1e-5)


async def test_broken_stream_drops_after_a_few_tokens_of_every_choice(emu) -> None:
    base_url, _ = emu
    got = []
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("POST", f"{base_url}/chat/completions",
                                   json={"model": MODEL, "messages": MSG, "max_tokens": 20, "n": 3, "stream": True},
                                   headers={"x-emulator-fault": "broken-stream"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        got.append(line)
    assert "data: [DONE]" not in got
    chunks = [orjson.loads(g[6:])["choices"][0] for g in got]
    assert [sum(1 for c in chunks if c["index"] == i and c["delta"].get("content")) for i in range(3)] == [3, 3, 3]
    assert all(c["finish_reason"] is None for c in chunks)

"""The gateway counts with the model's real tokenizer and records which counter estimated an event."""

from __future__ import annotations

import aiohttp
import orjson

from gw_helpers import Stub, gateway, list_dep, stubs
from tokenomy.tokencount import counter_for
from tokenomy.tokens import count_chat_tokens

# Polish and German: the regex approximation is far off here, so the assertions tell the counters apart.
MSGS = [{"role": "user", "content": "Zażółć gęślą jaźń. Grüß Gott, wie geht's der Straßenbahnhaltestelle?"}]


def _cfg(stub: Stub, **dep) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0, **dep)],
            "model_groups": {"m": {"deployments": ["d1"]}}}


async def test_unary_estimate_uses_the_models_tokenizer(data_dir):
    o200k = counter_for("gpt-4o-mini")
    assert o200k.count_chat(MSGS) != count_chat_tokens(MSGS)
    async with stubs(Stub(out_tokens=6, mode="no-usage")) as (s,), \
            gateway(_cfg(s, model="gpt-4o-mini"), data_dir) as g:
        st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, g.key("t1"))
        assert st == 200, body
        ev = g.metering.events("t1")[0]
        assert ev.estimated and ev.extra["token_counter"] == "tiktoken:o200k"
        assert ev.input_tokens == o200k.count_chat(MSGS)
        assert ev.output_tokens == o200k.count_text(" hello" * 6) == 6


async def test_stream_without_usage_uses_the_configured_tokenizer(data_dir):
    cl100k = counter_for("gpt-4")
    async with stubs(Stub(out_tokens=5, mode="no-usage")) as (s,), \
            gateway(_cfg(s, model="my-model", tokenizer="cl100k", stream_usage=False), data_dir) as g:
        key = g.key("t1")
        async with aiohttp.ClientSession() as http:
            async with http.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": MSGS, "stream": True}) as r:
                assert r.status == 200
                raw = await r.read()
        assert raw.rstrip().endswith(b"data: [DONE]")
        assert "stream_options" not in s.bodies[0]
        ev = g.metering.events("t1")[0]
        assert ev.estimated and ev.extra["token_counter"] == "tiktoken:cl100k"
        assert (ev.input_tokens, ev.output_tokens) == (cl100k.count_chat(MSGS), 5)


async def test_unknown_model_falls_back_to_regex_and_says_so(data_dir):
    async with stubs(Stub(out_tokens=3, mode="no-usage")) as (s,), gateway(_cfg(s), data_dir) as g:
        st, _, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, g.key("t1"))
        assert st == 200
        ev = g.metering.events("t1")[0]
        assert ev.extra["token_counter"] == "regex" and ev.input_tokens == count_chat_tokens(MSGS)


async def test_reported_usage_records_no_counter(data_dir):
    async with stubs(Stub(out_tokens=3)) as (s,), gateway(_cfg(s, model="gpt-4o"), data_dir) as g:
        st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, g.key("t1"))
        assert st == 200 and body["usage"]["completion_tokens"] == 3
        ev = g.metering.events("t1")[0]
        assert not ev.estimated and "token_counter" not in ev.extra


async def test_completions_prompt_counted_with_the_models_tokenizer(data_dir):
    prompt = "नमस्ते दुनिया, 日本語のテキスト"
    o200k = counter_for("gpt-4o")
    async with stubs(Stub(out_tokens=2, mode="no-usage")) as (s,), gateway(_cfg(s, model="gpt-4o"), data_dir) as g:
        st, _, body = await g.post("/v1/completions", {"model": "m", "prompt": prompt}, g.key("t1"))
        assert st == 200, body
        ev = g.metering.events("t1")[0]
        assert ev.input_tokens == o200k.count_text(prompt) and ev.extra["token_counter"] == "tiktoken:o200k"
        assert orjson.loads(orjson.dumps(ev.extra))["token_counter"] == "tiktoken:o200k"

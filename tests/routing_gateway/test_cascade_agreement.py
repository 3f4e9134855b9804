"""verifier: agreement in the gateway: the weak call asks a real local upstream for k samples (`n`),
the score is the majority final answer's share, a kept answer is ONE choice (the first majority
sample, index 0) billed with all k samples' usage; escalation by threshold and escalate_share;
a hard budget reserves k x the weak output; untrusted shapes never 500. Counts, never timings."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import orjson
import pytest
from aiohttp import web

from gw_helpers import Stub, gateway, list_dep, serve, stubs
from rg_helpers import chat, read_sse
from tokenomy.config import parse_config
from tokenomy.errors import ConfigError
from tokenomy.tokens import count_chat_tokens, count_tokens

TOKENS_PER_SAMPLE = 10  # what the upstream reports per choice it returns


class Samples:
    """An OpenAI-wire upstream answering each prompt with scripted choices: a list of contents (one
    choice each; non-strings sent as they are), or a whole response object (bad shapes)."""

    def __init__(self):
        self.script: dict[str, object] = {}
        self.bodies: list[dict] = []
        self.completion_tokens: int | None = None  # overrides the reported usage

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            body = orjson.loads(await request.read())
            self.bodies.append(body)
            chat_kind = "messages" in body
            prompt = body["messages"][-1]["content"] if chat_kind else body["prompt"]
            got = self.script[prompt]
            prompt_tokens = count_chat_tokens(body["messages"]) if chat_kind else 5
            if isinstance(got, dict):
                obj = dict(got)
                n = 0
            else:
                contents = list(got)[: body.get("n", 1)]
                n = len(contents)
                choices = [{"index": i, "message": {"role": "assistant", "content": c}, "logprobs": None,
                            "finish_reason": "stop"} if chat_kind else {"index": i, "text": c, "finish_reason": "stop"}
                           for i, c in enumerate(contents)]
                obj = {"id": "s", "object": "chat.completion" if chat_kind else "text_completion", "created": 1,
                       "model": body["model"], "choices": choices}
            out = self.completion_tokens if self.completion_tokens is not None else n * TOKENS_PER_SAMPLE
            obj.setdefault("usage", {"prompt_tokens": prompt_tokens, "completion_tokens": out,
                                     "total_tokens": prompt_tokens + out})
            return web.json_response(obj)

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        app.router.add_post("/v1/completions", handler)
        return app


def _cfg(weak_url: str, strong_url: str, **cascade) -> dict:
    # $/Mtok: weak 1000 in and out ($0.001 a token), strong 3000
    return {"deployments": [list_dep("weak@s", weak_url, 1000.0, 1000.0), list_dep("strong@b", strong_url, 3000.0, 3000.0)],
            "model_groups": {"weak": {"deployments": ["weak@s"]}, "strong": {"deployments": ["strong@b"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                        "cascade": {"verifier": "agreement", **cascade}}}}


class _Env:
    def __init__(self, up: Samples, strong: Stub, g):
        self.up, self.strong, self.g = up, strong, g

    def events(self, rid: str) -> dict:
        return {e.id: e for e in self.g.metering.events("t1", limit=1000) if e.id.split(":")[0] == rid}


def _env(data_dir, **cascade):
    import contextlib

    @contextlib.asynccontextmanager
    async def run():
        up = Samples()
        async with serve(up.app()) as url, stubs(Stub(out_tokens=7)) as (strong,):
            async with gateway(_cfg(url + "/v1", strong.base_url, **cascade), data_dir) as g:
                yield _Env(up, strong, g)
    return run()


FOUR_OF_FIVE = ["so #### 7", "first way: #### 42", "second way: #### 42", "The answer is 42.", "\\boxed{42}"]
ALL_DIFFERENT = ["#### 1", "#### 2", "#### 3", "#### 4", "#### 5"]


async def test_four_of_five_agree_kept_as_one_choice_billed_for_all_samples(data_dir):
    async with _env(data_dir, threshold=0.5) as env:
        g, up = env.g, env.up
        msgs = [{"role": "user", "content": "What is 6 x 7?"}]
        up.script["What is 6 x 7?"] = FOUR_OF_FIVE
        st, h, body = await g.post("/v1/chat/completions", {"model": "auto", "messages": msgs, "max_tokens": 20},
                                   g.key())
        assert st == 200, body
        assert up.bodies[-1]["n"] == 5 and up.bodies[-1]["temperature"] == 0.7  # the client sent none
        assert h["x-tokenomy-cascade-served-by"] == "weak" and h["x-tokenomy-cascade-escalated"] == "false"
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(0.8)
        # one choice: the first sample giving the majority answer, re-indexed
        assert [c["index"] for c in body["choices"]] == [0]
        assert body["choices"][0]["message"]["content"] == "first way: #### 42"
        assert body["usage"]["completion_tokens"] == 5 * TOKENS_PER_SAMPLE   # what is billed, all samples
        evs = env.events(h["x-tokenomy-request-id"])
        assert list(evs) == [h["x-tokenomy-request-id"]]              # one event: the served weak call
        ev = evs[h["x-tokenomy-request-id"]]
        inp = count_chat_tokens(msgs)
        assert (ev.input_tokens, ev.output_tokens) == (inp, 50) and not ev.extra.get("usage_anomaly")
        assert ev.cost_usd == Decimal(inp + 50) / 1000 == Decimal(h["x-tokenomy-cost-usd"])
        assert ev.extra["route"]["agreement"] == {"k": 5, "share": 0.8, "answers": 2, "answered": 5,
                                                  "temperature": 0.7}
        assert ev.extra["route"]["score"] == 0.8 and ev.extra["route"]["verifier"] == "agreement"
        assert env.strong.calls == 0

        # the client's own temperature is kept; 0 (greedy) is raised for the samples
        await g.post("/v1/chat/completions", {"model": "auto", "messages": msgs, "temperature": 0.3}, g.key())
        assert up.bodies[-1]["temperature"] == 0.3
        await g.post("/v1/chat/completions", {"model": "auto", "messages": msgs, "temperature": 0}, g.key())
        assert up.bodies[-1]["temperature"] == 0.7

        # streamed: the kept sample as one SSE answer, the usage chunk counts all samples
        st, h, text = await read_sse(g, {"model": "auto", "messages": msgs, "max_tokens": 20, "stream": True,
                                         "stream_options": {"include_usage": True}}, g.key())
        chunks = [orjson.loads(x[6:]) for x in text.split("\n\n") if x.startswith("data: {")]
        assert st == 200 and chunks[0]["choices"][0]["delta"]["content"] == "first way: #### 42"
        assert chunks[-1]["usage"]["completion_tokens"] == 50


async def test_all_different_escalates_and_bills_the_samples_as_weak(data_dir):
    async with _env(data_dir, threshold=0.5) as env:
        g, up = env.g, env.up
        up.script["Hard sum?"] = ALL_DIFFERENT
        st, h, body = await g.post("/v1/chat/completions", chat("Hard sum?"), g.key())
        assert st == 200 and h["x-tokenomy-cascade-served-by"] == "strong"
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(0.2)
        assert body["choices"][0]["message"]["content"] == " hello" * 7
        rid = h["x-tokenomy-request-id"]
        evs = env.events(rid)
        assert sorted(evs) == [rid, f"{rid}:weak"]
        weak = evs[f"{rid}:weak"]
        assert weak.output_tokens == 50 and weak.cost_usd == Decimal(weak.input_tokens + 50) / 1000
        assert weak.extra["route_part"] == "weak" and evs[rid].output_tokens == 7
        assert evs[rid].extra["route"]["agreement"]["answers"] == 5
        total = Decimal(h["x-tokenomy-route-total-cost-usd"])
        assert total == weak.cost_usd + evs[rid].cost_usd


@pytest.mark.parametrize("threshold, escalated", [(0.8, False), (0.81, True), (0.0, False)])
async def test_threshold_decides_on_the_agreement_share(data_dir, threshold, escalated):
    async with _env(data_dir, threshold=threshold) as env:
        env.up.script["q"] = FOUR_OF_FIVE
        st, h, _ = await env.g.post("/v1/chat/completions", chat("q"), env.g.key())
        assert st == 200 and h["x-tokenomy-cascade-escalated"] == ("true" if escalated else "false")


async def test_escalate_share_follows_the_agreement_scores(data_dir):
    """Five agreement levels (5/5 .. 1/5 agree) in turn; a 40 % target escalates the two lowest (and,
    at the tie, some of the middle one)."""
    levels = [["#### 9"] * (5 - j) + [f"#### {100 + i}" for i in range(j)] for j in range(5)]  # share 1.0 .. 0.2
    async with _env(data_dir, escalate_share=0.4) as env:
        g, up = env.g, env.up
        for j, lv in enumerate(levels):
            up.script[f"level {j}"] = lv
        key = g.key()
        decisions = []
        for i in range(100):
            st, h, _ = await g.post("/v1/chat/completions", chat(f"level {i % 5}"), key)
            assert st == 200
            decisions.append((float(h["x-tokenomy-cascade-score"]), h["x-tokenomy-cascade-escalated"] == "true"))
        late = decisions[20:]
        # the score takes k + 1 values: the cut sits on the tie at 0.6 (1 - 0.4 quantile), whose requests
        # escalate or not as the live histogram moves; the two lowest always escalate, the top two never
        share = sum(e for _, e in late) / len(late)
        assert 0.4 <= share <= 0.6, share                       # measured: 0.5625
        by_score = {s: {e for t, e in late if t == s} for s in (1.0, 0.8, 0.6, 0.4, 0.2)}
        assert by_score == {1.0: {False}, 0.8: {False}, 0.6: {False, True}, 0.4: {True}, 0.2: {True}}
        events = [e for e in g.metering.events("t1", limit=1000) if "route" in e.extra]
        assert len(events) == 100 and all(e.extra["route"]["escalate_share"] == 0.4 for e in events)
        assert all(e.extra["route"]["escalated"] == (e.extra["route"]["score"] < e.extra["route"]["threshold"])
                   for e in events)


async def test_client_n_above_one_is_refused_before_any_call(data_dir):
    async with _env(data_dir) as env:
        st, _, body = await env.g.post("/v1/chat/completions", chat("q", n=2), env.g.key())
        assert st == 400 and body["error"]["param"] == "n" and "agreement of 5 samples" in body["error"]["message"]
        assert env.up.bodies == [] and env.g.metering.events("t1") == []


async def test_hard_budget_reserves_k_samples_and_is_never_exceeded(data_dir):
    msgs = [{"role": "user", "content": "q"}]
    reserved_in = int(count_chat_tokens(msgs) * 1.1) + 16   # the reservation's input margin (lifecycle/budget.py)
    one_sample = Decimal(reserved_in + 20) / 1000 + Decimal(reserved_in + 20) * 3 / 1000
    k_samples = Decimal(reserved_in + 5 * 20) / 1000 + Decimal(reserved_in + 20) * 3 / 1000
    body = {"model": "auto", "messages": msgs, "max_tokens": 20}
    async with _env(data_dir, threshold=0.5) as env:
        g, up = env.g, env.up
        up.script["q"] = FOUR_OF_FIVE
        # enough for one weak sample and the strong call, not for 5 samples: refused, nothing sent
        key = g.key("tight", budget_usd=str(one_sample + Decimal("0.000001")))
        st, h, err = await g.post("/v1/chat/completions", body, key)
        assert st == 429 and err["error"]["code"] == "budget_exhausted" and up.bodies == []
        assert f"may cost up to ${k_samples.normalize()}" in err["error"]["message"]
        # the k-sample worst case fits: served; an upstream claiming far more output is held to k x 20 (+16)
        up.completion_tokens = 10**6
        budget = k_samples + Decimal("0.000001")
        key = g.key("fits", budget_usd=str(budget))
        st, h, _ = await g.post("/v1/chat/completions", body, key)
        assert st == 200 and up.bodies[-1]["n"] == 5
        ev = g.metering.events("fits")[0]
        assert ev.output_tokens == 5 * 20 + 16 and ev.extra["usage_anomaly"] is True
        spent = sum((e.price_usd for e in g.metering.events("fits")), Decimal(0))
        assert spent <= budget
        # escalated with the inflated weak usage: weak + strong still within the budget
        up.script["q"] = ALL_DIFFERENT
        key = g.key("esc", budget_usd=str(budget))
        st, h, _ = await g.post("/v1/chat/completions", body, key)
        assert st == 200 and h["x-tokenomy-cascade-served-by"] == "strong"
        evs = g.metering.events("esc")
        assert len(evs) == 2 and sum((e.price_usd for e in evs), Decimal(0)) <= budget


@pytest.mark.parametrize("shape, score, escalated", [
    (["#### 42", "#### 42"], 0.4, True),                                   # fewer choices than asked
    (["#### 42", 42, None, ["#### 42"], "#### 42"], 0.4, True),           # non-string contents
    (["#### 42", {"x": 1}, "#### 42", "#### 42", 3.5], 0.6, False),      # usable majority kept
    ({"id": "x", "object": "chat.completion"}, 0.0, True),                 # no choices
    ({"id": "x", "choices": "nope"}, 0.0, True),                           # choices not a list
    ({"id": "x", "choices": [1, "a", None, {"message": "m"}, {"message": {"content": "#### 1"}}]}, 0.2, True),
    ([], 0.0, True),                                                       # an empty list
])
async def test_bad_upstream_shapes_score_what_is_usable(data_dir, shape, score, escalated):
    async with _env(data_dir, threshold=0.5) as env:
        env.up.script["q"] = shape
        st, h, body = await env.g.post("/v1/chat/completions", chat("q"), env.g.key())
        assert st == 200, body
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(score)
        assert h["x-tokenomy-cascade-escalated"] == ("true" if escalated else "false")
        if not escalated:
            assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "#### 42"},
                                        "logprobs": None, "finish_reason": "stop"}]


async def test_kept_answer_without_majority_or_choices_is_served_as_sent(data_dir):
    async with _env(data_dir, threshold=0.0) as env:   # threshold 0: whatever the weak model sent is kept
        env.up.script["q"] = {"id": "x", "object": "chat.completion"}
        st, h, body = await env.g.post("/v1/chat/completions", chat("q"), env.g.key())
        assert st == 200 and h["x-tokenomy-cascade-served-by"] == "weak" and "choices" not in body
        env.up.script["w"] = ["no number here", "nor here"]
        st, h, body = await env.g.post("/v1/chat/completions", chat("w"), env.g.key())
        assert st == 200 and [c["message"]["content"] for c in body["choices"]] == ["no number here"]


async def test_legacy_completions_samples(data_dir):
    async with _env(data_dir, threshold=0.5) as env:
        env.up.script["Compute 2+2."] = ["4", "#### 4", "so 4", "5", "4."]
        st, h, body = await env.g.post("/v1/completions", {"model": "auto", "prompt": "Compute 2+2.", "max_tokens": 8},
                                       env.g.key())
        assert st == 200 and float(h["x-tokenomy-cascade-score"]) == pytest.approx(0.8)
        assert body["choices"] == [{"index": 0, "text": "4", "finish_reason": "stop"}]
        assert env.up.bodies[-1]["n"] == 5


def _parse(**cascade):
    return parse_config(_cfg("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", **cascade), "<t>")


def test_config_samples_and_providers():
    assert _parse().routing_groups["auto"].cascade.samples == 5
    assert _parse(samples=16).routing_groups["auto"].cascade.samples == 16
    for bad in (1, 17, 0, "5", True, 2.5):
        with pytest.raises(ConfigError, match=r"samples: the number of weak samples k must be an integer 2\.\.16"):
            _parse(samples=bad)
    with pytest.raises(ConfigError, match="samples: only with verifier: agreement"):
        parse_config({**_cfg("http://x/v1", "http://y/v1"), "routing_groups": {"auto": {
            "candidates": ["weak", "strong"], "policy": "cascade", "cascade": {"samples": 3}}}}, "<t>")
    with pytest.raises(ConfigError, match="either judge or verifier: agreement"):
        _parse(judge={"model": "strong"})
    assert _parse(escalate_share=0.3).routing_groups["auto"].cascade.escalate_share == 0.3
    with pytest.raises(ConfigError, match="threshold or escalate_share"):
        _parse(escalate_share=0.3, threshold=0.5)
    cfg = _cfg("http://x/v1", "http://y/v1")
    cfg["deployments"][0] = {"name": "weak@s", "provider": "anthropic", "base_url": "http://127.0.0.1:9",
                             "model": "claude", "pricing": {"list": {"input": 1.0, "output": 2.0}}}
    with pytest.raises(ConfigError, match="deployment 'weak@s' cannot send them .provider anthropic returns one choice"):
        parse_config(cfg, "<t>")
    cfg["deployments"][0] = {"name": "weak@s", "model": "m", "emulate": {"time_scale": 0.001},
                             "pricing": {"list": {"input": 1.0, "output": 2.0}}}
    assert parse_config(cfg, "<t>").routing_groups["auto"].cascade.samples == 5  # the emulator serves n
    cfg["deployments"][0] = {"name": "weak@s", "provider": "bedrock", "base_url": "http://127.0.0.1:9",
                             "model": "m", "pricing": {"list": {"input": 1.0, "output": 2.0}}}
    with pytest.raises(ConfigError, match="cannot send them .provider bedrock returns one choice"):
        parse_config(cfg, "<t>")
    cfg["deployments"][0] = {"name": "weak@s", "provider": "gemini", "base_url": "http://127.0.0.1:9",
                             "model": "gemini-x", "pricing": {"list": {"input": 1.0, "output": 2.0}}}
    assert parse_config(cfg, "<t>").routing_groups["auto"].cascade.verifier == "agreement"  # candidateCount
    # the strong group may be anything: only the weak group samples
    cfg = _cfg("http://x/v1", "http://y/v1")
    cfg["deployments"][1] = {**cfg["deployments"][0], "name": "strong@b", "provider": "anthropic"}
    assert parse_config(cfg, "<t>").routing_groups["auto"].cascade.samples == 5


# --- the emulator as the weak group ------------------------------------------------------------

def _emu(name: str) -> dict:
    return {"name": name, "model": "m", "emulate": {"time_scale": 0.001},
            "pricing": {"list": {"input": 1000.0, "output": 1000.0}}}


def _emu_cfg(**cascade) -> dict:
    return {"deployments": [_emu("weak@emu"), _emu("strong@emu")],
            "model_groups": {"weak": {"deployments": ["weak@emu"]}, "strong": {"deployments": ["strong@emu"]}},
            "routing_groups": {"auto": {"candidates": ["weak", "strong"], "policy": "cascade",
                                        "cascade": {"verifier": "agreement", **cascade}}}}


async def _weak_direct(g, body: dict) -> dict:
    """The weak emulator's own answer to what the gateway asks it (n: 5; its text ignores temperature)."""
    base = next(d for d in g.gw.deployments.values() if d.name == "weak@emu").base_url
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/chat/completions", json={**body, "model": "m", "n": 5, "temperature": 0.7}) as r:
            assert r.status == 200
            return await r.json()


APPLES = "Tom has 3 apples and buys 4 more. How many apples does he have?"


async def test_emulated_weak_group_samples_k_choices_escalated(data_dir):
    """The emulator's text is generic (no final answer: textgen has no notion of one), so its samples
    never agree: score 0, escalated, the weak call's k samples billed as `<req>:weak`."""
    async with gateway(_emu_cfg(threshold=0.5), data_dir) as g:
        direct = await _weak_direct(g, chat(APPLES))
        texts = [c["message"]["content"] for c in direct["choices"]]
        assert len(set(texts)) == 5
        samples_out = sum(count_tokens(t) for t in texts)
        assert direct["usage"]["completion_tokens"] == samples_out == 100  # 5 x max_tokens 20
        st, h, body = await g.post("/v1/chat/completions", chat(APPLES), g.key())
        assert st == 200, body
        assert h["x-tokenomy-cascade-served-by"] == "strong" and float(h["x-tokenomy-cascade-score"]) == 0.0
        assert [c["index"] for c in body["choices"]] == [0]
        rid = h["x-tokenomy-request-id"]
        evs = {e.id: e for e in g.metering.events("t1", limit=1000) if e.id.split(":")[0] == rid}
        assert sorted(evs) == [rid, f"{rid}:weak"]
        weak = evs[f"{rid}:weak"]
        assert weak.output_tokens == samples_out and not weak.extra.get("usage_anomaly")
        assert weak.cost_usd == Decimal(weak.input_tokens + samples_out) / 1000
        assert weak.energy_joules > 0  # the emulator reports the k sequences' energy
        assert evs[rid].extra["route"]["agreement"] == {"k": 5, "share": 0.0, "answers": 0, "answered": 0,
                                                      "temperature": 0.7}
        assert evs[rid].output_tokens == body["usage"]["completion_tokens"] == 20


async def test_emulated_weak_group_kept_as_one_choice_billed_for_all_samples(data_dir):
    from openai import AsyncOpenAI

    async with gateway(_emu_cfg(threshold=0.0), data_dir) as g:   # threshold 0: the weak answer is kept
        body = chat(APPLES, max_tokens=60)
        direct = await _weak_direct(g, body)
        samples_out = direct["usage"]["completion_tokens"]
        assert samples_out == sum(count_tokens(c["message"]["content"]) for c in direct["choices"]) == 237
        st, h, got = await g.post("/v1/chat/completions", body, g.key())
        assert st == 200 and h["x-tokenomy-cascade-served-by"] == "weak"
        # no majority answer: the first sample is served, as the emulator sent it
        assert got["choices"] == [direct["choices"][0]]
        assert got["usage"]["completion_tokens"] == samples_out
        ev = {e.id: e for e in g.metering.events("t1")}[h["x-tokenomy-request-id"]]
        assert ev.output_tokens == samples_out and ev.cost_usd == Decimal(ev.input_tokens + samples_out) / 1000
        assert ev.extra["route"]["agreement"]["k"] == 5 and ev.extra["route"]["agreement"]["answered"] == 0

        # the official SDK sees one choice; streamed: one SSE answer whose usage counts all samples
        client = AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key(), max_retries=0)
        try:
            r = await client.chat.completions.create(**body)
            assert [c.index for c in r.choices] == [0]
            assert r.choices[0].message.content == got["choices"][0]["message"]["content"]
            assert r.usage.completion_tokens == samples_out
            s = await client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True})
            chunks = [c async for c in s]
        finally:
            await client.close()
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
        assert {c.choices[0].index for c in chunks if c.choices} == {0}
        assert chunks[-1].usage.completion_tokens == samples_out

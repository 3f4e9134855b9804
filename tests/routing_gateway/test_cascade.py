"""Policy cascade in the gateway: escalation by verifier score, two metered events, streaming, LLM judge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gw_helpers import Stub, gateway, list_dep, stubs
from rg_helpers import Fixed, chat, judge_upstream, read_sse, two_groups


def _cascade_cfg(a: Stub, b: Stub, threshold: float = 0.5) -> dict:
    return two_groups(a.base_url, b.base_url, policy="cascade", cascade={"threshold": threshold})


@pytest.mark.parametrize("score, escalates", [(0.2, True), (0.9, False), (0.5, False)])
async def test_cascade_escalates_iff_score_below_threshold(data_dir, score, escalates):
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=7)) as (a, b), gateway(_cascade_cfg(a, b), data_dir) as g:
        g.gw.routes["auto"].verifier = v = Fixed(score)
        st, h, body = await g.post("/v1/chat/completions", chat("What is 2+2?"), g.key())
        assert st == 200, body
        assert v.calls == 1 and a.calls == 1 and b.calls == (1 if escalates else 0)
        assert h["x-tokenomy-cascade-escalated"] == ("true" if escalates else "false")
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(score)
        assert float(h["x-tokenomy-cascade-threshold"]) == 0.5
        assert h["x-tokenomy-route-model"] == ("strong" if escalates else "weak")
        assert body["usage"]["completion_tokens"] == (7 if escalates else 5)
        rid = h["x-tokenomy-request-id"]
        events = {e.id: e for e in g.metering.events("t1")}
        main = events[rid]
        assert main.extra["route"]["escalated"] is escalates and main.extra["route"]["strong"] is escalates
        assert main.extra["route"]["score"] == pytest.approx(score)
        if escalates:
            assert set(events) == {rid, rid + ":weak"}
            weak = events[rid + ":weak"]
            assert weak.deployment == "weak@a" and main.deployment == "strong@b"
            assert weak.extra["parent"] == rid and "route" not in weak.extra
            total = Decimal(h["x-tokenomy-route-total-cost-usd"])
            assert total == weak.cost_usd + main.cost_usd == Decimal(h["x-tokenomy-cost-usd"]) + weak.cost_usd
            # weak: in x $1 + 5 x $2 per Mtok; strong: in x $10 + 7 x $30 per Mtok
            assert weak.cost_usd == (Decimal(weak.input_tokens) * 1 + 5 * 2) / 10**6
            assert main.cost_usd == (Decimal(main.input_tokens) * 10 + 7 * 30) / 10**6
        else:
            assert set(events) == {rid} and main.deployment == "weak@a"
        usage = g.metering.usage("t1")
        assert usage["requests"] == (2 if escalates else 1)


async def test_cascade_learned_verifier_default(data_dir):
    """The shipped learned verifier scores the weak answer; the decision matches its own score."""
    from tokenomy.routing.cascade import load_verifier

    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), gateway(_cascade_cfg(a, b, 0.5), data_dir) as g:
        st, h, _ = await g.post("/v1/chat/completions", chat("Name a colour."), g.key())
        assert st == 200
        want = load_verifier("cascade-default").score("Name a colour.", " hello" * 5)
        assert float(h["x-tokenomy-cascade-score"]) == pytest.approx(want, abs=1e-4)
        assert h["x-tokenomy-cascade-escalated"] == ("true" if want < 0.5 else "false")
        assert h["x-tokenomy-cascade-verifier"] == "cascade-default"


@pytest.mark.parametrize("score", [0.1, 0.9])
async def test_streaming_cascade(data_dir, score):
    escalates = score < 0.5
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=6)) as (a, b), gateway(_cascade_cfg(a, b), data_dir) as g:
        g.gw.routes["auto"].verifier = Fixed(score)
        st, h, text = await read_sse(g, chat("hello?", stream=True, stream_options={"include_usage": True}), g.key())
        assert st == 200 and text.endswith("data: [DONE]\n\n")
        assert h["x-tokenomy-cascade-escalated"] == ("true" if escalates else "false")
        assert a.bodies[0].get("stream") is False  # the weak answer is fetched whole, then scored
        n_out = 6 if escalates else 5
        assert f'"completion_tokens":{n_out}' in text
        assert text.count(" hello") == n_out
        events = {e.id: e for e in g.metering.events("t1")}
        rid = h["x-tokenomy-request-id"]
        assert set(events) == ({rid, rid + ":weak"} if escalates else {rid})
        assert events[rid].output_tokens == n_out


async def test_cascade_weak_failure_escalates_and_strong_failure_serves_weak(data_dir):
    async with stubs(Stub(mode="500"), Stub(out_tokens=3)) as (a, b), gateway(_cascade_cfg(a, b), data_dir) as g:
        g.gw.routes["auto"].verifier = Fixed(0.9)
        st, h, body = await g.post("/v1/chat/completions", chat("x"), g.key())
        assert st == 200 and h["x-tokenomy-cascade-escalated"] == "true" and body["usage"]["completion_tokens"] == 3
        events = {e.id: e for e in g.metering.events("t1")}
        rid = h["x-tokenomy-request-id"]
        assert events[rid + ":weak"].status == "upstream_error" and events[rid + ":weak"].cost_usd == 0
    async with stubs(Stub(out_tokens=4), Stub(mode="500")) as (a, b), gateway(_cascade_cfg(a, b), data_dir / "2") as g:
        g.gw.routes["auto"].verifier = Fixed(0.1)
        st, h, body = await g.post("/v1/chat/completions", chat("x"), g.key())
        assert st == 200 and h["x-tokenomy-cascade-served-by"] == "weak" and body["usage"]["completion_tokens"] == 4
        events = {e.id: e for e in g.metering.events("t1")}
        rid = h["x-tokenomy-request-id"]
        assert events[rid].deployment == "weak@a" and events[rid + ":strong"].status == "upstream_error"
    async with stubs(Stub(mode="500"), Stub(mode="500")) as (a, b), gateway(_cascade_cfg(a, b), data_dir / "3") as g:
        st, h, body = await g.post("/v1/chat/completions", chat("x"), g.key())
        assert st == 502
        ids = {e.id for e in g.metering.events("t1")}
        assert ids == {h["x-tokenomy-request-id"], h["x-tokenomy-request-id"] + ":weak"}


@pytest.mark.parametrize("reply, escalates", [("Score: 9", False), ("Score: 2", True)])
async def test_llm_judge_through_the_gateway(data_dir, reply, escalates):
    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), judge_upstream(reply) as (jurl, seen):
        cfg = two_groups(a.base_url, b.base_url, policy="cascade",
                         cascade={"threshold": 0.5, "judge": {"model": "judge"}})
        cfg["deployments"].append(list_dep("judge@j", jurl, 0.5, 1.0))
        cfg["model_groups"]["judge"] = {"deployments": ["judge@j"]}
        async with gateway(cfg, data_dir) as g:
            st, h, _ = await g.post("/v1/chat/completions", chat("Explain tides."), g.key())
            assert st == 200 and h["x-tokenomy-cascade-escalated"] == ("true" if escalates else "false")
            assert float(h["x-tokenomy-cascade-score"]) == pytest.approx((9 - 1) / 9 if not escalates else (2 - 1) / 9, abs=1e-4)
            assert len(seen) == 1 and "Explain tides." in seen[0]["messages"][0]["content"]
            assert seen[0]["model"] == "judge@j" and seen[0]["max_tokens"] == 16
            rid = h["x-tokenomy-request-id"]
            events = {e.id: e for e in g.metering.events("t1")}
            assert set(events) == ({rid, rid + ":weak", rid + ":judge"} if escalates else {rid, rid + ":judge"})
            j = events[rid + ":judge"]
            assert j.tenant == "t1" and j.deployment == "judge@j"
            assert j.cost_usd == (Decimal(100) * Decimal("0.5") + 4 * 1) / 10**6
            total = sum((e.cost_usd for e in events.values()), Decimal(0))
            assert Decimal(h["x-tokenomy-route-total-cost-usd"]) == total

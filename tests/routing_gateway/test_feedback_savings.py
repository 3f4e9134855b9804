"""POST /v1/feedback (tenant isolation, durability, training rows) and `savings` on a seeded ledger."""

from __future__ import annotations

import sqlite3
import time

import pytest

from gw_helpers import ADMIN_KEY, Stub, gateway, stubs
from rg_helpers import chat, two_groups
from tokenomy.metering import Metering, UsageEvent
from tokenomy.routing.feedback import load_training_rows, prompt_hash, record_feedback
from tokenomy.routing.savings import format_savings, reprice_usd, savings


@pytest.mark.parametrize("store_prompts", [True, False])
async def test_feedback_endpoint(data_dir, store_prompts):
    async with stubs(Stub(out_tokens=3), Stub(out_tokens=3)) as (a, b):
        cfg = {**two_groups(a.base_url, b.base_url, threshold=0.0), "routing": {"store_prompts": store_prompts}}
        async with gateway(cfg, data_dir) as g:
            k1, k2 = g.key("t1"), g.key("t2")
            st, h, _ = await g.post("/v1/chat/completions", chat("Is the sky blue?"), k1)
            assert st == 200 and h["x-tokenomy-route-model"] == "strong"  # threshold 0: always strong
            rid = h["x-tokenomy-request-id"]
            st, _, body = await g.post("/v1/feedback", {"request_id": rid, "score": 0.75}, k1)
            assert st == 200 and body == {"request_id": rid, "tenant": "t1", "score": 0.75, "recorded": True}
            # another tenant's key cannot label (or learn about) t1's request
            st, _, body = await g.post("/v1/feedback", {"request_id": rid, "score": 0.1}, k2)
            assert st == 404 and body["error"]["code"] == "request_not_found"
            st, _, _ = await g.post("/v1/feedback", {"request_id": "req_nosuch", "score": 0.5}, k1)
            assert st == 404
            for bad, param in (({"request_id": rid, "score": 1.5}, "score"), ({"request_id": rid, "score": True}, "score"),
                               ({"request_id": rid, "score": "0.5"}, "score"), ({"score": 0.5}, "request_id"),
                               ({"request_id": "", "score": 0.5}, "request_id")):
                st, _, body = await g.post("/v1/feedback", bad, k1)
                assert st == 400 and body["error"]["param"] == param
            st, _, _ = await g.post("/v1/feedback", b"{not json", k1)
            assert st == 400
            st, _, _ = await g.post("/v1/feedback", {"request_id": rid, "score": 0.5}, None)
            assert st == 401
            st, _, body = await g.post("/v1/feedback", {"request_id": rid, "score": 1}, ADMIN_KEY)
            assert st == 200 and body["tenant"] == "t1"  # the admin may label any request
            # the weak answer is also labelled for training: a second request, routed weak
            g.gw.routes["auto"].threshold = 2.0
            st, h2, _ = await g.post("/v1/chat/completions", chat("hi"), k1)
            assert h2["x-tokenomy-route-model"] == "weak"
            st, _, _ = await g.post("/v1/feedback", {"request_id": h2["x-tokenomy-request-id"], "score": 0.25}, k1)
            assert st == 200
    # durable in the ledger's SQLite file, in our own table (the dashboard joins it to events)
    conn = sqlite3.connect(data_dir / "ledger.db")
    rows = dict(conn.execute("SELECT request_id, score FROM route_feedback").fetchall())
    stored = conn.execute("SELECT request_id, prompt, prompt_sha256 FROM route_prompts").fetchall()
    conn.close()
    assert rows[rid] == 1.0 and len(rows) == 2
    training = load_training_rows(data_dir)
    if store_prompts:
        assert {r[1] for r in stored} == {"Is the sky blue?", "hi"}
        assert all(r[2] == prompt_hash(r[1]) for r in stored)
        by_id = {r["id"]: r for r in training}
        # strong-served: strong = its score, weak = mean score of weak-served answers (0.25)
        assert (by_id[rid]["strong"], by_id[rid]["weak"]) == (1.0, 0.25)
        # weak-served: weak = its score, strong = mean score of strong-served answers (1.0)
        rid2 = h2["x-tokenomy-request-id"]
        assert (by_id[rid2]["weak"], by_id[rid2]["strong"], by_id[rid2]["prompt"]) == (0.25, 1.0, "hi")
    else:
        assert stored == [] and training == []


def test_record_feedback_function(tmp_path):
    record_feedback(tmp_path, "req_1", "t1", 0.5)
    record_feedback(tmp_path, "req_1", "t1", 0.0)  # the latest label wins
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert conn.execute("SELECT request_id, tenant, score FROM route_feedback").fetchall() == [("req_1", "t1", 0.0)]
    conn.close()
    from tokenomy.errors import TokenomyError

    with pytest.raises(TokenomyError):
        record_feedback(tmp_path, "req_1", "t1", 2.0)


# ------------------------------------------------------------------ savings
WEAK_P, STRONG_P = ["1", "1", "2", "2"], ["10", "10", "30", "30"]


def _route(strong: bool, policy: str = "router", **kw) -> dict:
    return {"alias": "auto", "policy": policy, "strong": strong, "predicted_quality": None,
            "candidates": [{"model": "weak", "expected_usd": 0, "usd_per_mtok": WEAK_P},
                           {"model": "strong", "expected_usd": 0, "usd_per_mtok": STRONG_P}], **kw}


def _ev(rid: str, ts: float, inp: int, out: int, cost: str, extra: dict | None) -> UsageEvent:
    from decimal import Decimal

    return UsageEvent(id=rid, ts=ts, tenant="t1", key_id="k", model="x", deployment="d", input_tokens=inp,
                      cached_input_tokens=0, output_tokens=out, reasoning_tokens=0, cost_usd=Decimal(cost),
                      price_usd=Decimal(cost), energy_joules=0.0, ttft_ms=None, latency_ms=1.0, status="ok",
                      extra=extra)


def test_savings_on_a_seeded_ledger(tmp_path):
    m = Metering.open(tmp_path, admin_key=ADMIN_KEY)
    m.create_tenant("t1")
    t0 = time.time() - 100
    for ev in [
        _ev("r1", t0, 1000, 100, "0.0012", {"route": _route(False)}),        # weak: 1000x1 + 100x2 = $0.0012
        _ev("r2", t0 + 1, 500, 200, "0.011", {"route": _route(True)}),       # strong: 500x10 + 200x30 = $0.011
        _ev("c1", t0 + 2, 100, 50, "0.0025", {"route": _route(True, "cascade", escalated=True)}),
        _ev("c1:weak", t0 + 2, 100, 100, "0.0003", {"route_part": "weak", "parent": "c1"}),
        _ev("c2", t0 + 3, 100, 100, "0.0003", {"route": _route(False, "cascade", escalated=False)}),
        _ev("c2:judge", t0 + 3, 40, 5, "0.00005", {"route_part": "judge", "parent": "c2"}),
        _ev("plain", t0 + 4, 100, 100, "0.5", {"policy": "cost"}),            # not routed: ignored
    ]:
        m.commit_blocking(ev)
    m.shutdown()
    s = savings(tmp_path)
    assert s["requests"] == 4 and s["strong_calls"] == 2 and s["strong_share"] == 0.5
    assert s["actual_usd"] == "0.01535"          # 0.0012 + 0.011 + 0.0025 + 0.0003 + 0.0003 + 0.00005
    assert s["all_strong_usd"] == "0.0305"       # 0.013 + 0.011 + 0.0025 + 0.004
    assert s["all_weak_usd"] == "0.0026"         # 0.0012 + 0.0009 + 0.0002 + 0.0003
    assert s["saved_vs_all_strong_usd"] == "0.01515"
    assert s["saved_vs_all_strong_pct"] == pytest.approx(15.15 / 30.5 * 100, abs=1e-3)
    assert s["extra_vs_all_weak_usd"] == "0.01275"
    c = s["cascade"]
    assert (c["requests"], c["escalated"], c["escalation_share"]) == (2, 1, 0.5)
    assert c["actual_usd"] == "0.00315" and c["all_strong_usd"] == "0.0065"
    assert c["weak_calls_usd"] == "0.0006" and c["judge_usd"] == "0.00005"
    assert s["by_alias"]["auto"]["requests"] == 4
    # a window: only r2 and c1 (with its weak call)
    w = savings(tmp_path, since=t0 + 1, until=t0 + 2.5)
    assert (w["requests"], w["actual_usd"], w["all_strong_usd"]) == (2, "0.0138", "0.0135")
    assert "routed requests: 4" in format_savings(s)
    assert str(reprice_usd(STRONG_P, 1000, 0, 100, 0)) == "0.013000000000"


async def test_savings_from_live_gateway(data_dir):
    from tokenomy.routing.savings import reprice_usd

    async with stubs(Stub(out_tokens=5), Stub(out_tokens=5)) as (a, b), \
            gateway(two_groups(a.base_url, b.base_url, threshold=0.0), data_dir) as g:
        key = g.key()
        for _ in range(2):
            st, _, _ = await g.post("/v1/chat/completions", chat("hello"), key)
            assert st == 200
        g.gw.routes["auto"].threshold = 2.0  # nothing reaches it: weak
        st, _, _ = await g.post("/v1/chat/completions", chat("hello"), key)
        events = g.metering.events("t1")
    s = savings(data_dir)
    assert s["requests"] == 3 and s["strong_share"] == pytest.approx(2 / 3)
    from decimal import Decimal

    assert Decimal(s["actual_usd"]) == sum((e.cost_usd for e in events), Decimal(0))
    want_strong = sum((reprice_usd(STRONG_P, e.input_tokens, 0, e.output_tokens, 0) for e in events), Decimal(0))
    assert Decimal(s["all_strong_usd"]) == want_strong

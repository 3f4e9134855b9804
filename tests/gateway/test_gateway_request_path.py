"""The core request path against a scriptable upstream: usage, cost headers, ledger rows, errors."""

from __future__ import annotations

from decimal import Decimal

import orjson

from gw_helpers import ADMIN_KEY, Stub, gateway, list_dep, stubs
from tokenomy.tokens import count_chat_tokens

MSGS = [{"role": "user", "content": "Say hello to the world in a friendly way"}]


def _cfg(stub: Stub, **extra) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0,
                                     price_extra={"cached_input": 0.3})],
            "model_groups": {"m": {"deployments": ["d1"]}}, **extra}


async def test_non_stream_usage_cost_headers_and_ledger(data_dir):
    async with stubs(Stub(out_tokens=7, cached_tokens=4)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200, body
        assert body["usage"]["completion_tokens"] == 7
        assert s.bodies[0]["model"] == "d1"  # upstream model name substituted
        inp = count_chat_tokens(MSGS)
        expected = (Decimal(inp - 4) * Decimal("3.0") + 4 * Decimal("0.3") + 7 * Decimal("15.0")) / 1_000_000
        assert Decimal(h["x-tokenomy-cost-usd"]) == expected
        assert h["x-tokenomy-deployment"] == "d1"
        assert float(h["x-tokenomy-energy-j"]) == 0.0  # list-priced API deployment, energy unknown
        rid = h["x-tokenomy-request-id"]
        events = g.metering.events("t1")
        assert len(events) == 1
        ev = events[0]
        assert ev.id == rid and ev.status == "ok" and not ev.estimated
        assert (ev.input_tokens, ev.cached_input_tokens, ev.output_tokens) == (inp, 4, 7)
        assert ev.cost_usd == expected and ev.price_usd == expected
        assert ev.model == "m" and ev.deployment == "d1"


async def test_stream_usage_requested_upstream_and_tail(data_dir):
    async with stubs(Stub(out_tokens=5)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        import aiohttp

        async with aiohttp.ClientSession() as sess:
            async with sess.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": MSGS, "stream": True,
                                       "stream_options": {"include_usage": True}}) as r:
                assert r.status == 200
                assert r.headers["x-tokenomy-deployment"] == "d1"
                raw = await r.read()
        assert s.bodies[0]["stream_options"] == {"include_usage": True}
        events = [e for e in raw.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        assert events[-2].startswith(b": x-tokenomy ")
        tail = orjson.loads(events[-2][len(b": x-tokenomy "):])
        usage_chunk = orjson.loads(events[-3][6:])
        assert usage_chunk["usage"]["completion_tokens"] == 5
        assert usage_chunk["x_tokenomy"] == tail
        ev = g.metering.events("t1")[0]
        assert ev.id == tail["request_id"] and ev.output_tokens == 5 and ev.ttft_ms is not None
        assert Decimal(tail["cost_usd"]) == ev.cost_usd > 0


async def test_stream_without_client_usage_hides_usage_chunk(data_dir):
    async with stubs(Stub(out_tokens=4)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        import aiohttp

        async with aiohttp.ClientSession() as sess:
            async with sess.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": MSGS, "stream": True}) as r:
                raw = await r.read()
        datas = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
        assert all(d["choices"] for d in datas)  # every chunk has a choice: `chunk.choices[0]` is safe
        assert "".join(d["choices"][0]["delta"]["content"] for d in datas) == " hello" * 4
        assert g.metering.events("t1")[0].output_tokens == 4  # metered from the upstream usage anyway


async def test_no_usage_upstream_is_estimated(data_dir):
    async with stubs(Stub(out_tokens=6, mode="no-usage")) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200
        ev = g.metering.events("t1")[0]
        assert ev.estimated and ev.input_tokens == count_chat_tokens(MSGS) and ev.output_tokens == 6


async def test_completions_endpoint(data_dir):
    async with stubs(Stub(out_tokens=3)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        st, h, body = await g.post("/v1/completions", {"model": "m", "prompt": "Once upon a time"}, key)
        assert st == 200 and body["choices"][0]["text"] == " hello" * 3
        assert g.metering.events("t1")[0].output_tokens == 3


async def test_bad_input_errors_name_the_field(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s, server={"max_body_bytes": 4096}), data_dir) as g:
        key = g.key("t1")
        cases = [
            (b"{not json", 400, None),
            ({"messages": MSGS}, 400, "model"),
            ({"model": "m"}, 400, "messages"),
            ({"model": "m", "messages": "hi"}, 400, "messages"),
            ({"model": "m", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
            ({"model": "m", "messages": MSGS, "max_tokens": "10"}, 400, "max_tokens"),
            ({"model": "m", "messages": MSGS, "stream": "yes"}, 400, "stream"),
            ({"model": "m", "messages": MSGS, "tools": True}, 400, "tools"),  # found by schemathesis
            ({"model": "m", "messages": MSGS, "functions": 288}, 400, "functions"),
            ({"model": "nope", "messages": MSGS}, 404, "model"),
        ]
        for body, status, param in cases:
            st, _, out = await g.post("/v1/chat/completions", body, key)
            assert st == status, (body, out)
            assert out["error"]["param"] == param, out
            if param:
                assert param.split(".")[0].split("[")[0] in out["error"]["message"]
        st, _, out = await g.post("/v1/chat/completions",
                                  {"model": "m", "messages": [{"role": "user", "content": "x" * 10_000}]}, key)
        assert st == 413 and "too large" in out["error"]["message"]
        assert s.calls == 0 and g.metering.events("t1") == []


async def test_auth_401_and_admin_endpoints(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        st, _, out = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, None)
        assert st == 401 and "Authorization" in out["error"]["message"]
        st, _, out = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, "tk-abc-wrong")
        assert st == 401
        ka, kb = g.key("A"), g.key("B")
        assert (await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, kb))[0] == 200
        st, _, out = await g.get("/admin/usage?tenant=B", ka)
        assert st == 403 and "'A'" in out["error"]["message"]
        st, _, own = await g.get("/admin/usage", ka)
        assert st == 200 and own["requests"] == 0
        st, _, b_usage = await g.get("/admin/usage?tenant=B", ADMIN_KEY)
        assert st == 200 and b_usage["requests"] == 1
        st, _, b_usage = await g.get("/admin/usage?tenant=B&since=1h", ADMIN_KEY)
        assert st == 200 and b_usage["requests"] == 1
        st, _, b_usage = await g.get("/admin/usage?tenant=B&until=2000-01-01", ADMIN_KEY)
        assert st == 200 and b_usage["requests"] == 0
        assert (await g.get("/admin/usage?tenant=B&since=yesterday-ish", ADMIN_KEY))[0] == 400
        assert (await g.get("/admin/usage?tenant=nobody", ADMIN_KEY))[0] == 404
        # key management is admin-only, and returns the key once
        assert (await g.get("/admin/keys", ka))[0] == 403
        assert (await g.post("/admin/keys", {"tenant": "C"}, ka))[0] == 403
        st, _, created = await g.post("/admin/keys", {"tenant": "C", "rpm": 5}, ADMIN_KEY)
        assert st == 201 and created["key"].startswith("tk-")
        st, _, listed = await g.get("/admin/keys?tenant=C", ADMIN_KEY)
        assert st == 200 and [k["key_id"] for k in listed["data"]] == [created["key_id"]]
        assert created["key"] not in orjson.dumps(listed).decode()
        assert (await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, created["key"]))[0] == 200


async def test_keys_never_stored_in_plaintext(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        secret = key.split("-", 2)[2]
    blob = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    assert secret.encode() not in blob and key.encode() not in blob
    assert ADMIN_KEY.encode() not in blob


async def test_models_health_metrics(data_dir):
    async with stubs(Stub(out_tokens=2)) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("acme")
        st, _, models = await g.get("/v1/models", key)
        assert st == 200 and {m["id"] for m in models["data"]} == {"m", "d1"}
        await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        st, _, health = await g.get("/health", ADMIN_KEY)
        assert st == 200 and health["deployments"]["d1"]["breaker"] == "closed"
        st, _, text = await g.get("/metrics", ADMIN_KEY)
        assert 'tokenomy_requests_total{deployment="d1",model="m",status="ok",tenant="acme"} 1.0' in text
        assert 'tokenomy_tokens_total{category="output",deployment="d1",tenant="acme"} 2.0' in text
        assert 'tokenomy_cost_usd_total{deployment="d1",tenant="acme"}' in text
        assert 'tokenomy_request_latency_seconds_count{deployment="d1",tenant="acme"} 1.0' in text
        assert 'tokenomy_breaker_state{deployment="d1",state="closed"} 0.0' in text


async def test_stream_client_asked_usage_but_upstream_sent_none(data_dir):
    async with stubs(Stub(out_tokens=6, mode="no-usage")) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("t1")
        import aiohttp

        async with aiohttp.ClientSession() as sess:
            async with sess.post(g.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": MSGS, "stream": True,
                                       "stream_options": {"include_usage": True}}) as r:
                raw = await r.read()
        events = [e for e in raw.split(b"\n\n") if e]
        usage_chunk = orjson.loads(events[-3][6:])
        assert usage_chunk["choices"] == [] and usage_chunk["id"] == "x"
        assert usage_chunk["usage"] == {"prompt_tokens": count_chat_tokens(MSGS), "completion_tokens": 6,
                                        "total_tokens": count_chat_tokens(MSGS) + 6}
        assert usage_chunk["x_tokenomy"]["estimated"] is True
        ev = g.metering.events("t1")[0]
        assert ev.estimated and ev.output_tokens == 6


async def test_max_tokens_is_validated_even_beside_max_completion_tokens(tmp_path):
    """Found by schemathesis: max_tokens 0 next to a valid max_completion_tokens was accepted."""
    from gw_helpers import Stub, gateway, list_dep, stubs

    async with stubs(Stub()) as (s,):
        async with gateway({"deployments": [list_dep("d1", s.base_url, 1.0, 2.0)]}, tmp_path) as g:
            status, _, body = await g.post("/v1/chat/completions", {
                "model": "d1", "max_tokens": 0, "max_completion_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]}, g.key())
    assert status == 400 and body["error"]["param"] == "max_tokens"

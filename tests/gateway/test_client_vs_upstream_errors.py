"""Client errors apart from upstream failures (issue 20): a 4xx the upstream sends back for the
caller's own bad request is passed through, counted as a client error and never against the
deployment: its breaker stays closed, /metrics has no upstream error for it, and the
dashboard's error rate (upstream failures) stays 0 while the client error rate shows them."""

from __future__ import annotations

import asyncio

from gw_helpers import ADMIN_KEY, Stub, gateway, list_dep, stubs

MSGS = [{"role": "user", "content": "hello"}]


async def _deployments(g) -> dict:
    """The dashboard's Deployments data once its rollups have caught up with the ledger (they fold
    at most once a second; a condition waited for, never a timing asserted)."""
    for _ in range(80):
        st, _, dash = await g.get("/dashboard/api/deployments?range=1h", ADMIN_KEY)
        assert st == 200, dash
        if dash["meta"]["rollups"]["behind"] == 0:
            return dash
        await asyncio.sleep(0.25)
    raise AssertionError(f"rollups still behind: {dash['meta']}")


def _cfg(*stubs_: Stub) -> dict:
    return {"deployments": [list_dep(f"d{i}", s.base_url, 1.0, 2.0) for i, s in enumerate(stubs_, 1)],
            "model_groups": {"m": {"deployments": [f"d{i}" for i in range(1, len(stubs_) + 1)]}},
            "breaker": {"failure_threshold": 2}}


async def test_client_4xx_is_not_a_deployment_error(data_dir):
    async with stubs(Stub(mode="400")) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("acme")
        for _ in range(3):
            st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
            assert st == 400, body
        s.mode = "ok"
        for _ in range(2):
            assert (await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key))[0] == 200
        assert s.calls == 5  # no fallback, no retry for the caller's own error
        st, _, health = await g.get("/health", ADMIN_KEY)
        assert health["deployments"]["d1"]["breaker"] == "closed"  # 3 x 400 > failure_threshold 2
        st, _, text = await g.get("/metrics", ADMIN_KEY)
        assert 'tokenomy_requests_total{deployment="d1",model="m",status="error",tenant="acme"} 3.0' in text
        assert 'tokenomy_requests_total{deployment="d1",model="m",status="ok",tenant="acme"} 2.0' in text
        assert 'tokenomy_upstream_errors_total{deployment="d1"' not in text
        dash = await _deployments(g)
        row = {r["deployment"]: r for r in dash["tables"]["deployments"]}["d1"]
        assert (row["requests"], row["errors"], row["client_errors"]) == (5, 0, 3)
        assert row["error_rate"] == 0 and row["client_error_rate"] == 0.6


async def test_upstream_5xx_counts_against_the_deployment(data_dir):
    async with stubs(Stub(mode="500"), Stub()) as (bad, good), gateway(_cfg(bad, good), data_dir) as g:
        key = g.key("acme")
        st, h, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 200 and h["x-tokenomy-deployment"] == "d2", body  # fell back
        st, _, text = await g.get("/metrics", ADMIN_KEY)
        assert 'tokenomy_upstream_errors_total{deployment="d1",kind="http_5xx"}' in text
        bad.mode, good.mode = "500", "500"
        st, _, body = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        assert st == 502, body
        dash = await _deployments(g)
        rows = {r["deployment"]: r for r in dash["tables"]["deployments"]}
        failed = sum(r["errors"] for r in rows.values())
        assert failed == 1 and sum(r["client_errors"] for r in rows.values()) == 0

"""What the gateway shows without a key: /metrics (per-tenant names, requests, cost) needs the
admin key or the scrape token of `metrics.token_env`; /health without them says only its status
(no upstream URL); `metrics.public: true` opens both, as documented."""

from __future__ import annotations

import pytest

from gw_helpers import ADMIN_KEY, Stub, gateway, list_dep, stubs

MSGS = [{"role": "user", "content": "hello"}]


def _cfg(stub: Stub, **metrics) -> dict:
    return {"deployments": [list_dep("d1", stub.base_url, 3.0, 15.0)], "model_groups": {"m": {"deployments": ["d1"]}},
            "metrics": metrics}


async def test_metrics_and_health_details_need_the_admin_key(data_dir):
    async with stubs(Stub()) as (s,), gateway(_cfg(s), data_dir) as g:
        key = g.key("acme-secret-tenant")
        await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        st, _, body = await g.get("/metrics")
        assert st == 401 and body["error"]["code"] == "missing_api_key"
        st, _, body = await g.get("/metrics", key)  # a tenant key sees no other tenant
        assert st == 403 and body["error"]["code"] == "permission_denied"
        st, _, body = await g.get("/metrics", "tk-nope-nope")
        assert st == 401
        st, _, text = await g.get("/metrics", ADMIN_KEY)
        assert st == 200 and 'tenant="acme-secret-tenant"' in text
        for k in (None, key, "tk-nope-nope"):
            st, _, health = await g.get("/health", k)
            assert st == 200 and health == {"status": "ok"}  # no deployments, no base_url
        st, _, health = await g.get("/health", ADMIN_KEY)
        assert health["deployments"]["d1"]["base_url"] == s.base_url


async def test_a_scrape_token_reads_metrics_and_nothing_else(data_dir, monkeypatch):
    monkeypatch.setenv("TEST_METRICS_TOKEN", "scrape-0123456789")
    async with stubs(Stub()) as (s,), gateway(_cfg(s, token_env="TEST_METRICS_TOKEN"), data_dir) as g:
        key = g.key("acme")
        await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key)
        st, _, text = await g.get("/metrics", "scrape-0123456789")
        assert st == 200 and 'tenant="acme"' in text
        st, _, _ = await g.get("/metrics", "scrape-012345678")  # one character short
        assert st == 401
        st, _, health = await g.get("/health", "scrape-0123456789")
        assert health["deployments"]["d1"]["base_url"] == s.base_url
        st, _, body = await g.get("/admin/keys", "scrape-0123456789")  # not an admin key
        assert st == 401


@pytest.mark.parametrize("token_env", [None, "UNSET_METRICS_TOKEN_VAR"])
async def test_public_metrics_is_an_explicit_switch(data_dir, token_env, monkeypatch):
    monkeypatch.delenv("UNSET_METRICS_TOKEN_VAR", raising=False)
    cfg_metrics = {"public": True} if token_env is None else {"token_env": token_env}
    async with stubs(Stub()) as (s,), gateway(_cfg(s, **cfg_metrics), data_dir) as g:
        st, _, _ = await g.get("/metrics")
        # public: open; a token variable that is not set opens nothing (admin key only)
        assert st == (200 if token_env is None else 401)
        st, _, health = await g.get("/health")
        assert ("deployments" in health) is (token_env is None)

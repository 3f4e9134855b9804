"""Inbound API surface: x-api-key everywhere, GET /v1/models/{id}."""

from __future__ import annotations

import aiohttp
import pytest
from openai import AsyncOpenAI, NotFoundError

from tests.gateway.conftest import Stub, gateway, list_dep, stubs


@pytest.fixture
async def gw(tmp_path):
    async with stubs(Stub(out_tokens=3)) as (up,):
        cfg = {"deployments": [list_dep("m@stub", up.base_url, 1.0, 2.0, model="m")],
               "model_groups": {"m": {"deployments": ["m@stub"]}}}
        async with gateway(cfg, tmp_path / "ledger") as g:
            yield g


async def _req(g, method: str, path: str, headers: dict, json=None):
    async with aiohttp.ClientSession() as s, s.request(method, g.url + path, headers=headers, json=json) as r:
        return r.status, await r.json()


async def test_x_api_key_is_an_api_key(gw):
    key = gw.key("anth")
    st, body = await _req(gw, "POST", "/v1/chat/completions", {"x-api-key": key},
                          {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert st == 200 and body["choices"][0]["message"]["content"] == " hello" * 3
    assert len(gw.metering.events("anth")) == 1
    st, body = await _req(gw, "GET", "/v1/models", {"x-api-key": key})
    assert st == 200 and [m["id"] for m in body["data"]][:1] == ["m"]
    st, body = await _req(gw, "GET", "/v1/models", {"x-api-key": "tk-bogus"})
    assert st == 401 and body["error"]["code"]
    st, body = await _req(gw, "GET", "/v1/models", {})
    assert st == 401 and "x-api-key" in body["error"]["message"]


async def test_model_detail(gw):
    c = AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key("t"), max_retries=0)
    m = await c.models.retrieve("m")
    assert m.id == "m" and m.object == "model" and m.model_extra["deployments"] == ["m@stub"]
    with pytest.raises(NotFoundError) as ei:
        await c.models.retrieve("nope")
    await c.close()
    assert ei.value.body["code"] == "model_not_found"
    st, _ = await _req(gw, "GET", "/v1/models/m", {})
    assert st == 401

"""Through a real gateway: a self-hosted (emulated) deployment's provisioned intervals are
recorded while it runs, and its requests' allocations plus idle add up to its bill."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gw_helpers import gateway  # noqa: E402

from tokenomy.allocation.report import costs_report  # noqa: E402
from tokenomy.allocation.store import CapacityStore  # noqa: E402

CONFIG = {
    "deployments": [
        {"name": "llama@h100", "model": "llama-3-8b",
         "emulate": {"model": "llama-3-8b", "accelerator": "h100", "time_scale": 0.02},
         "pricing": {"self_hosted": {"model": "llama-3-8b", "accelerator": "h100", "site": "us-va"}}},
        {"name": "mini@api", "model": "gpt-4o-mini",
         "emulate": {"model": "llama-3-8b", "accelerator": "h100", "time_scale": 0.02},
         "pricing": {"price_map": "gpt-4o-mini"}},
    ],
    "costs": {"interval_s": 1},
}


async def test_gateway_records_capacity_and_costs_reconcile(tmp_path):
    async with gateway(CONFIG, tmp_path / "data") as g:
        key = g.key("acme")
        for i in range(8):
            status, _, body = await g.post("/v1/chat/completions", {
                "model": "llama@h100", "max_tokens": 16, "messages": [{"role": "user", "content": f"hello {i}"}]}, key)
            assert status == 200, body
        status, _, _ = await g.post("/v1/chat/completions", {
            "model": "mini@api", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}, key)
        assert status == 200
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    intervals = store.intervals(0, 2**40)
    assert intervals and {iv.deployment for iv in intervals} == {"llama@h100"}  # API deployments have no bill
    lo, hi = min(iv.start for iv in intervals), max(iv.end for iv in intervals)
    report = costs_report(store, lo, hi)
    d = report["deployments"]["llama@h100"]
    assert d["requests"] == 8 and d["output_tokens"] > 0 and d["provisioned_s"] == len(intervals)
    assert Decimal(d["allocated_usd"]) > 0
    assert Decimal(d["allocated_usd"]) + Decimal(d["idle_usd"]) == Decimal(d["bill_usd"])
    store.close()


async def test_dashboard_costs_api_matches_the_cli_and_is_admin_only(tmp_path):
    import asyncio

    import aiohttp

    from gw_helpers import ADMIN_KEY

    async with gateway(CONFIG, tmp_path / "data") as g:
        key = g.key("acme")
        for i in range(3):
            status, _, _ = await g.post("/v1/chat/completions", {
                "model": "llama@h100", "max_tokens": 8, "messages": [{"role": "user", "content": f"hi {i}"}]}, key)
            assert status == 200
        async with aiohttp.ClientSession() as s:
            # the recorder writes a provisioned interval at each interval boundary (1 s here): wait,
            # bounded, until the intervals holding the three requests are on record
            body: dict = {}
            for _ in range(300):
                async with s.get(g.url + "/dashboard/api/costs?range=1h",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
                    assert r.status == 200
                    body = await r.json()
                if any(x["deployment"] == "llama@h100" and x["requests"] == 3 for x in body["tables"]["deployments"]):
                    break
                await asyncio.sleep(0.1)
            async with s.get(g.url + "/dashboard/api/costs?range=1h", headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 403
            status, _, _ = await g.post("/v1/chat/completions", {
                "model": "mini@api", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}, key)
            async with s.get(g.url + "/dashboard/api/deployments?range=1h",
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
                deps = {x["deployment"]: x for x in (await r.json())["tables"]["deployments"]}
    # J/token: the power model for self-hosted hardware, an estimate for an API provider
    assert deps["llama@h100"]["energy_basis"] == "power model" and deps["mini@api"]["energy_basis"] == "estimate"
    row = next(x for x in body["tables"]["deployments"] if x["deployment"] == "llama@h100")
    assert row["requests"] == 3
    assert Decimal(row["allocated_usd"]) + Decimal(row["idle_usd"]) == Decimal(row["bill_usd"])
    assert sum(p["bill_usd"] for p in body["tables"]["series"]) > 0

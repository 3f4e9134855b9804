"""Alerts: thresholds crossed once per period across replicas, durable until delivered, HMAC
signed, Slack-compatible; a receiver on 127.0.0.1 counts deliveries."""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tokenomy.alerts.rules import anomaly_alerts, budget_alerts, BudgetUse
from tokenomy.alerts.service import AlertService
from tokenomy.alerts.store import AlertStore
from tokenomy.alerts.webhook import verify
from tokenomy.config import Alerts
from tokenomy.ledgerdb import LedgerDB

SECRET = "whsec-test"


class Receiver:
    def __init__(self):
        self.got: list[dict] = []
        self.ids: list[str] = []
        self.bad_signatures = 0
        self.down = False
        self.url = ""
        self.clock = time.time  # the senders' clock (a test may move it)

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        raw = await request.read()
        if not verify(SECRET, dict(request.headers), raw, now=self.clock()):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.got.append(json.loads(raw))
        self.ids.append(request.headers["X-Tokenomy-Alert-Id"])
        return web.Response(status=200)


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    yield rec
    await runner.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def metering(request, tmp_path):
    from tokenomy.metering import Metering

    if request.param == "sqlite":
        m = Metering.open(tmp_path / "data", ensure_admin=False)
        yield m
        m.shutdown()
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dashboard.pgschema import drop_schema, new_schema_url

    from tokenomy.metering.backends import open_metering

    url = new_schema_url("alerts")
    m = open_metering(tmp_path / "data", ledger_url=url, ensure_admin=False)
    yield m
    m.shutdown()
    drop_schema(url)


def spend(m, key_id: str, tenant: str, usd: str, ts: float) -> None:
    from tokenomy.metering import UsageEvent

    assert m.commit_blocking(UsageEvent(
        id=f"ev-{ts}-{usd}", ts=ts, tenant=tenant, key_id=key_id, model="m", deployment="d", input_tokens=10,
        cached_input_tokens=0, output_tokens=1, reasoning_tokens=0, cost_usd=Decimal(usd), price_usd=Decimal(usd),
        energy_joules=0.0, ttft_ms=1.0, latency_ms=2.0, status="ok"))


def service(m, url: str, clock, **cfg) -> AlertService:
    config = Alerts(webhooks=[{"url": url, "secret_env": "X"}], anomaly_factor=0, retry_base_s=1, **cfg)
    return AlertService(m, config, AlertStore(LedgerDB.for_ledger(m.ledger, ddl=__import__(
        "tokenomy.alerts.store", fromlist=["DDL"]).DDL)), clock=clock, secrets={url: SECRET})


async def test_thresholds_are_sent_once_per_crossing_across_replicas(metering, receiver):
    m = metering
    kid, _ = m.create_key("acme", budget_usd="10")
    now = {"t": time.time()}
    clock = lambda: now["t"]  # noqa: E731
    replicas = [service(m, receiver.url, clock) for _ in range(3)]
    async with aiohttp.ClientSession() as session:
        async def tick_all():
            for r in replicas:
                await r.tick(session)

        spend(m, kid, "acme", "4", now["t"] - 10)
        await tick_all()
        assert receiver.ids == []  # 40 %: nothing yet
        spend(m, kid, "acme", "1.5", now["t"] - 9)
        await tick_all()
        await tick_all()  # the same state seen again by every replica
        spend(m, kid, "acme", "3.5", now["t"] - 8)
        await tick_all()
        spend(m, kid, "acme", "2", now["t"] - 7)  # 110 %: the 100 % threshold
        await tick_all()
        await tick_all()
    kinds = [(g["tokenomy"]["kind"], g["tokenomy"]["threshold"]) for g in receiver.got]
    assert kinds == [("budget", 0.5), ("budget", 0.8), ("budget", 1.0)]  # each once, in order, 3 replicas
    assert len(set(receiver.ids)) == 3 and receiver.bad_signatures == 0
    first = receiver.got[0]
    assert "text" in first and first["blocks"][0]["type"] == "header"  # Slack-compatible
    assert "key " + kid in first["text"] and "$5.50" in first["text"]


async def test_a_receiver_that_is_down_gets_the_alert_later_exactly_once(metering, receiver):
    m = metering
    kid, _ = m.create_key("acme", budget_usd="1")
    now = {"t": time.time()}
    svc = service(m, receiver.url, lambda: now["t"])
    receiver.down, receiver.clock = True, lambda: now["t"]
    spend(m, kid, "acme", "0.9", now["t"] - 5)
    async with aiohttp.ClientSession() as session:
        assert await svc.tick(session) == 0  # 503: kept in the outbox
        rows = svc.store.rows()
        assert len(rows) == 2 and sum(r["delivered_at"] is None for r in rows) == 1  # 50 % silent, 80 % pending
        await svc.tick(session)  # backoff not over: not retried yet
        assert svc.failures == 1
        receiver.down = False
        now["t"] += 3600  # past any backoff
        # a restarted replica (a new service on the same ledger) delivers what is pending
        again = service(m, receiver.url, lambda: now["t"])
        assert await again.tick(session) == 1 and await again.tick(session) == 0
    assert [g["tokenomy"]["threshold"] for g in receiver.got] == [0.8]


def test_budget_rules_and_anomaly_rules():
    uses = [BudgetUse("tenant", "acme", "acme", "monthly", "2026-12", 100 * 10**12, 85 * 10**12)]
    alerts = budget_alerts(uses, [0.5, 0.8, 1.0])
    assert [a.id for a in alerts] == ["budget:tenant:acme:monthly:2026-12:0.5", "budget:tenant:acme:monthly:2026-12:0.8"]
    assert [a.fields["silent"] for a in alerts] == [True, False]  # only the highest reached is announced
    now = 1_800_000_000.0
    week = {"acme": 7 * 24 * 10**12, "calm": 7 * 24 * 10**12}  # $1/h on average
    hot = anomaly_alerts({"acme": 5 * 10**12, "calm": int(1.2e12), "new": 2 * 10**12}, week, now, factor=3,
                         min_pusd=10**12)
    assert sorted(a.tenant for a in hot) == ["acme", "new"]
    assert {a.id for a in hot} == {f"anomaly:acme:{int(now // 3600)}", f"anomaly:new:{int(now // 3600)}"}


def test_bad_alert_config_is_refused_with_the_reason():
    from tokenomy.config import parse_config
    from tokenomy.errors import ConfigError

    base = {"deployments": [{"name": "d", "base_url": "http://127.0.0.1:1/v1", "pricing": {"list": {"input": 1, "output": 1}}}]}
    for alerts, needle in (({"webhooks": [{"url": "ftp://x"}]}, "url"),
                           ({"budget_thresholds": [0]}, "budget_thresholds"),
                           ({"webhooks": [{"url": "http://x", "kinds": ["weather"]}]}, "kinds")):
        with pytest.raises(ConfigError, match=needle):
            parse_config({**base, "alerts": alerts}, "<t>")


async def test_a_plan_cap_reached_is_announced_once_per_window(tmp_path, receiver):
    import yaml

    from tokenomy.billing.plans import parse_plans
    from tokenomy.gateway.plans import PlanGate
    from tokenomy.metering import Metering

    m = Metering.open(tmp_path / "data", ensure_admin=False)
    m.create_tenant("acme", exist_ok=True)
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "plans.yaml").read_text())
    doc["tenants"]["acme"] = {"subscriptions": [{"plan": "free", "start": "2026-01-01"}]}
    gate = PlanGate(parse_plans(doc))
    now = {"t": time.time()}
    svc = service(m, receiver.url, lambda: now["t"])
    svc.gate = gate
    async with aiohttp.ClientSession() as session:
        for _ in range(49):
            gate.enforcer.record("acme", now["t"], tokens=10)
        await svc.tick(session)
        gate.enforcer.record("acme", now["t"], tokens=10)  # the 50th request of 50 per 5 h
        await svc.tick(session)
        await svc.tick(session)
    m.shutdown()
    caps = [g["tokenomy"] for g in receiver.got if g["tokenomy"]["kind"] == "cap"]
    assert [(c["cap"], c["used"], c["at_cap"]) for c in caps] == [("50 requests / 5h", 50, "block")]


async def test_the_gateway_runs_alerts_from_its_config(tmp_path, receiver, monkeypatch):
    import asyncio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
    from gw_helpers import gateway

    monkeypatch.setenv("TK_HOOK_SECRET", SECRET)
    config = {"deployments": [{"name": "d", "model": "m", "emulate": {"model": "llama-3-8b", "time_scale": 0.01},
                               "pricing": {"list": {"input": 10000, "output": 10000}}}],
              "alerts": {"webhooks": [{"url": receiver.url, "secret_env": "TK_HOOK_SECRET", "kinds": ["budget"]}],
                         "interval_s": 0.1, "anomaly_factor": 0}}
    async with gateway(config, tmp_path / "data") as g:
        key = g.key("acme", budget_usd="2")
        for _ in range(4):  # ~$0.40 each at $0.01 per token: past 50 % of $2
            await g.post("/v1/chat/completions", {"model": "d", "max_tokens": 40,
                                                  "messages": [{"role": "user", "content": "hello there"}]}, key)
        assert Decimal(g.metering.spend(g.metering.authenticate(key))["key"]["spent_usd"]) >= 1
        for _ in range(300):  # bounded: the loop runs every 0.1 s
            if receiver.got:
                break
            await asyncio.sleep(0.05)
    assert receiver.got and receiver.got[0]["tokenomy"]["kind"] == "budget" and receiver.bad_signatures == 0

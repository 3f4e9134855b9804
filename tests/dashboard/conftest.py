"""Dashboard fixtures: a real ledger seeded through the Metering API and a real aiohttp server
(in a background thread, so sync Playwright tests can drive it). `seeded` (and so every API
test) runs on the SQLite ledger and on the PostgreSQL ledger (a schema of its own)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web

from tokenomy.dashboard import mount
from tokenomy.metering import Metering, UsageEvent
from tokenomy.metering.periods import period_bounds

ADMIN_KEY = "tk-admin-dashboard-test-secret"
# USD per Mtok (input, output) of each deployment, and the model it serves
DEPLOYMENTS = {
    "small@l4": ("small", 0.08, 0.16),
    "small@h100": ("small", 0.12, 0.25),
    "large@h100": ("large", 1.5, 4.5),
    "large@api": ("large", 2.5, 10.0),
}
MARKUP = Decimal("1.3")


def make_event(i: int, ts: float, tenant: str, key_id: str, deployment: str, *, input_tokens: int, output_tokens: int,
               latency_ms: float, ttft_ms: float | None = None, status: str = "ok", route: dict | None = None,
               user: str | None = None, tags: dict[str, str] | None = None) -> UsageEvent:
    model, p_in, p_out = DEPLOYMENTS[deployment]
    cost = (Decimal(input_tokens) * Decimal(str(p_in)) + Decimal(output_tokens) * Decimal(str(p_out))) / Decimal(10**6)
    cost = cost.quantize(Decimal("1e-12"))
    extra = {"policy": "cost"}
    if route is not None:
        extra["route"] = route
    if user is not None:  # as the gateway's settle step records the request's `user` and `metadata`
        extra["user"] = user
    if tags:
        extra["tags"] = tags
    return UsageEvent(id=f"ev-{i}", ts=ts, tenant=tenant, key_id=key_id, model=model, deployment=deployment,
                      input_tokens=input_tokens, cached_input_tokens=0, output_tokens=output_tokens, reasoning_tokens=0,
                      cost_usd=cost, price_usd=(cost * MARKUP).quantize(Decimal("1e-12")),
                      energy_joules=0.3 * (input_tokens + output_tokens) * (3.0 if model == "large" else 1.0),
                      ttft_ms=ttft_ms, latency_ms=latency_ms, status=status, extra=extra)


def _route(strong: bool, rng: random.Random) -> dict:
    """A routing decision as the gateway records it: candidates weak..strong with USD/Mtok
    [input, cached input, output, reasoning] (what `route savings` re-prices with)."""
    (_, w_in, w_out), (_, s_in, s_out) = DEPLOYMENTS["small@l4"], DEPLOYMENTS["large@h100"]
    return {"alias": "auto", "policy": "quality", "strong": strong,
            "predicted_quality": round(rng.uniform(0.6, 0.95), 3),
            "candidates": [{"model": "small", "usd_per_mtok": [w_in, w_in, w_out, w_out]},
                           {"model": "large", "usd_per_mtok": [s_in, s_in, s_out, s_out]}]}


def synthetic_events(keys: dict[str, str], now: float, n: int = 1200, seed: int = 7) -> list[UsageEvent]:
    """Deterministic traffic over the last 24 h (plus a week's tail) for tenants acme/globex/initech."""
    rng = random.Random(seed)
    tenants = list(keys)
    out = []
    for i in range(n):
        age = rng.random() ** 2 * 86400 if i % 5 else rng.random() * 6 * 86400  # all within 7 days
        tenant = tenants[i % len(tenants)]
        strong = rng.random() < 0.3
        dep = rng.choice(["large@h100", "large@api"] if strong else ["small@l4", "small@l4", "small@h100"])
        slow = 3.0 if strong else 1.0
        out.append(make_event(
            i, now - age, tenant, keys[tenant], dep, input_tokens=rng.randint(50, 2000), output_tokens=rng.randint(10, 600),
            latency_ms=slow * rng.uniform(200, 900), ttft_ms=slow * rng.uniform(30, 150),
            status=_status(rng.random()),
            route=_route(strong, rng) if i % 10 < 7 else None, **_who(i)))
    return out


FEATURES = ("search", "chat", "summarise")


def _who(i: int) -> dict:
    """End user and tags from the index alone (the random stream above stays as it was): 3 in 4
    requests name a user (9 of them), 4 in 5 carry tags (feature + env)."""
    user = None if i % 4 == 0 else f"user-{(i // 3) % 9}"
    tags = None if i % 5 == 1 else {"feature": FEATURES[i % 3], "env": "prod" if i % 2 else "staging"}
    return {"user": user, "tags": tags}


def _status(u: float) -> str:
    """3 % upstream failures, 3 % client errors (4xx passed back), 1 % abandoned by the client."""
    return "upstream_error" if u < 0.03 else "error" if u < 0.06 else "cancelled" if u < 0.07 else "ok"


@dataclass
class Seeded:
    data_dir: Path
    metering: Metering
    admin_key: str
    secrets: dict[str, str]     # tenant -> API key
    key_ids: dict[str, str]     # tenant -> key id
    events: list[UsageEvent] = field(default_factory=list)
    now: float = 0.0
    ledger_url: str | None = None  # the PostgreSQL ledger's, else SQLite


def open_meter(data_dir: Path, ledger_url: str | None = None) -> Metering:
    if ledger_url is None:
        return Metering.open(data_dir, admin_key=ADMIN_KEY, synchronous="OFF")
    from tokenomy.metering.backends import open_metering

    return open_metering(data_dir, ledger_url=ledger_url, admin_key=ADMIN_KEY)


def seed(data_dir: Path, *, n: int = 1200, now: float | None = None, ledger_url: str | None = None) -> Seeded:
    """Tenants, keys and events through the real Metering API (events committed via commit())."""
    if now is None:
        now = time.time()
        day0, _ = period_bounds("daily", now)
        if now - day0 < 3600:   # just after midnight UTC "today" holds few events: seed as of yesterday's end
            now = day0 - 1.0
    m = open_meter(data_dir, ledger_url)
    m.create_tenant("acme", budget_usd="50", budget_period="monthly", soft_budget_usd="0.5")
    m.create_tenant("initech")
    ids, secrets = {}, {}
    for tenant in ("acme", "initech"):
        ids[tenant], secrets[tenant] = m.create_key(tenant, rpm=600, name=f"{tenant}-main")
    # globex gets a daily budget it has used 90% of (today, UTC), so it is "near a limit"
    ids["globex"] = "pending"
    events = synthetic_events({"acme": ids["acme"], "globex": "kglobex", "initech": ids["initech"]}, now, n)
    day0, _ = period_bounds("daily", now)
    globex_today = sum((e.price_usd for e in events if e.tenant == "globex" and e.ts >= day0), Decimal(0))
    budget = (globex_today / Decimal("0.9")).quantize(Decimal("1e-6"))
    m.create_tenant("globex", budget_usd=str(budget), budget_period="daily")
    ids["globex"], secrets["globex"] = m.create_key("globex", rpm=10, tpm=5000, name="globex-main")
    events = [_rekey(e, ids["globex"]) if e.tenant == "globex" else e for e in events]

    async def commit_all():
        await m.start()
        await asyncio.gather(*(m.commit(e) for e in events))

    asyncio.run(commit_all())
    return Seeded(data_dir, m, ADMIN_KEY, secrets, ids, events, now, ledger_url)


def _rekey(e: UsageEvent, key_id: str) -> UsageEvent:
    from dataclasses import replace

    return replace(e, key_id=key_id)


class ServerThread:
    """An aiohttp app with the dashboard mounted, served on 127.0.0.1 from its own thread/loop."""

    def __init__(self, metering: Metering, config=None, app: web.Application | None = None, clock=None):
        self.metering, self.config, self.clock = metering, config, clock
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = self.app if self.app is not None else web.Application()
        self.app = app
        mount(app, self.metering, config=self.config, clock=self.clock)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> "ServerThread":
        self._thread.start()
        assert self._ready.wait(30), "dashboard server did not start"
        return self

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="module", params=BACKENDS)
def seeded(request, tmp_path_factory) -> Seeded:
    if request.param == "sqlite":
        s = seed(tmp_path_factory.mktemp("dash-ledger"))
        yield s
        s.metering.shutdown()
        return
    from .pgschema import drop_schema, new_schema_url

    url = new_schema_url("dash")
    try:
        s = seed(tmp_path_factory.mktemp("dash-ledger-pg"), ledger_url=url)
        yield s
        s.metering.shutdown()
    finally:
        drop_schema(url)


@pytest.fixture(scope="module")
def server(seeded) -> ServerThread:
    # the dashboard's "now" is the seed's: a run across midnight UTC sees the same "today"
    srv = ServerThread(seeded.metering, config={"min_fold_interval_s": 0.0}, clock=lambda: seeded.now).start()
    yield srv
    srv.stop()

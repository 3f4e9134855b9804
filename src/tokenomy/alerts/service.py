"""The gateway's alert loop: every `interval_s`, evaluate the rules on the ledger (spend per
budget period, the plan gate's cap counters, the last hour vs the trailing week), claim each due
alert once per webhook in the ledger, and deliver what is pending with retries and backoff.

Every replica runs the loop; the claim makes each crossing one row, whichever replica sees it
first, and the lease makes one replica deliver it at a time. Ledger reads and writes run in a
thread; the loop never blocks requests. Injectable clock and HTTP session for tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from tokenomy.alerts.rules import Alert, BudgetUse, CapUse, anomaly_alerts, budget_alerts, cap_alerts
from tokenomy.alerts.store import AlertStore
from tokenomy.alerts.webhook import body_of, request_of

log = logging.getLogger("tokenomy.alerts")
LEASE_S = 30.0


def _hook_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:8]


class AlertService:
    def __init__(self, metering, config, store: AlertStore, *, plan_gate=None, clock: Callable[[], float] = time.time,
                 secrets: dict[str, str] | None = None):
        """`config`: tokenomy.config.Alerts; `secrets`: webhook url -> HMAC secret (from the env)."""
        self.metering, self.config, self.store, self.gate, self.clock = metering, config, store, plan_gate, clock
        self.secrets = secrets or {}
        self.sent = 0
        self.failures = 0

    # ------------------------------------------------------------------ what is due
    def budget_uses(self, now: float) -> list[BudgetUse]:
        from tokenomy.metering.periods import period_bounds, period_key

        ledger = self.metering.ledger
        scopes = [("tenant", t.name, t.name, t.budget) for t in ledger.list_tenants()]
        scopes += [("key", k.key_id, k.tenant, k.budget) for k in ledger.list_keys(None) if k.revoked_at is None]
        out = []
        for kind, subject, tenant, budget in scopes:
            limit = budget.budget_pusd if budget.budget_pusd is not None else budget.soft_budget_pusd
            if not limit:
                continue
            since, until = period_bounds(budget.period, now)
            spent = ledger.spend_pusd(kind=kind, subject=subject, since=since, until=until)
            out.append(BudgetUse(kind, subject, tenant, budget.period, period_key(budget.period, now), int(limit),
                                 int(spent)))
        return out

    def cap_uses(self, now: float) -> list[CapUse]:
        if self.gate is None:
            return []
        out = []
        for t in self.metering.ledger.list_tenants():
            plan = self.gate.plan(t.name, now)
            if not plan.caps:
                continue
            view = self.gate.enforcer._counter(t.name, now).view(now)
            for cap in plan.caps:
                out.append(CapUse(t.name, plan.name, f"{cap.limit} {cap.unit} / {cap.window}", cap.window_seconds,
                                  view.used(cap.window_seconds, cap.unit), cap.limit, cap.at_cap))
        return out

    def anomaly_inputs(self, now: float) -> tuple[dict[str, int], dict[str, int]]:
        ledger = self.metering.ledger
        last, week = {}, {}
        for t in ledger.list_tenants():
            last[t.name] = ledger.spend_pusd(kind="tenant", subject=t.name, since=now - 3600, until=now)
            week[t.name] = ledger.spend_pusd(kind="tenant", subject=t.name, since=now - 8 * 86400, until=now - 86400)
        return last, week

    def due(self, now: float) -> list[Alert]:
        c = self.config
        alerts = budget_alerts(self.budget_uses(now), list(c.budget_thresholds))
        alerts += cap_alerts(self.cap_uses(now), now)
        if c.anomaly_factor:
            last, week = self.anomaly_inputs(now)
            alerts += anomaly_alerts(last, week, now, factor=c.anomaly_factor, min_pusd=int(c.anomaly_min_usd * 1e12))
        return alerts

    def claim(self, now: float) -> int:
        """Claim every due alert for every webhook that wants its kind; returns how many were new."""
        new = 0
        for alert in self.due(now):
            for hook in self.config.webhooks:
                if alert.kind not in hook.kinds:
                    continue
                row = Alert(f"{alert.id}@{_hook_id(hook.url)}", alert.kind, alert.tenant, alert.subject,
                            alert.title, alert.text, alert.fields)
                new += self.store.claim(row, {"url": hook.url, "payload": body_of(alert)}, now)
        return new

    # ------------------------------------------------------------------ delivery
    async def deliver(self, session: aiohttp.ClientSession) -> int:
        now = self.clock()
        pending = await asyncio.to_thread(self.store.lease, now, LEASE_S)
        done = 0
        for p in pending:
            url, payload = p.body["url"], p.body["payload"]
            raw, headers = request_of(p.id, payload, self.secrets.get(url), now)
            try:
                async with session.post(url, data=raw, headers=headers) as resp:
                    await resp.read()
                    ok, error = 200 <= resp.status < 300, f"HTTP {resp.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"
            if ok:
                await asyncio.to_thread(self.store.delivered, p.id, self.clock())
                done += 1
                self.sent += 1
            else:
                self.failures += 1
                backoff = min(3600.0, self.config.retry_base_s * 2 ** p.attempts) * (0.5 + random.random())
                await asyncio.to_thread(self.store.failed, p.id, self.clock(), self.clock() + backoff, error)
                log.warning("alert %s to %s not delivered (%s); retry in %.0f s", p.id, url, error, backoff)
        return done

    async def tick(self, session: aiohttp.ClientSession) -> int:
        await asyncio.to_thread(self.claim, self.clock())
        return await self.deliver(session)

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                try:
                    await self.tick(session)
                except Exception as exc:  # noqa: BLE001 - the ledger may be away: try again next tick
                    log.warning("alert evaluation failed: %s", exc)
                await asyncio.sleep(self.config.interval_s)

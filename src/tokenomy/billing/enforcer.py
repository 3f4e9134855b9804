"""Per-tenant cap enforcement for the gateway: one RollingCounter per tenant, the plan in force
from the plan book, and `check_caps` for the decision. Counters are warmed from the ledger on
first use (when a LedgerSource is given) so caps survive a restart.

    enforcer = CapEnforcer(load_plans(path), LedgerSource(data_dir))
    d = enforcer.check(principal.tenant, time.time())      # before routing
    if d.action == "block": 429 with Retry-After = d.retry_after_seconds(now), message d.message
    if d.action == "downgrade": route to model group d.downgrade_group
    enforcer.record(principal.tenant, event.ts, event.input_tokens + event.output_tokens)  # after commit
Single-threaded use (the gateway's event loop); in-process only (one gateway process). With Redis
counters configured the gateway keeps cap counters in Redis instead (billing.redis_caps, shared by
every replica) and uses this enforcer only as the fail-open fallback."""

from __future__ import annotations

from tokenomy.billing.caps import CapDecision, RollingCounter, check_caps, max_window_seconds
from tokenomy.billing.plans import Plan, PlanBook


class CapEnforcer:
    def __init__(self, book: PlanBook, source=None, *, bucket_seconds: float = 60.0):
        self.book = book
        self.source = source  # a LedgerSource, or None for a cold start
        self.bucket_seconds = bucket_seconds
        self.horizon_seconds = max((max_window_seconds(p) for p in book.plans.values()), default=0.0)
        self._counters: dict[str, RollingCounter] = {}

    def _counter(self, tenant: str, now: float) -> RollingCounter:
        c = self._counters.get(tenant)
        if c is None:
            if self.source is not None:
                c = self.source.rolling_counter(tenant, now, self.horizon_seconds, self.bucket_seconds)
            else:
                c = RollingCounter(self.horizon_seconds, self.bucket_seconds)
            self._counters[tenant] = c
        return c

    def check(self, tenant: str, now: float, plan: Plan | None = None, *, pending_requests: int = 0) -> CapDecision:
        """`plan`: the tenant's plan at `now` when the caller already looked it up (cached);
        `pending_requests`: admitted requests not recorded yet (in flight), counted as made now.
        O(log n) per call (RollingCounter.view)."""
        if plan is None:
            plan = self.book.plan(self.book.plan_at(tenant, now))
        if not plan.caps:
            return CapDecision("allow")
        return check_caps(plan, self._counter(tenant, now).view(now, pending_requests))

    def record(self, tenant: str, ts: float, tokens: int, requests: int = 1) -> None:
        """Count a committed event. With a ledger source and no counter yet, nothing to do: the
        first check() warms the counter from the ledger, which already holds this event (adding
        it here too would count it twice)."""
        if self.horizon_seconds <= 0:
            return
        c = self._counters.get(tenant)
        if c is None:
            if self.source is not None:
                return
            c = self._counter(tenant, ts)
        c.add(ts, requests=requests, tokens=tokens)

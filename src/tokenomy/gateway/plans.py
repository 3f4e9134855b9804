"""Plans on the request path (issue 7): caps before dispatch, the tenant's price per event.

    gate = load_plan_gate(config, data_dir)       # None when the config has no `plans:`
    state = gate.check(tenant, now)                # before routing: allow | block | downgrade | overage
    state = await gate.acheck(tenant, now)         # the same on the request path (never blocks the loop)
    price = gate.price_usd(state, counts, cost)    # the event's price_usd (pure, no I/O)
    gate.record(event)                             # after the event is committed

The plan book comes from `plans:` (a plans YAML path or the same mapping inline); a tenant's
plan from the book's `tenants.<name>.subscriptions`, or `tenants[].plan` in the gateway config
(from the start of time). Cap counters are warmed from the ledger on a tenant's first request,
so caps survive a restart. Plan look-ups are cached per tenant until the next plan change.

With Redis counters configured (counters.url or TOKENOMY_REDIS_URL) the cap counters live in
Redis (billing.redis_caps), shared by every replica: together they admit at most a cap's
limit. Redis unreachable: counters.fail_mode closed -> 503 with a clear message; open -> this
process's own counters (caps then hold per replica).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from tokenomy.billing.caps import CapDecision
from tokenomy.billing.enforcer import CapEnforcer
from tokenomy.billing.event_price import event_price_usd, max_price_multiplier, usage_price_usd
from tokenomy.billing.events import BILLABLE_STATUSES
from tokenomy.billing.plans import Plan, PlanBook, load_plans, parse_plans
from tokenomy.config import GatewayConfig
from tokenomy.errors import ConfigError, TokenomyError
from tokenomy.gateway.errors import ApiError
from tokenomy.metering.errors import MeteringError

_ALLOW = CapDecision("allow")


@dataclass(slots=True)
class PlanState:
    """What the plan decided for one request."""

    plan: Plan
    decision: CapDecision
    tracked: bool = False  # holds an in-flight slot (plans with caps) until PlanGate.finish
    shared: bool = False  # the slot (and the decision) came from the shared Redis counters

    @property
    def action(self) -> str:
        return self.decision.action


def _unavailable(exc: MeteringError) -> ApiError:
    retry = exc.retry_after_s
    headers = {} if retry is None else {"Retry-After": str(max(1, math.ceil(retry)))}
    return ApiError(exc.status, exc.message, code=exc.code, headers=headers)


def load_book(config: GatewayConfig) -> PlanBook | None:
    """The plan book of a config (None without `plans:`), tenant assignments merged in."""
    raw = config.plans
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            book = load_plans(Path(raw).expanduser())
        except ConfigError as exc:
            raise ConfigError(f"invalid config: plans: {exc}") from None
    else:
        # inline: the whole plans-file mapping, or just its `plans:` (a mapping or a list of named
        # plans); errors read "invalid config: plans.<name>.<field>: ..."
        data = raw if isinstance(raw, dict) and "plans" in raw else {"plans": raw}
        book = parse_plans(data, origin="invalid config")
    assigned = {t.name: (i, t.plan) for i, t in enumerate(config.tenants) if t.plan is not None}
    if not assigned:
        return book
    tenants = {name: tb.model_dump(by_alias=True) for name, tb in book.tenants.items()}
    for name, (i, plan) in assigned.items():
        if plan not in book.plans and plan != "list":
            raise ConfigError(f"invalid config: tenants[{i}].plan: unknown plan '{plan}' "
                              f"(known: {', '.join(sorted(book.plans))})")
        tb = tenants.setdefault(name, {})
        if tb.get("subscriptions"):
            raise ConfigError(f"invalid config: tenants[{i}].plan: tenant '{name}' already has subscriptions "
                              "in the plans file; assign its plan in one place")
        tb["subscriptions"] = [{"plan": plan, "start": 0.0}]
    return PlanBook.model_validate({**book.model_dump(by_alias=True), "tenants": tenants})


def check_plans(config: GatewayConfig, group_names) -> PlanBook | None:
    """Load and cross-check the plans against the gateway's model groups (ConfigError naming the field)."""
    book = load_book(config)
    if book is None:
        return None
    groups = set(group_names)
    for pname, plan in book.plans.items():
        for j, cap in enumerate(plan.caps):
            g = cap.downgrade_group
            if g is not None and g not in groups:
                raise ConfigError(f"invalid config: plans: plans.{pname}.caps[{j}].downgrade_group: '{g}' is not a "
                                  f"model group of this gateway (known: {', '.join(sorted(groups))})")
    return book


class PlanGate:
    def __init__(self, book: PlanBook, source: Any = None, shared: Any = None):
        self.book = book
        self.enforcer = CapEnforcer(book, source)
        self.shared = shared  # billing.redis_caps.RedisCaps, or None: in-process counters only
        self._plans: dict[str, tuple[float, float, Plan]] = {}  # tenant -> (valid_from, valid_until, plan)
        # Admitted, not yet recorded requests per tenant: counted by the caps, so concurrent
        # requests cannot all slip under a requests cap before any of them is recorded.
        self._in_flight: dict[str, int] = {}

    def plan(self, tenant: str, now: float) -> Plan:
        hit = self._plans.get(tenant)
        if hit is not None and hit[0] <= now < hit[1]:
            return hit[2]
        valid_from, valid_until = -math.inf, math.inf
        for s in self.book.tenant(tenant).subscriptions:
            if s.start <= now:
                valid_from = s.start
            else:
                valid_until = s.start
                break
        plan = self.book.plan(self.book.plan_at(tenant, now))
        self._plans[tenant] = (valid_from, valid_until, plan)
        return plan

    def check(self, tenant: str, now: float) -> PlanState:
        """The decision for the next request; unless blocked, a capped plan's request holds an
        in-flight slot until `finish` (call it once, right after `record`)."""
        plan = self.plan(tenant, now)
        if not plan.caps:
            return PlanState(plan, _ALLOW)
        if self.shared is not None:
            try:
                res = self.shared.check(tenant, plan, now)
            except MeteringError as exc:  # Redis down, fail mode closed
                raise _unavailable(exc) from None
            if res is not None:
                return PlanState(plan, res[0], tracked=res[1], shared=True)
            # None: Redis down, fail mode open -> this process's counters below
        return self._local_check(tenant, now, plan)

    async def acheck(self, tenant: str, now: float) -> PlanState:
        """check for the request path: a plan without caps touches nothing shared; shared caps
        are awaited on Redis's async client, never blocking the event loop."""
        plan = self.plan(tenant, now)
        if not plan.caps:
            return PlanState(plan, _ALLOW)
        if self.shared is not None:
            try:
                res = await self.shared.acheck(tenant, plan, now)
            except MeteringError as exc:
                raise _unavailable(exc) from None
            if res is not None:
                return PlanState(plan, res[0], tracked=res[1], shared=True)
        if self.enforcer.source is not None and tenant not in self.enforcer._counters:
            import asyncio

            await asyncio.to_thread(self.enforcer._counter, tenant, now)  # warm from the ledger, off the loop
        return self._local_check(tenant, now, plan)

    def _local_check(self, tenant: str, now: float, plan: Plan) -> PlanState:
        d = self.enforcer.check(tenant, now, plan, pending_requests=self._in_flight.get(tenant, 0))
        if d.action == "block":
            return PlanState(plan, d)
        self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        return PlanState(plan, d, tracked=True)

    def finish(self, tenant: str, state: PlanState) -> None:
        """Release the request's in-flight slot (idempotent)."""
        if state.tracked:
            state.tracked = False
            if state.shared:
                self.shared.release(tenant)
                return
            n = self._in_flight.get(tenant, 0) - 1
            if n > 0:
                self._in_flight[tenant] = n
            else:
                self._in_flight.pop(tenant, None)

    def price_usd(self, state: PlanState, counts: tuple[int, int, int, int], cost_usd: Decimal) -> Decimal:
        """counts: (input incl. cached, cached input, output incl. reasoning, reasoning) as in usage."""
        inp, cached, out, _ = counts
        cached = min(cached, inp)
        categories = {"input": inp - cached, "cached_input": cached, "output": out}
        d = state.decision
        cap = d.cap if d.action == "overage" else None
        return event_price_usd(state.plan, categories, cost_usd, overage_cap=cap)

    def worst_case_usd(self, state: PlanState, input_tokens: int, max_output_tokens: int,
                       worst_cost_usd: Decimal) -> Decimal:
        """Worst-case price of a request for budget reservations (>= the cost-based worst case)."""
        d = state.decision
        prices = d.cap.overage if d.action == "overage" and d.cap is not None else state.plan.usage
        worst = worst_cost_usd * max(Decimal(1), max_price_multiplier(state.plan))
        if prices:
            worst += usage_price_usd(prices, {"input": input_tokens, "output": max_output_tokens})
        return worst

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        if self.enforcer.source is not None:
            self.enforcer.source.close()

    def record(self, event: Any) -> None:
        if event.status in BILLABLE_STATUSES:
            tokens = event.input_tokens + event.output_tokens
            if self.shared is not None:
                self.shared.record(event.tenant, event.ts, tokens)
            self.enforcer.record(event.tenant, event.ts, tokens)  # the fail-open fallback stays current


def load_plan_gate(config: GatewayConfig, group_names, data_dir: Path | None) -> PlanGate | None:
    book = check_plans(config, group_names)
    if book is None:
        return None
    source = None
    if data_dir is not None:
        from tokenomy.billing.ledger_source import open_ledger_source

        try:
            source = open_ledger_source(data_dir)  # PostgreSQL with TOKENOMY_LEDGER_URL, else SQLite
        except (OSError, TokenomyError):
            source = None
    return PlanGate(book, source, shared=open_shared_caps(config, book, source))


def open_shared_caps(config: GatewayConfig, book: PlanBook, source: Any = None):
    """RedisCaps when Redis counters are configured and some plan has caps, else None."""
    from tokenomy.metering.backends import resolve_counters

    c = config.counters
    url, fail_mode, prefix = resolve_counters(c.url, c.fail_mode, c.prefix)
    windows = {cap.window_seconds for plan in book.plans.values() for cap in plan.caps}
    if not url or not windows:
        return None
    from tokenomy.billing.redis_caps import RedisCaps
    from tokenomy.metering.redis_counters import RedisCounterStore

    return RedisCaps(RedisCounterStore(url, prefix=prefix, fail_mode=fail_mode), windows, source)

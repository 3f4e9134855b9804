"""Budgets that can be spent: reserve for the deployment actually chosen, top up before a dearer
fallback (or skip it), cap the upstream's max_tokens to what the budget affords when the client
set none, and refuse saying why.

    worst = deployment_worst_usd(gw, ctx_params, d, output_tokens)   # what one call may cost on d
    cap   = affordable_output_tokens(...)                             # the largest output that fits
    r     = await reserve(m, principal, usd, wait_s=...)              # waits while in-flight holds settle
    ok    = await top_up(m, ctx, extra_usd)                           # before a dearer fallback

Metering's async API (`areserve`, `atop_up`, `aheadroom_usd`: issue 14 §2, metering side) is used
when present; until then these adapters do the same with its synchronous methods: a bounded
poll for held budgets, a top-up as a second reservation released with the first.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import ROUND_UP, Decimal
from typing import TYPE_CHECKING, Any

from tokenomy.gateway.errors import ApiError
from tokenomy.metering.errors import BudgetExceeded

if TYPE_CHECKING:
    from tokenomy.gateway.lifecycle.state import RequestCtx
    from tokenomy.gateway.routing import DeploymentRuntime
    from tokenomy.metering.types import Principal, Reservation

# Reserve a little above our own input estimate: an upstream's tokenizer may count more.
INPUT_MARGIN = 1.1
INPUT_SLACK_TOKENS = 16
DEFAULT_WAIT_S = 2.0  # how long a request waits for in-flight reservations to settle
POLL_S = 0.01
_PICO = Decimal("1e-12")


def worst_case_usd(deployments, input_tokens: int, max_output_tokens: int) -> Decimal:
    """Worst case over `deployments`: no cache hits, all of max_output_tokens generated at the
    highest output/reasoning price."""
    inp = int(input_tokens * INPUT_MARGIN) + INPUT_SLACK_TOKENS
    best = 0.0
    for d in deployments:  # floats: the input margin dwarfs any rounding
        c = inp * d.p_in + max_output_tokens * (d.p_out if d.p_out >= d.p_reason else d.p_reason)
        if c > best:
            best = c
    return Decimal(repr(best))


def priced_worst_usd(plans: Any, plan_state: Any, deployments, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The worst case as the budget counts it: the tenant's plan price when plans apply."""
    worst = worst_case_usd(deployments, input_tokens, max_output_tokens)
    if plan_state is not None:
        worst = plans.worst_case_usd(plan_state, input_tokens, max_output_tokens, worst)
    return worst


def affordable_output_tokens(plans: Any, plan_state: Any, d: DeploymentRuntime, input_tokens: int,
                             n_choices: int, headroom_usd: Decimal, limit_tokens: int) -> int:
    """The largest max_tokens (per choice, <= limit_tokens) whose worst case on d fits the
    headroom; 0 when not even one token fits. The worst case is linear in the output."""
    w0 = priced_worst_usd(plans, plan_state, [d], input_tokens, 0)
    if w0 > headroom_usd:
        return 0
    per_token = priced_worst_usd(plans, plan_state, [d], input_tokens, n_choices) - w0  # one token per choice
    if per_token <= 0:
        return limit_tokens
    n = min(limit_tokens, int((headroom_usd - w0) / per_token))
    while n > 0 and priced_worst_usd(plans, plan_state, [d], input_tokens, n * n_choices) > headroom_usd:
        n -= 1  # float rounding at the edge
    return max(0, n)


# ---------------------------------------------------------------------- refusals
@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "exhausted" (the budget is spent) | "held" (requests in flight hold the rest)
    message: str
    reset_at: float | None  # epoch seconds when the period's budget resets (None: a total budget)
    scope: str | None = None  # which budget refused: "user" (an end-user cap) | "key" | "tenant"


def refusal_error(r: Refusal, now: float | None = None) -> ApiError:
    """A refused request as OpenAI-style JSON that the official SDK does not retry uselessly:
    `x-should-retry: false` when the budget is spent (nothing changes before the reset),
    a short Retry-After (which the SDK honours) when in-flight requests hold it."""
    from tokenomy.billing.periods import iso

    headers = {"x-tokenomy-budget-refused": r.reason}
    if r.scope is not None:
        headers["x-tokenomy-budget-scope"] = r.scope
    if r.reset_at is not None:
        headers["x-tokenomy-budget-reset"] = iso(r.reset_at)
    if r.reason == "held":
        headers.update({"Retry-After": "1", "x-should-retry": "true"})
        return ApiError(429, r.message + "; requests in flight hold the rest of the budget: retry in a moment",
                        code="budget_held", headers=headers)
    headers["x-should-retry"] = "false"
    when = f"; it resets at {iso(r.reset_at)}" if r.reset_at is not None else ""
    return ApiError(429, r.message + when, code="budget_exhausted", headers=headers, type="insufficient_quota")


# ---------------------------------------------------------------------- metering adapters
def _scopes(m: Any, p: Principal) -> list[tuple[Decimal, Decimal, Decimal, str]]:
    """(limit, spent, reserved, period) of each hard budget of the key and its tenant."""
    out = []
    for info in m.spend(p).values():
        if info.get("budget_usd") is None:
            continue
        out.append((Decimal(info["budget_usd"]), Decimal(info["spent_usd"]), Decimal(info["reserved_usd"]),
                    info.get("budget_period") or "total"))
    return out


def _reset_at(periods: list[str], now: float) -> float | None:
    from tokenomy.metering.periods import period_bounds

    ends = [period_bounds(period, now)[1] for period in periods]
    ends = [e for e in ends if e is not None]
    return min(ends) if ends else None


async def headroom_usd(m: Any, p: Principal) -> Decimal | None:
    """What the key (and its tenant) may still reserve now; None: no hard budget."""
    if p.is_admin:
        return None
    if hasattr(m, "aheadroom_usd"):
        return await m.aheadroom_usd(p)
    scopes = _scopes(m, p)
    if not scopes:
        return None
    return max(Decimal(0), min(limit - spent - reserved for limit, spent, reserved, _ in scopes))


def _refusal_of(m: Any, p: Principal, usd: Decimal, exc: BudgetExceeded) -> Refusal:
    reason = getattr(exc, "reason", None)
    reset_at = getattr(exc, "reset_at", None)
    if reason is None:  # the synchronous API: tell "held" from "exhausted" by the counters
        scopes = _scopes(m, p)
        reason = "held" if all(limit - spent >= usd for limit, spent, _, _ in scopes) else "exhausted"
        reset_at = _reset_at([s[3] for s in scopes], time.time())
    return Refusal(reason, exc.message, reset_at, getattr(exc, "scope", None))


async def reserve(m: Any, p: Principal, usd: Decimal, *, wait_s: float | None = None) -> Reservation:
    """Hold `usd` against the budgets, waiting (bounded) while requests in flight hold what this
    one needs. Raises BudgetRefused."""
    if hasattr(m, "areserve"):
        try:
            return await m.areserve(p, usd, wait_s=wait_s)
        except BudgetExceeded as exc:
            raise BudgetRefused(_refusal_of(m, p, usd, exc)) from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (DEFAULT_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            return m.reserve(p, usd)
        except BudgetExceeded as exc:
            refusal = _refusal_of(m, p, usd, exc)
            if refusal.reason != "held" or loop.time() >= deadline:
                raise BudgetRefused(refusal) from None
        await asyncio.sleep(POLL_S)


async def top_up(m: Any, ctx: RequestCtx, extra_usd: Decimal) -> bool:
    """Raise the request's reservation by extra_usd (no wait); False when the budget has no room."""
    if extra_usd <= 0:
        return True
    r = ctx.reservation
    if r is None:
        return False
    if hasattr(m, "atop_up"):
        added = extra_usd.quantize(_PICO, rounding=ROUND_UP)  # the ledger's resolution
        if not await m.atop_up(r, added):
            return False
    else:
        try:
            hold = m.reserve(ctx.principal, extra_usd)
        except BudgetExceeded:
            return False
        ctx.extra_holds.append(hold)
        added = hold.amount_usd
    ctx.reserved_usd += added
    if ctx.allowance is not None:
        ctx.allowance.left_usd += added
    return True


def release_extra(m: Any, ctx: RequestCtx) -> None:
    """Release top-ups held as separate reservations (after the main event settled, or on failure)."""
    while ctx.extra_holds:
        m.release(ctx.extra_holds.pop())


class BudgetRefused(Exception):
    def __init__(self, refusal: Refusal):
        super().__init__(refusal.message)
        self.refusal = refusal

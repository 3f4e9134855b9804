"""Rating: a tenant's billable events in one period -> charge line items per plan component.

Pure: no clock, no I/O. Events must be sorted by (ts, id). `lookback` holds the tenant's
events just before the period, so rolling-window caps see the usage that spills over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal

from tokenomy.billing.events import BillableEvent, Totals, by_key, totals
from tokenomy.billing.money import ZERO, line_amount
from tokenomy.billing.periods import Period, iso
from tokenomy.billing.plans import CATEGORIES, Cap, Plan, PlanBook
from tokenomy.billing.tiers import charge

USAGE_KINDS = ("usage", "overage", "cost_plus", "list")  # what a minimum commitment counts
CHARGE_KINDS = ("subscription", *USAGE_KINDS, "commitment")


@dataclass(frozen=True, slots=True)
class LineItem:
    kind: str  # subscription | usage | overage | cost_plus | list | commitment | adjustment | credit | rounding
    description: str
    amount_usd: Decimal
    plan: str | None = None
    category: str | None = None
    quantity: int | None = None
    unit: str | None = None
    period: str | None = None  # adjustment: the corrected period
    credit_id: str | None = None

    def to_dict(self) -> dict:
        from tokenomy.billing.money import usd_str

        out = {"kind": self.kind, "description": self.description, "amount_usd": usd_str(self.amount_usd)}
        for name in ("plan", "category", "quantity", "unit", "period", "credit_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "LineItem":
        return cls(**{**d, "amount_usd": Decimal(d["amount_usd"])})


@dataclass(frozen=True, slots=True)
class Segment:
    plan: str
    start: float
    end: float
    fraction: Decimal  # share of the period's seconds

    def to_dict(self) -> dict:
        return {"plan": self.plan, "start": iso(self.start), "end": iso(self.end), "fraction": str(self.fraction)}


@dataclass(slots=True)
class Rated:
    lines: list[LineItem]
    segments: list[Segment]
    usage: Totals
    overage_requests: int = 0
    caps_hit: dict[str, int] = field(default_factory=dict)  # cap label -> requests decided by it

    @property
    def charges_usd(self) -> Decimal:
        return sum((li.amount_usd for li in self.lines), ZERO)


def classify_caps(book: PlanBook, tenant: str, events: Sequence[BillableEvent],
                  lookback: Sequence[BillableEvent] = ()) -> list[tuple[str, Cap] | None]:
    """For each event: (action, cap) decided by the caps of its plan given the usage before it in the
    rolling windows (same rule as check_caps), or None when allowed."""
    allev = [*lookback, *events]
    n0 = len(lookback)
    windows = sorted({(c.window_seconds, c.unit) for p in book.plans.values() for c in p.caps})
    used: dict[tuple[float, str], list[int]] = {}
    for w, unit in windows:  # two-pointer sliding sums of the usage strictly before each event
        lo, running, out = 0, 0, []
        for i, e in enumerate(allev):
            while lo < i and allev[lo].ts <= e.ts - w:
                running -= 1 if unit == "requests" else allev[lo].tokens
                lo += 1
            out.append(running)
            running += 1 if unit == "requests" else e.tokens
        used[(w, unit)] = out[n0:]
    rank = {"overage": 1, "downgrade": 2, "block": 3}
    result: list[tuple[str, Cap] | None] = []
    for i, e in enumerate(events):
        plan = book.plan(book.plan_at(tenant, e.ts))
        best: tuple[str, Cap] | None = None
        for cap in plan.caps:
            if used[(cap.window_seconds, cap.unit)][i] >= cap.limit:
                if best is None or rank[cap.at_cap] > rank[best[0]]:
                    best = (cap.at_cap, cap)
        result.append(best)
    return result


def _usage_lines(plan: Plan, t: Totals, fraction: Decimal, *, kind: str, prices, free: bool) -> list[LineItem]:
    lines = []
    for category, price in prices.items():
        quantity = t.quantity(category)
        allowance = int(Decimal(plan.free.get(category, 0)) * fraction) if free else 0
        billed = max(0, quantity - allowance)
        unit = "requests" if category == "requests" else "tokens"
        desc = f"{category if category == unit else category + ' ' + unit}: {billed:,} billed ({price.scheme})"
        if allowance:
            desc += f", {min(quantity, allowance):,} free"
        if quantity == 0 and kind == "overage":
            continue
        lines.append(LineItem(kind, desc, line_amount(charge(price, billed, category)), plan.name, category,
                              billed, unit))
    return lines


def _cost_plus_lines(plan: Plan, events: Sequence[BillableEvent]) -> list[LineItem]:
    cp = plan.cost_plus
    assert cp is not None
    by_cat = {c: ZERO for c in CATEGORIES}
    qty = {c: 0 for c in CATEGORIES}
    for _, t in by_key(events, lambda e: e.deployment).items():
        weights = {c: Decimal(t.quantity(c)) * cp.cost_weights.get(c, ZERO) for c in CATEGORIES}
        wsum = sum(weights.values(), ZERO)
        for c in CATEGORIES:
            qty[c] += t.quantity(c)
            if wsum > 0:
                by_cat[c] += t.cost_usd * weights[c] / wsum
            elif c == "output":
                by_cat[c] += t.cost_usd  # no weighted tokens: all cost on output
    lines = []
    for c in CATEGORIES:
        if qty[c] == 0 and by_cat[c] == 0:
            continue
        m = cp.markup_for(c)
        lines.append(LineItem("cost_plus", f"{c} tokens: serving cost {line_amount(by_cat[c])} USD x (1 + {m})",
                              line_amount(by_cat[c] * (1 + m)), plan.name, c, qty[c], "tokens"))
    return lines


def rate_period(book: PlanBook, tenant: str, period: Period, events: Sequence[BillableEvent],
                lookback: Sequence[BillableEvent] = ()) -> Rated:
    """Charge lines of `tenant` for `period` (subscription, usage, overage, cost-plus, list, true-up)."""
    decisions = classify_caps(book, tenant, events, lookback)
    segments = []
    lines: list[LineItem] = []
    caps_hit: dict[str, int] = {}
    overage_requests = 0
    for name, a, b in book.segments(tenant, period.start, period.end):
        plan = book.plan(name)
        fraction = Decimal(int(round(b - a))) / Decimal(int(round(period.seconds)))
        segments.append(Segment(name, a, b, fraction))
        seg_lines: list[LineItem] = []
        idx = [i for i, e in enumerate(events) if a <= e.ts < b]
        regular = [events[i] for i in idx if decisions[i] is None or decisions[i][0] != "overage"]
        over: dict[int, list[BillableEvent]] = {}
        for i in idx:
            d = decisions[i]
            if d is not None:
                caps_hit[d[1].label] = caps_hit.get(d[1].label, 0) + 1
                if d[0] == "overage":
                    over.setdefault(id(d[1]), []).append(events[i])
        pro = "" if fraction == 1 else f" x {float(fraction):.4f} of the period ({iso(a)} to {iso(b)})"
        if plan.subscription_usd is not None:
            seg_lines.append(LineItem("subscription", f"plan {name} subscription{pro}",
                                      line_amount(plan.subscription_usd * fraction), name,
                                      quantity=None, unit=None))
        t = totals(regular)
        if plan.usage:
            seg_lines += _usage_lines(plan, t, fraction, kind="usage", prices=plan.usage, free=True)
        for cap in plan.caps:
            evs = over.get(id(cap))
            if evs:
                overage_requests += len(evs)
                for li in _usage_lines(plan, totals(evs), fraction, kind="overage", prices=cap.overage, free=False):
                    seg_lines.append(replace(li, description=f"over cap {cap.limit} {cap.unit}/{cap.window}: "
                                                             f"{li.description}"))
        if plan.cost_plus:
            seg_lines += _cost_plus_lines(plan, regular)
        if plan.list_price:
            seg_lines.append(LineItem("list", f"usage at the gateway's list price ({t.requests:,} requests)",
                                      line_amount(t.price_usd), name, quantity=t.requests, unit="requests"))
        if plan.minimum_commitment_usd is not None:
            commitment = line_amount(plan.minimum_commitment_usd * fraction)
            spent = sum((li.amount_usd for li in seg_lines if li.kind in USAGE_KINDS), ZERO)
            if spent < commitment:
                seg_lines.append(LineItem("commitment", f"minimum commitment {commitment} USD{pro}: "
                                                        f"true-up over {spent} USD of usage",
                                          commitment - spent, name))
        lines += seg_lines
    return Rated(lines, segments, totals(events), overage_requests, dict(sorted(caps_hit.items())))

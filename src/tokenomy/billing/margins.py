"""Margins: revenue (invoice charges) vs serving cost (ledger cost_usd) and energy, per tenant,
plan or model, and the share of tenants whose margin is negative.

Revenue is the period's charges before prepaid credits and without corrections to other periods
(credits are money already received; corrections belong to their own period). Revenue is split
across models by each model's share of the tenant's list price (price_usd), else of its tokens."""

from __future__ import annotations

from decimal import Decimal

from tokenomy.billing.events import BillableEvent
from tokenomy.billing.money import LINE_QUANTUM, ZERO, line_amount, usd_str
from tokenomy.billing.periods import Period
from tokenomy.billing.rating import CHARGE_KINDS
from tokenomy.billing.service import Billing

BY = ("tenant", "plan", "model")


class _Acc:
    __slots__ = ("revenue", "cost", "energy", "requests", "tokens", "tenants", "lines")

    def __init__(self):
        self.revenue, self.cost, self.energy, self.requests, self.tokens = ZERO, ZERO, 0.0, 0, 0
        self.tenants: set[str] = set()
        self.lines = 0  # invoice charge lines in the revenue: each was rounded to the line quantum

    @property
    def margin(self) -> Decimal:
        """Revenue - cost, where a difference no larger than the invoice's own rounding of its
        lines (half a LINE_QUANTUM each) is 0: a tenant paying exactly cost has margin 0, not a
        loss or a gain that is only rounding."""
        margin = self.revenue - self.cost
        return ZERO if abs(margin) <= self.lines * LINE_QUANTUM / 2 else margin

    def row(self, key: str) -> dict:
        margin = self.margin
        return {"key": key, "tenants": len(self.tenants), "requests": self.requests, "tokens": self.tokens,
                "revenue_usd": usd_str(line_amount(self.revenue)), "cost_usd": usd_str(line_amount(self.cost)),
                "margin_usd": usd_str(line_amount(margin)),
                "margin_share": None if self.revenue == 0 else round(float(margin / self.revenue), 6),
                "energy_kwh": round(self.energy / 3.6e6, 6)}


def _split_by_model(revenue: Decimal, events: list[BillableEvent]) -> dict[str, Decimal]:
    weights: dict[str, Decimal] = {}
    use_price = sum((e.price_usd for e in events), ZERO) > 0
    for e in events:
        weights[e.model] = weights.get(e.model, ZERO) + (e.price_usd if use_price else Decimal(e.tokens))
    total = sum(weights.values(), ZERO)
    if total == 0:
        return {"(none)": revenue} if revenue else {}
    return {m: revenue * w / total for m, w in weights.items()}


def margins(billing: Billing, period: Period, by: str = "tenant",
            allocation: tuple[dict[str, int], dict[str, int]] | None = None) -> dict:
    """`allocation`: (request id -> allocated pico-USD, deployment -> idle pico-USD) from
    tokenomy.allocation over the period: a self-hosted request's serving cost is then its share of
    the deployment's real bill (not the catalog $/Mtok it was provisionally priced at), and the
    deployments' idle cost is its own line (`idle_usd`, and `margin_after_idle_usd` in the total)."""
    alloc, idle = allocation or ({}, {})

    def cost_of(e) -> Decimal:
        a = alloc.get(e.id)
        return e.cost_usd if a is None else Decimal(a).scaleb(-12)

    if by not in BY:
        from tokenomy.errors import TokenomyError

        raise TokenomyError(f"--by must be one of {', '.join(BY)}, not '{by}'")
    events_by_tenant = billing.source.events_by_tenant(period.start, period.end)
    groups: dict[str, _Acc] = {}
    per_tenant: dict[str, _Acc] = {}
    for tenant in billing.tenants():
        inv = billing.invoice(tenant, period)
        events = events_by_tenant.get(tenant, [])
        charges = [li for li in inv.lines if li.kind in CHARGE_KINDS]
        revenue = sum((li.amount_usd for li in charges), ZERO)
        t_acc = per_tenant.setdefault(tenant, _Acc())
        t_acc.revenue += revenue
        t_acc.lines += len(charges)
        for e in events:
            t_acc.cost += cost_of(e)
            t_acc.energy += e.energy_joules
            t_acc.requests += 1
            t_acc.tokens += e.tokens
        t_acc.tenants.add(tenant)
        if by == "tenant":
            groups[tenant] = t_acc
            continue
        if by == "plan":
            rev_parts: dict[str, Decimal] = {}
            lines_of: dict[str, int] = {}
            for li in charges:
                rev_parts[li.plan or "(none)"] = rev_parts.get(li.plan or "(none)", ZERO) + li.amount_usd
                lines_of[li.plan or "(none)"] = lines_of.get(li.plan or "(none)", 0) + 1
            key_of = lambda e: billing.book.plan_at(tenant, e.ts)  # noqa: E731
        else:
            rev_parts = _split_by_model(revenue, events)
            lines_of = dict.fromkeys(rev_parts, len(charges))  # a share of every line: each one's rounding
            key_of = lambda e: e.model  # noqa: E731
        for key, amount in rev_parts.items():
            acc = groups.setdefault(key, _Acc())
            acc.revenue += amount
            acc.lines += lines_of[key]
            acc.tenants.add(tenant)
        for e in events:
            acc = groups.setdefault(key_of(e), _Acc())
            acc.cost += cost_of(e)
            acc.energy += e.energy_joules
            acc.requests += 1
            acc.tokens += e.tokens
            acc.tenants.add(tenant)
    active = {t: a for t, a in per_tenant.items() if a.revenue != 0 or a.cost != 0}
    negative = sorted(t for t, a in active.items() if a.margin < 0)
    total = _Acc()
    for t, a in per_tenant.items():
        total.revenue += a.revenue
        total.cost += a.cost
        total.energy += a.energy
        total.requests += a.requests
        total.tokens += a.tokens
        total.lines += a.lines
        total.tenants |= a.tenants
    rows = [groups[k].row(k) for k in sorted(groups)]
    idle_usd = Decimal(sum(idle.values())).scaleb(-12)
    total_row = total.row("total")
    total_row["idle_usd"] = usd_str(line_amount(idle_usd))
    total_row["margin_after_idle_usd"] = usd_str(line_amount(total.margin - idle_usd))
    return {"period": period.label, "by": by, "rows": rows, "total": total_row,
            "idle_by_deployment_usd": {d: usd_str(line_amount(Decimal(v).scaleb(-12))) for d, v in sorted(idle.items())},
            "tenants": len(active), "negative_margin_tenants": negative,
            "negative_margin_share": round(len(negative) / len(active), 6) if active else 0.0,
            "revenue_basis": "invoice charges before credits; cost = each self-hosted request's share of its "
                             "deployment's real bill (tokenomy costs) where recorded, else the ledger cost_usd; "
                             "idle cost of self-hosted deployments on its own line"}

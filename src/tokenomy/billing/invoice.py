"""An invoice: charge lines + adjustments, credits drawn, rounding, total (pure assembly)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from tokenomy.billing.credits import draw, usable
from tokenomy.billing.money import ROUNDING_RULE, ZERO, to_cents, usd_str
from tokenomy.billing.periods import Period
from tokenomy.billing.plans import CreditGrant
from tokenomy.billing.rating import CHARGE_KINDS, LineItem, Rated


@dataclass(slots=True)
class Invoice:
    tenant: str
    period: str
    lines: list[LineItem]
    total_usd: Decimal
    segments: list[dict] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    credits: list[dict] = field(default_factory=list)  # [{"id", "drawn_usd", "remaining_usd"}]
    status: str = "open"  # open | closed
    closed_at: str | None = None
    caps_hit: dict = field(default_factory=dict)
    late_events: int = 0  # recorded after the grace cutoff: billed as a later adjustment

    def sum_kind(self, *kinds: str) -> Decimal:
        return sum((li.amount_usd for li in self.lines if li.kind in kinds), ZERO)

    @property
    def charges_usd(self) -> Decimal:
        return self.sum_kind(*CHARGE_KINDS)

    @property
    def credits_usd(self) -> Decimal:
        return -self.sum_kind("credit")

    def adjustments_for(self, period: str) -> Decimal:
        return sum((li.amount_usd for li in self.lines if li.kind == "adjustment" and li.period == period), ZERO)

    def body(self) -> dict:
        return {
            "tenant": self.tenant, "period": self.period, "currency": "USD",
            "segments": self.segments,
            "lines": [li.to_dict() for li in self.lines],
            "charges_usd": usd_str(self.charges_usd),
            "adjustments_usd": usd_str(self.sum_kind("adjustment")),
            "credits_usd": usd_str(self.credits_usd),
            "rounding_usd": usd_str(self.sum_kind("rounding")),
            "total_usd": format(self.total_usd, "f"),  # always in cents: "5.40"
            "credits": self.credits, "usage": self.usage, "caps_hit": self.caps_hit,
            "late_events": self.late_events, "rounding": ROUNDING_RULE,
        }

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.body(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {**self.body(), "status": self.status, "closed_at": self.closed_at, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> "Invoice":
        return cls(tenant=d["tenant"], period=d["period"], lines=[LineItem.from_dict(x) for x in d["lines"]],
                   total_usd=Decimal(d["total_usd"]), segments=d["segments"], usage=d["usage"],
                   credits=d["credits"], status=d.get("status", "open"), closed_at=d.get("closed_at"),
                   caps_hit=d.get("caps_hit", {}), late_events=d.get("late_events", 0))


def _credit_row(g: CreditGrant, drawn: Decimal, remaining: Decimal, period: Period) -> dict:
    """A grant's position after this invoice; `state` only where it is spent: 'used' (nothing
    left) or 'expired' (something left that can no longer be drawn)."""
    row = {"id": g.id, "drawn_usd": usd_str(drawn), "remaining_usd": usd_str(remaining)}
    if remaining <= 0:
        row["state"] = "used"
    elif g.expires_at is not None and not usable(g, period.next()):
        row["state"] = "expired"
    return row


def assemble(tenant: str, period: Period, rated: Rated, adjustments: Sequence[LineItem],
             grants: Sequence[CreditGrant], balances: dict[str, Decimal], *, late_events: int = 0) -> Invoice:
    """Charges + adjustments, then credits (in draw order), then the rounding line; the lines
    always sum to the total."""
    lines = [*rated.lines, *adjustments]
    subtotal = sum((li.amount_usd for li in lines), ZERO)
    drawn = draw(grants, balances, period, subtotal) if subtotal > 0 else []
    for gid, amount in drawn:
        lines.append(LineItem("credit", f"prepaid credit '{gid}'", -amount, credit_id=gid))
    exact = sum((li.amount_usd for li in lines), ZERO)
    total = to_cents(exact) + Decimal("0.00")  # never "-0.00"
    if total != exact:
        lines.append(LineItem("rounding", "rounding to cents (ROUND_HALF_EVEN)", total - exact))
    taken = dict(drawn)
    credits = [_credit_row(g, taken.get(g.id, ZERO), balances.get(g.id, g.amount_usd) - taken.get(g.id, ZERO), period)
               for g in grants if g.id in taken or (g.granted_at < period.end)]
    return Invoice(tenant, period.label, lines, total, [s.to_dict() for s in rated.segments],
                   rated.usage.to_dict(), credits, caps_hit=rated.caps_hit, late_events=late_events)

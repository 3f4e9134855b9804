"""Prepaid credit grants: drawn in order (priority, then soonest expiry, then grant time, then id).

A grant can pay for a period's invoice when it was granted before the period ends and had not
expired when the period started."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from tokenomy.billing.money import ZERO, line_amount
from tokenomy.billing.periods import Period
from tokenomy.billing.plans import CreditGrant


def draw_order(grants: Sequence[CreditGrant]) -> list[CreditGrant]:
    return sorted(grants, key=lambda g: (g.priority, g.expires_at if g.expires_at is not None else float("inf"),
                                         g.granted_at, g.id))


def usable(grant: CreditGrant, period: Period) -> bool:
    return grant.granted_at < period.end and (grant.expires_at is None or grant.expires_at > period.start)


def draw(grants: Sequence[CreditGrant], balances: Mapping[str, Decimal], period: Period,
         amount_usd: Decimal) -> list[tuple[str, Decimal]]:
    """[(grant id, drawn)] paying up to amount_usd; `balances` are what is left of each grant."""
    out = []
    left = amount_usd
    for g in draw_order(grants):
        if left <= 0:
            break
        if not usable(g, period):
            continue
        bal = balances.get(g.id, g.amount_usd)
        take = line_amount(min(bal, left))
        if take > 0:
            out.append((g.id, take))
            left -= take
    return out


def initial_balances(grants: Sequence[CreditGrant]) -> dict[str, Decimal]:
    return {g.id: g.amount_usd for g in grants}


def apply_draws(balances: dict[str, Decimal], draws: Sequence[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out = dict(balances)
    for gid, amount in draws:
        out[gid] = out.get(gid, ZERO) - amount
    return out

"""Charge for a quantity under one CategoryPrice: unit, graduated, volume, package (pure, exact)."""

from __future__ import annotations

from decimal import Decimal

from tokenomy.billing.plans import CategoryPrice

MTOK = 1_000_000
REQUESTS_PER = 1000


def default_per(category: str) -> int:
    return REQUESTS_PER if category == "requests" else MTOK


def charge(price: CategoryPrice, quantity: int, category: str) -> Decimal:
    """Exact USD for `quantity` units (tokens or requests) of `category`."""
    if quantity <= 0:
        return Decimal(0)
    per = Decimal(price.per or default_per(category))
    q = Decimal(quantity)
    if price.scheme == "unit":
        return q * price.usd / per
    if price.scheme == "package":
        packages = -(-quantity // int(per))  # every started package
        return Decimal(packages) * price.usd
    tiers = price.tiers or []
    if price.scheme == "volume":
        for t in tiers:
            if t.up_to is None or quantity <= t.up_to:
                return q * t.usd / per
        return q * tiers[-1].usd / per  # above the last bound: its rate
    total, lower = Decimal(0), 0
    for t in tiers:  # graduated
        upper = quantity if t.up_to is None else min(quantity, t.up_to)
        if upper > lower:
            total += Decimal(upper - lower) * t.usd / per
        if t.up_to is None or quantity <= t.up_to:
            return total
        lower = t.up_to
    return total + Decimal(quantity - lower) * tiers[-1].usd / per


def marginal_usd_per_unit(price: CategoryPrice, quantity: int, category: str) -> Decimal:
    """Price of the next unit at `quantity` (for elasticity)."""
    per = Decimal(price.per or default_per(category))
    if price.scheme in ("unit", "package"):
        return price.usd / per
    tiers = price.tiers or []
    for t in tiers:
        if t.up_to is None or quantity < t.up_to:
            return t.usd / per
    return tiers[-1].usd / per

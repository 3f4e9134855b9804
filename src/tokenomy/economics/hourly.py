"""What one accelerator-hour costs: a rental price, or ownership (purchase amortised + hosting).

Ownership method (documented assumption, overridable):
    usd_per_hour = purchase_usd / (years * 8766 h) * (1 + hosting_overhead)
`purchase` is the accelerator's share of a server; `hosting_overhead` (default 0.5) adds the
rest of the server (CPUs, memory, NICs, chassis: roughly a third of an 8-GPU server's price)
plus data-centre space, networking and operations, *excluding electricity*, which is
computed from the step power, PUE and site price separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenomy.catalog.types import Accelerator
from tokenomy.errors import TokenomyError, UnknownNameError

HOURS_PER_YEAR = 8766.0  # 365.25 days
OWNERSHIP_YEARS = 4.0
HOSTING_OVERHEAD = 0.5


@dataclass(frozen=True, slots=True)
class HourlyPrice:
    usd_per_hour: float  # one device
    basis: str  # "rental" | "ownership"
    provider: str | None
    kind: str | None  # on-demand, spot, ... (rental)
    source: str
    date: str
    note: str | None = None
    price_class: str | None = None  # rental: the price class (tokenomy.catalog.price_classes)


def rental_price(acc: Accelerator, provider: str | None = None, price_class: str | None = None) -> HourlyPrice:
    """The cheapest price of `acc` in `price_class` (default: hyperscaler on-demand), of
    `provider` only when named; TokenomyError naming what is missing, never another class's or
    provider's rate (tokenomy.catalog.price_classes)."""
    from tokenomy.catalog.price_classes import DEFAULT_PRICE_CLASS, class_price

    if not acc.rental_prices:
        raise TokenomyError(f"no rental price for {acc.id} in the catalog; use ownership cost or add a price")
    if provider is not None and not any(p.provider.lower() == provider.lower() for p in acc.rental_prices):
        raise UnknownNameError(f"rental provider for {acc.id}", provider, {p.provider for p in acc.rental_prices})
    best = class_price(acc, price_class or DEFAULT_PRICE_CLASS, provider)
    return HourlyPrice(usd_per_hour=best.usd_per_hour, basis="rental", provider=best.provider, kind=best.kind,
                       source=best.source, date=best.date, note=best.note, price_class=best.price_class)


def ownership_price(acc: Accelerator, *, years: float = OWNERSHIP_YEARS,
                    hosting_overhead: float = HOSTING_OVERHEAD) -> HourlyPrice:
    if acc.purchase is None:
        raise TokenomyError(f"no purchase price for {acc.id} in the catalog; use rental cost or add one")
    if years <= 0:
        raise TokenomyError(f"amortisation years must be > 0 (got {years})")
    usd = acc.purchase.usd / (years * HOURS_PER_YEAR) * (1.0 + hosting_overhead)
    return HourlyPrice(usd_per_hour=usd, basis="ownership", provider=None, kind=None, source=acc.purchase.source,
                       date=acc.purchase.date,
                       note=f"${acc.purchase.usd:,.0f} over {years:g} years x (1 + {hosting_overhead:g} hosting)")


def accelerator_hourly(acc: Accelerator, *, ownership: bool = False, provider: str | None = None,
                       price_class: str | None = None) -> HourlyPrice:
    return ownership_price(acc) if ownership else rental_price(acc, provider, price_class)

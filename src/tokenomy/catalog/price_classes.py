"""Price classes: which rental price of an accelerator applies, compared like with like.

A price class is one way of buying accelerator-hours: hyperscaler on-demand, neocloud
on-demand, 1-year or 3-year reserved, spot. Prices of different classes are never mixed in one
answer: an accelerator without a price in the asked class is an error that names it, and a
named provider is never priced at another provider's rate.

The default class is hyperscaler on-demand: it is the class in which every accelerator of the
default plan (L4, A10G, A100, H100) has a published price, so a default plan compares like with
like (the old default, the cheapest on-demand price of any provider, mixed neocloud H100/A100
prices with hyperscaler L4/A10G prices).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from tokenomy.errors import TokenomyError

from .types import Accelerator, PriceClass, RentalPrice

PRICE_CLASSES: tuple[str, ...] = get_args(PriceClass)
DEFAULT_PRICE_CLASS = "hyperscaler-on-demand"


def check_price_class(price_class: str) -> str:
    if price_class not in PRICE_CLASSES:
        raise TokenomyError(f"unknown price class '{price_class}' (one of: {', '.join(PRICE_CLASSES)})")
    return price_class


def class_price(acc: Accelerator, price_class: str = DEFAULT_PRICE_CLASS,
                provider: str | None = None) -> RentalPrice:
    """The cheapest price of `acc` in `price_class` (of `provider` only, when named)."""
    return require_class_prices([acc], price_class, provider)[acc.id]


def require_class_prices(accs: Iterable[Accelerator], price_class: str = DEFAULT_PRICE_CLASS,
                         provider: str | None = None) -> dict[str, RentalPrice]:
    """{accelerator id: its cheapest price in the class}; one error naming every accelerator that
    has none (with the classes it does have), so a plan never silently mixes classes."""
    check_price_class(price_class)
    accs = list(accs)
    found: dict[str, RentalPrice] = {}
    missing: list[str] = []
    for acc in accs:
        mine = [p for p in acc.rental_prices if p.price_class == price_class
                and (provider is None or p.provider.lower() == provider.lower())]
        if mine:
            found[acc.id] = min(mine, key=lambda p: p.usd_per_hour)
        else:
            missing.append(acc.id)
    if missing:
        raise TokenomyError(_missing_message(missing, [a for a in accs if a.id in missing], price_class, provider))
    return found


def _missing_message(ids: list[str], accs: list[Accelerator], price_class: str, provider: str | None) -> str:
    who = f"{provider} " if provider else ""
    have = []
    for acc in accs:
        classes = sorted({f"{p.price_class} ({p.provider})" for p in acc.rental_prices
                          if p.price_class != "none" and (provider is None or p.provider.lower() == provider.lower())})
        have.append(f"{acc.id}: {', '.join(classes) or 'none'}")
    return (f"no {who}{price_class} price in the catalog for {', '.join(ids)} "
            f"(listed{' for ' + provider if provider else ''}: {'; '.join(have)}); choose another --price-class"
            f"{' or --provider' if provider else ''}, drop them from --accelerators, or give --price ACCELERATOR=USD")

"""Hourly cost of a replica: accelerator rental plus energy at a site (energy x PUE x price).

Pure functions over catalog values. Rental prices: the cheapest price of the accelerator in one
price class (default hyperscaler on-demand), of the named provider only when one is named.
"""

from __future__ import annotations

from tokenomy.catalog.types import Accelerator, Site

JOULES_PER_KWH = 3.6e6


def rental_usd_per_hour(acc: Accelerator, provider: str | None = None, price_class: str | None = None) -> float:
    """USD per device-hour in `price_class` (default hyperscaler on-demand), of `provider` only
    when named: the one price path (tokenomy.economics.hourly.rental_price)."""
    from tokenomy.economics.hourly import rental_price

    return rental_price(acc, provider, price_class).usd_per_hour


def energy_usd(energy_joules: float, site: Site | None) -> float:
    """Facility energy cost of IT energy `energy_joules` at `site` (x PUE x USD/kWh); 0 without a site."""
    if site is None:
        return 0.0
    return energy_joules / JOULES_PER_KWH * site.pue * site.usd_per_kwh


def energy_usd_per_hour(watts: float, site: Site | None) -> float:
    """Hourly facility energy cost of an IT load of `watts`."""
    return energy_usd(watts * 3600.0, site)


def facility_watts(it_watts: float, site: Site | None) -> float:
    return it_watts * (site.pue if site is not None else 1.0)

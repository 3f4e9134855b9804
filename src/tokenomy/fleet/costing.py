"""Hourly cost of a replica: accelerator rental plus energy at a site (energy x PUE x price).

Pure functions over catalog values. Rental prices: the named provider's on-demand price, or
by default the cheapest on-demand price listed for the accelerator.
"""

from __future__ import annotations

from tokenomy.catalog.types import Accelerator, Site
from tokenomy.errors import TokenomyError

JOULES_PER_KWH = 3.6e6


def rental_usd_per_hour(acc: Accelerator, provider: str | None = None) -> float:
    """USD per device-hour: `provider`'s price, else the cheapest on-demand price listed."""
    prices = list(acc.rental_prices)
    if provider is not None:
        match = [p for p in prices if p.provider == provider]
        if not match:
            known = sorted({p.provider for p in prices})
            raise TokenomyError(
                f"no rental price for {acc.id} from provider '{provider}' (listed: {', '.join(known) or 'none'})"
            )
        return min(p.usd_per_hour for p in match)
    on_demand = [p.usd_per_hour for p in prices if p.kind == "on-demand"] or [p.usd_per_hour for p in prices]
    if not on_demand:
        raise TokenomyError(f"the catalog lists no rental price for accelerator '{acc.id}'")
    return min(on_demand)


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

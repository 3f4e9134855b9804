"""Economics: $/Mtok and J/token of self-hosted deployments and API models (pure functions)."""

from .hourly import HourlyPrice, accelerator_hourly, ownership_price, rental_price
from .unit_cost import UnitCost, api_unit_cost, self_hosted_unit_cost

__all__ = [
    "HourlyPrice", "UnitCost", "accelerator_hourly", "api_unit_cost", "ownership_price", "rental_price",
    "self_hosted_unit_cost",
]

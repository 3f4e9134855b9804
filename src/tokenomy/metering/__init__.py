"""Metering: keys, tenants, budgets (reserve -> settle), rate limits and a durable usage ledger.

    from tokenomy.metering import Metering, UsageEvent, Principal, Reservation, AuthError, RateLimited, BudgetExceeded
"""

from tokenomy.metering.errors import (
    AuthError, BudgetExceeded, Conflict, InvalidInput, MeteringError, NotFound, RateLimited,
)
from tokenomy.metering.paths import default_data_dir
from tokenomy.metering.service import Metering
from tokenomy.metering.store import CounterStore, Ledger
from tokenomy.metering.types import Principal, Reservation, UsageEvent

__all__ = [
    "AuthError", "BudgetExceeded", "Conflict", "CounterStore", "InvalidInput", "Ledger", "Metering",
    "MeteringError", "NotFound", "Principal", "RateLimited", "Reservation", "UsageEvent", "default_data_dir",
]

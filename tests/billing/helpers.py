"""Builders for billing tests: events, plan books, UTC times."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from decimal import Decimal

from tokenomy.billing.events import BillableEvent
from tokenomy.billing.plans import parse_plans

_ids = itertools.count()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def ev(ts: float, *, input_tokens: int = 0, cached: int = 0, output: int = 0, cost: str = "0", price: str = "0",
       deployment: str = "d1", model: str = "m", recorded_at: float | None = None) -> BillableEvent:
    return BillableEvent(id=f"e{next(_ids):06d}", ts=ts, recorded_at=ts if recorded_at is None else recorded_at,
                         model=model, deployment=deployment, input_tokens=input_tokens, cached_input_tokens=cached,
                         output_tokens=output, cost_usd=Decimal(cost), price_usd=Decimal(price))


def book(plans: dict, tenants: dict | None = None, **extra):
    return parse_plans({"plans": plans, "tenants": tenants or {}, **extra})


def amounts(lines, kind: str) -> list[Decimal]:
    return [li.amount_usd for li in lines if li.kind == kind]

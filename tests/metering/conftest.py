"""Fixtures for metering tests: event factory, fake clocks, Metering over SQLite and memory."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from tokenomy.metering import Metering, UsageEvent

_ids = itertools.count()


class FakeClock:
    """A settable clock (wall or monotonic)."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def make_event(*, tenant: str = "acme", key_id: str = "k", price: str | Decimal = "0.1", cost: str | Decimal = "0.05",
               ts: float = 1_795_000_000.0, id: str | None = None, model: str = "llama-3-8b",
               deployment: str = "h100", input_tokens: int = 100, output_tokens: int = 20, **kw) -> UsageEvent:
    fields = dict(
        id=id or f"ev-{next(_ids)}", ts=ts, tenant=tenant, key_id=key_id, model=model, deployment=deployment,
        input_tokens=input_tokens, cached_input_tokens=0, output_tokens=output_tokens, reasoning_tokens=0,
        cost_usd=Decimal(cost), price_usd=Decimal(price), energy_joules=2.5, ttft_ms=12.0, latency_ms=80.0,
        status="ok")
    fields.update(kw)
    return UsageEvent(**fields)


@pytest.fixture
def wall():
    return FakeClock(utc("2026-11-27T12:00:00"))


@pytest.fixture
def mono():
    return FakeClock(1000.0)


@pytest.fixture(params=["sqlite", "memory"])
def meter(request, tmp_path, wall, mono):
    """A started-on-demand Metering over each Ledger implementation, with fake clocks."""
    kwargs = dict(clock=wall, monotonic=mono, admin_key="test-admin-key")
    if request.param == "sqlite":
        m = Metering.open(tmp_path / "data", synchronous="NORMAL", **kwargs)
    else:
        m = Metering.in_memory(**kwargs)
    yield m
    m.shutdown()

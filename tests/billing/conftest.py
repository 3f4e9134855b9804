"""Billing fixtures: a real SQLite ledger written through Metering, and late-arrival helpers."""

from __future__ import annotations

import itertools
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from tokenomy.metering import Metering, UsageEvent

_ids = itertools.count()


class Ledger:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.m = Metering.open(data_dir, ensure_admin=False)

    def add(self, tenant: str, ts: float, *, input_tokens: int = 0, output_tokens: int = 0, cached: int = 0,
            cost: str = "0", price: str = "0", model: str = "chat", deployment: str = "d1",
            status: str = "ok", recorded_at: float | None = None, energy: float = 0.0) -> str:
        self.m.create_tenant(tenant, exist_ok=True)
        eid = f"ev-{next(_ids):06d}"
        ok = self.m.commit_blocking(UsageEvent(
            id=eid, ts=ts, tenant=tenant, key_id="k", model=model, deployment=deployment,
            input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output_tokens, reasoning_tokens=0,
            cost_usd=Decimal(cost), price_usd=Decimal(price), energy_joules=energy, ttft_ms=1.0, latency_ms=2.0,
            status=status))
        assert ok
        # The ledger stamps recorded_at with the wall clock; tests pin it to model when the event arrived.
        with sqlite3.connect(self.data_dir / "ledger.db") as conn:
            conn.execute("UPDATE events SET recorded_at = ? WHERE id = ?", (ts if recorded_at is None else recorded_at, eid))
        return eid

    def close(self) -> None:
        self.m.shutdown()


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(tmp_path / "data")
    yield led
    led.close()

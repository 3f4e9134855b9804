"""Billing fixtures: a real ledger written through Metering (SQLite, and PostgreSQL in a schema
of this session's own), and late-arrival helpers. Every test using `ledger` runs on both."""

from __future__ import annotations

import itertools
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from tokenomy.metering import Metering, UsageEvent

_ids = itertools.count()


class Ledger:
    def __init__(self, data_dir: Path, url: str | None = None):
        self.data_dir = data_dir
        self.url = url  # the PostgreSQL ledger's URL, None for SQLite
        if url is None:
            self.m = Metering.open(data_dir, ensure_admin=False)
        else:
            from tokenomy.metering.backends import open_metering

            self.m = open_metering(data_dir, ledger_url=url, ensure_admin=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment of a CLI run on this ledger."""
        from tokenomy.metering.backends import ENV_LEDGER_URL

        return {ENV_LEDGER_URL: self.url or ""}

    def source(self):
        from tokenomy.billing.ledger_source import open_ledger_source

        return open_ledger_source(self.data_dir, ledger_url=self.url)

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
        stamp = ts if recorded_at is None else recorded_at
        if self.url is None:
            with sqlite3.connect(self.data_dir / "ledger.db") as conn:
                conn.execute("UPDATE events SET recorded_at = ? WHERE id = ?", (stamp, eid))
        else:
            with self.m.ledger.engine.begin() as conn:
                assert conn.exec_driver_sql("UPDATE events SET recorded_at = %s WHERE id = %s", (stamp, eid)).rowcount == 1
        return eid

    def close(self) -> None:
        self.m.shutdown()


@pytest.fixture(scope="session")
def pg_billing_url():
    from dashboard.pgschema import drop_schema, new_schema_url

    url = new_schema_url("billing")
    yield url
    drop_schema(url)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    url = None
    if request.param == "postgres":
        from dashboard.pgschema import empty_schema

        url = request.getfixturevalue("pg_billing_url")
        led = Ledger(tmp_path / "data", url)  # creates (migrates) the schema on first use
        empty_schema(url)
    else:
        led = Ledger(tmp_path / "data")
    yield led
    led.close()

"""Fleet test fixtures: the real catalog and perf model, small slices of the shipped traces, and a
seeder of real SQLite metering ledgers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenomy.catalog import load_catalog
from tokenomy.fleet.workload import head, load_trace
from tokenomy.metering import Metering, UsageEvent


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def make_sm(catalog):
    from tokenomy.perf import make_step_model

    def build(model="llama-3-8b", acc="h100", count=1, dtype="bf16"):
        return make_step_model(catalog.model(model), catalog.accelerator(acc), count=count, dtype=dtype)

    return build


@pytest.fixture(scope="session")
def h100_sm(make_sm):
    return make_sm()


@pytest.fixture(scope="session")
def conv():
    return load_trace("conv")


@pytest.fixture(scope="session")
def conv_head(conv):
    return head(conv, 1500)


# --- a real SQLite metering ledger, seeded through the Metering API -------------------------
def event(i, ts, inp, out, *, tenant, key_id, latency_ms=0.0, status="ok"):
    return UsageEvent(
        id=f"ev-{tenant}-{i}", ts=ts, tenant=tenant, key_id=key_id, model="llama-3-8b", deployment="d1",
        input_tokens=inp, cached_input_tokens=0, output_tokens=out, reasoning_tokens=0,
        cost_usd=Decimal("0.0001"), price_usd=Decimal("0.0002"), energy_joules=1.0, ttft_ms=10.0,
        latency_ms=latency_ms, status=status)


def seed_ledger(data_dir, rows, tenant="acme"):
    """rows: (ts, input, output[, latency_ms[, status]]) committed for one tenant (synchronous=OFF:
    no fsync per event, to keep the tests fast; the rows are the same)."""
    with Metering.open(data_dir, ensure_admin=False, synchronous="OFF") as m:
        key_id, _ = m.create_key(tenant)
        for i, r in enumerate(rows):
            ts, inp, out = r[:3]
            lat = r[3] if len(r) > 3 else 0.0
            status = r[4] if len(r) > 4 else "ok"
            assert m.commit_blocking(event(i, ts, inp, out, tenant=tenant, key_id=key_id, latency_ms=lat,
                                           status=status))


@pytest.fixture(scope="session")
def seed():
    return seed_ledger

"""Issue 14 §1: no dashboard or admin read can be broken by data. Events with absurd counts and
prices (each one fits the ledger's 64-bit columns; four of them overflow any 64-bit sum) are
appended straight into the SQLite and the PostgreSQL ledger; every dashboard endpoint (JSON
and CSV), the usage report and the invoice then answer 200 with exact sums, before and after a
restart (the rollups are rebuilt from the same data)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import httpx
import pytest

from .conftest import ServerThread, make_event, open_meter

pytestmark = pytest.mark.timeout(180)
INT64_MAX = 2**63 - 1
HUGE_TOKENS = 4 * 10**18  # per category per event (fits int64); 4 events overflow any int64 sum
HUGE_PRICE = Decimal("9000000")  # USD per event = 9e18 pico-USD (fits); 4 of them do not
ENDPOINTS = ["overview", "routing", "deployments", "tenants", "unit-cost", "whoami", "plans"]


def _absurd(i: int, now: float, key_id: str):
    e = make_event(10_000 + i, now - 60 * (i + 1), "acme", key_id, "large@h100", input_tokens=HUGE_TOKENS,
                   output_tokens=HUGE_TOKENS, latency_ms=1e300 if i == 0 else 500.0, ttft_ms=10.0)
    return replace(e, id=f"absurd-{i}", cost_usd=HUGE_PRICE, price_usd=HUGE_PRICE, cached_input_tokens=HUGE_TOKENS,
                   reasoning_tokens=HUGE_TOKENS, energy_joules=1e300)


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_dir(request, tmp_path):
    if request.param == "sqlite":
        yield tmp_path, None
        return
    from .pgschema import drop_schema, new_schema_url

    url = new_schema_url("overflow")
    try:
        yield tmp_path, url
    finally:
        drop_schema(url)


def _read_everything(m, admin_key: str, tenant_key: str) -> dict:
    srv = ServerThread(m, config={"min_fold_interval_s": 0.0}).start()
    try:
        out = {}
        for key in (admin_key, tenant_key):
            for ep in ENDPOINTS:
                for params in ({"range": "all"}, {"range": "24h"}, {"range": "all", "format": "csv"}):
                    if ep in ("whoami", "plans") and "format" in params:
                        continue
                    r = httpx.get(f"{srv.url}/dashboard/api/{ep}", params=params, timeout=60,
                                  headers={"Authorization": f"Bearer {key}"})
                    assert r.status_code < 500, (ep, params, r.status_code, r.text[:300])
                    if key == admin_key and ep != "plans":  # plans: 404 without a plans file
                        assert r.status_code == 200, (ep, params, r.text[:300])
                    if key == admin_key and "format" not in params and r.status_code == 200:
                        out[(ep, params["range"])] = r.json()
        return out
    finally:
        srv.stop()


def test_absurd_events_break_no_read_and_sums_stay_exact(ledger_dir):
    import time

    data_dir, url = ledger_dir
    now = time.time()
    m = open_meter(data_dir, url)
    try:
        key_id, secret = m.create_key("acme", name="acme-main")
        normal = make_event(1, now - 30, "acme", key_id, "small@l4", input_tokens=100, output_tokens=50,
                            latency_ms=300.0, ttft_ms=20.0)
        absurd = [_absurd(i, now, key_id) for i in range(4)]
        assert m.ledger.append([normal, *absurd]) == [True] * 5  # straight into the ledger
        want_in = 100 + 4 * HUGE_TOKENS
        want_out = 50 + 4 * HUGE_TOKENS
        want_price = normal.price_usd + 4 * HUGE_PRICE
        assert want_in > INT64_MAX and 4 * HUGE_PRICE * 10**12 > INT64_MAX

        for _ in range(2):  # and again after a restart (rollups rebuilt from the ledger)
            usage = m.usage("acme")
            assert (usage["requests"], usage["input_tokens"], usage["output_tokens"]) == (5, want_in, want_out)
            assert Decimal(usage["price_usd"]) == want_price
            assert m.usage(None)["input_tokens"] == want_in
            body = _read_everything(m, "tk-admin-dashboard-test-secret", secret)
            t = body[("overview", "all")]["totals"]
            assert (t["requests"], t["input_tokens"], t["output_tokens"]) == (5, want_in, want_out)
            assert Decimal(t["price_usd"]) == want_price
            spend = m.spend(m.authenticate(secret))
            assert Decimal(spend["tenant"]["spent_usd"]) == want_price
            m.shutdown()
            m = open_meter(data_dir, url)
    finally:
        m.shutdown()


def test_invoices_of_absurd_usage(ledger_dir):
    import time

    from tokenomy.billing.periods import parse_period
    from tokenomy.billing.plans import parse_plans
    from tokenomy.billing.service import Billing

    data_dir, url = ledger_dir
    now = time.time()
    m = open_meter(data_dir, url)
    try:
        key_id, _ = m.create_key("acme")
        assert m.ledger.append([_absurd(i, now, key_id) for i in range(4)]) == [True] * 4
    finally:
        m.shutdown()
    book = parse_plans({"plans": {"payg": {"cost_plus": {"markup": "0"}}},
                        "tenants": {"acme": {"subscriptions": [{"plan": "payg", "start": 0}]}}})
    billing = Billing.open(data_dir, book, ledger_url=url)
    try:
        months = {time.strftime("%Y-%m", time.gmtime(now - 60 * (i + 1))) for i in range(4)}  # 1, or 2 at a month's start
        total = sum((billing.invoice("acme", parse_period(label)).total_usd for label in months), Decimal(0))
        assert total == 4 * HUGE_PRICE  # cost x (1 + 0): exact Decimal arithmetic, no overflow
    finally:
        billing.close()

"""Ledger behaviour: idempotency, durability, exact money, usage, hashes only, schema."""

from __future__ import annotations

import asyncio
import sqlite3
from decimal import Decimal

import pytest

from tokenomy.errors import TokenomyError, UnknownNameError
from tokenomy.metering import AuthError, Metering, MeteringError
from tokenomy.metering.schema import SCHEMA_VERSION

from .conftest import make_event


async def test_same_event_id_twice_is_recorded_once(meter):
    event = make_event(id="req-1")
    assert await meter.commit(event) is True
    assert await meter.commit(event) is False
    assert meter.ledger.count_event("req-1") == 1
    assert meter.usage(None)["requests"] == 1


async def test_duplicates_inside_one_batch_are_recorded_once(meter):
    results = await asyncio.gather(*(meter.commit(make_event(id="dup")) for _ in range(20)))
    assert sorted(results) == [False] * 19 + [True]
    assert meter.usage(None)["requests"] == 1


async def test_events_survive_reopen(tmp_path):
    m = Metering.open(tmp_path, admin_key="a")
    kid, _ = m.create_key("acme")
    events = [make_event(key_id=kid, price="0.25", extra={"route": "cheapest", "n": 2}) for _ in range(5)]
    assert all(await asyncio.gather(*(m.commit(e) for e in events)))
    await m.close()
    m2 = Metering.open(tmp_path, admin_key="a")
    back = {e.id: e for e in m2.events("acme", limit=10)}
    assert set(back) == {e.id for e in events}
    assert back[events[0].id] == events[0]  # every field, money as the same Decimal, extra as JSON
    assert m2.usage("acme")["price_usd"] == "1.25"
    assert await m2.commit(events[0]) is False  # idempotent across restarts too
    m2.shutdown()


async def test_decimal_sums_are_exact(meter):
    meter.create_tenant("acme")
    for _ in range(3):
        await meter.commit(make_event(price="0.1", cost="0.0000000375"))
    usage = meter.usage("acme")
    assert Decimal(usage["price_usd"]) == Decimal("0.3")
    assert usage["price_usd"] == "0.3"  # not 0.30000000000000004
    assert Decimal(usage["cost_usd"]) == Decimal("0.0000001125")
    event = meter.events("acme", limit=1)[0]
    assert isinstance(event.price_usd, Decimal) and event.cost_usd == Decimal("0.0000000375")


async def test_money_sum_does_not_overflow_int64(meter):
    # 2 x $6M = $12M = 1.2e19 pico-USD > 2^63: the split SUM keeps it exact
    meter.create_tenant("acme")
    await meter.commit(make_event(price="6000000.000000000001"))
    await meter.commit(make_event(price="6000000.000000000002"))
    assert meter.usage("acme")["price_usd"] == "12000000.000000000003"


async def test_usage_is_per_tenant_with_breakdowns(meter):
    meter.create_tenant("a")
    meter.create_tenant("b")
    await meter.commit(make_event(tenant="a", model="m1", deployment="d1", price="1", input_tokens=10, output_tokens=1))
    await meter.commit(make_event(tenant="a", model="m2", deployment="d1", price="2", input_tokens=20, output_tokens=2))
    await meter.commit(make_event(tenant="b", model="m1", deployment="d2", price="4", input_tokens=40, output_tokens=4,
                                  status="upstream_error", http_status=502))
    a, b = meter.usage("a"), meter.usage("b")
    assert (a["requests"], a["input_tokens"], a["output_tokens"], a["price_usd"]) == (2, 30, 3, "3")
    assert a["energy_joules"] == pytest.approx(5.0)
    assert set(a["by_model"]) == {"m1", "m2"} and set(a["by_deployment"]) == {"d1"}
    assert a["by_model"]["m2"]["price_usd"] == "2" and a["by_deployment"]["d1"]["requests"] == 2
    assert (b["requests"], b["errors"], b["price_usd"], list(b["by_deployment"])) == (1, 1, "4", ["d2"])
    assert meter.usage(None)["requests"] == 3
    with pytest.raises(UnknownNameError):
        meter.usage("nobody")


async def test_usage_time_window_and_event_listing(meter):
    meter.create_tenant("acme")
    for i in range(5):
        await meter.commit(make_event(id=f"t{i}", ts=1000.0 + i))
    assert meter.usage("acme", since=1001.0, until=1004.0)["requests"] == 3
    assert [e.id for e in meter.events("acme", since=1001.0, until=1004.0, limit=2)] == ["t3", "t2"]


def test_keys_are_stored_only_as_hashes(tmp_path):
    m = Metering.open(tmp_path, admin_key="super-secret-admin-key-123")
    kid, key = m.create_key("acme", budget_usd="5")
    secret = key.split("-", 2)[2]
    assert m.authenticate(key).key_id == kid
    assert "secret" not in str(m.list_keys()) and secret not in str(m.list_keys())
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    m.shutdown()
    blobs += b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert kid.encode() in blobs  # sanity: the file does hold the key's row...
    assert secret.encode() not in blobs and b"super-secret-admin-key-123" not in blobs  # ...but never a secret


def test_authentication(meter):
    kid, key = meter.create_key("acme")
    assert meter.authenticate(key).tenant == "acme"
    assert meter.authenticate("test-admin-key").is_admin
    for bad in ["", "nope", key[:-1] + ("A" if key[-1] != "A" else "B"), f"tk-{kid}-", "tk--x", "tk-unknown-secret"]:
        with pytest.raises(AuthError) as info:
            meter.authenticate(bad)
        assert info.value.status == 401 and info.value.code == "invalid_api_key"
    meter.revoke_key(kid)
    with pytest.raises(AuthError, match="revoked"):
        meter.authenticate(key)


def test_generated_admin_key_is_printed_once(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENOMY_ADMIN_KEY", raising=False)
    cli = Metering.open(tmp_path, ensure_admin=False)  # the CLI never generates one
    assert cli.generated_admin_key is None
    cli.shutdown()
    first = Metering.open(tmp_path)
    key = first.generated_admin_key
    assert key and first.authenticate(key).is_admin
    first.shutdown()
    again = Metering.open(tmp_path)
    assert again.generated_admin_key is None and again.authenticate(key).is_admin
    again.shutdown()
    monkeypatch.setenv("TOKENOMY_ADMIN_KEY", "from-env")
    env = Metering.open(tmp_path)  # env replaces the stored admin key
    assert env.authenticate("from-env").is_admin
    with pytest.raises(AuthError):
        env.authenticate(key)
    env.shutdown()


def test_schema_is_versioned_and_wal(tmp_path):
    Metering.open(tmp_path, admin_key="a").shutdown()
    Metering.open(tmp_path, admin_key="a").shutdown()  # reopening applies nothing twice
    conn = sqlite3.connect(tmp_path / "ledger.db")
    assert conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
        (v,) for v in range(1, SCHEMA_VERSION + 1)]  # each once
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(TokenomyError, match="newer"):
        Metering.open(tmp_path, admin_key="a")


def test_tenant_and_key_validation(meter):
    meter.create_tenant("acme", budget_usd="10", budget_period="monthly", soft_budget_usd="8")
    assert meter.list_tenants()[0] == {"name": "acme", "created": meter.list_tenants()[0]["created"],
                                       "budget_usd": "10", "budget_period": "monthly", "soft_budget_usd": "8"}
    with pytest.raises(TokenomyError, match="already exists"):
        meter.create_tenant("acme")
    for kwargs, field in [({"budget_usd": "-1"}, "budget_usd"), ({"budget_period": "weekly"}, "period"),
                          ({"rpm": 0}, "rpm"), ({"tpm": -5}, "tpm"), ({"budget_usd": "x"}, "budget_usd")]:
        with pytest.raises(TokenomyError, match=field):
            meter.create_key("acme", **kwargs)
    with pytest.raises(TokenomyError, match="invalid tenant name"):
        meter.create_key("bad name with spaces")
    kid, _ = meter.create_key("beta", rpm=5, tpm=100, name="ci")  # creates the tenant
    assert [t["name"] for t in meter.list_tenants()] == ["acme", "beta"]
    (k,) = meter.list_keys("beta")
    assert (k["key_id"], k["rpm"], k["tpm"], k["name"], k["active"]) == (kid, 5, 100, "ci", True)
    with pytest.raises(UnknownNameError) as info:
        meter.revoke_key("nope")
    assert (info.value.status, info.value.code, str(info.value)) == (404, "not_found", f"unknown key id 'nope'; known (1): {kid}")


def test_errors_carry_http_status_and_code(meter):
    meter.create_tenant("acme")
    cases = [(lambda: meter.create_tenant("acme"), 409, "already_exists"),
             (lambda: meter.create_key("acme", budget_period="weekly"), 400, "invalid_value"),
             (lambda: meter.usage("nobody"), 404, "not_found")]
    for call, status, code in cases:
        with pytest.raises(MeteringError) as info:
            call()
        assert (info.value.status, info.value.code) == (status, code) and info.value.message == str(info.value)


async def test_group_commit_batches_and_cancelled_waiters_still_record(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", commit_linger_s=0.05, max_batch=64)
    await m.start()
    tasks = [asyncio.create_task(m.commit(make_event(id=f"g{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # all 50 queued
    tasks[0].cancel()  # the client went away: the event must still be recorded
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[0], asyncio.CancelledError) and all(r is True for r in done[1:])
    assert m._writer.batches == 1  # lingering gathered all 50 into one transaction
    await m.close()
    with pytest.raises(RuntimeError, match="closed"):
        await m.commit(make_event())
    again = Metering.open(tmp_path, admin_key="a")
    assert again.usage(None)["requests"] == 50
    again.shutdown()


async def test_a_bad_event_fails_alone(tmp_path):
    m = Metering.open(tmp_path, admin_key="a", commit_linger_s=0.05)
    with pytest.raises(MeteringError, match="input_tokens"):
        await m.commit(make_event(input_tokens=-1))  # rejected before it is queued
    loop = {}
    loop["self"] = loop  # not JSON-serialisable: only fails inside the writer's transaction
    results = await asyncio.gather(*(m.commit(make_event(id=f"b{i}", extra=loop if i == 3 else None))
                                     for i in range(8)), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [True] * 7
    assert m.usage(None)["requests"] == 7
    await m.close()

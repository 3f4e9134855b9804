"""PostgreSQL ledger specifics: Alembic migrations, monthly partitions, the hourly rollup
(equal to the raw events over any window), idempotency across concurrent writers,
durability across reopen."""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tokenomy.metering.backends import open_metering
from tokenomy.metering.memory_ledger import MemoryLedger
from tokenomy.metering.postgres_ledger import PostgresLedger, hour_split, month_bounds, split_url

from .conftest import make_event, migrations_head, utc


def _scalar(ledger, sql):
    with ledger.engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def test_url_parsing_and_hour_split():
    assert split_url("postgres://u:p@h:5/db?schema=tk_a&sslmode=disable") == (
        "postgresql+psycopg://u:p@h:5/db?sslmode=disable", "tk_a")
    assert month_bounds(utc("2026-12-31T23:59:59"))[0] == "202612"
    assert month_bounds(utc("2027-01-01T00:00:00"))[1:] == (utc("2027-01-01T00:00:00"), utc("2027-02-01T00:00:00"))
    assert hour_split(None, None) == ((None, None), [])
    assert hour_split(3600.5, 3 * 3600 + 10) == ((7200.0, 10800.0), [(3600.5, 7200.0), (10800.0, 10810)])
    assert hour_split(3600.5, 3700.0) == (None, [(3600.5, 3700.0)])


def test_migrations_are_alembic_and_concurrent_opens_migrate_once(pg_url):
    import uuid

    url = pg_url.rsplit("schema=", 1)[0] + f"schema=tk_mig_{uuid.uuid4().hex[:8]}"
    ledgers, errors = [], []

    def open_one():
        try:
            ledgers.append(PostgresLedger.open(url))
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(ledgers) == 3
        head = migrations_head()
        assert head >= "0003"  # at least the dedup-retention revision (issue 9)
        assert {lg.schema_version for lg in ledgers} == {head}
        assert _scalar(ledgers[0], "SELECT version_num FROM alembic_version") == head
        assert _scalar(ledgers[0], "SELECT count(*) FROM alembic_version") == 1
        assert _scalar(ledgers[0], "SELECT relkind FROM pg_class WHERE oid = to_regclass('events')") == "p"
    finally:
        schema = split_url(url)[1]
        for lg in ledgers:
            lg.close()
        engine = sa.create_engine(split_url(url)[0])
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def own_schema(pg_url):
    """A schema of this test's own: partitions outlive the per-test TRUNCATE of the session schema."""
    import uuid

    url = pg_url.rsplit("schema=", 1)[0] + f"schema=tk_part_{uuid.uuid4().hex[:8]}"
    yield url
    engine = sa.create_engine(split_url(url)[0])
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{split_url(url)[1]}" CASCADE')
    engine.dispose()


def test_events_land_in_monthly_partitions_created_on_demand(own_schema):
    pg = own_schema
    ledger = PostgresLedger.open(pg)
    try:
        stamps = [utc("2026-10-31T23:59:59"), utc("2026-11-01T00:00:00"), utc("2027-01-15T08:00:00")]
        assert ledger.append([make_event(id=f"p{i}", ts=ts) for i, ts in enumerate(stamps)]) == [True] * 3
        assert ledger.partitions() == ["events_p202610", "events_p202611", "events_p202701"]
        with ledger.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT tableoid::regclass::text, id FROM events ORDER BY id").fetchall()
        assert [r[0] for r in rows] == ["events_p202610", "events_p202611", "events_p202701"]
        # a second process (no partition cache) appends into existing partitions without DDL races
        other = PostgresLedger.open(pg)
        assert other.append([make_event(id="p9", ts=stamps[1])]) == [True]
        other.close()
        assert len(ledger.partitions()) == 3
    finally:
        ledger.close()


def test_rollup_equals_raw_events_over_any_window(pg):
    """The hourly rollup (read for whole hours) plus raw edges give exactly what a plain
    scan gives, for random windows, including duplicates that must not be rolled up twice."""
    rng = random.Random(3)
    ledger, reference = PostgresLedger.open(pg), MemoryLedger()
    try:
        base = utc("2026-11-27T00:00:00")
        events = [make_event(id=f"r{i}", ts=base + rng.uniform(0, 6 * 3600), tenant=rng.choice("ab"),
                             key_id=rng.choice(["k1", "k2"]), model=rng.choice(["m1", "m2"]),
                             price=str(Decimal(rng.randrange(1, 10**9)) / 10**12 * 10**6),
                             status=rng.choice(["ok", "ok", "error"]), input_tokens=rng.randrange(1000))
                  for i in range(300)]
        for chunk in range(0, 300, 37):
            batch = events[chunk:chunk + 37] + events[max(0, chunk - 5):chunk]  # re-sends: duplicates
            assert ledger.append(batch) == reference.append(batch)
        assert _scalar(ledger, "SELECT sum(requests) FROM usage_hourly") == 300
        windows = [(None, None), (base + 1800.5, base + 5 * 3600 + 7), (base + 100, base + 200),
                   (None, base + 2 * 3600), (base + 3600, None)]
        windows += [tuple(sorted((base + rng.uniform(0, 6 * 3600), base + rng.uniform(0, 6 * 3600))))
                    for _ in range(10)]
        for since, until in windows:
            for tenant in (None, "a"):
                got, want = ledger.usage_rows(tenant, since, until), reference.usage_rows(tenant, since, until)
                assert [(r.model, r.deployment, r.requests, r.errors, r.input_tokens, r.price_pusd, r.cost_pusd)
                        for r in got] == [(r.model, r.deployment, r.requests, r.errors, r.input_tokens, r.price_pusd,
                                           r.cost_pusd) for r in want]
                assert sum(r.energy_joules for r in got) == pytest.approx(sum(r.energy_joules for r in want))
            for kind, subject in (("key", "k1"), ("tenant", "b")):
                assert ledger.spend_pusd(kind=kind, subject=subject, since=since, until=until) == \
                    reference.spend_pusd(kind=kind, subject=subject, since=since, until=until)
    finally:
        ledger.close()


def test_concurrent_writers_record_each_id_exactly_once(pg):
    """Two replicas' writers racing on overlapping ids: every id once in events and rollup."""
    a, b = PostgresLedger.open(pg), PostgresLedger.open(pg)
    results: dict[str, list[bool]] = {"a": [], "b": []}
    ids = [f"x{i}" for i in range(400)]

    def write(name, ledger, order):
        for start in range(0, len(order), 50):
            chunk = order[start:start + 50]
            results[name] += ledger.append([make_event(id=i, price="0.001") for i in chunk])

    rev = list(reversed(ids))
    threads = [threading.Thread(target=write, args=("a", a, ids)), threading.Thread(target=write, args=("b", b, rev))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sum(results["a"]) + sum(results["b"]) == 400  # each id "new" for exactly one writer
        assert _scalar(a, "SELECT count(*) FROM events") == 400
        assert _scalar(a, "SELECT count(DISTINCT id) FROM events") == 400
        assert _scalar(a, "SELECT sum(requests) FROM usage_hourly") == 400
        assert a.spend_pusd(kind="tenant", subject="acme", since=None, until=None) == 400 * 10**9
    finally:
        a.close()
        b.close()


async def test_events_keys_and_spend_survive_reopen(pg, redis_url, redis_prefix, tmp_path):
    m = open_metering(tmp_path, ledger_url=pg, redis_url=redis_url, redis_prefix=redis_prefix, admin_key="a")
    kid, key = m.create_key("acme", budget_usd="2")
    p = m.authenticate(key)
    events = [make_event(key_id=kid, price="0.25", extra={"route": "cheapest", "n": 2}, ttft_ms=None,
                         estimated=True, http_status=206, status="cancelled") for _ in range(5)]
    results = await asyncio.gather(*(m.commit(e, m.reserve(p, Decimal("0.3"))) for e in events))
    assert results == [True] * 5
    await m.close()
    # a new process: fresh Redis prefix (counters lost) -> budgets reload from the ledger
    again = open_metering(tmp_path, ledger_url=pg, redis_url=redis_url, redis_prefix=redis_prefix + "2:",
                          admin_key="a")
    try:
        back = {e.id: e for e in again.events("acme", limit=10)}
        assert back == {e.id: e for e in events}  # every field, money as the same Decimal, extra as JSON
        assert again.usage("acme")["price_usd"] == "1.25"
        assert await again.commit(events[0]) is False  # idempotent across restarts
        assert again.authenticate(key).key_id == kid
        assert again.spend(p)["key"]["spent_usd"] == "1.25"
        assert again.generated_admin_key is None and again.authenticate("a").is_admin
    finally:
        again.shutdown()
        import redis

        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=redis_prefix + "2:*"):
            client.delete(k)
        client.close()

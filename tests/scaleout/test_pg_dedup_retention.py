"""PostgreSQL ledger write path (issue 9): the COPY fast path and its ON CONFLICT fallback,
the rollup pre-aggregated per batch, and the dedup table's retention (pruned, yet a replay of
an event whose id was pruned is still recorded once)."""

from __future__ import annotations

import threading
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tokenomy.errors import TokenomyError
from tokenomy.metering.postgres_ledger import DEDUP_SKEW_S, PostgresLedger, rollup_rows, split_url

from .conftest import make_event, migrations_head

DAY = 86400.0


def _scalar(ledger, sql, params=None):
    with ledger.engine.connect() as conn:
        return conn.exec_driver_sql(sql, params or {}).scalar()


def _ids(ledger) -> set[str]:
    with ledger.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql("SELECT id FROM event_ids")}


def test_rollup_rows_is_one_row_per_hour_tenant_model_deployment():
    # rows as the COPY builds them: id, ts, tenant, key, model, deployment, in, cached, out, reasoning,
    # cost, price, joules, ttft, latency, status, ...
    def row(ts, tenant, model, status="ok", inp=10, price=5):
        return ("x", ts, tenant, "k", model, "d", inp, 1, 2, 0, 3, price, 0.5, None, 9.0, status, False, 200, None, 0)

    rows = [row(7200.0, "a", "m"), row(10799.9, "a", "m", "error", inp=20), row(10800.0, "a", "m"),
            row(7300.0, "b", "m", price=7), row(7300.0, "a", "n")]
    assert rollup_rows(rows) == [
        (7200.0, "a", "m", "d", 2, 1, 30, 2, 4, 0, 6, 10, 1.0),
        (7200.0, "a", "n", "d", 1, 0, 10, 1, 2, 0, 3, 5, 0.5),
        (7200.0, "b", "m", "d", 1, 0, 10, 1, 2, 0, 3, 7, 0.5),
        (10800.0, "a", "m", "d", 1, 0, 10, 1, 2, 0, 3, 5, 0.5),
    ]
    assert rollup_rows([]) == []


def test_fast_path_and_fallback_give_the_same_answers(pg):
    """A batch of new ids takes the COPY path; one id seen before sends the whole batch through
    ON CONFLICT; duplicates inside a batch count once (the first occurrence)."""
    ledger = PostgresLedger.open(pg)
    now = time.time()
    try:
        a = [make_event(id=f"f{i}", ts=now - 60 + i, price="0.25") for i in range(4)]
        assert ledger.append(a) == [True] * 4
        b = [make_event(id="f9", ts=now, price="1"), a[2], make_event(id="f9", ts=now, price="1"),
             make_event(id="f8", ts=now, price="2")]
        assert ledger.append(b) == [True, False, False, True]
        assert _scalar(ledger, "SELECT count(*) FROM events") == 6
        assert _scalar(ledger, "SELECT sum(requests) FROM usage_hourly") == 6
        assert ledger.spend_pusd(kind="tenant", subject="acme", since=None, until=None) == 4 * 10**12
        assert ledger.append([]) == []
    finally:
        ledger.close()


def test_retention_must_exceed_the_clock_skew_margin(pg):
    with pytest.raises(TokenomyError, match="dedup retention must be longer than 3600 s"):
        PostgresLedger.open(pg, dedup_retention_s=DEDUP_SKEW_S)


def test_pruned_ids_are_gone_yet_replays_of_their_events_are_still_recorded_once(pg):
    ledger = PostgresLedger.open(pg, dedup_retention_s=2 * DAY, prune_interval_s=None)  # pruned by hand
    now = time.time()
    old = [make_event(id=f"old{i}", ts=now - 3 * DAY + i, price="1") for i in range(3)]
    edge = make_event(id="edge", ts=now - 2 * DAY + 60, price="1")  # inside the window by a minute
    recent = [make_event(id=f"new{i}", ts=now - 3600 + i, price="1") for i in range(2)]
    try:
        assert ledger.append(old + [edge] + recent) == [True] * 6
        assert ledger.prune_event_ids(now) == 3
        assert _ids(ledger) == {"edge", "new0", "new1"}
        # replays: pruned old ids (found in events), a never-seen old event, ids still in the table
        again = [old[0], make_event(id="old9", ts=now - 3 * DAY, price="1"), recent[1], old[2], edge]
        assert ledger.append(again) == [False, True, False, False, False]
        assert _scalar(ledger, "SELECT count(*) FROM events") == 7
        assert _scalar(ledger, "SELECT count(DISTINCT id) FROM events") == 7
        assert _scalar(ledger, "SELECT sum(requests) FROM usage_hourly") == 7
        assert ledger.spend_pusd(kind="tenant", subject="acme", since=None, until=None) == 7 * 10**12
        assert ledger.prune_event_ids(now) == 3  # the replayed old ids went back in; nothing else
        assert _ids(ledger) == {"edge", "new0", "new1"}
        assert ledger.prune_event_ids(now + 2 * DAY) == 3  # later, the rest ages out too
    finally:
        ledger.close()


def test_concurrent_replays_of_a_pruned_event_record_it_once(pg):
    """Two replicas replay the same old events at once, after their ids were pruned."""
    a = PostgresLedger.open(pg, dedup_retention_s=2 * DAY, prune_interval_s=None)
    b = PostgresLedger.open(pg, dedup_retention_s=2 * DAY, prune_interval_s=None)
    now = time.time()
    evs = [make_event(id=f"late{i}", ts=now - 5 * DAY + i, price="0.5") for i in range(50)]
    try:
        assert a.append(evs[:25]) == [True] * 25  # half recorded, then pruned
        assert a.prune_event_ids(now) == 25
        results: dict[str, list[bool]] = {}
        start = threading.Barrier(2)

        def replay(name, ledger, order):
            start.wait()
            results[name] = ledger.append(order)

        threads = [threading.Thread(target=replay, args=("a", a, evs)),
                   threading.Thread(target=replay, args=("b", b, list(reversed(evs))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results["a"]) + sum(results["b"]) == 25  # only the half never recorded
        assert _scalar(a, "SELECT count(*) FROM events") == 50
        assert _scalar(a, "SELECT sum(requests) FROM usage_hourly") == 50
    finally:
        a.close()
        b.close()


def test_the_first_append_prunes_in_the_background(pg):
    ledger = PostgresLedger.open(pg, dedup_retention_s=DAY)
    now = time.time()
    try:
        assert ledger.append([make_event(id="bg-old", ts=now - 2 * DAY), make_event(id="bg-new", ts=now)]) == [True] * 2
        ledger._pruner.join(timeout=10)
        assert ledger.pruned == 1
        assert _ids(ledger) == {"bg-new"}
        assert ledger.append([make_event(id="bg-old", ts=now - 2 * DAY)]) == [False]
    finally:
        ledger.close()


def test_migration_gives_existing_ids_their_event_ts(pg_url):
    """event_ids rows from before the retention migration get their event's ts (and can be pruned)."""
    from alembic import command
    from alembic.config import Config

    from tokenomy.metering.postgres_ledger import MIGRATIONS_DIR, create_engine_for

    url = pg_url.rsplit("schema=", 1)[0] + f"schema=tk_mig_{uuid.uuid4().hex[:8]}"
    engine = create_engine_for(url, pool_size=1)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")  # the revision before the retention migration
            conn.exec_driver_sql("CREATE TABLE events_p197001 PARTITION OF events FOR VALUES FROM (0) TO (2678400)")
            for i, ts in enumerate((1000.5, 2000.25)):
                conn.exec_driver_sql("INSERT INTO event_ids (id) VALUES (%s)", (f"m{i}",))
                conn.exec_driver_sql(
                    "INSERT INTO events (id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, "
                    "output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, latency_ms, status, "
                    "recorded_at) VALUES (%s, %s, 'acme', 'k', 'm', 'd', 1, 0, 1, 0, 1, 1, 0, 1, 'ok', 0)",
                    (f"m{i}", ts))
        ledger = PostgresLedger.open(url)
        try:
            assert ledger.schema_version == migrations_head()
            with ledger.engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT id, ts FROM event_ids ORDER BY id").fetchall()
            assert [tuple(r) for r in rows] == [("m0", 1000.5), ("m1", 2000.25)]
            assert ledger.prune_event_ids(1500.5 + ledger.dedup_retention_s) == 1
            assert ledger.append([make_event(id="m0", ts=1000.5, key_id="k", price=Decimal("1"))]) == [False]
        finally:
            ledger.close()
    finally:
        engine.dispose()
        boot = sa.create_engine(split_url(url)[0])
        with boot.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{split_url(url)[1]}" CASCADE')
        boot.dispose()

"""Dashboard rollups on the PostgreSQL ledger: exact, incremental, idempotent; no event missed
when writers commit out of order; the same numbers as the SQLite rollups, edge cases included."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dashboard.conftest import ADMIN_KEY, make_event
from dashboard.pgschema import own_schema_fixtures
from tokenomy.dashboard.pg_rollups import FOLD_LOCK, PgRollups
from tokenomy.dashboard.rollups import Rollups
from tokenomy.dashboard.store import BIN_THRESHOLDS
from tokenomy.metering import Metering, UsageEvent
from tokenomy.metering.postgres_ledger import PostgresLedger

T0 = 1_790_000_000.0
BIG = 2**40


pg_module_url, pg = own_schema_fixtures("pgdash")  # a schema of this module's own


@pytest.fixture
def ledger(pg):
    led = PostgresLedger.open(pg)
    yield led
    led.close()


def _events(n: int, start: int = 0, **kw) -> list[UsageEvent]:
    return [make_event(start + i, T0 + (start + i) * 7.0, "t1", "k1", "small@l4" if i % 3 else "large@api",
                       input_tokens=100 + i, output_tokens=10 + i % 50, latency_ms=50.0 + i,
                       ttft_ms=None if i % 4 == 0 else 20.0, **kw) for i in range(n)]


def _total(r, col: str = "requests", table: str = "rollup_day") -> int:
    v = r.query(f"SELECT sum({col}) FROM {table}")[0][0]
    return 0 if v is None else int(v)


def _sqlite_twin(tmp_path: Path, events: list[UsageEvent]) -> tuple[Metering, Rollups]:
    m = Metering.open(tmp_path / "lite", admin_key=ADMIN_KEY, synchronous="OFF")
    m.ledger.append(events)
    r = Rollups(m.ledger.path)
    r.fold()
    return m, r


def test_fold_is_exact_incremental_and_idempotent(ledger, pg):
    events = _events(1000)
    ledger.append(events[:600])
    r = PgRollups(pg, min_interval_s=0)
    assert r.behind() == 600
    assert r.fold() == 600 and r.fold() == 0 and r.behind() == 0
    ledger.append(events[600:])
    ledger.append(events[:10])  # duplicates are not events: the ledger drops them
    assert r.behind() == 400
    assert r.fold() == 400
    cost = sum(int(e.cost_usd * 10**12) for e in events)
    for res in ("minute", "hour", "day"):
        assert (_total(r, table=f"rollup_{res}"), _total(r, "cost_pusd", f"rollup_{res}")) == (1000, cost)
    assert _total(r, "n", "rollup_hist_day WHERE metric = 'latency'") == 1000
    assert _total(r, "n", "rollup_hist_hour WHERE metric = 'ttft'") == 750
    r2 = PgRollups(pg)  # another replica's dashboard: nothing left to fold
    assert r2.fold() == 0 and _total(r2) == 1000
    r.close(), r2.close()


def test_a_writer_that_commits_late_is_not_missed(ledger, pg):
    """Writer A takes its transaction id first but commits after writer B and after a fold:
    a "last id seen" watermark would skip A's event for ever."""
    r = PgRollups(pg, min_interval_s=0)
    late, early = _events(2)
    with ledger.engine.connect() as a:
        a.exec_driver_sql("BEGIN")
        a.exec_driver_sql("SELECT pg_current_xact_id()")  # A's id is older than B's
        a.exec_driver_sql(
            "INSERT INTO events (id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, "
            "output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms, latency_ms, status, "
            "recorded_at) VALUES (%s, %s, 't1', 'k1', 'large', 'large@api', 7, 0, 3, 0, 5, 6, 1.0, NULL, 9.0, 'ok', %s)",
            (late.id, late.ts, late.ts))
        assert ledger.append([early]) == [True]  # B commits
        assert r.fold() == 1 and _total(r) == 1  # A is still running: invisible, and not lost
        assert r.behind() == 0
        a.exec_driver_sql("COMMIT")
    assert r.behind() == 1
    assert r.fold() == 1 and _total(r) == 2
    assert _total(r, "cost_pusd") == 5 + int(early.cost_usd * 10**12)
    r.close()


def test_concurrent_folds_count_each_event_once(ledger, pg):
    stores = [PgRollups(pg, min_interval_s=0) for _ in range(3)]
    done = threading.Event()

    def write():
        for k in range(10):
            ledger.append(_events(100, start=100 * k))
        done.set()

    def fold(r):
        while not done.is_set():
            r.fold()
        r.fold()

    threads = [threading.Thread(target=write)] + [threading.Thread(target=fold, args=(r,)) for r in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stores[0].fold()
    assert _total(stores[0]) == 1000 and _total(stores[1], table="rollup_minute") == 1000
    assert int(stores[0].query("SELECT folded FROM rollup_state")[0][0]) == 1000
    for r in stores:
        r.close()


def test_maybe_fold_does_not_wait_for_another_process(ledger, pg):
    ledger.append(_events(5))
    r = PgRollups(pg, min_interval_s=0)
    with ledger.engine.connect() as other:  # another replica's fold holds the lock
        other.exec_driver_sql("BEGIN")
        other.exec_driver_sql(f"SELECT pg_advisory_xact_lock({FOLD_LOCK})")
        assert r.maybe_fold() == -1 and r.behind() == 5 and _total(r) == 0
        other.exec_driver_sql("ROLLBACK")
    assert r.maybe_fold() == 5
    r.close()


def test_rows_written_before_the_migration_are_folded_once(ledger, pg):
    ledger.append(_events(20))
    with ledger.engine.begin() as conn:  # as if written before migration 0002 (no txid column yet)
        conn.exec_driver_sql("UPDATE events SET txid = NULL WHERE id IN ('ev-0', 'ev-1', 'ev-2')")
    r = PgRollups(pg)
    assert r.fold() == 20 and r.fold() == 0 and _total(r) == 20
    r.close()


def test_same_rollups_as_sqlite_with_odd_routing_fields_and_bin_edges(ledger, pg, tmp_path):
    routes = [{"strong": True, "predicted_quality": 0.9}, {"strong": False, "predicted_quality": 0.25},
              {"strong": 0}, {"strong": 2.5}, {"strong": "no"}, {"strong": None, "predicted_quality": None},
              {"predicted_quality": "0.5"}, {"predicted_quality": True}, {"predicted_quality": [1]}, None]
    edges = [BIN_THRESHOLDS[i] for i in (0, 54, 100, 131, 200)]
    lat = [v for x in edges for v in (x, x * (1 - 2**-52), x * (1 + 2**-52))] + [0.0, 0.004, 1e15]
    events = []
    for i in range(60):
        e = make_event(i, T0 + i * 600.0, f"t{i % 2}", f"k{i % 3}", "small@l4" if i % 2 else "large@api",
                       input_tokens=10 + i, output_tokens=i, latency_ms=lat[i % len(lat)],
                       ttft_ms=lat[(i + 5) % len(lat)] if i % 3 else None, route=routes[i % len(routes)],
                       status="ok" if i % 7 and i % 11 and i % 13 else
                       "upstream_error" if not i % 7 else "error" if not i % 11 else "cancelled")
        events.append(e)
    top = make_event(999, T0, "t0", "k0", "small@l4", input_tokens=1, output_tokens=1, latency_ms=1.0)
    top.extra.update(strong=1, predicted_quality=0.75)  # the keys at top level, without "route"
    events.append(top)
    ledger.append(events)
    r = PgRollups(pg)
    r.fold()
    m, lite = _sqlite_twin(tmp_path, events)
    key = lambda x: (x.bucket, x.model, x.deployment)  # noqa: E731
    for res in ("minute", "hour", "day"):
        for tenant in (None, "t0"):
            a = sorted(lite.usage(res, 0, BIG, tenant), key=key)
            b = sorted(r.usage(res, 0, BIG, tenant), key=key)
            assert len(a) == len(b) > 0
            assert sum(x.errors for x in a) > 0 and sum(x.client_errors for x in a) > 0
            for x, y in zip(a, b):
                assert (x.requests, x.errors, x.client_errors, x.routed, x.strong, x.pq_n, x.cost_pusd, x.price_pusd) == \
                       (y.requests, y.errors, y.client_errors, y.routed, y.strong, y.pq_n, y.cost_pusd, y.price_pusd)
                assert (x.pq_sum, x.latency_ms_sum, x.energy_joules) == pytest.approx(
                    (y.pq_sum, y.latency_ms_sum, y.energy_joules), rel=1e-12)
        ta, tb = lite.tenant_usage(res, 0, BIG, None), r.tenant_usage(res, 0, BIG, None)
        assert sorted(ta) == sorted(tb) == ["t0", "t1"]
        for t in ta:
            assert (ta[t].requests, ta[t].tokens, ta[t].cost_pusd, ta[t].price_pusd) == \
                   (tb[t].requests, tb[t].tokens, tb[t].cost_pusd, tb[t].price_pusd)
            assert ta[t].energy_joules == pytest.approx(tb[t].energy_joules, rel=1e-12)
    day = lite.usage("day", 0, BIG, None)
    assert sum(x.routed for x in day) > sum(x.strong for x in day) > 0
    for res in ("hour", "day"):
        assert lite.histograms(res, 0, BIG, None) == r.histograms(res, 0, BIG, None)
        assert lite.histograms(res, 0, BIG, "t1") == r.histograms(res, 0, BIG, "t1")
    assert lite.key_peaks(0) == r.key_peaks(0) and len(r.key_peaks(0)) == 3
    for kind, subject in (("tenant", "t0"), ("tenant", "t1"), ("key", "k2")):
        assert lite.spend_pusd(kind, subject, None) == r.spend_pusd(kind, subject, None) > 0
        assert lite.spend_pusd(kind, subject, int(T0) + 86400) == r.spend_pusd(kind, subject, int(T0) + 86400)
    assert lite.first_bucket() == r.first_bucket()
    lite.close(), r.close(), m.shutdown()


def test_feedback_table_joins_events(ledger, pg):
    ledger.append([make_event(i, T0 + i, "t1", "k1", "small@l4", input_tokens=1, output_tokens=1, latency_ms=1,
                              route={"strong": False, "predicted_quality": 0.8}) for i in range(4)])
    with ledger.engine.begin() as conn:  # stands in for the feedback store of the routing issue
        conn.exec_driver_sql("CREATE TABLE feedback (request_id TEXT PRIMARY KEY, score DOUBLE PRECISION, ts FLOAT8)")
        conn.exec_driver_sql("INSERT INTO feedback VALUES ('ev-0', 1.0, 0), ('ev-1', 0.5, 0), ('ev-3', 0.0, 0)")
    r = PgRollups(pg)
    try:
        assert sorted(r.feedback(int(T0) - 10, int(T0) + 10, None)) == [("small", 0.8, 0.0), ("small", 0.8, 0.5),
                                                                          ("small", 0.8, 1.0)]
        assert r.feedback(int(T0) - 10, int(T0) + 10, "someone-else") == []
    finally:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE feedback")
        r.close()


def test_unreachable_database_is_a_503():
    from tokenomy.dashboard.api import Dashboard, DashboardConfig, DashError

    class Ledger:
        url = "postgresql://postgres@127.0.0.1:1/test"

    class Meter:
        ledger = Ledger()

    with pytest.raises(DashError) as err:
        Dashboard(Meter(), DashboardConfig())._open_rollups()
    assert err.value.status == 503 and "cannot open the PostgreSQL ledger at" in err.value.message


def test_database_gone_after_start_is_a_503(pg, tmp_path):
    import httpx

    from dashboard.conftest import ServerThread, open_meter
    from tokenomy.metering.postgres_ledger import create_engine_for, redact

    m = open_meter(tmp_path, pg)
    srv = ServerThread(m, config={"min_fold_interval_s": 0}).start()
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        r = httpx.get(f"{srv.url}/dashboard/api/overview", headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["meta"]["rollups"] == {"behind": 0}
        from tokenomy.dashboard.routes import DASH_KEY

        store = srv.app[DASH_KEY]._rollups
        live = store.engine
        store.engine = create_engine_for("postgresql://postgres@127.0.0.1:1/test")  # the database goes away
        r = httpx.get(f"{srv.url}/dashboard/api/overview", headers=auth, timeout=60)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "ledger_unavailable" and err["type"] == "service_unavailable"
        assert err["message"].startswith(f"the PostgreSQL ledger at {redact(pg)} is unavailable: ")
        store.engine.dispose()
        store.engine = live
        assert httpx.get(f"{srv.url}/dashboard/api/overview", headers=auth, timeout=60).status_code == 200
    finally:
        srv.stop()
        m.shutdown()

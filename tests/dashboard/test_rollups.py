"""Rollup tables: incremental, idempotent, exact; never touching the metering tables."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from tokenomy.dashboard import baselines as B
from tokenomy.dashboard import queries
from tokenomy.dashboard.rollups import Rollups, bin_value_ms, latency_bin, percentile, pick_resolution, snap
from tokenomy.metering import Metering

from .conftest import ADMIN_KEY, make_event


def _ledger(tmp_path, n: int, t0: float = 1_790_000_000.0):
    m = Metering.open(tmp_path, admin_key=ADMIN_KEY, synchronous="OFF")
    kid, _ = m.create_key("t1")
    events = [make_event(i, t0 + i * 7.0, "t1", kid, "small@l4" if i % 3 else "large@api", input_tokens=100 + i,
                         output_tokens=10 + i % 50, latency_ms=50.0 + i, ttft_ms=None if i % 4 == 0 else 20.0)
              for i in range(n)]
    m.ledger.append(events)
    return m, kid, events


def _schema(path) -> dict[str, str]:
    with sqlite3.connect(path) as c:
        return dict(c.execute("SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'rollup_%' AND sql IS NOT NULL"))


def test_fold_is_exact_incremental_and_idempotent(tmp_path):
    m, kid, events = _ledger(tmp_path, 1000)
    before = _schema(m.ledger.path)
    r = Rollups(m.ledger.path, chunk_rows=300)  # several chunks
    assert r.fold() == 1000
    assert r.fold() == 0
    assert r.watermark == 1000
    cost_pusd = sum(int(e.cost_usd * 10**12) for e in events)
    for res in ("minute", "hour", "day"):
        n, c, i = r.query(f"SELECT SUM(requests), SUM(cost_pusd), SUM(input_tokens) FROM rollup_{res}")[0]
        assert (n, c, i) == (1000, cost_pusd, sum(e.input_tokens for e in events))
    # more events arrive: only they are folded
    more = [make_event(5000 + i, events[-1].ts + 60 + i, "t1", kid, "small@l4", input_tokens=1, output_tokens=1,
                       latency_ms=1.0) for i in range(10)]
    m.ledger.append(more)
    assert r.fold() == 10
    assert r.query("SELECT SUM(requests) FROM rollup_day")[0][0] == 1010
    # a second reader (another process) folding the same ledger does not double count
    r2 = Rollups(m.ledger.path)
    assert r2.fold() == 0
    assert r2.query("SELECT SUM(requests) FROM rollup_hour")[0][0] == 1010
    # histograms: one latency per event, TTFT only where recorded
    assert r.query("SELECT SUM(n) FROM rollup_hist_day WHERE metric = 'latency'")[0][0] == 1010
    assert r.query("SELECT SUM(n) FROM rollup_hist_hour WHERE metric = 'ttft'")[0][0] == 750
    assert _schema(m.ledger.path) == before  # metering tables untouched
    r.close(), r2.close(), m.shutdown()


def test_concurrent_folds_count_each_event_once(tmp_path):
    m, _, events = _ledger(tmp_path, 3000)
    readers = [Rollups(m.ledger.path, chunk_rows=250) for _ in range(3)]
    threads = [threading.Thread(target=r.fold) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert readers[0].query("SELECT SUM(requests) FROM rollup_minute")[0][0] == 3000
    assert readers[1].query("SELECT SUM(requests) FROM rollup_day")[0][0] == 3000
    for r in readers:
        r.close()
    m.shutdown()


def test_maybe_fold_is_throttled(tmp_path):
    m, kid, events = _ledger(tmp_path, 10)
    r = Rollups(m.ledger.path, min_interval_s=3600)
    assert r.maybe_fold() == 10
    m.ledger.append([make_event(99, events[-1].ts + 1, "t1", kid, "small@l4", input_tokens=1, output_tokens=1, latency_ms=1)])
    assert r.maybe_fold() == 0  # too soon
    assert r.fold() == 1
    r.close(), m.shutdown()


def test_routing_fields_from_extra(tmp_path):
    m = Metering.open(tmp_path, admin_key=ADMIN_KEY, synchronous="OFF")
    kid, _ = m.create_key("t1")
    t0 = 1_790_000_000.0
    evs = [make_event(0, t0, "t1", kid, "large@api", input_tokens=1, output_tokens=1, latency_ms=1,
                      route={"strong": True, "predicted_quality": 0.9}),
           make_event(1, t0, "t1", kid, "small@l4", input_tokens=1, output_tokens=1, latency_ms=1,
                      route={"strong": False, "predicted_quality": 0.5}),
           make_event(2, t0, "t1", kid, "small@l4", input_tokens=1, output_tokens=1, latency_ms=1)]
    m.ledger.append(evs)
    r = Rollups(m.ledger.path)
    r.fold()
    assert r.query("SELECT SUM(routed), SUM(strong), SUM(pq_sum), SUM(pq_n) FROM rollup_day")[0] == (2, 1, 1.4, 2)
    r.close(), m.shutdown()


def test_feedback_table_gives_predicted_vs_observed(tmp_path):
    """When the ledger has a feedback table (request_id, score), the routing page joins it."""
    from tokenomy.dashboard.routes import _feedback

    m = Metering.open(tmp_path, admin_key=ADMIN_KEY, synchronous="OFF")
    kid, _ = m.create_key("t1")
    t0 = 1_790_000_000.0
    m.ledger.append([make_event(i, t0 + i, "t1", kid, "small@l4", input_tokens=1, output_tokens=1, latency_ms=1,
                                route={"strong": False, "predicted_quality": 0.8}) for i in range(4)])
    with sqlite3.connect(m.ledger.path) as c:  # stands in for the feedback store of the routing issue
        c.execute("CREATE TABLE feedback (request_id TEXT PRIMARY KEY, score REAL, ts REAL)")
        c.executemany("INSERT INTO feedback VALUES (?, ?, ?)", [("ev-0", 1.0, t0), ("ev-1", 0.5, t0), ("ev-3", 0.0, t0)])
    r = Rollups(m.ledger.path)
    r.fold()
    w = queries.make_window(t0 - 3600, t0 + 3600)
    fb = _feedback(r, w, None)
    assert sorted(fb) == [("small", 0.8, 0.0), ("small", 0.8, 0.5), ("small", 0.8, 1.0)]
    out = queries.routing(r, w, None, fb)
    assert out["tables"]["quality"] == [{"model": "small", "n": 3, "observed_mean": 0.5, "predicted_mean": pytest.approx(0.8)}]
    assert out["tables"]["calibration"][0]["bin"] == "0.8-0.9"
    assert _feedback(r, w, "someone-else") == []
    r.close(), m.shutdown()


def test_histogram_bins_and_percentiles():
    for ms in (0.5, 1.0, 37.0, 999.0, 12345.0):
        b = latency_bin(ms)
        assert bin_value_ms(b) == pytest.approx(ms, rel=0.05)
    assert latency_bin(None) is None
    hist: dict[int, int] = {}
    for v in range(1, 1001):
        b = latency_bin(float(v))
        hist[b] = hist.get(b, 0) + 1
    assert percentile(hist, 0.5) == pytest.approx(500, rel=0.05)
    assert percentile(hist, 0.99) == pytest.approx(990, rel=0.05)
    assert percentile({}, 0.5) is None


def test_resolution_and_snapping():
    assert pick_resolution(0, 3600) == "minute"
    assert pick_resolution(0, 86400) == "hour"
    assert pick_resolution(0, 30 * 86400) == "day"
    assert snap(125.0, 3599.0, "minute") == (120, 3600)
    assert snap(86400 * 3 + 5, 86400 * 4 + 5, "day") == (86400 * 3, 86400 * 5)


def test_baselines_by_hand():
    usage = [B.Usage("small", "s1", 10, 1000, 0, 100, 0, 0.001), B.Usage("small", "s2", 30, 3000, 0, 300, 0, 0.006),
             B.Usage("large", "l1", 5, 500, 0, 50, 0, 0.05)]
    known = {"s1": B.Rates(1e-7, 1e-7, 2e-7, 2e-7), "s2": B.Rates(2e-7, 2e-7, 4e-7, 4e-7),
             "l1": B.Rates(1e-5, 5e-6, 3e-5, 3e-5)}
    base = B.make_baselines(usage, known_rates=known)
    assert base.strong_model == "large"
    assert base.pinned == {"small": "s2", "large": "l1"}  # most used
    # all-strong: every request at l1's rates
    assert sum(base.all_strong_usd(u) for u in usage) == pytest.approx(4500 * 1e-5 + 450 * 3e-5)
    # single deployment: small all on s2
    assert base.single_deployment_usd(usage[0]) == pytest.approx(1000 * 2e-7 + 100 * 4e-7)
    # the gateway group's first deployment wins over "most used"; configuration over both
    assert B.make_baselines(usage, known_rates=known, pinned={"small": "s2"}, group_first={"small": "s1"}).pinned["small"] == "s2"
    assert B.make_baselines(usage, known_rates=known, strong_model="small").strong_model == "small"
    # cached input and reasoning are priced at their own rates
    r = B.Rates(1.0, 0.5, 2.0, 3.0)
    assert r.cost_usd(10, 4, 5, 2) == 6 * 1.0 + 4 * 0.5 + 3 * 2.0 + 2 * 3.0
    assert B.savings(3.0, 4.0) == {"baseline_usd": 4.0, "saved_usd": 1.0, "saved_fraction": 0.25}
    assert B.savings(0.0, 0.0)["saved_fraction"] is None


def test_in_memory_metering_gets_a_clear_503():
    import httpx

    from .conftest import ServerThread

    m = Metering.in_memory(admin_key=ADMIN_KEY)
    srv = ServerThread(m).start()
    try:
        r = httpx.get(f"{srv.url}/dashboard/api/overview", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 503 and "SQLite ledger" in r.json()["error"]["message"]
    finally:
        srv.stop()
        m.shutdown()


def test_gateway_live_state_and_prices(tmp_path):
    """Mounted on the real gateway app: breaker state, in-flight and configured prices are used."""
    import httpx

    from tokenomy.config import default_config
    from tokenomy.gateway.app import GATEWAY_KEY, build_app

    from .conftest import ServerThread

    m = Metering.open(tmp_path, admin_key=ADMIN_KEY, synchronous="OFF")
    app = build_app(default_config(time_scale=0.001), m)
    gw = app[GATEWAY_KEY]
    names = list(gw.deployments)
    kid, _ = m.create_key("t1")
    m.ledger.append([make_event(0, time.time(), "t1", kid, "small@l4", input_tokens=10, output_tokens=10, latency_ms=5)])
    srv = ServerThread(m, config={"min_fold_interval_s": 0}, app=app).start()
    try:
        from tokenomy.gateway.health import OPEN

        gw.deployments[names[0]].breaker.state = OPEN
        r = httpx.get(f"{srv.url}/dashboard/api/deployments", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
        body = r.json()
        assert body["meta"]["live"] is True
        rows = {x["deployment"]: x for x in body["tables"]["deployments"]}
        assert set(names) <= set(rows)
        assert rows[names[0]]["breaker"] == "open" and body["totals"]["open_breakers"] == [names[0]]
        assert all(rows[n]["breaker"] in ("closed", "open") and rows[n]["in_flight"] == 0 for n in names)
        ov = httpx.get(f"{srv.url}/dashboard/api/overview", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
        assert ov["totals"]["requests"] == 1
    finally:
        srv.stop()


def test_rollups_of_another_schema_version_are_rebuilt(tmp_path):
    m, _, events = _ledger(tmp_path, 50)
    r = Rollups(m.ledger.path)
    r.fold()
    r.close()
    with sqlite3.connect(m.ledger.path) as c:  # pretend an older tokenomy wrote them
        c.execute("UPDATE rollup_state SET last_rowid = 1 WHERE name = 'schema'")
        c.execute("UPDATE rollup_day SET requests = requests + 1000")
    r = Rollups(m.ledger.path)
    assert r.watermark == 0
    assert r.fold() == 50
    assert r.query("SELECT SUM(requests) FROM rollup_day")[0][0] == 50
    r.close(), m.shutdown()


def test_reads_do_not_wait_for_a_running_catch_up(tmp_path):
    """While one fold holds the write lock, maybe_fold returns at once and reads see the
    chunks committed so far; behind() says how many events are still missing."""
    m, _, events = _ledger(tmp_path, 400)
    r = Rollups(m.ledger.path, chunk_rows=100, min_interval_s=0)
    assert r.behind() == 400
    with r._lock:  # a catch-up fold in progress (as held by the startup task)
        # -1: it gave up on the held lock instead of waiting for the fold (a wait would hang here
        # until pytest's timeout; no wall-clock bound is asserted)
        assert r.maybe_fold(wait_s=0.2) == -1
        assert r.query("SELECT COUNT(*) FROM rollup_day")[0][0] == 0
        r._fold_chunk()  # one chunk committed by the fold
        assert r.behind() == 300
        assert r.query("SELECT SUM(requests) FROM rollup_day")[0][0] == 100
    assert r.maybe_fold() == 300 and r.behind() == 0
    r.close(), m.shutdown()

"""Pre-aggregated rollups of the usage ledger, kept in the ledger's own SQLite file.

Tables (all prefixed `rollup_`, the metering tables are only ever read):
  rollup_state            watermark: the last events.rowid folded in
  rollup_minute/hour/day  sums per (bucket, tenant, model, deployment)
  rollup_key_minute/day   requests, tokens and spend per (bucket, tenant, key_id): caps and key budgets
  rollup_hist_hour/day    latency and TTFT histograms per (bucket, tenant, deployment, metric, bin)

`fold()` adds the events past the watermark to every table and moves the watermark in the
SAME transaction, so a fold is idempotent and two processes folding at once cannot double
count (the second re-reads the watermark after taking the write lock). Events are immutable
and rowids only grow (SQLite has one writer), so "rowid > watermark" is exactly the new ones.
Work is chunked so the gateway's writer never waits long for the lock.

The pages read through the methods of store.RollupStore (usage, histograms, ...), which
pg_rollups.PgRollups implements with the same tables on the PostgreSQL ledger.
"""

from __future__ import annotations

import bisect
import math
import sqlite3
import threading
import time
from pathlib import Path

from tokenomy.metering import sums
from tokenomy.dashboard.store import (BIN_FLOOR_MS, BIN_MIN, BIN_THRESHOLDS, BINS_PER_OCTAVE, Histograms,
                                      TenantUsage, UsageBucket, find_feedback_columns)

RESOLUTIONS = {"minute": 60, "hour": 3600, "day": 86400}
HIST_RESOLUTIONS = ("hour", "day")
# histogram bins 2^(1/8) ~ 9% wide: percentiles within ~5% (store.BIN_THRESHOLDS)
ROLLUP_SCHEMA = 6  # bump when the rollup tables change: they are derived, so they are rebuilt
CHUNK_ROWS = 50_000  # ~1 s of write lock at most per chunk
BUSY_TIMEOUT_MS = 10_000

SUM_COLS = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
            "cost_pusd", "price_pusd", "energy_joules", "latency_ms_sum", "ttft_ms_sum", "ttft_n",
            "routed", "strong", "pq_sum", "pq_n", "client_errors")
# errors: upstream failures (status upstream_error) only; client_errors: the caller's own
# (4xx passed back, status error) and requests the client abandoned (cancelled). A healthy
# deployment's error rate must not move because clients send bad requests.
DIMS = ("tenant", "model", "deployment")
KEY_COLS = ("requests", "tokens", "price_pusd")
KEY_RESOLUTIONS = ("minute", "day")

# Routing decisions (when the gateway records them) are read from the event's `extra` JSON:
# {"route": {"strong": bool, "predicted_quality": float}} or the same keys at top level.
_EXTRA = "CASE WHEN extra IS NOT NULL AND json_valid(extra) THEN COALESCE(json_extract(extra, '$.route.{k}'), json_extract(extra, '$.{k}')) END"
_STRONG = _EXTRA.format(k="strong")
_PQ = _EXTRA.format(k="predicted_quality")

_DELTA_SELECT = f"""
SELECT CAST(ts / 60 AS INTEGER) * 60 AS bucket, tenant, model, deployment,
       COUNT(*), SUM(status = 'upstream_error'), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens),
       SUM(reasoning_tokens), SUM(cost_pusd), SUM(price_pusd), TOTAL(energy_joules), TOTAL(latency_ms),
       TOTAL(ttft_ms), COUNT(ttft_ms), SUM(s IS NOT NULL), SUM(COALESCE(s, 0) != 0), TOTAL(pq), COUNT(pq),
       SUM(status NOT IN ('ok', 'upstream_error'))
FROM (SELECT *, {_STRONG} AS s, {_PQ} AS pq FROM events WHERE rowid > ? AND rowid <= ?)
GROUP BY 1, 2, 3, 4"""

_KEY_DELTA_SELECT = f"""
SELECT CAST(ts / 60 AS INTEGER) * 60, tenant, key_id, COUNT(*), {sums.add_sql("SUM(input_tokens)", "SUM(output_tokens)")},
       SUM(price_pusd)
FROM events WHERE rowid > ? AND rowid <= ? GROUP BY 1, 2, 3"""

_HIST_DELTA_SELECT = """
SELECT CAST(ts / 3600 AS INTEGER) * 3600, tenant, deployment, ?, rollup_bin({col}), COUNT(*)
FROM events WHERE rowid > ? AND rowid <= ? AND {col} IS NOT NULL GROUP BY 1, 2, 3, 5"""


def latency_bin(ms: float | None) -> int | None:
    """The histogram bin of a latency: the number of thresholds <= ms (as PostgreSQL's width_bucket)."""
    if ms is None:
        return None
    return bisect.bisect_right(BIN_THRESHOLDS, max(float(ms), BIN_FLOOR_MS)) + BIN_MIN - 1


def bin_value_ms(b: int) -> float:
    """Representative value (geometric middle) of a histogram bin."""
    return 2.0 ** ((b + 0.5) / BINS_PER_OCTAVE)


def money_sum(col: str) -> str:
    """Exact SUM of int64 pico-USD without overflow (recombine as hi * 1e6 + lo)."""
    return f"COALESCE(SUM({col} / 1000000), 0), COALESCE(SUM({col} % 1000000), 0)"


def _col_type(c: str) -> str:
    # counters: no declared type (BLOB affinity), so one beyond 64 bits is kept as exact TEXT
    # (metering.sums); floats are REAL
    return "REAL" if c in _REAL_COLS else ""


def _ddl() -> list[str]:
    cols = ", ".join(f"{c} {_col_type(c)} NOT NULL" for c in SUM_COLS)
    out = ["CREATE TABLE IF NOT EXISTS rollup_state (name TEXT PRIMARY KEY, last_rowid INTEGER NOT NULL, updated REAL NOT NULL)"]
    for res in RESOLUTIONS:
        out.append(f"CREATE TABLE IF NOT EXISTS rollup_{res} (bucket INTEGER NOT NULL, tenant TEXT NOT NULL, "
                   f"model TEXT NOT NULL, deployment TEXT NOT NULL, {cols}, "
                   "PRIMARY KEY (bucket, tenant, model, deployment)) WITHOUT ROWID")
    for res in KEY_RESOLUTIONS:
        out.append(f"CREATE TABLE IF NOT EXISTS rollup_key_{res} (bucket INTEGER NOT NULL, tenant TEXT NOT NULL, "
                   "key_id TEXT NOT NULL, requests NOT NULL, tokens NOT NULL, price_pusd NOT NULL, "
                   "PRIMARY KEY (bucket, tenant, key_id)) WITHOUT ROWID")
    for res in HIST_RESOLUTIONS:
        out.append(f"CREATE TABLE IF NOT EXISTS rollup_hist_{res} (bucket INTEGER NOT NULL, tenant TEXT NOT NULL, "
                   "deployment TEXT NOT NULL, metric TEXT NOT NULL, bin INTEGER NOT NULL, n NOT NULL, "
                   "PRIMARY KEY (bucket, tenant, deployment, metric, bin)) WITHOUT ROWID")
    return out


_REAL_COLS = ("energy_joules", "latency_ms_sum", "ttft_ms_sum", "pq_sum")


def _add(col: str, other: str) -> str:
    """Stored counters add exactly, past 64 bits too (metering.sums.add_sql)."""
    return f"{col} + {other}" if col in _REAL_COLS else sums.add_sql(col, other)


def _upsert(table: str, select_sql: str) -> str:
    keys = ", ".join(("bucket",) + DIMS)
    sets = ", ".join(f"{c} = {_add(c, 'excluded.' + c)}" for c in SUM_COLS)
    return (f"INSERT INTO {table} (bucket, {', '.join(DIMS)}, {', '.join(SUM_COLS)}) {select_sql} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {sets}")


def _coarser(seconds: int) -> str:
    """The per-minute delta summed to buckets of `seconds`."""
    sums = ", ".join(f"SUM({c})" for c in SUM_COLS)
    return (f"SELECT (bucket / {seconds}) * {seconds}, {', '.join(DIMS)}, {sums} FROM temp.rollup_delta "
            f"GROUP BY 1, {', '.join(str(i + 2) for i in range(len(DIMS)))}")


def _key_upsert(res: str, seconds: int) -> str:
    return (f"INSERT INTO rollup_key_{res} (bucket, tenant, key_id, requests, tokens, price_pusd) "
            f"SELECT (bucket / {seconds}) * {seconds}, tenant, key_id, SUM(requests), SUM(tokens), "
            "SUM(price_pusd) FROM temp.rollup_key_delta GROUP BY 1, 2, 3 "
            "ON CONFLICT (bucket, tenant, key_id) DO UPDATE SET "
            + ", ".join(f"{c} = {_add(c, 'excluded.' + c)}" for c in KEY_COLS))


_HIST_UPSERT = ("INSERT INTO {table} (bucket, tenant, deployment, metric, bin, n) {select} "
                "ON CONFLICT (bucket, tenant, deployment, metric, bin) DO UPDATE SET n = "
                + sums.add_sql("n", "excluded.n"))


class Rollups:
    """Owner of the rollup tables of one ledger file; thread-safe; one connection of its own."""

    def __init__(self, ledger_path: Path | str, *, min_interval_s: float = 1.0, chunk_rows: int = CHUNK_ROWS):
        self.path = Path(ledger_path)
        self.min_interval_s = min_interval_s
        self.chunk_rows = chunk_rows
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=BUSY_TIMEOUT_MS / 1000)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA temp_store = MEMORY")
        self._conn.execute("PRAGMA cache_size = -65536")
        self._conn.create_function("rollup_bin", 1, latency_bin, deterministic=True)
        self._went_big = False  # this fold chunk stored a counter beyond 64 bits
        sums.register(self._conn, self._big_add)
        self._lock = threading.Lock()  # the fold (write) connection
        # Reads use their own connection: in WAL mode they see the last committed chunk and
        # never wait for a long catch-up fold.
        self._rconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                      timeout=BUSY_TIMEOUT_MS / 1000)
        self._rconn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._rconn.execute("PRAGMA cache_size = -65536")
        sums.register(self._rconn)
        self._rlock = threading.Lock()
        self._last_fold = -math.inf
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._rebuild_if_stale()
                for stmt in _ddl():
                    self._conn.execute(stmt)
                self._conn.execute("INSERT OR IGNORE INTO rollup_state (name, last_rowid, updated) VALUES ('events', 0, ?)",
                                   (time.time(),))
                self._conn.execute("INSERT OR REPLACE INTO rollup_state (name, last_rowid, updated) VALUES ('schema', ?, ?)",
                                   (ROLLUP_SCHEMA, time.time()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            cols = ", ".join(f"{c} {_col_type(c)}" for c in SUM_COLS)
            self._conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS rollup_delta (bucket INTEGER, tenant TEXT, "
                               f"model TEXT, deployment TEXT, {cols})")
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS rollup_key_delta (bucket INTEGER, tenant TEXT, key_id TEXT, "
                               "requests, tokens, price_pusd)")
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS rollup_hist_delta (bucket INTEGER, tenant TEXT, "
                               "deployment TEXT, metric TEXT, bin INTEGER, n)")

    def _rebuild_if_stale(self) -> None:
        """Drop rollups written by another rollup schema version (they are refolded from events)."""
        conn = self._conn
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'rollup_state'").fetchone():
            return
        row = conn.execute("SELECT last_rowid FROM rollup_state WHERE name = 'schema'").fetchone()
        if row is not None and row[0] == ROLLUP_SCHEMA:
            return
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rollup\\_%' ESCAPE '\\'")]
        for t in tables:
            conn.execute(f'DROP TABLE "{t}"')

    def close(self) -> None:
        with self._lock, self._rlock:
            self._conn.close()
            self._rconn.close()

    @property
    def watermark(self) -> int:
        return self.query("SELECT last_rowid FROM rollup_state WHERE name = 'events'")[0][0]

    def behind(self) -> int:
        """Events recorded but not folded yet (rowids past the watermark; events are never deleted)."""
        return self.query("SELECT COALESCE((SELECT MAX(rowid) FROM events), 0) - "
                          "(SELECT last_rowid FROM rollup_state WHERE name = 'events')")[0][0]

    def maybe_fold(self, wait_s: float = 2.0) -> int:
        """Fold unless a fold ran less than min_interval_s ago (pages fire several calls at once).
        If another fold is running, wait for it up to wait_s; past that (a catch-up of a large
        ledger) return -1 at once: readers get what is folded so far (see behind())."""
        if time.monotonic() - self._last_fold < self.min_interval_s:
            return 0
        if not self._lock.acquire(timeout=wait_s):
            return -1
        try:
            return self._fold_locked()
        finally:
            self._lock.release()

    def fold(self) -> int:
        """Fold every event past the watermark into the rollups; returns the number folded."""
        with self._lock:
            return self._fold_locked()

    def _fold_locked(self) -> int:
        total = 0
        while True:
            n = self._fold_chunk()
            total += n
            if n == 0:
                break
        self._last_fold = time.monotonic()
        return total

    def _fold_chunk(self) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            low = conn.execute("SELECT last_rowid FROM rollup_state WHERE name = 'events'").fetchone()[0]
            top = conn.execute("SELECT MAX(rowid) FROM events").fetchone()[0] or 0
            high = min(top, low + self.chunk_rows)
            if high <= low:
                conn.execute("COMMIT")
                return 0
            count = conn.execute("SELECT COUNT(*) FROM events WHERE rowid > ? AND rowid <= ?", (low, high)).fetchone()[0]
            self._went_big = self._is_big(conn)
            run = self._run_exact
            conn.execute("DELETE FROM temp.rollup_delta")
            run(f"INSERT INTO temp.rollup_delta {_DELTA_SELECT}", (low, high))
            conn.execute(_upsert("rollup_minute", "SELECT * FROM temp.rollup_delta WHERE true"))
            run(_upsert("rollup_hour", _coarser(3600)))
            run(_upsert("rollup_day", _coarser(86400)))
            conn.execute("DELETE FROM temp.rollup_key_delta")
            run(f"INSERT INTO temp.rollup_key_delta {_KEY_DELTA_SELECT}", (low, high))
            for res in KEY_RESOLUTIONS:
                run(_key_upsert(res, RESOLUTIONS[res]))
            conn.execute("DELETE FROM temp.rollup_hist_delta")
            for metric, col in (("latency", "latency_ms"), ("ttft", "ttft_ms")):
                conn.execute(f"INSERT INTO temp.rollup_hist_delta {_HIST_DELTA_SELECT.format(col=col)}", (metric, low, high))
            conn.execute(_HIST_UPSERT.format(table="rollup_hist_hour", select="SELECT * FROM temp.rollup_hist_delta WHERE true"))
            run(_HIST_UPSERT.format(
                table="rollup_hist_day",
                select="SELECT (bucket / 86400) * 86400, tenant, deployment, metric, bin, SUM(n) "
                       "FROM temp.rollup_hist_delta GROUP BY 1, 2, 3, 4, 5"))
            conn.execute("UPDATE rollup_state SET last_rowid = ?, updated = ? WHERE name = 'events'", (high, time.time()))
            if self._went_big:  # from now on, reads of the rollups sum exactly
                conn.execute("INSERT OR IGNORE INTO rollup_state (name, last_rowid, updated) VALUES ('big', 1, ?)",
                             (time.time(),))
            conn.execute("COMMIT")
            return count
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _big_add(self, a, b):
        out = sums.big_add(a, b)
        if isinstance(out, str):
            self._went_big = True
        return out

    def _is_big(self, conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM rollup_state WHERE name = 'big'").fetchone() is not None

    def _run_exact(self, sql: str, params: tuple | list = ()) -> None:
        """A fold statement with native SUM() (fast) while every counter fits 64 bits; once one
        does not (absurd data), with exact sums: the fold never fails and never rounds."""
        if self._went_big:
            self._conn.execute(sums.exact_sql(sql), params)
            return
        try:
            self._conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not sums.is_overflow(exc):
                raise
            self._went_big = True
            self._conn.execute(sums.exact_sql(sql), params)

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """A read; its SUM()s exact whatever the data: exact_sum() once the rollups hold a counter
        beyond 64 bits, else native SUM() (an overflow re-runs it with exact sums)."""
        with self._rlock:
            conn = self._rconn
            if "SUM(" in sql.upper() and self._is_big(conn):
                return conn.execute(sums.exact_sql(sql), params).fetchall()
            return sums.query_sums(lambda q, p: conn.execute(q, p).fetchall(), sql, params)

    # reads of the read models (store.RollupStore) ------------------------------------------
    def first_bucket(self) -> int | None:
        return self.query("SELECT MIN(bucket) FROM rollup_day")[0][0]

    def usage(self, res: str, since: int, until: int, tenant: str | None) -> list[UsageBucket]:
        where, params = _where(since, until, tenant)
        sql = ("SELECT bucket, model, deployment, SUM(requests), SUM(errors), SUM(input_tokens), "
               f"SUM(cached_input_tokens), SUM(output_tokens), SUM(reasoning_tokens), {money_sum('cost_pusd')}, "
               f"{money_sum('price_pusd')}, TOTAL(energy_joules), TOTAL(latency_ms_sum), SUM(routed), SUM(strong), "
               f"TOTAL(pq_sum), SUM(pq_n), SUM(client_errors) FROM rollup_{_res(res)}{where} "
               "GROUP BY bucket, model, deployment")
        n = sums.as_int
        return [UsageBucket(t[0], t[1], t[2], n(t[3]), n(t[4]), n(t[5]), n(t[6]), n(t[7]), n(t[8]),
                            _usd(t[9], t[10]), _usd(t[11], t[12]), t[13], t[14], n(t[15]), n(t[16]), t[17],
                            n(t[18]), n(t[19]))
                for t in self.query(sql, params)]

    def histograms(self, res: str, since: int, until: int, tenant: str | None) -> Histograms:
        if res not in HIST_RESOLUTIONS:
            raise ValueError(f"no histograms at resolution '{res}'")
        where, params = _where(since, until, tenant)
        out: Histograms = {}
        for dep, metric, b, n in self.query(f"SELECT deployment, metric, bin, SUM(n) FROM rollup_hist_{res}{where} "
                                            "GROUP BY deployment, metric, bin", params):
            out.setdefault(dep, {}).setdefault(metric, {})[b] = sums.as_int(n)
        return out

    def tenant_usage(self, res: str, since: int, until: int, tenant: str | None) -> dict[str, TenantUsage]:
        where, params = _where(since, until, tenant)
        rows = self.query("SELECT tenant, SUM(requests), SUM(input_tokens), SUM(output_tokens), "
                          f"{money_sum('cost_pusd')}, {money_sum('price_pusd')}, TOTAL(energy_joules) "
                          f"FROM rollup_{_res(res)}{where} GROUP BY tenant", params)
        n = sums.as_int
        return {t[0]: TenantUsage(n(t[1]), n(t[2]) + n(t[3]), _usd(t[4], t[5]), _usd(t[6], t[7]), t[8]) for t in rows}

    def spend_pusd(self, kind: str, subject: str, since: int | None) -> int:
        table, col = ("rollup_key_day", "key_id") if kind == "key" else ("rollup_day", "tenant")
        sql = f"SELECT {money_sum('price_pusd')} FROM {table} WHERE {col} = ?"
        params: list = [subject]
        if since is not None:
            sql += " AND bucket >= ?"
            params.append(since)
        hi, lo = self.query(sql, params)[0]
        return _usd(hi, lo)

    def key_peaks(self, since: int) -> dict[str, tuple[int, int]]:
        rows = self.query("SELECT key_id, MAX(requests), MAX(tokens) FROM rollup_key_minute WHERE bucket >= ? "
                          "GROUP BY key_id", (since,))
        return {k: (rpm, tpm) for k, rpm, tpm in rows}

    def feedback(self, since: int, until: int, tenant: str | None) -> list[tuple[str, float | None, float]]:
        names = [t for (t,) in self.query("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name LIKE '%feedback%' AND name NOT LIKE 'rollup_%'")]
        found = find_feedback_columns({t: {c[1] for c in self.query(f"PRAGMA table_info('{t}')")} for t in names})
        if found is None:
            return []
        table, id_col, score_col = found
        sql = ("SELECT e.model, CASE WHEN e.extra IS NOT NULL AND json_valid(e.extra) THEN COALESCE("
               "json_extract(e.extra, '$.route.predicted_quality'), json_extract(e.extra, '$.predicted_quality')) END, "
               f"f.{score_col} FROM \"{table}\" f JOIN events e ON e.id = f.{id_col} WHERE e.ts >= ? AND e.ts < ?")
        params: list = [since, until]
        if tenant is not None:
            sql += " AND e.tenant = ?"
            params.append(tenant)
        return [(m, None if pq is None else float(pq), float(s)) for m, pq, s in self.query(sql + " LIMIT 200000", params)
                if s is not None]


def _res(res: str) -> str:
    if res not in RESOLUTIONS:
        raise ValueError(f"unknown resolution '{res}'")
    return res


def _where(since: int, until: int, tenant: str | None) -> tuple[str, list]:
    sql = " WHERE bucket >= ? AND bucket < ?"
    params: list = [since, until]
    if tenant is not None:
        sql += " AND tenant = ?"
        params.append(tenant)
    return sql, params


def _usd(hi, lo) -> int:
    return sums.as_int(hi) * 1_000_000 + sums.as_int(lo)


def pick_resolution(since: float, until: float) -> str:
    """The finest resolution that keeps a chart at a few hundred points at most."""
    span = until - since
    if span <= 6 * 3600:
        return "minute"
    if span <= 8 * 86400:
        return "hour"
    return "day"


def snap(since: float, until: float, res: str) -> tuple[int, int]:
    """[since, until) widened to whole buckets of the resolution."""
    step = RESOLUTIONS[res]
    return int(since // step) * step, int(-(-until // step)) * step




def percentile(hist: dict[int, int], q: float) -> float | None:
    """q-quantile (0..1) of a binned histogram, at the bin's representative value."""
    n = sum(hist.values())
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bin_value_ms(b)
    return bin_value_ms(max(hist))

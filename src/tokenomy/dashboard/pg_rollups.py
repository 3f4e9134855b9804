"""The dashboard's rollups on the PostgreSQL ledger: the same tables and numbers as rollups.py
(SQLite), created by migration 0002 and folded on read from `events`, never in the gateway's
insert transaction.

Watermark: PostgreSQL writers commit out of order, so "id > last seen" would miss events. Each
event carries its writing transaction (`events.txid`, a column default) and rollup_state keeps
the snapshot of the last fold (xmin, xmax, in-progress xids). A fold runs in one REPEATABLE READ
transaction: it adds exactly the events visible in its snapshot but not in the previous one
(txid >= xmax, or txid among the previous in-progress ones), then stores its own snapshot. It
is idempotent, never misses a late committer, and two folders cannot double count: the
state row is locked FOR UPDATE, and under REPEATABLE READ a folder whose snapshot predates
another's commit fails with a serialization error and retries with a fresh snapshot.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator

from tokenomy.dashboard.rollups import HIST_RESOLUTIONS, RESOLUTIONS, _res  # the same on both backends
from tokenomy.dashboard.store import (BIN_FLOOR_MS, BIN_MIN, BIN_THRESHOLDS, Histograms, LedgerUnavailable,
                                      TenantUsage, UsageBucket, find_feedback_columns)
from tokenomy.errors import TokenomyError

FOLD_LOCK = 0x746F6B6E726F6C  # pg_advisory_xact_lock key of the fold (arbitrary, fixed)
SUM_COLS = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
            "cost_pusd", "price_pusd", "energy_joules", "latency_ms_sum", "ttft_ms_sum", "ttft_n",
            "routed", "strong", "pq_sum", "pq_n", "client_errors")
DIMS = ("tenant", "model", "deployment")

# Routing fields of the event's `extra`, read like the SQLite rollups' json_extract: the key under
# "route" else at top level; JSON null counts as absent; strong is truthy unless false/0; a
# predicted quality counts if present and adds its number (booleans as 0/1, numeric strings parsed).
_STRONG = ("COALESCE(NULLIF(extra #> '{route,strong}', 'null'::jsonb), NULLIF(extra -> 'strong', 'null'::jsonb))")
_PQ = ("COALESCE(NULLIF(extra #> '{route,predicted_quality}', 'null'::jsonb), "
       "NULLIF(extra -> 'predicted_quality', 'null'::jsonb))")
_TRUTHY = ("CASE jsonb_typeof(s) WHEN 'boolean' THEN s = 'true'::jsonb WHEN 'number' THEN (s)::numeric <> 0 "
           "ELSE true END")
_NUM = r"^\s*[-+]?([0-9]{1,200}(\.[0-9]{0,200})?|\.[0-9]{1,200})([eE][-+]?[0-9]{1,3})?\s*$"
_PQ_NUMERIC = (f"CASE jsonb_typeof(pq) WHEN 'number' THEN (pq)::numeric WHEN 'boolean' THEN (pq = 'true'::jsonb)::int "
               f"WHEN 'string' THEN CASE WHEN (pq #>> '{{}}') ~ '{_NUM}' THEN (pq #>> '{{}}')::numeric END END")
# a number too large for float8 would make the cast (and so every fold) fail: such values add 0
_PQ_VALUE = "CASE WHEN abs(pqn) < 1e300 THEN pqn::float8 ELSE 0 END"

_SRC = f"""src AS MATERIALIZED (
  SELECT x.*, {_PQ_NUMERIC} AS pqn FROM (
    SELECT ts, tenant, key_id, model, deployment, status, input_tokens, cached_input_tokens, output_tokens,
           reasoning_tokens, cost_pusd, price_pusd, energy_joules, latency_ms, ttft_ms,
           {_STRONG} AS s, {_PQ} AS pq
    FROM events WHERE {{new}}) AS x
),
d AS MATERIALIZED (
  SELECT (floor(ts / 60) * 60)::bigint AS bucket, tenant, model, deployment, count(*) AS requests,
         count(*) FILTER (WHERE status = 'upstream_error') AS errors, sum(input_tokens) AS input_tokens,
         sum(cached_input_tokens) AS cached_input_tokens, sum(output_tokens) AS output_tokens,
         sum(reasoning_tokens) AS reasoning_tokens, sum(cost_pusd) AS cost_pusd, sum(price_pusd) AS price_pusd,
         sum(energy_joules) AS energy_joules, sum(latency_ms) AS latency_ms_sum,
         COALESCE(sum(ttft_ms), 0) AS ttft_ms_sum, count(ttft_ms) AS ttft_n, count(s) AS routed,
         count(*) FILTER (WHERE s IS NOT NULL AND {_TRUTHY}) AS strong,
         COALESCE(sum({_PQ_VALUE}), 0) AS pq_sum, count(pq) AS pq_n,
         count(*) FILTER (WHERE status NOT IN ('ok', 'upstream_error')) AS client_errors
  FROM src GROUP BY 1, 2, 3, 4
),
k AS MATERIALIZED (
  SELECT (floor(ts / 60) * 60)::bigint AS bucket, tenant, key_id, count(*) AS requests,
         sum(input_tokens) + sum(output_tokens) AS tokens, sum(price_pusd) AS price_pusd
  FROM src GROUP BY 1, 2, 3
),
h AS MATERIALIZED (
  SELECT (floor(ts / 3600) * 3600)::bigint AS bucket, tenant, deployment, v.metric,
         width_bucket(greatest(v.val, {BIN_FLOOR_MS}), %(thresholds)s::float8[]) - {1 - BIN_MIN} AS bin,
         count(*) AS n
  FROM src CROSS JOIN LATERAL (VALUES ('latency', latency_ms), ('ttft', ttft_ms)) AS v(metric, val)
  WHERE v.val IS NOT NULL GROUP BY 1, 2, 3, 4, 5
)"""


def _usage_upsert(name: str, res: str) -> str:
    step = RESOLUTIONS[res]
    cols = ", ".join(SUM_COLS)
    sums = ", ".join(f"sum({c})" for c in SUM_COLS)
    sets = ", ".join(f"{c} = t.{c} + excluded.{c}" for c in SUM_COLS)
    return (f"{name} AS (INSERT INTO rollup_{res} AS t (bucket, {', '.join(DIMS)}, {cols}) "
            f"SELECT (bucket / {step}) * {step}, {', '.join(DIMS)}, {sums} FROM d GROUP BY 1, 2, 3, 4 "
            f"ORDER BY 1, 2, 3, 4 ON CONFLICT (bucket, {', '.join(DIMS)}) DO UPDATE SET {sets})")


def _key_upsert(name: str, res: str) -> str:
    step = RESOLUTIONS[res]
    return (f"{name} AS (INSERT INTO rollup_key_{res} AS t (bucket, tenant, key_id, requests, tokens, price_pusd) "
            f"SELECT (bucket / {step}) * {step}, tenant, key_id, sum(requests), sum(tokens), sum(price_pusd) "
            "FROM k GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 ON CONFLICT (bucket, tenant, key_id) DO UPDATE SET "
            "requests = t.requests + excluded.requests, tokens = t.tokens + excluded.tokens, "
            "price_pusd = t.price_pusd + excluded.price_pusd)")


def _hist_upsert(name: str, res: str) -> str:
    step = RESOLUTIONS[res]
    return (f"{name} AS (INSERT INTO rollup_hist_{res} AS t (bucket, tenant, deployment, metric, bin, n) "
            f"SELECT (bucket / {step}) * {step}, tenant, deployment, metric, bin, sum(n) FROM h "
            "GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 "
            "ON CONFLICT (bucket, tenant, deployment, metric, bin) DO UPDATE SET n = t.n + excluded.n)")


def fold_sql(first: bool) -> str:
    """One statement: aggregate the new events and add them to every rollup table; returns
    the number of events folded. `first`: no previous snapshot, every visible row is new."""
    new = "true" if first else "txid >= %(pxmin)s AND (txid >= %(pxmax)s OR txid = ANY(%(pxip)s::bigint[]))"
    parts = [_SRC.replace("{new}", new)]
    parts += [_usage_upsert(f"u_{res}", res) for res in RESOLUTIONS]
    parts += [_key_upsert("k_minute", "minute"), _key_upsert("k_day", "day")]
    parts += [_hist_upsert(f"h_{res}", res) for res in HIST_RESOLUTIONS]
    return "WITH " + ",\n".join(parts) + "\nSELECT COALESCE(sum(requests), 0) FROM d"


_SNAPSHOT_SQL = ("SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint, "
                 "ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x ORDER BY 1) FROM pg_current_snapshot() AS s")


def _int(v) -> int:
    """NUMERIC sums arrive as Decimal (exact): as int."""
    return 0 if v is None else int(v)


def _float(v) -> float:
    return 0.0 if v is None else float(v)


class PgRollups:
    """Rollups of one PostgreSQL ledger (URL as TOKENOMY_LEDGER_URL); thread-safe."""

    def __init__(self, url: str, *, min_interval_s: float = 1.0, pool_size: int = 2, migrate: bool = True):
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import create_engine_for, migrate as run_migrations, redact

        self.url = url
        self.min_interval_s = min_interval_s
        try:
            self.engine = create_engine_for(url, pool_size=pool_size)
            if migrate:
                run_migrations(self.engine)
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: "
                                f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}") from None
        self._lock = threading.Lock()  # one fold at a time in this process
        self._last_fold = -math.inf

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _available(self) -> Iterator[None]:
        """Connection failures as LedgerUnavailable (a 503 for the API), with the URL redacted."""
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import redact

        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise LedgerUnavailable(f"the PostgreSQL ledger at {redact(self.url)} is unavailable: "
                                    f"{first[0] if first else type(exc).__name__}") from None

    # folding -----------------------------------------------------------------------------
    def maybe_fold(self, wait_s: float = 2.0) -> int:
        """Fold unless a fold ran less than min_interval_s ago. If a fold is running (here or in
        another process), return -1 after wait_s at most: readers get what is folded so far."""
        if time.monotonic() - self._last_fold < self.min_interval_s:
            return 0
        if not self._lock.acquire(timeout=wait_s):
            return -1
        try:
            with self._available():
                n = self._fold_once()
            return -1 if n is None else n
        finally:
            self._lock.release()

    def fold(self, timeout_s: float = 600.0) -> int:
        """Fold every committed event not folded yet; returns the number folded."""
        deadline = time.monotonic() + timeout_s
        with self._lock, self._available():
            while True:
                n = self._fold_once()
                if n is not None:
                    return n
                if time.monotonic() > deadline:
                    raise TimeoutError("another process has been folding the dashboard rollups for too long")
                time.sleep(0.05)

    def _fold_once(self) -> int | None:
        """One fold transaction; None when another process holds the fold lock."""
        import psycopg
        import sqlalchemy as sa

        for attempt in range(5):
            try:
                n = self._fold_tx()
                if n is not None:
                    self._last_fold = time.monotonic()
                return n
            except sa.exc.DBAPIError as exc:  # a concurrent fold committed after our snapshot was taken
                if not isinstance(exc.orig, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)) \
                        or attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _fold_tx(self) -> int | None:
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if not conn.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({FOLD_LOCK})").scalar():
                    return None
                pxmin, pxmax, pxip = conn.exec_driver_sql(
                    "SELECT snap_xmin, snap_xmax, snap_xip FROM rollup_state WHERE name = 'events' FOR UPDATE").one()
                xmin, xmax, xip = conn.exec_driver_sql(_SNAPSHOT_SQL).one()
                params = {"thresholds": list(BIN_THRESHOLDS), "pxmin": pxmin, "pxmax": pxmax, "pxip": list(pxip or [])}
                n = int(conn.exec_driver_sql(fold_sql(pxmax is None), params).scalar())
                conn.exec_driver_sql(
                    "UPDATE rollup_state SET snap_xmin = %(xmin)s, snap_xmax = %(xmax)s, snap_xip = %(xip)s, "
                    "folded = folded + %(n)s, updated = %(now)s WHERE name = 'events'",
                    {"xmin": xmin, "xmax": xmax, "xip": list(xip), "n": n, "now": time.time()})
                return n

    def behind(self) -> int:
        """Committed events not folded yet."""
        with self._available(), self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                pxmin, pxmax, pxip = conn.exec_driver_sql(
                    "SELECT snap_xmin, snap_xmax, snap_xip FROM rollup_state WHERE name = 'events'").one()
                if pxmax is None:
                    return int(conn.exec_driver_sql("SELECT count(*) FROM events").scalar())
                return int(conn.exec_driver_sql(
                    "SELECT count(*) FROM events WHERE txid >= %(pxmin)s AND "
                    "(txid >= %(pxmax)s OR txid = ANY(%(pxip)s::bigint[]))",
                    {"pxmin": pxmin, "pxmax": pxmax, "pxip": list(pxip or [])}).scalar())

    # reads (store.RollupStore) -------------------------------------------------------------
    def query(self, sql: str, params: dict | tuple | list | None = None) -> list[tuple]:
        with self._available(), self.engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, params or {}).fetchall()]

    def first_bucket(self) -> int | None:
        v = self.query("SELECT min(bucket) FROM rollup_day")[0][0]
        return None if v is None else int(v)

    def usage(self, res: str, since: int, until: int, tenant: str | None) -> list[UsageBucket]:
        where, params = _where(since, until, tenant)
        sql = ("SELECT bucket, model, deployment, sum(requests), sum(errors), sum(input_tokens), "
               "sum(cached_input_tokens), sum(output_tokens), sum(reasoning_tokens), sum(cost_pusd), sum(price_pusd), "
               "sum(energy_joules), sum(latency_ms_sum), sum(routed), sum(strong), sum(pq_sum), sum(pq_n), sum(client_errors) "
               f"FROM rollup_{_res(res)}{where} GROUP BY bucket, model, deployment")
        return [UsageBucket(int(t[0]), t[1], t[2], *(_int(v) for v in t[3:11]), _float(t[11]), _float(t[12]),
                            _int(t[13]), _int(t[14]), _float(t[15]), _int(t[16]), _int(t[17]))
                for t in self.query(sql, params)]

    def histograms(self, res: str, since: int, until: int, tenant: str | None) -> Histograms:
        if res not in HIST_RESOLUTIONS:
            raise ValueError(f"no histograms at resolution '{res}'")
        where, params = _where(since, until, tenant)
        out: Histograms = {}
        for dep, metric, b, n in self.query(f"SELECT deployment, metric, bin, sum(n) FROM rollup_hist_{res}{where} "
                                            "GROUP BY deployment, metric, bin", params):
            out.setdefault(dep, {}).setdefault(metric, {})[int(b)] = int(n)
        return out

    def tenant_usage(self, res: str, since: int, until: int, tenant: str | None) -> dict[str, TenantUsage]:
        where, params = _where(since, until, tenant)
        rows = self.query("SELECT tenant, sum(requests), sum(input_tokens) + sum(output_tokens), sum(cost_pusd), "
                          f"sum(price_pusd), sum(energy_joules) FROM rollup_{_res(res)}{where} GROUP BY tenant", params)
        return {t[0]: TenantUsage(_int(t[1]), _int(t[2]), _int(t[3]), _int(t[4]), _float(t[5])) for t in rows}

    def spend_pusd(self, kind: str, subject: str, since: int | None) -> int:
        table, col = ("rollup_key_day", "key_id") if kind == "key" else ("rollup_day", "tenant")
        sql = f"SELECT sum(price_pusd) FROM {table} WHERE {col} = %(subject)s"
        params: dict = {"subject": subject}
        if since is not None:
            sql += " AND bucket >= %(since)s"
            params["since"] = since
        return _int(self.query(sql, params)[0][0])

    def key_peaks(self, since: int) -> dict[str, tuple[int, int]]:
        rows = self.query("SELECT key_id, max(requests), max(tokens) FROM rollup_key_minute WHERE bucket >= %(since)s "
                          "GROUP BY key_id", {"since": since})
        return {k: (int(rpm), int(tpm)) for k, rpm, tpm in rows}

    def feedback(self, since: int, until: int, tenant: str | None) -> list[tuple[str, float | None, float]]:
        tables: dict[str, set[str]] = {}
        for table, col in self.query("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE table_schema = current_schema() AND table_name LIKE %(pat)s "
                                     "AND table_name NOT LIKE %(rollup)s", {"pat": "%feedback%", "rollup": "rollup\\_%"}):
            tables.setdefault(table, set()).add(col)
        found = find_feedback_columns(tables)
        if found is None:
            return []
        table, id_col, score_col = found
        pq = _PQ.replace("extra", "e.extra")
        sql = (f"SELECT e.model, CASE jsonb_typeof({pq}) WHEN 'number' THEN ({pq})::float8 END, f.\"{score_col}\" "
               f"FROM \"{table}\" f JOIN events e ON e.id = f.\"{id_col}\" WHERE e.ts >= %(since)s AND e.ts < %(until)s")
        params: dict = {"since": since, "until": until}
        if tenant is not None:
            sql += " AND e.tenant = %(tenant)s"
            params["tenant"] = tenant
        return [(m, None if p is None else float(p), float(s)) for m, p, s in self.query(sql + " LIMIT 200000", params)
                if s is not None]


def _where(since: int, until: int, tenant: str | None) -> tuple[str, dict]:
    sql = " WHERE bucket >= %(since)s AND bucket < %(until)s"
    params: dict = {"since": int(since), "until": int(until)}
    if tenant is not None:
        sql += " AND tenant = %(tenant)s"
        params["tenant"] = tenant
    return sql, params


__all__ = ["PgRollups", "fold_sql"]

"""A Ledger on PostgreSQL (SQLAlchemy 2 Core + psycopg 3, sync: the group-commit writer
thread batches, so one transaction carries many events).

- Schema by Alembic (migrations/), upgraded at open under an advisory lock, so several
  replicas starting together migrate once.
- `events` is partitioned by month on ts; partitions are created on demand (advisory lock,
  so two replicas never race on the DDL).
- Write path (append), one transaction per batch, committed before it returns, on the raw
  psycopg connection (no SQLAlchemy per batch): the batch's distinct ids go into
  `event_ids(id PRIMARY KEY, ts)` (exactly-once across replicas) by COPY; if one was seen
  before, the unique violation aborts it and the transaction is redone with INSERT ... ON
  CONFLICT DO NOTHING RETURNING (the new ids). The new events are COPYed (binary) straight
  into their month's partition; the hourly rollup `usage_hourly` gets one upsert row per
  distinct (hour, tenant, model, deployment), pre-aggregated in Python. A handful of round
  trips per batch, whatever its size.
- Dedup retention: ids are pruned once their event is older than DEDUP_RETENTION_S (7 days);
  older events are looked up in `events` as well, so idempotency has no age limit (below).
- Money: BIGINT pico-USD per event, NUMERIC sums; exact like the SQLite ledger.

URL: postgresql://user@host:port/db[?schema=name] (a `schema` query parameter selects, and
creates, a schema: tests use one per session).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenomy.errors import TokenomyError
from tokenomy.metering import changes
from tokenomy.metering.changes import split_user_subject
from tokenomy.metering.errors import Conflict
from tokenomy.metering.money import from_pusd, to_pusd
from tokenomy.metering.store import AuditRecord, ChangeRecord, UsageRow
from tokenomy.metering.types import Budget, KeyRecord, TenantRecord, UsageEvent, UserCap

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)
_MIGRATE_LOCK = 0x746F6B6E6D6967  # pg_advisory_lock keys (arbitrary, fixed)
_PARTITION_LOCK = 0x746F6B6E707274
_PRUNE_LOCK = 0x746F6B6E707275
# Idempotency window: event_ids keeps an id while its event's ts is within DEDUP_RETENTION_S of
# now (pruned every PRUNE_INTERVAL_S by one replica). An event older than the window minus
# DEDUP_SKEW_S (clock skew between replicas) is also looked up in `events`, so a replay of an
# event whose id was pruned is still recognised: exactly-once holds for any age; the window
# only bounds the dedup table and keeps that slower look-up off the common path.
DEDUP_RETENTION_S = 7 * 86400.0
DEDUP_SKEW_S = 3600.0
PRUNE_INTERVAL_S = 600.0
PRUNE_CHUNK = 20_000
HOUR_S = 3600.0
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_EVENT_COLS = ("id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, output_tokens, "
               "reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms, latency_ms, status, estimated, "
               "http_status, extra, cache_write_tokens")
_KEY_COLS = ("key_id, tenant, name, secret_hash, created, revoked_at, budget_pusd, budget_period, "
             "soft_budget_pusd, rpm, tpm")
_TENANT_COLS = "name, created, budget_pusd, budget_period, soft_budget_pusd"
_SUMS = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
         "cost_pusd", "price_pusd", "energy_joules")

# Dedup, fast path: COPY the batch's distinct ids into event_ids; a unique violation (some id
# recorded before, or being recorded by another replica right now) aborts the transaction,
# which is then redone through the slow path: the ids sorted (a stable lock order across
# concurrent writers, so no deadlocks) with ON CONFLICT DO NOTHING RETURNING the new ones.
_IDS_COPY_SQL = "COPY event_ids (id, ts) FROM STDIN (FORMAT BINARY)"
_DEDUP_SQL = ("INSERT INTO event_ids (id, ts) SELECT * FROM unnest(%b::text[], %b::float8[]) AS t(id, ts) "
              "ORDER BY id ON CONFLICT DO NOTHING RETURNING id")
# Late events (ts before the dedup window): their id may have been pruned from event_ids, so
# the ones event_ids calls new are looked up in events too (by the (key_id, ts) index).
# `ts = ANY(array)` lets the planner prune partitions; the (key_id, ts) index finds the rows.
_LATE_SQL = ("SELECT id, key_id, ts FROM events "
             "WHERE ts = ANY(%b::float8[]) AND key_id = ANY(%b::text[]) AND id = ANY(%b::text[])")
# The batch's new events pre-aggregated per rollup row (in Python): one upsert row per
# (hour, tenant, model, deployment), in sorted order (lock order again).
_ROLLUP_SQL = """
INSERT INTO usage_hourly AS u (hour, tenant, model, deployment, requests, errors, input_tokens, cached_input_tokens,
                               output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules)
SELECT * FROM unnest(%b::float8[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::numeric[],
                     %b::numeric[], %b::numeric[], %b::numeric[], %b::numeric[], %b::numeric[], %b::float8[])
ORDER BY 1, 2, 3, 4
ON CONFLICT (hour, tenant, model, deployment) DO UPDATE SET
  requests = u.requests + excluded.requests, errors = u.errors + excluded.errors,
  input_tokens = u.input_tokens + excluded.input_tokens,
  cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
  output_tokens = u.output_tokens + excluded.output_tokens,
  reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
  cost_pusd = u.cost_pusd + excluded.cost_pusd, price_pusd = u.price_pusd + excluded.price_pusd,
  energy_joules = u.energy_joules + excluded.energy_joules
"""
# COPY ... (FORMAT BINARY) of the new events: the dumper for each column, in _EVENT_COLS order,
# then recorded_at. `extra` is jsonb on the server; its binary form is a version byte and the
# JSON text, which we build (_jsonb) and send through the bytea dumper (bytes as they are).
_COPY_TYPES = ("text", "float8", "text", "text", "text", "text", "int8", "int8", "int8", "int8", "int8", "int8",
               "float8", "float8", "float8", "text", "bool", "int4", "bytea", "int8", "float8")
_COPY_SQL = "COPY {table} (" + _EVENT_COLS + ", recorded_at) FROM STDIN (FORMAT BINARY)"
_JSONB_V1 = b"\x01"


def _jsonb(obj) -> bytes:
    """Binary jsonb of a JSON-serialisable value (anything else as str)."""
    import orjson

    try:
        return _JSONB_V1 + orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an int beyond 64 bits: the standard library takes it
        return _JSONB_V1 + json.dumps(obj, separators=(",", ":"), default=str).encode()


def split_url(url: str) -> tuple[str, str | None]:
    """(SQLAlchemy URL with the psycopg driver, schema or None) from a postgres URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        scheme = "postgresql+psycopg"
    else:
        raise TokenomyError(f"ledger URL must start with postgresql:// (got '{parts.scheme}://')")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise TokenomyError(f"invalid schema name '{schema}' in the ledger URL: use lowercase letters, digits, _")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit((scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def month_bounds(ts: float) -> tuple[str, float, float]:
    """(partition suffix 'YYYYMM', start, end) of the UTC month containing ts."""
    day = datetime.fromtimestamp(ts, timezone.utc)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y%m"), start.timestamp(), nxt.timestamp()


def hour_split(since: float | None, until: float | None) -> tuple[tuple[float | None, float | None] | None, list]:
    """Split [since, until) into whole hours (read from the rollup) and the edges (read from
    events): (rollup range or None, [raw ranges])."""
    h0 = None if since is None else math.ceil(since / HOUR_S) * HOUR_S
    h1 = None if until is None else math.floor(until / HOUR_S) * HOUR_S
    if h0 is not None and h1 is not None and h0 >= h1:
        return None, [(since, until)]
    raw = []
    if since is not None and since < h0:
        raw.append((since, h0))
    if until is not None and h1 < until:
        raw.append((h1, until))
    return (h0, h1), raw


def _range_sql(col: str, lo: float | None, hi: float | None, params: dict, tag: str) -> list[str]:
    out = []
    if lo is not None:
        out.append(f"{col} >= %({tag}_lo)s")
        params[f"{tag}_lo"] = lo
    if hi is not None:
        out.append(f"{col} < %({tag}_hi)s")
        params[f"{tag}_hi"] = hi
    return out


def _event(r) -> UsageEvent:
    return UsageEvent(
        id=r[0], ts=r[1], tenant=r[2], key_id=r[3], model=r[4], deployment=r[5], input_tokens=int(r[6]),
        cached_input_tokens=int(r[7]), output_tokens=int(r[8]), reasoning_tokens=int(r[9]),
        cost_usd=from_pusd(r[10]), price_usd=from_pusd(r[11]), energy_joules=r[12], ttft_ms=r[13],
        latency_ms=r[14], status=r[15], estimated=bool(r[16]), http_status=r[17],
        extra=None if r[18] is None else json.loads(r[18]), cache_write_tokens=int(r[19]))


def _key(r) -> KeyRecord:
    return KeyRecord(key_id=r[0], tenant=r[1], name=r[2], secret_hash=r[3], created=r[4], revoked_at=r[5],
                     budget=Budget(r[6], r[7], r[8]), rpm=r[9], tpm=r[10])


def _tenant(r) -> TenantRecord:
    return TenantRecord(name=r[0], created=r[1], budget=Budget(r[2], r[3], r[4]))


def _rows(events: Sequence[UsageEvent], now: float) -> tuple[list[tuple], list[bool]]:
    """COPY rows (converted and validated before any transaction) of the first occurrence of
    each id in the batch, and for each event whether it is that first occurrence."""
    rows, first, seen = [], [], set()
    for e in events:
        if e.id in seen:
            first.append(False)
            continue
        seen.add(e.id)
        first.append(True)
        rows.append((
            e.id, float(e.ts), e.tenant, e.key_id, e.model, e.deployment, int(e.input_tokens),
            int(e.cached_input_tokens), int(e.output_tokens), int(e.reasoning_tokens), to_pusd(e.cost_usd),
            to_pusd(e.price_usd), float(e.energy_joules), None if e.ttft_ms is None else float(e.ttft_ms),
            float(e.latency_ms), e.status, bool(e.estimated), int(e.http_status),
            None if e.extra is None else _jsonb(e.extra), int(e.cache_write_tokens), now))
    return rows, first


def rollup_rows(rows: Sequence[tuple]) -> list[tuple]:
    """Pure: the hourly rollup increments of COPY rows, one per (hour, tenant, model, deployment),
    sorted: (hour, tenant, model, deployment, requests, errors, input, cached, output,
    reasoning, cost_pusd, price_pusd, energy_joules)."""
    acc: dict[tuple, list] = {}
    floor = math.floor
    for r in rows:
        k = (floor(r[1] / HOUR_S) * HOUR_S, r[2], r[4], r[5])
        a = acc.get(k)
        if a is None:
            acc[k] = a = [0, 0, 0, 0, 0, 0, 0, 0, 0.0]
        a[0] += 1
        if r[15] != "ok":
            a[1] += 1
        a[2] += r[6]
        a[3] += r[7]
        a[4] += r[8]
        a[5] += r[9]
        a[6] += r[10]
        a[7] += r[11]
        a[8] += r[12]
    return [(*k, *v) for k, v in sorted(acc.items())]


def create_engine_for(url: str, *, pool_size: int = 4, connect_timeout_s: int = 3):
    """An Engine on the URL's schema (created if missing); the schema is on every
    connection's search_path."""
    import sqlalchemy as sa

    sa_url, schema = split_url(url)
    connect_args = {"connect_timeout": connect_timeout_s, "keepalives": 1, "keepalives_idle": 10,
                    "keepalives_interval": 5, "keepalives_count": 3}
    if schema is not None:
        boot = sa.create_engine(sa_url, poolclass=sa.pool.NullPool, connect_args=connect_args)
        try:
            with boot.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except sa.exc.IntegrityError:  # another process created it at the same moment
            pass
        finally:
            boot.dispose()
        connect_args["options"] = f"-csearch_path={schema}"
    return sa.create_engine(sa_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                            pool_use_lifo=True, pool_timeout=10, connect_args=connect_args)


def migrate(engine) -> str:
    """Upgrade to the newest Alembic revision (serialised across processes); returns it."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATE_LOCK})")
        conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATE_LOCK})")
            conn.commit()
    return head


class PostgresLedger:
    def __init__(self, url: str, *, pool_size: int = 4, dedup_retention_s: float = DEDUP_RETENTION_S,
                 prune_interval_s: float | None = PRUNE_INTERVAL_S):
        """dedup_retention_s: how long (event time) event_ids keeps an id; prune_interval_s: how
        often appends start a background prune (None: never; call prune_event_ids yourself)."""
        import sqlalchemy as sa

        if not dedup_retention_s > DEDUP_SKEW_S:
            raise TokenomyError(f"dedup retention must be longer than {DEDUP_SKEW_S:.0f} s, not {dedup_retention_s}")
        self.url = url
        self._sa = sa
        try:
            self.engine = create_engine_for(url, pool_size=pool_size)
            self.schema_version = migrate(self.engine)
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: {_first_line(exc)}") from None
        self.dedup_retention_s = float(dedup_retention_s)
        self.prune_interval_s = prune_interval_s
        # the first append starts a prune (in the background), then every prune_interval_s
        self._next_prune = math.inf if prune_interval_s is None else 0.0
        self._pruner: threading.Thread | None = None
        self.pruned = 0  # statistics: dedup ids pruned by this process
        self._months: dict[tuple[float, float], str] = {}  # [start, end) -> partition known to exist
        self._plock = threading.Lock()

    @classmethod
    def open(cls, url: str, **kwargs) -> "PostgresLedger":
        return cls(url, **kwargs)

    def close(self) -> None:
        pruner = self._pruner
        if pruner is not None:
            pruner.join(timeout=10)
        self.engine.dispose()

    # helpers -----------------------------------------------------------------------------
    def _query(self, sql: str, params: dict | Sequence | None = None) -> list:
        with self.engine.connect() as conn:
            return list(conn.exec_driver_sql(sql, params or {}).fetchall())

    def _write(self, sql: str, params: dict | Sequence | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.exec_driver_sql(sql, params or {}).rowcount

    def _write_all(self, statements: Sequence[tuple[str, Sequence]]) -> bool:
        """Several statements (`?` placeholders) in one transaction, committed only if the first one
        changed a row."""
        statements = [_pg(s) for s in statements]
        with self.engine.connect() as conn:
            with conn.begin() as tx:
                if conn.exec_driver_sql(*statements[0]).rowcount < 1:
                    tx.rollback()
                    return False
                for sql, params in statements[1:]:
                    conn.exec_driver_sql(sql, params)
            return True

    def _month_of(self, ts: float) -> str | None:
        for (lo, hi), name in self._months.items():
            if lo <= ts < hi:
                return name
        return None

    def ensure_partitions(self, timestamps) -> None:
        """Create the monthly partitions these timestamps fall into (once per process)."""
        wanted = {}
        lo_ts, hi_ts = min(timestamps, default=0.0), max(timestamps, default=0.0)
        if any(lo <= lo_ts and hi_ts < hi for lo, hi in self._months):
            return  # the common case: the whole batch inside one known month
        for ts in timestamps:
            if self._month_of(ts) is not None:
                continue
            suffix, lo, hi = month_bounds(ts)
            wanted[suffix] = (lo, hi)
        if not wanted:
            return
        with self._plock, self.engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PARTITION_LOCK})")
            for suffix, (lo, hi) in sorted(wanted.items()):
                name = f"events_p{suffix}"
                exists = conn.exec_driver_sql("SELECT to_regclass(%s)", (name,)).scalar()
                if exists is None:
                    conn.exec_driver_sql(
                        f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({lo!r}) TO ({hi!r})")
        for suffix, bounds in wanted.items():
            self._months[bounds] = f"events_p{suffix}"

    def partitions(self) -> list[str]:
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events') ORDER BY 1")
        return [r[0] for r in rows]

    # events ------------------------------------------------------------------------------
    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]:
        """Record events exactly once (by id), durably: committed before this returns. For each
        event, True when it is new (the first occurrence of an id not recorded before)."""
        import psycopg

        now = time.time()
        rows, first = _rows(events, now)  # convert first: a bad event fails before the transaction
        if rows:
            self.ensure_partitions([r[1] for r in rows])
        optimistic = True  # no id seen before: the common case (re-sends are rare)
        for attempt in range(6):
            try:
                new = self._append_once(rows, audits, now, optimistic)
                break
            except psycopg.errors.UniqueViolation:
                if not optimistic:
                    raise
                optimistic = False
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 5:  # concurrent writers: retry a deadlock victim
                    raise
                time.sleep(0.01 * (attempt + 1))
        if now >= self._next_prune:
            self._start_prune(now)
        return [f and e.id in new for f, e in zip(first, events)]

    def _append_once(self, rows: list[tuple], audits: Sequence[AuditRecord], now: float, optimistic: bool) -> set[str]:
        """One transaction on the raw psycopg connection: dedup ids, COPY the new events into
        their month's partition, one rollup upsert per distinct rollup key, audits; commit."""
        import psycopg

        raw = self.engine.raw_connection()
        try:
            new: set[str] = set()
            with raw.driver_connection.cursor() as cur:
                if rows:
                    new = self._dedup(cur, rows, now, optimistic)
                    fresh = rows if len(new) == len(rows) else [r for r in rows if r[0] in new]
                    if fresh:
                        self._copy(cur, fresh)
                        roll = rollup_rows(fresh)
                        cur.execute(_ROLLUP_SQL, [list(col) for col in zip(*roll)])
                for a in audits:
                    cur.execute(
                        "INSERT INTO audit (ts, kind, scope, subject, period_key, message) VALUES (%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT DO NOTHING", (a.ts, a.kind, a.scope, a.subject, a.period_key, a.message))
            raw.commit()
            return new
        except BaseException as exc:
            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
                raw.invalidate()  # a broken connection never goes back to the pool
            else:
                try:
                    raw.rollback()
                except psycopg.Error:
                    raw.invalidate()
            raise
        finally:
            raw.close()

    def _dedup(self, cur, rows: list[tuple], now: float, optimistic: bool) -> set[str]:
        """The ids of rows not recorded before, each now in event_ids (this transaction)."""
        if optimistic:  # raises UniqueViolation if any id is known: the caller redoes it slowly
            with cur.copy(_IDS_COPY_SQL) as copy:
                copy.set_types(("text", "float8"))
                write = copy.write_row
                for r in rows:
                    write((r[0], r[1]))
            new = {r[0] for r in rows}
        else:
            cur.execute(_DEDUP_SQL, ([r[0] for r in rows], [r[1] for r in rows]))
            new = {r[0] for r in cur.fetchall()}
        late_ts = now - self.dedup_retention_s + DEDUP_SKEW_S
        late = [r for r in rows if r[1] < late_ts and r[0] in new]
        if late:  # their ids may have been pruned from event_ids: the events table decides
            wanted = {(r[0], r[3], r[1]) for r in late}
            cur.execute(_LATE_SQL, ([r[1] for r in late], list({r[3] for r in late}), [r[0] for r in late]))
            new.difference_update(id_ for id_, key_id, ts in cur.fetchall() if (id_, key_id, ts) in wanted)
        return new

    def _copy(self, cur, rows: list[tuple]) -> None:
        """COPY (binary) straight into the month's partition when the rows share one (no tuple
        routing), else into `events`."""
        stamps = [r[1] for r in rows]
        table = self._month_of(min(stamps))
        if table is not None and self._month_of(max(stamps)) != table:  # months are intervals
            table = None
        with cur.copy(_COPY_SQL.format(table=table or "events")) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for r in rows:
                write(r)

    # dedup retention -----------------------------------------------------------------------
    def prune_event_ids(self, now: float | None = None, *, chunk: int = PRUNE_CHUNK) -> int:
        """Delete dedup ids of events older than the retention window (event time), in chunks;
        returns how many. One replica at a time (an advisory lock; the others return 0).
        Idempotency outlives the window: a late event is checked against `events` (append)."""
        cutoff = (time.time() if now is None else now) - self.dedup_retention_s
        total = 0
        while True:
            with self.engine.begin() as conn:
                if not conn.exec_driver_sql("SELECT pg_try_advisory_xact_lock(%s)", (_PRUNE_LOCK,)).scalar():
                    return total
                n = conn.exec_driver_sql(
                    "DELETE FROM event_ids WHERE ctid = ANY(ARRAY("
                    "SELECT ctid FROM event_ids WHERE ts < %s LIMIT %s))", (cutoff, chunk)).rowcount
            total += n
            if n < chunk:
                return total

    def _start_prune(self, now: float) -> None:
        """Prune in a background thread, at most every prune_interval_s (the writer never waits)."""
        with self._plock:
            if now < self._next_prune or (self._pruner is not None and self._pruner.is_alive()):
                return
            self._next_prune = now + (self.prune_interval_s or math.inf)

            def run() -> None:
                try:
                    self.pruned += self.prune_event_ids(now)
                except Exception as exc:  # pragma: no cover - retried at the next interval
                    log.warning("pruning the ledger's dedup ids failed: %s", _first_line(exc))

            self._pruner = threading.Thread(target=run, name="tokenomy-pg-prune", daemon=True)
            self._pruner.start()

    def _sums(self, where_col: str | None, subject: str | None, since, until, group: bool) -> dict:
        """{(model, deployment) or None: [9 sums]} from the rollup (whole hours) plus events
        (edges); by key (not in the rollup's grain) from events alone, via (key_id, ts)."""
        whole, edges = hour_split(since, until) if where_col != "key_id" else (None, [(since, until)])
        parts, params = [], {}
        keys = "model, deployment" if group else "NULL, NULL"
        group_by = " GROUP BY model, deployment" if group else ""
        sums = ("sum(requests), sum(errors), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), "
                "sum(reasoning_tokens), sum(cost_pusd), sum(price_pusd), sum(energy_joules)")
        raw_sums = ("count(*), count(*) FILTER (WHERE status <> 'ok'), sum(input_tokens), sum(cached_input_tokens), "
                    "sum(output_tokens), sum(reasoning_tokens), sum(cost_pusd), sum(price_pusd), sum(energy_joules)")
        if where_col is not None:
            params["subject"] = subject
        if whole is not None:
            clauses = _range_sql("hour", whole[0], whole[1], params, "h")
            if where_col is not None:
                clauses.append(f"{where_col} = %(subject)s")
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            parts.append(f"SELECT {keys}, {sums} FROM usage_hourly{where}{group_by}")
        for n, (lo, hi) in enumerate(edges):
            clauses = _range_sql("ts", lo, hi, params, f"e{n}")
            if where_col is not None:
                clauses.append(f"{where_col} = %(subject)s")
            where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
            parts.append(f"SELECT {keys}, {raw_sums} FROM events{where}{group_by}")
        out: dict = {}
        for row in self._query(" UNION ALL ".join(parts), params):
            if row[2] is None or row[2] == 0:  # an empty aggregate
                continue
            k = (row[0], row[1]) if group else None
            acc = out.setdefault(k, [0] * 8 + [0.0])
            for i, v in enumerate(row[2:]):
                acc[i] += float(v or 0) if i == 8 else int(v or 0)
        return out

    def spend_pusd(self, *, kind: str, subject: str, since: float | None, until: float | None) -> int:
        if kind == "user":  # one end user of a tenant (extra->>'user'; by the (tenant, ts) index)
            tenant, user = split_user_subject(subject)
            params: dict = {"tenant": tenant, "user": user}
            clauses = ["tenant = %(tenant)s", "extra->>'user' = %(user)s", *_range_sql("ts", since, until, params, "u")]
            return int(self._query(f"SELECT COALESCE(sum(price_pusd), 0) FROM events WHERE {' AND '.join(clauses)}",
                                   params)[0][0])
        sums = self._sums("key_id" if kind == "key" else "tenant", subject, since, until, group=False)
        return sums[None][7] if None in sums else 0

    def usage_rows(self, tenant: str | None, since: float | None, until: float | None) -> list[UsageRow]:
        sums = self._sums(None if tenant is None else "tenant", tenant, since, until, group=True)
        return [UsageRow(model, deployment, *values) for (model, deployment), values in sorted(sums.items())]

    def events(self, tenant: str | None, since: float | None, until: float | None, limit: int) -> list[UsageEvent]:
        params: dict = {"limit": limit}
        clauses = _range_sql("ts", since, until, params, "t")
        if tenant is not None:
            clauses.append("tenant = %(tenant)s")
            params["tenant"] = tenant
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        cols = _EVENT_COLS.replace("extra", "extra::text")
        rows = self._query(f"SELECT {cols} FROM events{where} ORDER BY ts DESC, id LIMIT %(limit)s", params)
        return [_event(r) for r in rows]

    def count_event(self, event_id: str) -> int:
        return self._query("SELECT count(*) FROM events WHERE id = %s", (event_id,))[0][0]

    def audits(self, kind: str | None = None) -> list[AuditRecord]:
        sql = "SELECT kind, scope, subject, period_key, ts, message FROM audit"
        rows = self._query(sql + " WHERE kind = %s ORDER BY id", (kind,)) if kind else self._query(sql + " ORDER BY id")
        return [AuditRecord(*r) for r in rows]

    # tenants and keys --------------------------------------------------------------------
    def create_tenant(self, tenant: TenantRecord, *, exist_ok: bool) -> bool:
        b = tenant.budget
        created = self._write(
            f"INSERT INTO tenants ({_TENANT_COLS}) VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (tenant.name, tenant.created, b.budget_pusd, b.period, b.soft_budget_pusd)) == 1
        if not created and not exist_ok:
            raise Conflict(f"tenant '{tenant.name}' already exists")
        return created

    def get_tenant(self, name: str) -> TenantRecord | None:
        rows = self._query(f"SELECT {_TENANT_COLS} FROM tenants WHERE name = %s", (name,))
        return _tenant(rows[0]) if rows else None

    def list_tenants(self) -> list[TenantRecord]:
        return [_tenant(r) for r in self._query(f"SELECT {_TENANT_COLS} FROM tenants ORDER BY name")]

    def insert_key(self, key: KeyRecord) -> None:
        # ON CONFLICT: replicas importing the same configured key at start-up must not fail
        b = key.budget
        self._write(
            f"INSERT INTO keys ({_KEY_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (key_id) DO NOTHING",
            (key.key_id, key.tenant, key.name, key.secret_hash, key.created, key.revoked_at, b.budget_pusd, b.period,
             b.soft_budget_pusd, key.rpm, key.tpm))

    def get_key(self, key_id: str) -> KeyRecord | None:
        rows = self._query(f"SELECT {_KEY_COLS} FROM keys WHERE key_id = %s", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self, tenant: str | None) -> list[KeyRecord]:
        if tenant is None:
            rows = self._query(f"SELECT {_KEY_COLS} FROM keys ORDER BY created, key_id")
        else:
            rows = self._query(f"SELECT {_KEY_COLS} FROM keys WHERE tenant = %s ORDER BY created, key_id", (tenant,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, ts: float) -> bool:
        self._write("UPDATE keys SET revoked_at = %s WHERE key_id = %s AND revoked_at IS NULL", (ts, key_id))
        return bool(self._query("SELECT 1 FROM keys WHERE key_id = %s", (key_id,)))

    def update_key(self, key: KeyRecord, change: ChangeRecord) -> bool:
        return self._write_all(changes.key_update(key, change))

    def update_tenant(self, tenant: TenantRecord, change: ChangeRecord) -> bool:
        return self._write_all(changes.tenant_update(tenant, change))

    def record_change(self, change: ChangeRecord) -> None:
        self._write_all([changes.change_insert(change)])

    def changes(self, limit: int, target: str | None = None) -> list[ChangeRecord]:
        return [changes.change_of(r) for r in self._query(*_pg(changes.changes_query(limit, target)))]

    def user_caps(self, tenant: str) -> list[UserCap]:
        return [changes.user_cap_of(r) for r in self._query(*_pg((changes.USER_CAPS_QUERY, (tenant,))))]

    def set_user_cap(self, tenant: str, user: str, cap: UserCap | None, change: ChangeRecord) -> bool:
        return self._write_all(changes.user_cap_change(tenant, user, cap, change))

    # admin -------------------------------------------------------------------------------
    def get_admin_hash(self) -> str | None:
        rows = self._query("SELECT key_hash FROM admin WHERE id = 1")
        return rows[0][0] if rows else None

    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str:
        action = "DO UPDATE SET key_hash = excluded.key_hash, created = excluded.created" if replace else "DO NOTHING"
        self._write(f"INSERT INTO admin (id, key_hash, created) VALUES (1, %s, %s) ON CONFLICT (id) {action}",
                    (key_hash, time.time()))
        return self.get_admin_hash()


def _pg(statement: tuple[str, Sequence]) -> tuple[str, Sequence]:
    """A statement of metering/changes.py (`?` placeholders) for psycopg (`%s`)."""
    return statement[0].replace("?", "%s"), statement[1]


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


__all__ = ["PostgresLedger", "create_engine_for", "hour_split", "migrate", "month_bounds", "redact", "split_url"]

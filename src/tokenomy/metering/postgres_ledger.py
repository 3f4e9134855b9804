"""A Ledger on PostgreSQL (SQLAlchemy 2 Core + psycopg 3, sync: the group-commit writer
thread batches, so one transaction carries many events).

- Schema by Alembic (migrations/), upgraded at open under an advisory lock, so several
  replicas starting together migrate once.
- `events` is partitioned by month on ts; partitions are created on demand (advisory lock,
  so two replicas never race on the DDL).
- Idempotency: `event_ids(id PRIMARY KEY)` is inserted in the same transaction with
  ON CONFLICT DO NOTHING RETURNING; only the ids it returns are inserted into `events` and
  added to `usage_hourly` (INSERT ... ON CONFLICT DO UPDATE). One statement does all three.
- Money: BIGINT pico-USD per event, NUMERIC sums; exact like the SQLite ledger.

URL: postgresql://user@host:port/db[?schema=name] (a `schema` query parameter selects, and
creates, a schema: tests use one per session).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tokenomy.errors import TokenomyError
from tokenomy.metering.errors import Conflict
from tokenomy.metering.money import from_pusd, to_pusd
from tokenomy.metering.store import AuditRecord, UsageRow
from tokenomy.metering.types import Budget, KeyRecord, TenantRecord, UsageEvent

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_MIGRATE_LOCK = 0x746F6B6E6D6967  # pg_advisory_lock keys (arbitrary, fixed)
_PARTITION_LOCK = 0x746F6B6E707274
HOUR_S = 3600.0
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_EVENT_COLS = ("id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, output_tokens, "
               "reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms, latency_ms, status, estimated, "
               "http_status, extra")
_KEY_COLS = ("key_id, tenant, name, secret_hash, created, revoked_at, budget_pusd, budget_period, "
             "soft_budget_pusd, rpm, tpm")
_TENANT_COLS = "name, created, budget_pusd, budget_period, soft_budget_pusd"
_SUMS = ("requests", "errors", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
         "cost_pusd", "price_pusd", "energy_joules")

# One statement: dedup ids, insert only new events, fold them into the hourly rollup.
# Sorted inputs keep lock order stable across concurrent writers (no deadlocks).
_APPEND_SQL = """
WITH input AS (
  SELECT * FROM unnest(
    %(id)b::text[], %(ts)b::float8[], %(tenant)b::text[], %(key_id)b::text[], %(model)b::text[],
    %(deployment)b::text[], %(input_tokens)b::bigint[], %(cached_input_tokens)b::bigint[],
    %(output_tokens)b::bigint[], %(reasoning_tokens)b::bigint[], %(cost_pusd)b::bigint[],
    %(price_pusd)b::bigint[], %(energy_joules)b::float8[], %(ttft_ms)b::float8[], %(latency_ms)b::float8[],
    %(status)b::text[], %(estimated)b::bool[], %(http_status)b::int[], %(extra)b::text[]
  ) WITH ORDINALITY AS t(id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens,
                         output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms,
                         latency_ms, status, estimated, http_status, extra, ord)
),
new AS (
  INSERT INTO event_ids (id) SELECT DISTINCT id FROM input ORDER BY id
  ON CONFLICT DO NOTHING RETURNING id
),
ins AS (
  INSERT INTO events (id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens,
                      output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms,
                      latency_ms, status, estimated, http_status, extra, recorded_at)
  SELECT DISTINCT ON (i.id) i.id, i.ts, i.tenant, i.key_id, i.model, i.deployment, i.input_tokens,
         i.cached_input_tokens, i.output_tokens, i.reasoning_tokens, i.cost_pusd, i.price_pusd,
         i.energy_joules, i.ttft_ms, i.latency_ms, i.status, i.estimated, i.http_status, i.extra::jsonb,
         %(now)s
  FROM input i JOIN new n ON n.id = i.id
  ORDER BY i.id, i.ord
  RETURNING ts, tenant, model, deployment, status, input_tokens, cached_input_tokens, output_tokens,
            reasoning_tokens, cost_pusd, price_pusd, energy_joules
),
roll AS (
  INSERT INTO usage_hourly AS u (hour, tenant, model, deployment, requests, errors, input_tokens,
                                 cached_input_tokens, output_tokens, reasoning_tokens, cost_pusd, price_pusd,
                                 energy_joules)
  SELECT floor(ts / 3600.0) * 3600.0, tenant, model, deployment, count(*),
         count(*) FILTER (WHERE status <> 'ok'), sum(input_tokens), sum(cached_input_tokens),
         sum(output_tokens), sum(reasoning_tokens), sum(cost_pusd), sum(price_pusd), sum(energy_joules)
  FROM ins GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
  ON CONFLICT (hour, tenant, model, deployment) DO UPDATE SET
    requests = u.requests + excluded.requests, errors = u.errors + excluded.errors,
    input_tokens = u.input_tokens + excluded.input_tokens,
    cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
    output_tokens = u.output_tokens + excluded.output_tokens,
    reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
    cost_pusd = u.cost_pusd + excluded.cost_pusd, price_pusd = u.price_pusd + excluded.price_pusd,
    energy_joules = u.energy_joules + excluded.energy_joules
)
SELECT id FROM new
"""


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
        extra=None if r[18] is None else json.loads(r[18]))


def _key(r) -> KeyRecord:
    return KeyRecord(key_id=r[0], tenant=r[1], name=r[2], secret_hash=r[3], created=r[4], revoked_at=r[5],
                     budget=Budget(r[6], r[7], r[8]), rpm=r[9], tpm=r[10])


def _tenant(r) -> TenantRecord:
    return TenantRecord(name=r[0], created=r[1], budget=Budget(r[2], r[3], r[4]))


def _columns(events: Sequence[UsageEvent]) -> dict:
    cols: dict[str, list] = {name: [] for name in _EVENT_COLS.split(", ")}
    for e in events:
        cols["id"].append(e.id)
        cols["ts"].append(float(e.ts))
        cols["tenant"].append(e.tenant)
        cols["key_id"].append(e.key_id)
        cols["model"].append(e.model)
        cols["deployment"].append(e.deployment)
        cols["input_tokens"].append(int(e.input_tokens))
        cols["cached_input_tokens"].append(int(e.cached_input_tokens))
        cols["output_tokens"].append(int(e.output_tokens))
        cols["reasoning_tokens"].append(int(e.reasoning_tokens))
        cols["cost_pusd"].append(to_pusd(e.cost_usd))
        cols["price_pusd"].append(to_pusd(e.price_usd))
        cols["energy_joules"].append(float(e.energy_joules))
        cols["ttft_ms"].append(None if e.ttft_ms is None else float(e.ttft_ms))
        cols["latency_ms"].append(float(e.latency_ms))
        cols["status"].append(e.status)
        cols["estimated"].append(bool(e.estimated))
        cols["http_status"].append(int(e.http_status))
        cols["extra"].append(None if e.extra is None else json.dumps(e.extra, separators=(",", ":"), default=str))
    return cols


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
    def __init__(self, url: str, *, pool_size: int = 4):
        import sqlalchemy as sa

        self.url = url
        self._sa = sa
        try:
            self.engine = create_engine_for(url, pool_size=pool_size)
            self.schema_version = migrate(self.engine)
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: {_first_line(exc)}") from None
        self._ranges: list[tuple[float, float]] = []  # months known to have a partition
        self._plock = threading.Lock()

    @classmethod
    def open(cls, url: str, **kwargs) -> "PostgresLedger":
        return cls(url, **kwargs)

    def close(self) -> None:
        self.engine.dispose()

    # helpers -----------------------------------------------------------------------------
    def _query(self, sql: str, params: dict | Sequence | None = None) -> list:
        with self.engine.connect() as conn:
            return list(conn.exec_driver_sql(sql, params or {}).fetchall())

    def _write(self, sql: str, params: dict | Sequence | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.exec_driver_sql(sql, params or {}).rowcount

    def ensure_partitions(self, timestamps) -> None:
        """Create the monthly partitions these timestamps fall into (once per process)."""
        wanted = {}
        lo_ts, hi_ts = min(timestamps, default=0.0), max(timestamps, default=0.0)
        if any(lo <= lo_ts and hi_ts < hi for lo, hi in self._ranges):
            return  # the common case: the whole batch inside one known month
        for ts in timestamps:
            if any(lo <= ts < hi for lo, hi in self._ranges):
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
        self._ranges.extend(wanted.values())

    def partitions(self) -> list[str]:
        rows = self._query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events') ORDER BY 1")
        return [r[0] for r in rows]

    # events ------------------------------------------------------------------------------
    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]:
        import psycopg

        cols = _columns(events)  # convert first: a bad event fails before the transaction
        self.ensure_partitions(cols["ts"])
        for attempt in range(5):
            try:
                return self._append_once(events, cols, audits)
            except self._sa.exc.DBAPIError as exc:  # concurrent writers: retry a deadlock victim
                if not isinstance(exc.orig, (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)) \
                        or attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _append_once(self, events, cols, audits) -> list[bool]:
        with self.engine.begin() as conn:
            new: set[str] = set()
            if events:
                new = {r[0] for r in conn.exec_driver_sql(_APPEND_SQL, {**cols, "now": time.time()})}
            for a in audits:
                conn.exec_driver_sql(
                    "INSERT INTO audit (ts, kind, scope, subject, period_key, message) VALUES (%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT DO NOTHING", (a.ts, a.kind, a.scope, a.subject, a.period_key, a.message))
        out = []
        for e in events:  # the first occurrence of a new id is the recorded one
            out.append(e.id in new)
            new.discard(e.id)
        return out

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

    # admin -------------------------------------------------------------------------------
    def get_admin_hash(self) -> str | None:
        rows = self._query("SELECT key_hash FROM admin WHERE id = 1")
        return rows[0][0] if rows else None

    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str:
        action = "DO UPDATE SET key_hash = excluded.key_hash, created = excluded.created" if replace else "DO NOTHING"
        self._write(f"INSERT INTO admin (id, key_hash, created) VALUES (1, %s, %s) ON CONFLICT (id) {action}",
                    (key_hash, time.time()))
        return self.get_admin_hash()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


__all__ = ["PostgresLedger", "create_engine_for", "hour_split", "migrate", "month_bounds", "redact", "split_url"]

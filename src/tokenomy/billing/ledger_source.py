"""Read-only adapters over the metering ledger's `events`, for billing: SQLite (`LedgerSource`,
the data dir's ledger.db) and PostgreSQL (`PostgresLedgerSource`, TOKENOMY_LEDGER_URL).

Billing needs two things `Metering.usage()` does not give: every event's `recorded_at` (late
events and the grace cutoff) and per-event rows in time order (rolling-window caps). So it reads
the events table directly, read-only, and never writes to it. Money is exact (integer pico-USD).
Both sources answer every method with the same rows in the same order (ids compare bytewise).

    source = open_ledger_source(data_dir)     # PostgreSQL when TOKENOMY_LEDGER_URL is set
"""

from __future__ import annotations

import os
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from tokenomy.billing.events import BILLABLE_STATUSES, BillableEvent
from tokenomy.billing.periods import Period, period_of
from tokenomy.errors import TokenomyError

_COLS = ("id, ts, recorded_at, model, deployment, input_tokens, cached_input_tokens, output_tokens, "
         "cost_pusd, price_pusd, energy_joules")
_STATUS = "status IN (%s)" % ", ".join(f"'{s}'" for s in BILLABLE_STATUSES)


def _event(r: tuple) -> BillableEvent:
    return BillableEvent(id=r[0], ts=r[1], recorded_at=r[2], model=r[3], deployment=r[4], input_tokens=int(r[5]),
                         cached_input_tokens=int(r[6]), output_tokens=int(r[7]), cost_usd=Decimal(int(r[8])).scaleb(-12),
                         price_usd=Decimal(int(r[9])).scaleb(-12), energy_joules=float(r[10]))


class BillingSource(Protocol):
    """What billing (invoices, margins, caps, simulation) reads from a ledger."""

    def close(self) -> None: ...

    def tenants(self) -> list[str]: ...

    def events(self, tenant: str | None, since: float, until: float,
               recorded_before: float | None = None) -> list[BillableEvent]: ...

    def count(self, tenant: str, since: float, until: float) -> int: ...

    def events_by_tenant(self, since: float, until: float) -> dict[str, list[BillableEvent]]: ...

    def late_periods(self, tenant: str, before: float, grace_seconds: float) -> set[Period]: ...

    def rolling_counter(self, tenant: str, now: float, horizon_seconds: float, bucket_seconds: float = 60.0): ...

    def months(self) -> list[Period]: ...


class _SqlSource:
    """The queries, written once with `?` placeholders; subclasses run them (`_q`)."""

    _ORDER = "ORDER BY ts, id"
    _COLLATE = ""
    _TENANTS = "SELECT DISTINCT tenant FROM events"
    _SPAN = "SELECT MIN(ts), MAX(ts) FROM events"

    def _q(self, sql: str, params=()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def tenants(self) -> list[str]:
        names = {r[0] for r in self._q("SELECT name FROM tenants")}
        names |= {r[0] for r in self._q(self._TENANTS)}
        return sorted(names)

    def events(self, tenant: str | None, since: float, until: float,
               recorded_before: float | None = None) -> list[BillableEvent]:
        """Billable events with since <= ts < until (and recorded_at < recorded_before), by (ts, id)."""
        sql = f"SELECT {_COLS} FROM events WHERE ts >= ? AND ts < ? AND {_STATUS}"
        params: list = [since, until]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        if recorded_before is not None:
            sql += " AND recorded_at < ?"
            params.append(recorded_before)
        return [_event(r) for r in self._q(f"{sql} {self._ORDER}", params)]

    def count(self, tenant: str, since: float, until: float) -> int:
        rows = self._q(f"SELECT COUNT(*) FROM events WHERE tenant = ? AND ts >= ? AND ts < ? AND {_STATUS}",
                       (tenant, since, until))
        return int(rows[0][0]) if rows else 0

    def events_by_tenant(self, since: float, until: float) -> dict[str, list[BillableEvent]]:
        out: dict[str, list[BillableEvent]] = {}
        rows = self._q(f"SELECT tenant, {_COLS} FROM events WHERE ts >= ? AND ts < ? AND {_STATUS} {self._ORDER}",
                       (since, until))
        for r in rows:
            out.setdefault(r[0], []).append(_event(r[1:]))
        return out

    def late_periods(self, tenant: str, before: float, grace_seconds: float) -> set[Period]:
        """Periods before `before` with events recorded after their period's end + grace."""
        rows = self._q("SELECT ts, recorded_at FROM events WHERE tenant = ? AND ts < ? AND recorded_at >= ts + ?",
                       (tenant, before, grace_seconds))
        out = set()
        for ts, recorded_at in rows:
            p = period_of(ts)
            if recorded_at >= p.end + grace_seconds:
                out.add(p)
        return out

    def rolling_counter(self, tenant: str, now: float, horizon_seconds: float, bucket_seconds: float = 60.0):
        """A RollingCounter warmed with the tenant's recent events, so caps survive a gateway restart."""
        from tokenomy.billing.caps import RollingCounter

        counter = RollingCounter(horizon_seconds, bucket_seconds)
        for e in self.events(tenant, now - horizon_seconds, now + 1e-6):
            counter.add(e.ts, requests=1, tokens=e.tokens)
        return counter

    _EXPORT_COLS = ("id, ts, recorded_at, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, "
                    "output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, status")

    def recorded_after(self, recorded_at: float, event_id: str, limit: int, *, since_ts: float | None = None) -> list[dict]:
        """Billable events in ledger order after (recorded_at, event_id), oldest first, at most
        `limit` (keyset pagination for exports; `since_ts`: only events with ts >= it)."""
        order = self._ORDER.replace("ts, id", "recorded_at, id")
        sql = (f"SELECT {self._EXPORT_COLS} FROM events WHERE {_STATUS} AND "
               f"(recorded_at > ? OR (recorded_at = ? AND id > ?{self._COLLATE}))")
        params: list = [recorded_at, recorded_at, event_id]
        if since_ts is not None:
            sql += " AND ts >= ?"
            params.append(since_ts)
        names = [c.strip() for c in self._EXPORT_COLS.split(",")]
        return [dict(zip(names, r, strict=True)) for r in self._q(f"{sql} {order} LIMIT {int(limit)}", params)]

    def months(self) -> list[Period]:
        rows = self._q(self._SPAN)
        if not rows or rows[0][0] is None:
            return []
        p, last = period_of(float(rows[0][0])), period_of(float(rows[0][1]))
        out = []
        while p <= last:
            out.append(p)
            p = p.next()
        return out


class LedgerSource(_SqlSource):
    """Events of the SQLite ledger in data_dir/ledger.db (an absent ledger reads as empty)."""

    def __init__(self, data_dir: Path | str):
        from tokenomy.metering.paths import ledger_path

        self.path = ledger_path(Path(data_dir))
        self._conn: sqlite3.Connection | None = None
        if self.path.exists():
            self._conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                         check_same_thread=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _q(self, sql: str, params=()) -> list[tuple]:
        if self._conn is None:
            return []
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


SqliteLedgerSource = LedgerSource


class PostgresLedgerSource(_SqlSource):
    """Events of the PostgreSQL ledger at `url` (postgresql://...[?schema=name]); a database
    without the ledger's tables reads as empty. Tenants and the month span come from the
    ledger's hourly rollup (usage_hourly, written in the same transaction as every event), which
    is indexed, instead of a scan of every partition."""

    _ORDER = 'ORDER BY ts, id COLLATE "C"'  # SQLite compares text bytewise
    _COLLATE = ' COLLATE "C"'
    _TENANTS = "SELECT DISTINCT tenant FROM usage_hourly"
    _SPAN = "SELECT MIN(hour), MAX(hour) FROM usage_hourly"  # months start on whole hours: same months

    def __init__(self, url: str, *, pool_size: int = 2):
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import create_engine_for, redact

        self.url = url
        self._sa = sa
        try:
            self.engine = create_engine_for(url, pool_size=pool_size)
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: {_first_line(exc)}") from None

    def close(self) -> None:
        self.engine.dispose()

    def _q(self, sql: str, params=()) -> list[tuple]:
        import psycopg

        try:
            with self.engine.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(sql.replace("?", "%s"), tuple(params)).fetchall()]
        except self._sa.exc.ProgrammingError as exc:
            if isinstance(exc.orig, psycopg.errors.UndefinedTable):
                return []
            raise
        except self._sa.exc.OperationalError as exc:
            raise TokenomyError(f"the PostgreSQL ledger cannot be read: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def open_ledger_source(data_dir: Path | str, *, ledger_url: str | None = None) -> BillingSource:
    """The ledger billing reads, chosen like metering.backends.open_ledger: ledger_url, else env
    TOKENOMY_LEDGER_URL (PostgreSQL), else the SQLite ledger in data_dir."""
    from tokenomy.metering.backends import ENV_LEDGER_URL

    url = ledger_url or os.environ.get(ENV_LEDGER_URL) or None
    if url:
        return PostgresLedgerSource(url)
    return LedgerSource(data_dir)


__all__ = ["BillingSource", "LedgerSource", "PostgresLedgerSource", "SqliteLedgerSource", "open_ledger_source"]

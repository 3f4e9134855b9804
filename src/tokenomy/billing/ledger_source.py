"""Read-only adapter over the metering ledger's SQLite `events` table.

Billing needs two things `Metering.usage()` does not give: every event's `recorded_at` (late
events and the grace cutoff) and per-event rows in time order (rolling-window caps). So it reads
`ledger.db` directly, read-only, and never writes to it. Money is exact (integer pico-USD)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from tokenomy.billing.events import BILLABLE_STATUSES, BillableEvent
from tokenomy.billing.periods import Period, period_of

_COLS = ("id, ts, recorded_at, model, deployment, input_tokens, cached_input_tokens, output_tokens, "
         "cost_pusd, price_pusd, energy_joules")
_STATUS = "status IN (%s)" % ", ".join(f"'{s}'" for s in BILLABLE_STATUSES)


def _event(r: tuple) -> BillableEvent:
    return BillableEvent(id=r[0], ts=r[1], recorded_at=r[2], model=r[3], deployment=r[4], input_tokens=r[5],
                         cached_input_tokens=r[6], output_tokens=r[7], cost_usd=Decimal(r[8]).scaleb(-12),
                         price_usd=Decimal(r[9]).scaleb(-12), energy_joules=float(r[10]))


class LedgerSource:
    """Events of the ledger in data_dir/ledger.db (an absent ledger reads as empty)."""

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

    def tenants(self) -> list[str]:
        names = {r[0] for r in self._q("SELECT name FROM tenants")}
        names |= {r[0] for r in self._q("SELECT DISTINCT tenant FROM events")}
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
        return [_event(r) for r in self._q(sql + " ORDER BY ts, id", params)]

    def count(self, tenant: str, since: float, until: float) -> int:
        rows = self._q(f"SELECT COUNT(*) FROM events WHERE tenant = ? AND ts >= ? AND ts < ? AND {_STATUS}",
                       (tenant, since, until))
        return rows[0][0] if rows else 0

    def events_by_tenant(self, since: float, until: float) -> dict[str, list[BillableEvent]]:
        out: dict[str, list[BillableEvent]] = {}
        rows = self._q(f"SELECT tenant, {_COLS} FROM events WHERE ts >= ? AND ts < ? AND {_STATUS} "
                       "ORDER BY ts, id", (since, until))
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

    def months(self) -> list[Period]:
        rows = self._q("SELECT MIN(ts), MAX(ts) FROM events")
        if not rows or rows[0][0] is None:
            return []
        p, last = period_of(rows[0][0]), period_of(rows[0][1])
        out = []
        while p <= last:
            out.append(p)
            p = p.next()
        return out

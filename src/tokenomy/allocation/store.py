"""The `capacity_intervals` table: one row per self-hosted deployment per interval in which a
gateway had it provisioned, in the ledger's own database (SQLite file or PostgreSQL), and reads of
the events served in a window.

Rows are keyed by (deployment, start): every replica of a gateway records the same interval, the
first insert wins, so a deployment is billed once per interval however many replicas serve it.
The table is created on first use (`CREATE TABLE IF NOT EXISTS`, the same DDL on both databases)
rather than by a ledger migration, so reading an older ledger needs no upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenomy.ledgerdb import LedgerDB

DDL = ("CREATE TABLE IF NOT EXISTS capacity_intervals ("
       "deployment TEXT NOT NULL, start BIGINT NOT NULL, interval_s INTEGER NOT NULL, spec TEXT NOT NULL, "
       "recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (deployment, start))")


@dataclass(frozen=True, slots=True)
class Interval:
    deployment: str
    start: int
    interval_s: int
    spec: str  # CostSpec.key()

    @property
    def end(self) -> int:
        return self.start + self.interval_s


@dataclass(frozen=True, slots=True)
class Served:
    """One request as allocation needs it: when it was in flight on which deployment."""

    id: str
    tenant: str
    deployment: str
    start_s: float
    end_s: float
    input_tokens: int
    output_tokens: int
    cost_pusd: int  # the provisional cost recorded at request time (catalog $/Mtok)
    price_pusd: int


class CapacityStore:
    """The table on the ledger's database (tokenomy.ledgerdb: SQLite file or PostgreSQL)."""

    def __init__(self, *, path: Path | None = None, url: str | None = None, db: LedgerDB | None = None):
        self.db = db or LedgerDB(path=path, url=url, ddl=(DDL,))

    @classmethod
    def for_ledger(cls, ledger) -> "CapacityStore | None":
        """The store of a metering ledger (None for the in-memory one)."""
        db = LedgerDB.for_ledger(ledger, ddl=(DDL,))
        return cls(db=db) if db is not None else None

    @classmethod
    def open(cls, data_dir: Path | str, ledger_url: str | None = None) -> "CapacityStore":
        return cls(db=LedgerDB.open(data_dir, ledger_url, ddl=(DDL,)))

    def _run(self, sql: str, params: tuple = (), *, many: list[tuple] | None = None, write: bool = False) -> list[tuple]:
        return self.db.run(sql, params, many=many, write=write)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ the table
    def record(self, rows: list[Interval], recorded_at: float) -> None:
        if rows:
            self._run("INSERT OR IGNORE INTO capacity_intervals (deployment, start, interval_s, spec, recorded_at) "
                      "VALUES (?, ?, ?, ?, ?)",
                      many=[(r.deployment, r.start, r.interval_s, r.spec, recorded_at) for r in rows], write=True)

    def intervals(self, since: float, until: float) -> list[Interval]:
        rows = self._run("SELECT deployment, start, interval_s, spec FROM capacity_intervals "
                         "WHERE start < ? AND start + interval_s > ? ORDER BY deployment, start", (until, since))
        return [Interval(str(d), int(s), int(i), str(sp)) for d, s, i, sp in rows]

    def served(self, deployments: list[str], since: float, until: float, *, max_latency_s: float = 3600.0) -> list[Served]:
        """Requests of these deployments in flight at any time in [since, until): the events whose
        end (ts) is in [since, until + max latency) and whose start (ts - latency) is before until."""
        if not deployments:
            return []
        marks = ", ".join("?" for _ in deployments)
        rows = self._run(
            "SELECT id, tenant, deployment, ts, latency_ms, input_tokens, output_tokens, cost_pusd, price_pusd "
            f"FROM events WHERE deployment IN ({marks}) AND ts >= ? AND ts < ? AND status IN ('ok', 'cancelled')",
            (*deployments, since, until + max_latency_s))
        out = []
        for i, tenant, dep, ts, latency_ms, inp, outp, cost, price in rows:
            end = float(ts)
            start = end - max(0.0, float(latency_ms or 0.0)) / 1000.0
            if start < until and end > since:
                out.append(Served(str(i), str(tenant), str(dep), start, end, int(inp), int(outp), int(cost), int(price)))
        return out

"""Closed invoices, stored immutably in data_dir/billing.db (the ledger is never altered).

Triggers refuse UPDATE and DELETE, so a closed invoice cannot change even by accident;
corrections become adjustment lines on a later period."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tokenomy.billing.invoice import Invoice
from tokenomy.errors import TokenomyError

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS billing_invoices (
        tenant TEXT NOT NULL,
        period TEXT NOT NULL,
        closed_at REAL NOT NULL,
        total_usd TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (tenant, period))""",
    """CREATE TRIGGER IF NOT EXISTS billing_invoices_no_update BEFORE UPDATE ON billing_invoices
        BEGIN SELECT RAISE(ABORT, 'closed invoices are immutable'); END""",
    """CREATE TRIGGER IF NOT EXISTS billing_invoices_no_delete BEFORE DELETE ON billing_invoices
        BEGIN SELECT RAISE(ABORT, 'closed invoices are immutable'); END""",
]


def billing_db_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / "billing.db"


class InvoiceStore:
    def __init__(self, data_dir: Path | str):
        self.path = billing_db_path(data_dir)
        self._conn: sqlite3.Connection | None = None
        self._cache: dict[tuple[str, str], Invoice | None] = {}

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists() and not create:
                return None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise TokenomyError(f"cannot open {self.path}: {exc}") from None
            for stmt in _SCHEMA:
                self._conn.execute(stmt)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, tenant: str, period: str) -> Invoice | None:
        key = (tenant, period)
        if key not in self._cache:
            conn = self._connect(create=False)
            row = None if conn is None else conn.execute(
                "SELECT body FROM billing_invoices WHERE tenant = ? AND period = ?", key).fetchone()
            self._cache[key] = Invoice.from_dict(json.loads(row[0])) if row else None
        return self._cache[key]

    def closed_periods(self, tenant: str) -> list[str]:
        conn = self._connect(create=False)
        if conn is None:
            return []
        return [r[0] for r in conn.execute(
            "SELECT period FROM billing_invoices WHERE tenant = ? ORDER BY period", (tenant,))]

    def put(self, invoice: Invoice, *, now: float | None = None) -> Invoice:
        """Store a closed invoice once; returns the stored one (an existing one wins)."""
        from tokenomy.billing.periods import iso

        conn = self._connect(create=True)
        now = time.time() if now is None else now
        invoice.status, invoice.closed_at = "closed", iso(now)
        body = invoice.to_dict()
        conn.execute("INSERT OR IGNORE INTO billing_invoices (tenant, period, closed_at, total_usd, fingerprint, body) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (invoice.tenant, invoice.period, now, body["total_usd"], body["fingerprint"],
                      json.dumps(body, sort_keys=True)))
        self._cache.pop((invoice.tenant, invoice.period), None)
        return self.get(invoice.tenant, invoice.period)

"""The `alerts` table: claim a crossing once across replicas, then keep it until delivered.

Claim: INSERT OR IGNORE of the alert's id; the replica whose insert lands owns the send, every
other replica's insert is a no-op. Delivery: any replica may deliver a pending row after taking
its lease (a conditional UPDATE), so a replica that dies mid-delivery only delays it. A row is
the durable outbox: it is deleted never, marked delivered_at on a 2xx.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tokenomy.alerts.rules import Alert
from tokenomy.ledgerdb import LedgerDB

DDL = ("CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, "
       "kind TEXT NOT NULL, tenant TEXT NOT NULL, body TEXT NOT NULL, silent INTEGER NOT NULL DEFAULT 0, "
       "attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at DOUBLE PRECISION NOT NULL, "
       "lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, delivered_at DOUBLE PRECISION, last_error TEXT)",)


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    body: dict
    attempts: int


class AlertStore:
    def __init__(self, db: LedgerDB):
        self.db = db

    @classmethod
    def for_ledger(cls, ledger) -> "AlertStore | None":
        db = LedgerDB.for_ledger(ledger, ddl=DDL)
        return cls(db) if db is not None else None

    def claim(self, alert: Alert, body: dict, now: float) -> bool:
        """True if this call created the alert (it is this replica's to send)."""
        silent = 1 if alert.fields.get("silent") else 0
        return self.db.changed(
            "INSERT OR IGNORE INTO alerts (id, created, kind, tenant, body, silent, next_attempt_at, delivered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (alert.id, now, alert.kind, alert.tenant, json.dumps(body), silent, now, now if silent else None))

    def lease(self, now: float, lease_s: float, limit: int = 50) -> list[Pending]:
        rows = self.db.run("SELECT id, body, attempts FROM alerts WHERE delivered_at IS NULL AND next_attempt_at <= ? "
                           "AND lease_until <= ? ORDER BY created, id LIMIT ?", (now, now, limit), write=True)
        won = []
        for i, body, attempts in rows:
            if self.db.changed("UPDATE alerts SET lease_until = ? WHERE id = ? AND lease_until <= ? "
                                "AND delivered_at IS NULL", (now + lease_s, i, now)):
                won.append(Pending(str(i), json.loads(body), int(attempts)))
        return won

    def delivered(self, alert_id: str, now: float) -> None:
        self.db.run("UPDATE alerts SET delivered_at = ?, attempts = attempts + 1, lease_until = 0, last_error = NULL "
                    "WHERE id = ?", (now, alert_id), write=True)

    def failed(self, alert_id: str, now: float, retry_at: float, error: str) -> None:
        self.db.run("UPDATE alerts SET attempts = attempts + 1, next_attempt_at = ?, lease_until = 0, last_error = ? "
                    "WHERE id = ?", (retry_at, error[:500], alert_id), write=True)

    def rows(self) -> list[dict]:
        cols = ("id", "kind", "tenant", "silent", "attempts", "delivered_at", "last_error")
        return [dict(zip(cols, r, strict=True))
                for r in self.db.run(f"SELECT {', '.join(cols)} FROM alerts ORDER BY created, id")]

    def close(self) -> None:
        self.db.close()

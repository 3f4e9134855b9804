"""A durable local outbox in front of a remote Ledger (PostgreSQL).

When the database cannot be reached, events go to a local SQLite file (WAL, synchronous
FULL) before `append` returns, so the gateway keeps serving and every acknowledged event is
on disk. A drainer thread pushes the outbox to the database when it returns and deletes rows
only after the database committed them; the database's dedup table (event_ids) makes a
re-push after a crash harmless, so each event lands exactly once. While the outbox holds
anything, new events queue behind it (one order, one place to dedup).

Reads merge the outbox into spend and usage, so budgets loaded during an outage still see
events not yet drained. Key/tenant/admin look-ups fall back to the last value read (an
unknown key during an outage is a 503, never a wrong 401).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

from tokenomy.metering.errors import MeteringError
from tokenomy.metering.money import to_pusd
from tokenomy.metering.store import AuditRecord, UsageRow
from tokenomy.metering.types import KeyRecord, TenantRecord, UsageEvent

log = logging.getLogger(__name__)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        price_pusd INTEGER NOT NULL,
        event TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        audit TEXT NOT NULL)""",
]


class StoreUnavailable(MeteringError):
    """The ledger database cannot be reached for something the outbox cannot answer."""

    status = 503
    code = "service_unavailable"


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "cannot reach the database" (not "bad data")."""
    import psycopg
    import sqlalchemy.exc as sx

    return (sx.OperationalError, sx.InterfaceError, sx.TimeoutError, psycopg.OperationalError,
            psycopg.InterfaceError, ConnectionError, TimeoutError)


def _dump(e: UsageEvent) -> str:
    d = asdict(e)
    d["cost_usd"], d["price_usd"] = str(e.cost_usd), str(e.price_usd)
    return json.dumps(d, separators=(",", ":"), default=str)


def _load(text: str) -> UsageEvent:
    d = json.loads(text)
    d["cost_usd"], d["price_usd"] = Decimal(d["cost_usd"]), Decimal(d["price_usd"])
    return UsageEvent(**d)


def _in(ts: float, since: float | None, until: float | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


class OutboxLedger:
    def __init__(self, inner, path: Path, *, retry_s: float = 0.5, max_retry_s: float = 5.0, batch: int = 1000,
                 describe: str = "the ledger database"):
        self.inner = inner
        self.path = Path(path)
        self.describe = describe
        self._errors = unavailable_errors()
        self._lock = threading.Lock()  # the SQLite connection
        self._db: sqlite3.Connection | None = None  # created on the first outage (or left by one)
        if self.path.exists():
            self._open_db()
        self._backlog = self._count()
        self._retry_s, self._max_retry_s, self._batch = retry_s, max_retry_s, batch
        self._cache: dict[tuple[str, str], object] = {}  # last-read keys/tenants/admin
        self.outboxed = 0  # statistics
        self.drained = 0
        self.down_since: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name="tokenomy-outbox", daemon=True)
        self._drainer.start()
        if self._backlog:
            self._wake.set()

    # outbox ------------------------------------------------------------------------------
    def _open_db(self) -> sqlite3.Connection:
        if self._db is None:
            # events wait here: owner-only, like the SQLite ledger (SQLite gives its -wal and
            # -shm files the database file's mode)
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.path.touch(mode=0o600)
            os.chmod(self.path, 0o600)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # acknowledged = on disk
            for statement in _SCHEMA:
                db.execute(statement)
            self._db = db
        return self._db

    def _count(self) -> int:
        with self._lock:
            if self._db is None and self.path.exists():  # another process sharing the data dir had an outage
                self._open_db()
            if self._db is None:
                return 0
            return self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    @property
    def backlog(self) -> int:
        return self._backlog

    def _mark_down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.time()
            log.warning("%s is unavailable (%s): recording events in the local outbox %s",
                        self.describe, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.path)

    def _to_outbox(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord]) -> list[bool]:
        rows = [(e.id, e.ts, e.tenant, e.key_id, to_pusd(e.price_usd), _dump(e)) for e in events]
        with self._lock:
            db = self._open_db()
            db.execute("BEGIN IMMEDIATE")
            try:
                out = [db.execute("INSERT OR IGNORE INTO outbox (id, ts, tenant, key_id, price_pusd, event) "
                                  "VALUES (?,?,?,?,?,?)", row).rowcount == 1 for row in rows]
                for a in audits:
                    db.execute("INSERT INTO outbox_audit (audit) VALUES (?)", (json.dumps(asdict(a)),))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._backlog += sum(out)
        self.outboxed += sum(out)
        self._wake.set()
        return out

    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]:
        if self._backlog == 0:
            try:
                return self.inner.append(events, audits)
            except self._errors as exc:
                self._mark_down(exc)
        return self._to_outbox(events, audits)

    def drain_once(self) -> int:
        """Push up to one batch to the database; returns how many rows left the outbox."""
        if self._db is None:
            return 0
        with self._lock:
            rows = self._db.execute("SELECT seq, event FROM outbox ORDER BY seq LIMIT ?", (self._batch,)).fetchall()
            audit_rows = self._db.execute("SELECT seq, audit FROM outbox_audit ORDER BY seq").fetchall()
        if not rows and not audit_rows:
            self._backlog = 0
            return 0
        audits = [AuditRecord(**json.loads(a)) for _, a in audit_rows]
        self.inner.append([_load(text) for _, text in rows], audits)  # dedup: a re-push is harmless
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            if rows:
                self._db.execute("DELETE FROM outbox WHERE seq <= ?", (rows[-1][0],))
            if audit_rows:
                self._db.execute("DELETE FROM outbox_audit WHERE seq <= ?", (audit_rows[-1][0],))
            self._db.execute("COMMIT")
            self._backlog = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self.drained += len(rows)
        if self._backlog == 0 and self.down_since is not None:
            log.warning("%s is back: outbox drained after %.1f s", self.describe, time.time() - self.down_since)
            self.down_since = None
        return len(rows)

    def _drain_loop(self) -> None:
        delay = self._retry_s
        while not self._stop.is_set():
            self._wake.wait(timeout=delay)
            if self._stop.is_set():
                return
            try:
                if self._backlog == 0:
                    self._backlog = self._count()  # another process may share this outbox
                if self._backlog == 0:
                    self._wake.clear()
                    delay = max(self._retry_s, 2.0)
                    continue
                while self.drain_once() and not self._stop.is_set():
                    pass
                delay = self._retry_s
            except self._errors:
                delay = min(self._max_retry_s, delay * 2)
            except Exception:  # pragma: no cover - unexpected: keep the rows, keep trying
                log.exception("draining the outbox %s failed", self.path)
                delay = self._max_retry_s

    def wait_drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._backlog == 0 and self._count() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout=10)
        with self._lock:
            if self._db is not None:
                self._db.close()
        self.inner.close()

    # reads -------------------------------------------------------------------------------
    def _inner(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            self._mark_down(exc)
            raise StoreUnavailable(
                f"{self.describe} is unavailable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                "usage events are kept in the local outbox, but this operation needs the database; retry shortly",
                retry_after_s=self._retry_s) from None

    def _outbox_events(self, tenant=None, since=None, until=None) -> list[UsageEvent]:
        if self._backlog == 0:
            return []
        with self._lock:
            rows = self._db.execute("SELECT event FROM outbox ORDER BY seq").fetchall()
        events = [_load(r[0]) for r in rows]
        return [e for e in events if (tenant is None or e.tenant == tenant) and _in(e.ts, since, until)]

    def spend_pusd(self, *, kind: str, subject: str, since: float | None, until: float | None) -> int:
        base = self._inner(self.inner.spend_pusd, kind=kind, subject=subject, since=since, until=until)
        if kind == "user":
            from tokenomy.metering.changes import split_user_subject

            tenant, user = split_user_subject(subject)
            return base + sum(to_pusd(e.price_usd) for e in self._outbox_events(tenant, since, until)
                              if (e.extra or {}).get("user") == user)
        field = "key_id" if kind == "key" else "tenant"
        return base + sum(to_pusd(e.price_usd) for e in self._outbox_events(None, since, until)
                          if getattr(e, field) == subject)

    def usage_rows(self, tenant: str | None, since: float | None, until: float | None) -> list[UsageRow]:
        rows = {(r.model, r.deployment): r for r in self._inner(self.inner.usage_rows, tenant, since, until)}
        for e in self._outbox_events(tenant, since, until):
            r = rows.get((e.model, e.deployment)) or UsageRow(e.model, e.deployment, 0, 0, 0, 0, 0, 0, 0, 0, 0.0)
            rows[(e.model, e.deployment)] = UsageRow(
                e.model, e.deployment, r.requests + 1, r.errors + (e.status != "ok"),
                r.input_tokens + e.input_tokens, r.cached_input_tokens + e.cached_input_tokens,
                r.output_tokens + e.output_tokens, r.reasoning_tokens + e.reasoning_tokens,
                r.cost_pusd + to_pusd(e.cost_usd), r.price_pusd + to_pusd(e.price_usd),
                r.energy_joules + e.energy_joules)
        return [rows[k] for k in sorted(rows)]

    def events(self, tenant: str | None, since: float | None, until: float | None, limit: int) -> list[UsageEvent]:
        found = {e.id: e for e in self._inner(self.inner.events, tenant, since, until, limit)}
        for e in self._outbox_events(tenant, since, until):
            found.setdefault(e.id, e)
        return sorted(found.values(), key=lambda e: (-e.ts, e.id))[:limit]

    def count_event(self, event_id: str) -> int:
        return self._inner(self.inner.count_event, event_id)

    def outbox_count(self, event_id: str) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM outbox WHERE id = ?", (event_id,)).fetchone()[0]

    def audits(self, kind: str | None = None) -> list[AuditRecord]:
        return self._inner(self.inner.audits, kind)

    # look-ups with a last-known fallback ---------------------------------------------------
    def _cached(self, kind: str, name: str, fn, *args):
        try:
            value = fn(*args)
        except self._errors as exc:
            if (kind, name) in self._cache:
                self._mark_down(exc)
                return self._cache[(kind, name)]
            return self._inner(fn, *args)  # raises StoreUnavailable
        self._cache[(kind, name)] = value
        return value

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._cached("key", key_id, self.inner.get_key, key_id)

    def get_tenant(self, name: str) -> TenantRecord | None:
        return self._cached("tenant", name, self.inner.get_tenant, name)

    def get_admin_hash(self) -> str | None:
        return self._cached("admin", "", self.inner.get_admin_hash)

    # admin writes: need the database -------------------------------------------------------
    def create_tenant(self, tenant: TenantRecord, *, exist_ok: bool) -> bool:
        return self._inner(self.inner.create_tenant, tenant, exist_ok=exist_ok)

    def list_tenants(self) -> list[TenantRecord]:
        return self._inner(self.inner.list_tenants)

    def insert_key(self, key: KeyRecord) -> None:
        return self._inner(self.inner.insert_key, key)

    def list_keys(self, tenant: str | None) -> list[KeyRecord]:
        return self._inner(self.inner.list_keys, tenant)

    def revoke_key(self, key_id: str, ts: float) -> bool:
        self._cache.pop(("key", key_id), None)
        return self._inner(self.inner.revoke_key, key_id, ts)

    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str:
        return self._inner(self.inner.set_admin_hash, key_hash, replace=replace)

    def update_key(self, key, change) -> bool:
        self._cache.pop(("key", key.key_id), None)
        return self._inner(self.inner.update_key, key, change)

    def update_tenant(self, tenant, change) -> bool:
        self._cache.pop(("tenant", tenant.name), None)
        return self._inner(self.inner.update_tenant, tenant, change)

    def record_change(self, change) -> None:
        return self._inner(self.inner.record_change, change)

    def changes(self, limit: int, target: str | None = None) -> list:
        return self._inner(self.inner.changes, limit, target)

    def user_caps(self, tenant: str) -> list:
        return self._cached("user_caps", tenant, self.inner.user_caps, tenant)

    def set_user_cap(self, tenant: str, user: str, cap, change) -> bool:
        self._cache.pop(("user_caps", tenant), None)
        return self._inner(self.inner.set_user_cap, tenant, user, cap, change)

    def __getattr__(self, name: str):  # engine, partitions(), schema_version... of the inner ledger
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


__all__ = ["OutboxLedger", "StoreUnavailable", "unavailable_errors"]

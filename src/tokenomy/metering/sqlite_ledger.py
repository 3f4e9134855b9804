"""The default Ledger: SQLite (stdlib) in WAL mode, shared safely by several processes.

Two connections: the writer's (group-commit transactions, one thread at a time) and a
locked one for look-ups and admin writes. Every write transaction is short and starts
with BEGIN IMMEDIATE, so the CLI and a running gateway interleave via busy_timeout.
WAL checkpoints (which fsync the main file) run on a background thread instead of inside
whichever commit crosses the auto-checkpoint threshold, keeping them off the commit path.
Two fsyncs used to land on the gateway's event loop (an inline commit, see `append_nowait`),
stalling every request in flight for milliseconds about twice a second:
  * a commit racing a checkpoint's fsyncs: an inline commit now never overlaps a checkpoint of
    this process (it declines, the caller's writer thread commits instead; a checkpoint waits);
  * the first write after a complete checkpoint restarts the WAL from its start and syncs the
    new WAL header, even at synchronous=NORMAL: the checkpointer thread now does that write
    itself (a no-op one, `user_version` set to its own value), right after the checkpoint.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from tokenomy.errors import TokenomyError
from tokenomy.metering import sums
from tokenomy.metering import changes
from tokenomy.metering.changes import split_user_subject
from tokenomy.metering.errors import Conflict
from tokenomy.metering.money import from_pusd, to_pusd
from tokenomy.metering.paths import ledger_path
from tokenomy.metering.schema import MIGRATIONS, SCHEMA_VERSION
from tokenomy.metering.store import AuditRecord, ChangeRecord, UsageRow
from tokenomy.metering.types import Budget, KeyRecord, TenantRecord, UsageEvent, UserCap

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
BUSY_TIMEOUT_MS = 10_000

_EVENT_COLS = (
    "id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, output_tokens, "
    "reasoning_tokens, cost_pusd, price_pusd, energy_joules, ttft_ms, latency_ms, status, estimated, "
    "http_status, extra, cache_write_tokens")
_INSERT_EVENT = f"INSERT OR IGNORE INTO events ({_EVENT_COLS}, recorded_at) VALUES ({', '.join('?' * 21)})"
_KEY_COLS = ("key_id, tenant, name, secret_hash, created, revoked_at, budget_pusd, budget_period, "
             "soft_budget_pusd, rpm, tpm")
# exact sums of int64 pico-USD without overflow: SUM(x / 1e6) * 1e6 + SUM(x % 1e6)
_MONEY_SUM = "COALESCE(SUM({c} / 1000000), 0), COALESCE(SUM({c} % 1000000), 0)"


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    return sums.register(conn)


def _restart_wal(conn: sqlite3.Connection) -> None:
    """After a complete checkpoint the next write transaction restarts the WAL and fsyncs its new
    header (synchronous=NORMAL included). Make that write here: a no-op one (user_version, unused
    by tokenomy, set to its own value), so no request's commit pays the fsync."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _extra_json(extra: dict) -> str:
    try:  # orjson: ~10x cheaper than json.dumps, same compact output for these small dicts
        return orjson.dumps(extra, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # e.g. an int beyond 64 bits
        return json.dumps(extra, separators=(",", ":"), default=str)


def _insert_and_commit(conn: sqlite3.Connection, rows: list[tuple], audits: Sequence[AuditRecord]) -> list[bool]:
    """In the transaction the caller began: insert the event rows (a known id is ignored:
    idempotent) and the audits, commit; roll back on any error. Which rows were new."""
    try:
        inserted = [conn.execute(_INSERT_EVENT, row).rowcount == 1 for row in rows]
        for a in audits:
            conn.execute("INSERT OR IGNORE INTO audit (ts, kind, scope, subject, period_key, message) VALUES (?,?,?,?,?,?)",
                         (a.ts, a.kind, a.scope, a.subject, a.period_key, a.message))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return inserted


def _event_row(e: UsageEvent, now: float) -> tuple:
    extra = None if e.extra is None else _extra_json(e.extra)
    return (e.id, e.ts, e.tenant, e.key_id, e.model, e.deployment, int(e.input_tokens), int(e.cached_input_tokens),
            int(e.output_tokens), int(e.reasoning_tokens), to_pusd(e.cost_usd), to_pusd(e.price_usd),
            float(e.energy_joules), e.ttft_ms, float(e.latency_ms), e.status, int(bool(e.estimated)),
            int(e.http_status), extra, int(e.cache_write_tokens), now)


def _event(r: tuple) -> UsageEvent:
    return UsageEvent(
        id=r[0], ts=r[1], tenant=r[2], key_id=r[3], model=r[4], deployment=r[5], input_tokens=r[6],
        cached_input_tokens=r[7], output_tokens=r[8], reasoning_tokens=r[9], cost_usd=from_pusd(r[10]),
        price_usd=from_pusd(r[11]), energy_joules=r[12], ttft_ms=r[13], latency_ms=r[14], status=r[15],
        estimated=bool(r[16]), http_status=r[17], extra=None if r[18] is None else json.loads(r[18]),
        cache_write_tokens=r[19])


def _key(r: tuple) -> KeyRecord:
    return KeyRecord(key_id=r[0], tenant=r[1], name=r[2], secret_hash=r[3], created=r[4], revoked_at=r[5],
                     budget=Budget(r[6], r[7], r[8]), rpm=r[9], tpm=r[10])


def _tenant(r: tuple) -> TenantRecord:
    return TenantRecord(name=r[0], created=r[1], budget=Budget(r[2], r[3], r[4]))


def _where(tenant: str | None, since: float | None, until: float | None, col: str = "tenant") -> tuple[str, list]:
    clauses, params = [], []
    if tenant is not None:
        clauses.append(f"{col} = ?")
        params.append(tenant)
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in one transaction; returns the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied REAL NOT NULL)")
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise TokenomyError(
                f"ledger schema version {current} is newer than this tokenomy supports ({SCHEMA_VERSION}); upgrade tokenomy")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
        return SCHEMA_VERSION
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SqliteLedger:
    def __init__(self, path: Path, *, synchronous: str = "FULL", checkpoint_interval_s: float = 0.5):
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS:
            raise TokenomyError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not '{synchronous}'")
        self.path = path
        self._conn = _connect(path, synchronous)
        self._lock = threading.Lock()
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise TokenomyError(f"could not put {path} in WAL mode (got {mode})")
        self.schema_version = migrate(self._conn)
        self._synchronous = synchronous
        self._wconn = _connect(path, synchronous)
        self._wconn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
        self._wlock = threading.Lock()
        self._iconn: sqlite3.Connection | None = None  # append_nowait's (busy_timeout 0), under _wlock
        self._checkpoint_interval_s = checkpoint_interval_s
        self._ckpt_lock = threading.Lock()  # held by a checkpoint, and by an inline commit
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None

    @classmethod
    def open(cls, data_dir: Path, *, synchronous: str = "FULL") -> "SqliteLedger":
        data_dir = Path(data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = ledger_path(data_dir)
            if not path.exists():
                path.touch(mode=0o600)
        except OSError as exc:
            raise TokenomyError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
        return cls(path, synchronous=synchronous)

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
            self._checkpointer = None
        with self._wlock, self._lock:
            self._wconn.close()
            self._conn.close()
            if self._iconn is not None:
                self._iconn.close()
                self._iconn = None

    def _checkpoint_loop(self) -> None:
        conn = _connect(self.path, self._synchronous)
        try:
            while not self._stop.is_set():
                self._dirty.wait()
                self._stop.wait(self._checkpoint_interval_s)  # let commits accumulate
                self._dirty.clear()
                try:
                    with self._ckpt_lock:  # inline commits go to the writer thread meanwhile
                        # PASSIVE: never blocks readers or the writer
                        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                        if frames > 0 and copied == frames:
                            with self._wlock:  # our writers wait here, not in SQLite's busy back-off
                                _restart_wal(conn)
                        elif busy or frames < 0 or copied < frames:
                            # busy, not (yet) seen in WAL mode (-1: this connection opened before the
                            # ledger switched), or a reader held part back: again after the next
                            # interval, not only after the next commit (which may never come)
                            self._dirty.set()
                except sqlite3.Error:
                    self._dirty.set()  # try again later
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        finally:
            conn.close()

    def _start_checkpointer(self) -> None:
        if self._checkpointer is None and not self._stop.is_set():
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="tokenomy-checkpoint", daemon=True)
            self._checkpointer.start()

    # helpers -----------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: Sequence = ()) -> int:
        """One short write transaction on the look-up connection; returns rowcount."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                count = conn.execute(sql, params).rowcount
                conn.execute("COMMIT")
                return count
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _write_all(self, statements: Sequence[tuple[str, Sequence]]) -> bool:
        """Several statements in one short write transaction, committed only if the first one
        changed a row (else rolled back: False)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute(*statements[0]).rowcount < 1:
                    conn.execute("ROLLBACK")
                    return False
                for sql, params in statements[1:]:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
                return True
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # events ------------------------------------------------------------------------------
    def append(self, events: Sequence[UsageEvent], audits: Sequence[AuditRecord] = ()) -> list[bool]:
        now = time.time()
        rows = [_event_row(e, now) for e in events]  # convert first: a bad event fails before BEGIN
        with self._wlock:
            conn = self._wconn
            conn.execute("BEGIN IMMEDIATE")
            inserted = _insert_and_commit(conn, rows, audits)
            if self._checkpointer is None:
                self._start_checkpointer()
        if not self._dirty.is_set():
            self._dirty.set()
        return inserted

    def append_nowait(self, events: Sequence[UsageEvent]) -> list[bool] | None:
        """`append` for a caller that must not block (the gateway's event loop): None, with
        nothing written, when the commit could wait: another connection holds the write lock
        (busy_timeout 0 on this connection), our writer thread is mid-transaction, a checkpoint
        is running (its fsyncs can stall a concurrent commit for milliseconds), or the commit
        would fsync (synchronous FULL/EXTRA). Then use `append` from a thread."""
        if self._synchronous not in ("OFF", "NORMAL") or self._stop.is_set():
            return None
        rows = [_event_row(e, time.time()) for e in events]
        if not self._wlock.acquire(blocking=False):
            return None
        if not self._ckpt_lock.acquire(blocking=False):
            self._wlock.release()
            return None
        try:
            conn = self._iconn
            if conn is None:
                conn = self._iconn = _connect(self.path, self._synchronous)
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer thread does it
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # SQLITE_BUSY: another process is writing
                return None
            inserted = _insert_and_commit(conn, rows, ())
            if self._checkpointer is None:
                self._start_checkpointer()
        finally:
            self._ckpt_lock.release()
            self._wlock.release()
        if not self._dirty.is_set():
            self._dirty.set()
        return inserted

    def spend_pusd(self, *, kind: str, subject: str, since: float | None, until: float | None) -> int:
        if kind == "user":  # one end user of a tenant (the events' extra.user)
            tenant, user = split_user_subject(subject)
            where, params = _where(tenant, since, until)
            where += " AND json_valid(extra) AND json_extract(extra, '$.user') = ?"
            params.append(user)
        else:
            where, params = _where(subject, since, until, col="key_id" if kind == "key" else "tenant")
        hi, lo = sums.query_sums(self._query, f"SELECT {_MONEY_SUM.format(c='price_pusd')} FROM events{where}",
                                 params)[0]
        return sums.as_int(hi) * 1_000_000 + sums.as_int(lo)

    def usage_rows(self, tenant: str | None, since: float | None, until: float | None) -> list[UsageRow]:
        where, params = _where(tenant, since, until)
        rows = sums.query_sums(self._query, (
            "SELECT model, deployment, COUNT(*), SUM(status != 'ok'), SUM(input_tokens), SUM(cached_input_tokens), "
            f"SUM(output_tokens), SUM(reasoning_tokens), {_MONEY_SUM.format(c='cost_pusd')}, "
            f"{_MONEY_SUM.format(c='price_pusd')}, TOTAL(energy_joules) "
            f"FROM events{where} GROUP BY model, deployment ORDER BY model, deployment"), params)
        n = sums.as_int
        return [
            UsageRow(model=r[0], deployment=r[1], requests=r[2], errors=n(r[3]), input_tokens=n(r[4]),
                     cached_input_tokens=n(r[5]), output_tokens=n(r[6]), reasoning_tokens=n(r[7]),
                     cost_pusd=n(r[8]) * 1_000_000 + n(r[9]), price_pusd=n(r[10]) * 1_000_000 + n(r[11]),
                     energy_joules=r[12])
            for r in rows
        ]

    def events(self, tenant: str | None, since: float | None, until: float | None, limit: int) -> list[UsageEvent]:
        where, params = _where(tenant, since, until)
        rows = self._query(f"SELECT {_EVENT_COLS} FROM events{where} ORDER BY ts DESC, id LIMIT ?", [*params, limit])
        return [_event(r) for r in rows]

    def count_event(self, event_id: str) -> int:
        return self._query("SELECT COUNT(*) FROM events WHERE id = ?", (event_id,))[0][0]

    def audits(self, kind: str | None = None) -> list[AuditRecord]:
        sql = "SELECT kind, scope, subject, period_key, ts, message FROM audit"
        rows = self._query(sql + " WHERE kind = ? ORDER BY id", (kind,)) if kind else self._query(sql + " ORDER BY id")
        return [AuditRecord(*r) for r in rows]

    # tenants and keys --------------------------------------------------------------------
    def create_tenant(self, tenant: TenantRecord, *, exist_ok: bool) -> bool:
        b = tenant.budget
        created = self._write(
            "INSERT OR IGNORE INTO tenants (name, created, budget_pusd, budget_period, soft_budget_pusd) VALUES (?,?,?,?,?)",
            (tenant.name, tenant.created, b.budget_pusd, b.period, b.soft_budget_pusd)) == 1
        if not created and not exist_ok:
            raise Conflict(f"tenant '{tenant.name}' already exists")
        return created

    def get_tenant(self, name: str) -> TenantRecord | None:
        rows = self._query(
            "SELECT name, created, budget_pusd, budget_period, soft_budget_pusd FROM tenants WHERE name = ?", (name,))
        return _tenant(rows[0]) if rows else None

    def list_tenants(self) -> list[TenantRecord]:
        rows = self._query("SELECT name, created, budget_pusd, budget_period, soft_budget_pusd FROM tenants ORDER BY name")
        return [_tenant(r) for r in rows]

    def insert_key(self, key: KeyRecord) -> None:
        b = key.budget
        self._write(
            f"INSERT INTO keys ({_KEY_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (key.key_id, key.tenant, key.name, key.secret_hash, key.created, key.revoked_at, b.budget_pusd, b.period,
             b.soft_budget_pusd, key.rpm, key.tpm))

    def get_key(self, key_id: str) -> KeyRecord | None:
        rows = self._query(f"SELECT {_KEY_COLS} FROM keys WHERE key_id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def list_keys(self, tenant: str | None) -> list[KeyRecord]:
        if tenant is None:
            rows = self._query(f"SELECT {_KEY_COLS} FROM keys ORDER BY created, key_id")
        else:
            rows = self._query(f"SELECT {_KEY_COLS} FROM keys WHERE tenant = ? ORDER BY created, key_id", (tenant,))
        return [_key(r) for r in rows]

    def revoke_key(self, key_id: str, ts: float) -> bool:
        self._write("UPDATE keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (ts, key_id))
        return bool(self._query("SELECT 1 FROM keys WHERE key_id = ?", (key_id,)))

    def update_key(self, key: KeyRecord, change: ChangeRecord) -> bool:
        return self._write_all(changes.key_update(key, change))

    def update_tenant(self, tenant: TenantRecord, change: ChangeRecord) -> bool:
        return self._write_all(changes.tenant_update(tenant, change))

    def record_change(self, change: ChangeRecord) -> None:
        self._write_all([changes.change_insert(change)])

    def changes(self, limit: int, target: str | None = None) -> list[ChangeRecord]:
        return [changes.change_of(r) for r in self._query(*changes.changes_query(limit, target))]

    def user_caps(self, tenant: str) -> list[UserCap]:
        return [changes.user_cap_of(r) for r in self._query(changes.USER_CAPS_QUERY, (tenant,))]

    def set_user_cap(self, tenant: str, user: str, cap: UserCap | None, change: ChangeRecord) -> bool:
        return self._write_all(changes.user_cap_change(tenant, user, cap, change))

    # admin -------------------------------------------------------------------------------
    def get_admin_hash(self) -> str | None:
        rows = self._query("SELECT key_hash FROM admin WHERE id = 1")
        return rows[0][0] if rows else None

    def set_admin_hash(self, key_hash: str, *, replace: bool) -> str:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        self._write(f"{verb} INTO admin (id, key_hash, created) VALUES (1, ?, ?)", (key_hash, time.time()))
        return self.get_admin_hash()


__all__ = ["SqliteLedger", "migrate"]

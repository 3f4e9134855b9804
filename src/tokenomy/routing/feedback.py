"""Outcome labels of routed requests (`POST /v1/feedback`) and the prompts to learn from.

Two small tables of our own next to the ledger's events — in the SQLite file
(`<data_dir>/ledger.db`; metering's tables are never altered) or, with a PostgreSQL ledger, in
its database (Alembic revision 0004), so every replica sees every label:

- `route_feedback(request_id PK, tenant, score in [0, 1], ts, prompt_sha256)`: the latest score
  a tenant gave a request (a new score for the same id replaces the old one).
- `route_prompts(request_id PK, tenant, ts, prompt_sha256, prompt)`: the prompt text of routed
  requests, written at decision time ONLY with config `routing.store_prompts: true`.

Privacy trade-off: storing prompts lets `tokenomy route train --from-ledger` retrain the router
on real traffic, but keeps users' prompt text (possibly personal or confidential data) in the
ledger for as long as the ledger is kept, readable by anyone with the file. Off by default;
without it feedback still records scores (and a prompt hash when the prompt was stored).

`open_feedback_store(data_dir, ledger_url)` picks the backend like metering does (the URL, else
TOKENOMY_LEDGER_URL, else SQLite). `load_training_rows(data_dir, ledger_url)` turns labelled routed requests into the router's training rows
`{"id", "prompt", "weak", "strong"}`: the served model's quality is the feedback score; the
other model's quality is not observed, so it is imputed (see `_impute`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from tokenomy.errors import TokenomyError

_DDL = (
    "CREATE TABLE IF NOT EXISTS route_feedback (request_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
    "score REAL NOT NULL, ts REAL NOT NULL, prompt_sha256 TEXT)",
    "CREATE TABLE IF NOT EXISTS route_prompts (request_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
    "ts REAL NOT NULL, prompt_sha256 TEXT NOT NULL, prompt TEXT NOT NULL)",
)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()


def _db_path(data_dir: Path | str) -> Path:
    from tokenomy.metering.paths import ledger_path

    return ledger_path(Path(data_dir))


class FeedbackStore:
    """The two tables above on their own SQLite connection (WAL: readers and the ledger's writer
    are not blocked). `data_dir=None` (in-memory metering): an in-memory database."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()
        with self._lock:
            for ddl in _DDL:
                conn.execute(ddl)
            conn.commit()

    @classmethod
    def open(cls, data_dir: Path | str | None) -> "FeedbackStore":
        if data_dir is None:
            return cls(sqlite3.connect(":memory:", check_same_thread=False))
        path = _db_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA busy_timeout = 10000")
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock:
            self._conn.execute(sql, params)
            self._conn.commit()

    def record_prompt(self, request_id: str, tenant: str, prompt: str, ts: float | None = None) -> None:
        self._write("INSERT OR REPLACE INTO route_prompts (request_id, tenant, ts, prompt_sha256, prompt) "
                    "VALUES (?, ?, ?, ?, ?)", (request_id, tenant, time.time() if ts is None else ts,
                                               prompt_hash(prompt), prompt))

    def record_feedback(self, request_id: str, tenant: str, score: float, ts: float | None = None) -> None:
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0.0 <= float(score) <= 1.0:
            raise TokenomyError(f"feedback score must be a number in [0, 1] (got {score!r})")
        with self._lock:
            row = self._conn.execute("SELECT prompt_sha256 FROM route_prompts WHERE request_id = ?",
                                     (request_id,)).fetchone()
            self._conn.execute("INSERT OR REPLACE INTO route_feedback (request_id, tenant, score, ts, prompt_sha256) "
                               "VALUES (?, ?, ?, ?, ?)", (request_id, tenant, float(score),
                                                          time.time() if ts is None else ts, row[0] if row else None))
            self._conn.commit()

    def event_tenant(self, request_id: str) -> str | None | bool:
        """The tenant of a ledger event; None if there is no such event; False if this database
        has no events table (another ledger backend: ask metering instead)."""
        with self._lock:
            has = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
            if not has:
                return False
            row = self._conn.execute("SELECT tenant FROM events WHERE id = ?", (request_id,)).fetchone()
        return row[0] if row else None

    def feedback(self, request_id: str) -> dict | None:
        with self._lock:
            row = self._conn.execute("SELECT request_id, tenant, score, ts, prompt_sha256 FROM route_feedback "
                                     "WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else dict(zip(("request_id", "tenant", "score", "ts", "prompt_sha256"), row))


def record_feedback(data_dir: Path | str, request_id: str, tenant: str, score: float,
                    ledger_url: str | None = None) -> None:
    """Store one outcome label (durable on return). The caller checks the request's tenant."""
    store = open_feedback_store(data_dir, ledger_url)
    try:
        store.record_feedback(request_id, tenant, score)
    finally:
        store.close()


def _ledger_url(ledger_url: str | None) -> str | None:
    from tokenomy.metering.backends import ENV_LEDGER_URL

    return ledger_url or os.environ.get(ENV_LEDGER_URL) or None


def _pg_error(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["error"])[0]


def pg_read(url: str, sql: str, params: tuple) -> list[tuple]:
    """Rows of one read-only query on the PostgreSQL ledger at url ([] when its tables are not
    there yet); an unreachable database is a one-line TokenomyError."""
    import psycopg
    import sqlalchemy as sa

    from tokenomy.metering.postgres_ledger import create_engine_for, redact

    try:
        engine = create_engine_for(url, pool_size=1)
    except sa.exc.OperationalError as exc:
        raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: {_pg_error(exc)}") from None
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, params).fetchall()]
    except sa.exc.ProgrammingError as exc:
        if isinstance(exc.orig, psycopg.errors.UndefinedTable):
            return []
        raise TokenomyError(f"cannot read the PostgreSQL ledger at {redact(url)}: {_pg_error(exc)}") from None
    except sa.exc.OperationalError as exc:
        raise TokenomyError(f"cannot read the PostgreSQL ledger at {redact(url)}: {_pg_error(exc)}") from None
    finally:
        engine.dispose()


class PgFeedbackStore:
    """The same two tables in the PostgreSQL ledger's database (shared by every replica). Takes
    the ledger's engine (the gateway's pool) or opens one from the URL and migrates."""

    def __init__(self, engine, *, owns_engine: bool = False):
        self.engine = engine
        self._owns = owns_engine

    @classmethod
    def open(cls, url: str) -> "PgFeedbackStore":
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import create_engine_for, migrate, redact

        try:
            engine = create_engine_for(url, pool_size=2)
            migrate(engine)
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"cannot open the PostgreSQL ledger at {redact(url)}: {_pg_error(exc)}") from None
        return cls(engine, owns_engine=True)

    def close(self) -> None:
        if self._owns:
            self.engine.dispose()

    def _run(self, sql: str, params: tuple, *, write: bool) -> list[tuple]:
        import sqlalchemy as sa

        try:
            with (self.engine.begin() if write else self.engine.connect()) as conn:
                res = conn.exec_driver_sql(sql, params)
                return [tuple(r) for r in res.fetchall()] if res.returns_rows else []
        except sa.exc.OperationalError as exc:
            raise TokenomyError(f"the PostgreSQL ledger is unavailable: {_pg_error(exc)}") from None

    def record_prompt(self, request_id: str, tenant: str, prompt: str, ts: float | None = None) -> None:
        self._run("INSERT INTO route_prompts (request_id, tenant, ts, prompt_sha256, prompt) VALUES (%s, %s, %s, %s, %s) "
                  "ON CONFLICT (request_id) DO UPDATE SET tenant = excluded.tenant, ts = excluded.ts, "
                  "prompt_sha256 = excluded.prompt_sha256, prompt = excluded.prompt",
                  (request_id, tenant, time.time() if ts is None else ts, prompt_hash(prompt), prompt), write=True)

    def record_feedback(self, request_id: str, tenant: str, score: float, ts: float | None = None) -> None:
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0.0 <= float(score) <= 1.0:
            raise TokenomyError(f"feedback score must be a number in [0, 1] (got {score!r})")
        # the prompt hash is read in the same statement: one round trip, one transaction
        self._run("INSERT INTO route_feedback (request_id, tenant, score, ts, prompt_sha256) "
                  "SELECT %s, %s, %s, %s, (SELECT prompt_sha256 FROM route_prompts WHERE request_id = %s) "
                  "ON CONFLICT (request_id) DO UPDATE SET tenant = excluded.tenant, score = excluded.score, "
                  "ts = excluded.ts, prompt_sha256 = excluded.prompt_sha256",
                  (request_id, tenant, float(score), time.time() if ts is None else ts, request_id), write=True)

    def event_tenant(self, request_id: str) -> str | None:
        """The tenant of a ledger event, None if there is none. The dedup table (id -> ts) finds
        the event's partition and time, so the (key_id, ts)/BRIN indexes apply; an id older than
        the dedup window falls back to a scan by id."""
        row = self._run("SELECT e.tenant FROM event_ids i JOIN events e ON e.ts = i.ts AND e.id = i.id "
                        "WHERE i.id = %s LIMIT 1", (request_id,), write=False)
        if not row:
            row = self._run("SELECT tenant FROM events WHERE id = %s LIMIT 1", (request_id,), write=False)
        return row[0][0] if row else None

    def feedback(self, request_id: str) -> dict | None:
        row = self._run("SELECT request_id, tenant, score, ts, prompt_sha256 FROM route_feedback WHERE request_id = %s",
                        (request_id,), write=False)
        return None if not row else dict(zip(("request_id", "tenant", "score", "ts", "prompt_sha256"), row[0]))


def open_feedback_store(data_dir: Path | str | None, ledger_url: str | None = None):
    """The feedback store beside the ledger: PostgreSQL for ledger_url (or TOKENOMY_LEDGER_URL),
    else the SQLite file in data_dir (None: in memory)."""
    url = _ledger_url(ledger_url)
    if url:
        return PgFeedbackStore.open(url)
    return FeedbackStore.open(data_dir)


def _impute(observed: list[tuple[bool, float]]) -> tuple[float, float]:
    """Mean feedback score of weak-served and of strong-served requests (0.5 when unseen)."""
    w = [s for strong, s in observed if not strong]
    st = [s for strong, s in observed if strong]
    return (sum(w) / len(w) if w else 0.5, sum(st) / len(st) if st else 0.5)


_TRAINING_SQL = ("SELECT f.request_id, p.prompt, f.score, {extra} FROM route_feedback f "
                 "JOIN route_prompts p ON p.request_id = f.request_id JOIN events e ON e.id = f.request_id "
                 "ORDER BY f.ts, f.request_id{collate}")


def _sqlite_training_rows(data_dir: Path | str) -> list[tuple]:
    path = _db_path(data_dir)
    if not path.is_file():
        raise TokenomyError(f"no ledger at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"route_feedback", "route_prompts", "events"} <= tables:
            return []
        return conn.execute(_TRAINING_SQL.format(extra="e.extra", collate="")).fetchall()
    finally:
        conn.close()


def load_training_rows(data_dir: Path | str, ledger_url: str | None = None) -> list[dict]:
    """Labelled routed requests with a stored prompt -> `[{"id", "prompt", "weak", "strong"}]`.

    The served model's quality is the feedback score. The other one's is unobserved: for a
    cascade that escalated, the weak answer's verifier score stands in for the weak quality;
    otherwise the mean feedback score of the other model over all labelled requests (so a
    weak answer scored below the strong model's average teaches "go strong", and vice versa)."""
    url = _ledger_url(ledger_url)
    if url:
        rows = pg_read(url, _TRAINING_SQL.format(extra="e.extra::text", collate=' COLLATE "C"'), ())
    else:
        rows = _sqlite_training_rows(data_dir)
    parsed = []
    for rid, prompt, score, extra in rows:
        try:
            route = (json.loads(extra) or {}).get("route") if extra else None
        except ValueError:
            route = None
        if not isinstance(route, dict):
            continue
        parsed.append((rid, prompt, float(score), bool(route.get("strong")), route))
    weak_mean, strong_mean = _impute([(strong, s) for _, _, s, strong, _ in parsed])
    out = []
    for rid, prompt, score, strong, route in parsed:
        if strong:
            vs = route.get("score") if route.get("policy") == "cascade" else None
            weak = float(vs) if isinstance(vs, (int, float)) else weak_mean
            out.append({"id": rid, "prompt": prompt, "weak": weak, "strong": score, "source": "ledger-feedback"})
        else:
            out.append({"id": rid, "prompt": prompt, "weak": score, "strong": strong_mean, "source": "ledger-feedback"})
    return out

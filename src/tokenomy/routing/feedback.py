"""Outcome labels of routed requests (`POST /v1/feedback`) and the prompts to learn from.

Two small tables of our own in the ledger's SQLite file (`<data_dir>/ledger.db`; metering's
tables are never altered):

- `route_feedback(request_id PK, tenant, score in [0, 1], ts, prompt_sha256)`: the latest score
  a tenant gave a request (a new score for the same id replaces the old one).
- `route_prompts(request_id PK, tenant, ts, prompt_sha256, prompt)`: the prompt text of routed
  requests, written at decision time ONLY with config `routing.store_prompts: true`.

Privacy trade-off: storing prompts lets `tokenomy route train --from-ledger` retrain the router
on real traffic, but keeps users' prompt text (possibly personal or confidential data) in the
ledger for as long as the ledger is kept, readable by anyone with the file. Off by default;
without it feedback still records scores (and a prompt hash when the prompt was stored).

`load_training_rows(data_dir)` turns labelled routed requests into the router's training rows
`{"id", "prompt", "weak", "strong"}`: the served model's quality is the feedback score; the
other model's quality is not observed, so it is imputed (see `_impute`).
"""

from __future__ import annotations

import hashlib
import json
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


def record_feedback(data_dir: Path | str, request_id: str, tenant: str, score: float) -> None:
    """Store one outcome label (durable on return). The caller checks the request's tenant."""
    store = FeedbackStore.open(data_dir)
    try:
        store.record_feedback(request_id, tenant, score)
    finally:
        store.close()


def _impute(observed: list[tuple[bool, float]]) -> tuple[float, float]:
    """Mean feedback score of weak-served and of strong-served requests (0.5 when unseen)."""
    w = [s for strong, s in observed if not strong]
    st = [s for strong, s in observed if strong]
    return (sum(w) / len(w) if w else 0.5, sum(st) / len(st) if st else 0.5)


def load_training_rows(data_dir: Path | str) -> list[dict]:
    """Labelled routed requests with a stored prompt -> `[{"id", "prompt", "weak", "strong"}]`.

    The served model's quality is the feedback score. The other one's is unobserved: for a
    cascade that escalated, the weak answer's verifier score stands in for the weak quality;
    otherwise the mean feedback score of the other model over all labelled requests (so a
    weak answer scored below the strong model's average teaches "go strong", and vice versa)."""
    path = _db_path(data_dir)
    if not path.is_file():
        raise TokenomyError(f"no ledger at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"route_feedback", "route_prompts", "events"} <= tables:
            return []
        rows = conn.execute(
            "SELECT f.request_id, p.prompt, f.score, e.extra FROM route_feedback f "
            "JOIN route_prompts p ON p.request_id = f.request_id JOIN events e ON e.id = f.request_id "
            "ORDER BY f.ts, f.request_id").fetchall()
    finally:
        conn.close()
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

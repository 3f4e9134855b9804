"""SQL on the ledger's own database for the tables that live beside the ledger's migrated ones
(capacity intervals, alerts): the same statements on SQLite (`?` placeholders, INSERT OR IGNORE)
and PostgreSQL (rewritten to `%s` and ON CONFLICT DO NOTHING). Each table is created on first
write with `CREATE TABLE IF NOT EXISTS` and the same DDL on both databases; a read of a table
that does not exist yet returns no rows. Calls are short and blocking: run them in a thread."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class LedgerDB:
    def __init__(self, *, path: Path | None = None, url: str | None = None, ddl: tuple[str, ...] = ()):
        if (path is None) == (url is None):
            raise ValueError("give exactly one of path, url")
        self.path, self.url, self.ddl = path, url, ddl
        self._engine = None
        self._ready = False

    @classmethod
    def for_ledger(cls, ledger, ddl: tuple[str, ...] = ()) -> "LedgerDB | None":
        """The database of a metering ledger (None for the in-memory one)."""
        url = getattr(ledger, "url", None) or getattr(getattr(ledger, "inner", None), "url", None)
        if url:
            return cls(url=url, ddl=ddl)
        path = getattr(ledger, "path", None) or getattr(getattr(ledger, "inner", None), "path", None)
        return cls(path=Path(path), ddl=ddl) if path is not None else None

    @classmethod
    def open(cls, data_dir: Path | str, ledger_url: str | None = None, ddl: tuple[str, ...] = ()) -> "LedgerDB":
        """data_dir's SQLite ledger, or the PostgreSQL one (ledger_url / TOKENOMY_LEDGER_URL)."""
        from tokenomy.metering.backends import ENV_LEDGER_URL
        from tokenomy.metering.paths import ledger_path

        url = ledger_url or os.environ.get(ENV_LEDGER_URL) or None
        return cls(url=url, ddl=ddl) if url else cls(path=ledger_path(Path(data_dir)), ddl=ddl)

    def run(self, sql: str, params: tuple = (), *, many: list[tuple] | None = None, write: bool = False) -> list[tuple]:
        """Rows of `sql` (or executemany with `many`), committed; `write` creates the tables first.
        Whether a claim or a lease was won: `changed()`."""
        return self._pg(sql, params, many, write)[0] if self.url is not None else self._sqlite(sql, params, many, write)[0]

    def changed(self, sql: str, params: tuple) -> bool:
        """Run one statement; True if it changed a row (an INSERT OR IGNORE that won its claim, a
        conditional UPDATE that took its lease)."""
        if self.url is not None:
            return self._pg(sql, params, None, True)[1] > 0
        return self._sqlite(sql, params, None, True)[1] > 0

    def _sqlite(self, sql, params, many, write) -> tuple[list[tuple], int]:
        if not write and not self.path.exists():
            return [], 0
        conn = sqlite3.connect(self.path, timeout=10)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            if write and not self._ready:
                for stmt in self.ddl:
                    conn.execute(stmt)
                self._ready = True
            try:
                if many is not None:
                    cur = conn.executemany(sql, many)
                    conn.commit()
                    return [], cur.rowcount
                cur = conn.execute(sql, params)
                rows = cur.fetchall()
                conn.commit()
                return rows, cur.rowcount
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc) and not write:
                    return [], 0
                raise
        finally:
            conn.close()

    def _pg(self, sql, params, many, write) -> tuple[list[tuple], int]:
        import psycopg
        import sqlalchemy as sa

        from tokenomy.metering.postgres_ledger import create_engine_for

        if self._engine is None:
            self._engine = create_engine_for(self.url, pool_size=1)
        sql = sql.replace("?", "%s")
        if sql.startswith("INSERT OR IGNORE"):
            sql = sql.replace("INSERT OR IGNORE", "INSERT", 1) + " ON CONFLICT DO NOTHING"
        try:
            with self._engine.begin() as conn:
                if write and not self._ready:
                    for stmt in self.ddl:
                        conn.exec_driver_sql(stmt)
                    self._ready = True
                if many is not None:
                    res = conn.exec_driver_sql(sql, many)
                    return [], res.rowcount
                res = conn.exec_driver_sql(sql, params)
                rows = [tuple(r) for r in res.fetchall()] if res.returns_rows else []
                return rows, res.rowcount
        except sa.exc.ProgrammingError as exc:
            if isinstance(exc.orig, psycopg.errors.UndefinedTable) and not write:
                return [], 0
            raise

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

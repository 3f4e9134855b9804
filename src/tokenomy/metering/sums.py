"""Overflow-safe sums on SQLite (issue 14 §1: four events of 10^12 tokens overflowed a 64-bit
rollup sum and every dashboard read failed, even after a restart).

SQLite stores integers in 64 bits and its SUM() raises "integer overflow" beyond them. The
choice here, per use:
- reads (ledger usage, dashboard reads): native SUM() first (fast); on an overflow the same
  query runs again with `exact_sum()`, a Python aggregate over arbitrary-precision ints that
  returns the exact total as text (callers convert with `as_int`). Exact whatever the data.
- stored rollup counters (dashboard/rollups.py): exact too. Their columns have no declared
  type (BLOB affinity), so a counter stays an INTEGER while it fits 64 bits and becomes the
  exact decimal TEXT beyond (`add_sql()` upserts natively, calling the Python `big_add()`
  only when an addition would overflow or a value is already TEXT). Once a rollup holds such
  a value it says so (rollup_state 'big') and its reads use `exact_sum()` directly.
  `clamped_sum()` / `sat_add_sql()` (saturating at the int64 bounds) remain for counters that
  must stay 64-bit.
PostgreSQL needs none of this: its sum(bigint) is NUMERIC, and its rollup columns are NUMERIC.
"""

from __future__ import annotations

import re
import sqlite3

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def clamp_int64(value: int) -> int:
    return INT64_MAX if value > INT64_MAX else INT64_MIN if value < INT64_MIN else value


class _ExactSum:
    def __init__(self) -> None:
        self.total = 0
        self.seen = False

    def step(self, value) -> None:
        if value is None:
            return
        self.seen = True
        self.total += value if isinstance(value, int) else int(value)

    def finalize(self):
        return str(self.total) if self.seen else None


class _ExactHi(_ExactSum):  # the hi part of a money sum: total // 10^6 (as SUM(x / 1000000) reads)
    def finalize(self):
        return str(self.total // 1_000_000) if self.seen else None


class _ExactLo(_ExactSum):
    def finalize(self):
        return self.total % 1_000_000 if self.seen else None


class _ClampedSum(_ExactSum):
    def finalize(self):
        return clamp_int64(self.total) if self.seen else None


def big_add(a, b):
    """Exact a + b of two counters (int, decimal TEXT or NULL): an int if it fits 64 bits, else TEXT."""
    total = as_int(a) + as_int(b)
    return total if INT64_MIN <= total <= INT64_MAX else str(total)


def register(conn: sqlite3.Connection, big_add_fn=big_add) -> sqlite3.Connection:
    """Make exact_sum(), clamped_sum() and big_add() available on a connection."""
    conn.create_aggregate("exact_sum", 1, _ExactSum)
    conn.create_aggregate("clamped_sum", 1, _ClampedSum)
    conn.create_aggregate("exact_sum_hi", 1, _ExactHi)
    conn.create_aggregate("exact_sum_lo", 1, _ExactLo)
    conn.create_function("big_add", 2, big_add_fn, deterministic=True)
    return conn


def is_overflow(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "integer overflow" in str(exc)


_SUM = re.compile(r"\bSUM\(", re.IGNORECASE)
_MONEY_HI = re.compile(r"\bSUM\((\w+) / 1000000\)", re.IGNORECASE)
_MONEY_LO = re.compile(r"\bSUM\((\w+) % 1000000\)", re.IGNORECASE)


def exact_sql(sql: str) -> str:
    """The same query with every SUM( as exact_sum( (TOTAL() sums of floats are left alone); the
    hi/lo split of money sums (SUM(x / 1e6), SUM(x % 1e6)) splits the exact total the same way."""
    sql = _MONEY_LO.sub(r"exact_sum_lo(\1)", _MONEY_HI.sub(r"exact_sum_hi(\1)", sql))
    return _SUM.sub("exact_sum(", sql)


def clamped_sql(sql: str) -> str:
    return _SUM.sub("clamped_sum(", sql)


def as_int(value) -> int:
    """A sum column of either query: int, exact text, or None (no rows)."""
    if value is None:
        return 0
    return value if isinstance(value, int) else int(value)


_MIN_SQL = f"({INT64_MIN + 1} - 1)"  # the literal -2^63 would parse as a REAL


def sat_add_sql(col: str, other: str) -> str:
    """SQL for col + other, saturating at the int64 bounds instead of raising an overflow."""
    return (f"CASE WHEN {other} > 0 AND {col} > {INT64_MAX} - {other} THEN {INT64_MAX} "
            f"WHEN {other} < 0 AND {col} < {_MIN_SQL} - {other} THEN {_MIN_SQL} ELSE {col} + {other} END")


def add_sql(col: str, other: str) -> str:
    """SQL for an exact col + other of counters that may be TEXT (beyond 64 bits): native while
    both are integers and the sum fits, else big_add()."""
    return (f"CASE WHEN typeof({col}) = 'integer' AND typeof({other}) = 'integer' "
            f"AND NOT ({other} > 0 AND {col} > {INT64_MAX} - {other}) "
            f"AND NOT ({other} < 0 AND {col} < {_MIN_SQL} - {other}) THEN {col} + {other} "
            f"ELSE big_add({col}, {other}) END")


def query_sums(conn_query, sql: str, params=()) -> list[tuple]:
    """Run a read with native SUM(); on an int64 overflow, again with exact sums."""
    try:
        return conn_query(sql, params)
    except sqlite3.OperationalError as exc:
        if not is_overflow(exc):
            raise
        return conn_query(exact_sql(sql), params)


__all__ = ["INT64_MAX", "INT64_MIN", "add_sql", "as_int", "big_add", "clamp_int64", "clamped_sql", "exact_sql", "is_overflow",
           "query_sums", "register", "sat_add_sql"]

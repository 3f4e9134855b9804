"""PostgreSQL schemas for tests that run the same checks on the SQLite and the PostgreSQL ledger
(dashboard, billing). Reuses the scale-out suite's server settings and service check:
PostgreSQL unreachable is a skip with the reason, and a failure in CI (CI=true)."""

from __future__ import annotations

import itertools
from urllib.parse import parse_qsl, urlsplit

from scaleout.conftest import PG_URL, SESSION, require_service

_n = itertools.count()


def _admin_engine():
    import sqlalchemy as sa

    return sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool)


def schema_of(url: str) -> str:
    return dict(parse_qsl(urlsplit(url).query))["schema"]


def new_schema_url(tag: str) -> str:
    """The URL of a schema of this test session's own (created, and migrated, by the first
    ledger opened on it). Skips (or fails in CI) without PostgreSQL."""
    require_service("PostgreSQL", PG_URL, 5432)
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema=tk_{tag}_{SESSION}_{next(_n)}"


def drop_schema(url: str) -> None:
    engine = _admin_engine()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema_of(url)}" CASCADE')
    finally:
        engine.dispose()


def empty_schema(url: str) -> None:
    """Every ledger table of the schema emptied (the dashboard's rollups and their watermark too),
    but the append-only audit trail of administrative changes (kept: no test here reads it)."""
    schema = schema_of(url)
    engine = _admin_engine()
    try:
        with engine.begin() as conn:
            tables = [t for (t,) in conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'alembic_version'", (schema,))
                if not t.startswith("events_p") and t != "admin_audit"]  # append-only: its trigger refuses TRUNCATE
            if tables:
                conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{schema}"."{t}"' for t in tables) + " CASCADE")
            if "rollup_state" in tables:
                conn.exec_driver_sql(f'INSERT INTO "{schema}".rollup_state (name) VALUES (\'events\')')
    finally:
        engine.dispose()


def own_schema_fixtures(tag: str):
    """`pg_module_url` (a schema of the test module's own, dropped after the module) and `pg`
    (it migrated and emptied for each test): a module binds both names to use them, overriding
    the session schema, so the monthly partitions its tests create stay out of other tests' way."""
    import pytest

    @pytest.fixture(scope="module")
    def pg_module_url():
        url = new_schema_url(tag)
        yield url
        drop_schema(url)

    @pytest.fixture
    def pg(pg_module_url):
        from tokenomy.metering.postgres_ledger import PostgresLedger

        PostgresLedger.open(pg_module_url).close()
        empty_schema(pg_module_url)
        return pg_module_url

    return pg_module_url, pg

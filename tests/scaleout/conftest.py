"""Fixtures for the scale-out suite: a PostgreSQL schema per session, a Redis key prefix per
test, and `meter` parametrised over both backend pairs (sqlite+memory, postgres+redis).

PostgreSQL/Redis unreachable: skipped with the reason on a laptop; a failure in CI (CI=true).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (to reuse metering's tests)

from metering.conftest import FakeClock, make_event, utc  # noqa: E402,F401

from tokenomy.metering import Metering  # noqa: E402

PG_URL = os.environ.get("TOKENOMY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TOKENOMY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SESSION = uuid.uuid4().hex[:8]
TABLES = "events, event_ids, usage_hourly, audit, keys, tenants, admin"


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{parts.port or default_port}: {exc.strerror or exc}"


def require_service(name: str, url: str, port: int) -> None:
    problem = _reachable(url, port)
    if problem is None:
        return
    reason = f"{name} not reachable at {problem} (start it with scripts/services.sh)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; in CI the {name} tests must run, not skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_url():
    """A fresh schema for this session (dropped at the end)."""
    require_service("PostgreSQL", PG_URL, 5432)
    import sqlalchemy as sa

    schema = f"tk_test_{SESSION}"
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}schema={schema}"
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


@pytest.fixture
def pg(pg_url):
    """The session schema, emptied for this test."""
    from tokenomy.metering.postgres_ledger import create_engine_for, migrate

    engine = create_engine_for(pg_url, pool_size=1)
    migrate(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {TABLES} CASCADE")
    engine.dispose()
    return pg_url


@pytest.fixture(scope="session")
def redis_url():
    require_service("Redis", REDIS_URL, 6379)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"tktest:{SESSION}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=500):
        client.delete(key)
    client.close()


@pytest.fixture
def wall():
    return FakeClock(utc("2026-11-27T12:00:00"))


@pytest.fixture
def mono():
    return FakeClock(1000.0)


BACKENDS = ["sqlite+memory", "postgres+redis"]


def open_backend(backend: str, request, tmp_path, **kwargs) -> Metering:
    if backend == "sqlite+memory":
        return Metering.open(tmp_path / "data", synchronous="NORMAL", **kwargs)
    from tokenomy.metering.backends import open_metering

    pg = request.getfixturevalue("pg")
    prefix = request.getfixturevalue("redis_prefix")
    return open_metering(tmp_path / "data", ledger_url=pg, redis_url=REDIS_URL, redis_prefix=prefix, **kwargs)


@pytest.fixture(params=BACKENDS)
def meter(request, tmp_path, wall, mono):
    """Metering over each backend pair, with fake clocks (Redis buckets then use the fake
    monotonic clock instead of Redis server time, so refills are deterministic)."""
    extra = {} if request.param == "sqlite+memory" else {"redis_server_time": False}
    m = open_backend(request.param, request, tmp_path, clock=wall, monotonic=mono, admin_key="test-admin-key",
                     **extra)
    yield m
    m.shutdown()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def migrations_head() -> str:
    """The newest Alembic revision of the ledger's migrations (other issues add revisions)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tokenomy.metering.postgres_ledger import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()

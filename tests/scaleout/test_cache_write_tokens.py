"""Cache-write tokens (Anthropic cache_creation_input_tokens) as their own category: the ledger
column on SQLite and PostgreSQL (an old ledger migrates, its events read 0), the price of the
category, and the usage bound that keeps an upstream from billing more than the prompt."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from tokenomy.config import parse_config
from tokenomy.gateway.lifecycle.usage import bound_usage
from tokenomy.gateway.pricing import resolve_price
from tokenomy.metering.postgres_ledger import PostgresLedger
from tokenomy.metering.schema import MIGRATIONS, SCHEMA_VERSION
from tokenomy.metering.sqlite_ledger import SqliteLedger

from .conftest import make_event


def test_sqlite_column_and_migration_of_an_old_ledger(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    old = SqliteLedger.open(tmp_path)
    path = old.path
    old.close()
    conn = sqlite3.connect(path)  # back to schema 1: the column did not exist
    # (and without the tables of later migrations: the audit trail and user caps of migration 3)
    conn.executescript("DROP TABLE events; DROP TABLE admin_audit; DROP TABLE user_caps; "
                       "DELETE FROM schema_version WHERE version > 1;")
    for stmt in MIGRATIONS[0]:
        if "events" in stmt:
            conn.execute(stmt)
    conn.execute("INSERT INTO events (id, ts, tenant, key_id, model, deployment, input_tokens, cached_input_tokens, "
                 "output_tokens, reasoning_tokens, cost_pusd, price_pusd, energy_joules, latency_ms, status, "
                 "recorded_at) VALUES ('old', 1, 'acme', 'k', 'm', 'd', 5, 0, 1, 0, 0, 0, 0, 1, 'ok', 1)")
    conn.commit()
    conn.close()
    lg = SqliteLedger.open(tmp_path)
    try:
        assert lg.schema_version == SCHEMA_VERSION >= 2
        assert lg.append([make_event(id="new", input_tokens=50, cache_write_tokens=20)]) == [True]
        got = {e.id: e.cache_write_tokens for e in lg.events(None, None, None, 10)}
        assert got == {"old": 0, "new": 20}
    finally:
        lg.close()


def test_postgres_column(pg):
    lg = PostgresLedger.open(pg)
    try:
        assert lg.append([make_event(id="w", input_tokens=50, cache_write_tokens=20), make_event(id="z")]) == [True, True]
        got = {e.id: e.cache_write_tokens for e in lg.events(None, None, None, 10)}
        assert got == {"w": 20, "z": 0}
    finally:
        lg.close()


def _price(pricing: dict):
    cfg = parse_config({"deployments": [{"name": "d", "base_url": "http://127.0.0.1:1/v1", "model": "m",
                                         "pricing": pricing}]}, "<test>")
    return resolve_price(cfg.deployments[0])


def test_cache_write_is_priced_of_its_own():
    p = _price({"price_map": "claude-sonnet-4-6"})  # LiteLLM: cache_creation_input_token_cost 3.75e-06
    assert p.cost_usd(36, 6, 4, 0, 20) == (10 * Decimal(3) + 6 * Decimal("0.3") + 20 * Decimal("3.75")
                                           + 4 * Decimal(15)) / 10**6
    assert p.cost_usd(36, 6, 4, 0) == (30 * Decimal(3) + 6 * Decimal("0.3") + 4 * Decimal(15)) / 10**6
    listed = _price({"list": {"input": 1, "output": 2, "cache_write": 5}})
    assert listed.cost_usd(10, 0, 0, 0, 4) == (6 * Decimal(1) + 4 * Decimal(5)) / 10**6
    unlisted = _price({"list": {"input": 1, "output": 2}})  # no cache-write price: charged as input
    assert unlisted.cost_usd(10, 0, 0, 0, 4) == Decimal(10) / 10**6


def test_cache_write_bounded_by_the_uncached_prompt():
    def bill(write):
        return bound_usage({"prompt_tokens": 30, "completion_tokens": 2,
                            "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": write}},
                           own_input_tokens=30, max_output_tokens=10, own_output_tokens=lambda: 2)
    ok = bill(20)
    assert (ok.counts, ok.cache_write, ok.anomalies) == ((30, 10, 2, 0), 20, ())
    lie = bill(25)
    assert lie.cache_write == 20 and lie.anomalies == ("cache_write_tokens 25 > uncached prompt_tokens 20",)
    assert lie.raw["cache_write_tokens"] == 25
    junk = bill(-3)
    assert junk.cache_write == 0 and "cache_write_tokens invalid" in junk.anomalies[0]
    assert bill(0).cache_write == 0 and bill(0).anomalies == ()

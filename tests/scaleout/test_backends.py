"""open_metering: a drop-in for Metering.open that picks the backends from its arguments or
the environment, with clear errors for bad or unreachable URLs."""

from __future__ import annotations

import socket

import pytest

from tokenomy.errors import TokenomyError
from tokenomy.metering.backends import describe, open_metering
from tokenomy.metering.sqlite_ledger import SqliteLedger

from .conftest import migrations_head


@pytest.fixture
def no_env(monkeypatch):
    for name in ("TOKENOMY_LEDGER_URL", "TOKENOMY_REDIS_URL", "TOKENOMY_REDIS_FAIL_MODE", "TOKENOMY_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_urls_it_is_metering_open(no_env, tmp_path):
    m = open_metering(tmp_path, admin_key="a", synchronous="NORMAL")
    try:
        assert isinstance(m.ledger, SqliteLedger) and (tmp_path / "ledger.db").exists()
        assert describe(m) == {"ledger": f"sqlite ({tmp_path / 'ledger.db'})", "counters": "in-process"}
        assert m.authenticate("a").is_admin
    finally:
        m.shutdown()


def test_urls_come_from_the_environment(no_env, pg, redis_url, redis_prefix, tmp_path):
    no_env.setenv("TOKENOMY_LEDGER_URL", pg)
    no_env.setenv("TOKENOMY_REDIS_URL", redis_url)
    no_env.setenv("TOKENOMY_REDIS_PREFIX", redis_prefix)
    no_env.setenv("TOKENOMY_REDIS_FAIL_MODE", "open")
    m = open_metering(tmp_path, admin_key="a")
    try:
        info = describe(m)
        assert info["ledger"].startswith("postgresql (postgresql://") and "schema=" in info["ledger"]
        assert info["counters"] == f"redis ({redis_url}, fail_mode=open)"
        assert m.ledger.schema_version == migrations_head()
        assert not (tmp_path / "ledger.db").exists()
        assert not (tmp_path / "outbox.db").exists()  # the outbox file appears only in an outage
        kid, key = m.create_key("acme", budget_usd="1")
        assert m.authenticate(key).key_id == kid
    finally:
        m.shutdown()


def test_sqlite_ledger_with_shared_redis_counters(no_env, redis_url, redis_prefix, tmp_path):
    m = open_metering(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix, admin_key="a")
    try:
        assert isinstance(m.ledger, SqliteLedger) and describe(m)["counters"].startswith("redis")
        _, key = m.create_key("acme", budget_usd="1")
        p = m.authenticate(key)
        from decimal import Decimal

        m.release(m.reserve(p, Decimal("1")))
    finally:
        m.shutdown()


def test_unreachable_or_bad_ledger_url_is_a_clear_error(no_env, tmp_path):
    port = _free_port()
    with pytest.raises(TokenomyError, match=f"cannot open the PostgreSQL ledger at postgresql://u:\\*\\*\\*@127.0.0.1:{port}/x"):
        open_metering(tmp_path, ledger_url=f"postgresql://u:secret@127.0.0.1:{port}/x")
    with pytest.raises(TokenomyError, match="must start with postgresql://"):
        open_metering(tmp_path, ledger_url="mysql://127.0.0.1/x")
    with pytest.raises(TokenomyError, match="invalid schema name"):
        open_metering(tmp_path, ledger_url="postgresql://127.0.0.1/x?schema=Robert');DROP")
    with pytest.raises(TokenomyError, match="counters.fail_mode: must be .closed. or .open., not .sometimes."):
        open_metering(tmp_path, redis_url="redis://127.0.0.1:1/0", fail_mode="sometimes")


def test_counters_settings_config_first_then_environment_then_defaults(no_env):
    from tokenomy.errors import ConfigError
    from tokenomy.metering.backends import resolve_counters

    assert resolve_counters() == (None, "closed", "tokenomy:")
    no_env.setenv("TOKENOMY_REDIS_URL", "redis://env:6379/0")
    no_env.setenv("TOKENOMY_REDIS_FAIL_MODE", "open")
    no_env.setenv("TOKENOMY_REDIS_PREFIX", "envp:")
    assert resolve_counters() == ("redis://env:6379/0", "open", "envp:")
    assert resolve_counters("redis://cfg:1/0", "closed", "cfgp:") == ("redis://cfg:1/0", "closed", "cfgp:")
    with pytest.raises(ConfigError, match=r"^counters\.fail_mode: must be 'closed' or 'open', not 'shut'$"):
        resolve_counters(fail_mode="shut")
    no_env.setenv("TOKENOMY_REDIS_FAIL_MODE", "Open")
    with pytest.raises(ConfigError, match=r"^TOKENOMY_REDIS_FAIL_MODE: must be 'closed' or 'open', not 'Open'$"):
        open_metering("/nonexistent-never-created", redis_url="redis://127.0.0.1:1/0")


def test_counters_section_of_the_yaml_config():
    from tokenomy.config import default_config, parse_config
    from tokenomy.errors import ConfigError

    base = default_config().model_dump(exclude_none=True)
    cfg = parse_config({**base, "counters": {"url": "redis://h:6379/1", "fail_mode": "open", "prefix": "a:"}})
    assert (cfg.counters.url, cfg.counters.fail_mode, cfg.counters.prefix) == ("redis://h:6379/1", "open", "a:")
    assert default_config().counters.fail_mode is None  # unset: the environment decides
    with pytest.raises(ConfigError, match=r"counters\.fail_mode: Input should be 'closed' or 'open'"):
        parse_config({**base, "counters": {"fail_mode": "sometimes"}})
    with pytest.raises(ConfigError, match=r"counters\.url: .*must start with redis://"):
        parse_config({**base, "counters": {"url": "http://h:6379"}})

"""Choose metering backends: SQLite + in-process counters (default), or PostgreSQL (with a
local durable outbox) and/or Redis counters, for several gateway replicas.

    from tokenomy.metering.backends import open_metering
    m = open_metering(data_dir)            # same as Metering.open(data_dir) with no URLs set
    m = open_metering(data_dir, ledger_url="postgresql://postgres@127.0.0.1:5432/test",
                      redis_url="redis://127.0.0.1:6379/0")

Environment (used when the arguments are not given; the gateway passes its config's
`counters:` section - url, fail_mode, prefix - and `tokenomy up --redis-fail-mode`, which win):
  TOKENOMY_LEDGER_URL       postgresql://user[:pw]@host:port/db[?schema=name]
  TOKENOMY_REDIS_URL        redis://host:port/db
  TOKENOMY_REDIS_FAIL_MODE  closed (default: 503 while Redis is down) | open (per-replica limits)
  TOKENOMY_REDIS_PREFIX     key prefix (default "tokenomy:"), to share one Redis between installs
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenomy.errors import ConfigError
from tokenomy.metering.service import Metering
from tokenomy.metering.store import Scope

ENV_LEDGER_URL = "TOKENOMY_LEDGER_URL"
ENV_REDIS_URL = "TOKENOMY_REDIS_URL"
ENV_REDIS_FAIL_MODE = "TOKENOMY_REDIS_FAIL_MODE"
ENV_REDIS_PREFIX = "TOKENOMY_REDIS_PREFIX"
OUTBOX_FILE = "outbox.db"
FAIL_MODES = ("closed", "open")
DEFAULT_REDIS_PREFIX = "tokenomy:"


def resolve_counters(url: str | None = None, fail_mode: str | None = None,
                     prefix: str | None = None) -> tuple[str | None, str, str]:
    """(redis url or None, fail mode, key prefix): each given value (config, CLI) first, then
    its environment variable, then the default. A bad fail mode is a ConfigError naming where
    it came from."""
    url = url or os.environ.get(ENV_REDIS_URL) or None
    if fail_mode is not None:
        source = "counters.fail_mode"
    else:
        fail_mode, source = os.environ.get(ENV_REDIS_FAIL_MODE) or "closed", ENV_REDIS_FAIL_MODE
    if fail_mode not in FAIL_MODES:
        raise ConfigError(f"{source}: must be 'closed' or 'open', not '{fail_mode}'")
    return url, fail_mode, prefix or os.environ.get(ENV_REDIS_PREFIX) or DEFAULT_REDIS_PREFIX


def spend_reader(ledger):
    """Committed spend of a budget scope, read from the ledger (for lazy counter loads)."""
    from tokenomy.metering.redis_counters import scope_bounds

    def read(scope: Scope) -> int:
        since, until = scope_bounds(scope)
        return ledger.spend_pusd(kind=scope[0], subject=scope[1], since=since, until=until)

    return read


def open_ledger(data_dir: Path | str, *, ledger_url: str | None = None, synchronous: str = "FULL"):
    """The Ledger for ledger_url (or TOKENOMY_LEDGER_URL): PostgreSQL behind a local outbox in
    data_dir, else the SQLite ledger in data_dir."""
    ledger_url = ledger_url or os.environ.get(ENV_LEDGER_URL) or None
    if not ledger_url:
        from tokenomy.metering.sqlite_ledger import SqliteLedger

        return SqliteLedger.open(Path(data_dir), synchronous=synchronous)
    from tokenomy.metering.outbox import OutboxLedger
    from tokenomy.metering.postgres_ledger import PostgresLedger, redact

    try:  # the outbox (and billing.db) live here: owner-only, like the SQLite ledger's directory
        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        from tokenomy.errors import TokenomyError

        raise TokenomyError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    pg = PostgresLedger.open(ledger_url)
    try:
        return OutboxLedger(pg, Path(data_dir) / OUTBOX_FILE, describe=f"the PostgreSQL ledger at {redact(ledger_url)}")
    except BaseException:
        pg.close()
        raise


def open_metering(
    data_dir: Path | str,
    *,
    ledger_url: str | None = None,
    redis_url: str | None = None,
    admin_key: str | None = None,
    ensure_admin: bool = True,
    synchronous: str = "FULL",
    fail_mode: str | None = None,
    redis_prefix: str | None = None,
    redis_server_time: bool = True,
    **kwargs,
) -> Metering:
    """Drop-in for `Metering.open` (same arguments) that also takes the two URLs (default:
    the environment). With neither set it is exactly `Metering.open`."""
    ledger_url = ledger_url or os.environ.get(ENV_LEDGER_URL) or None
    redis_url, fail_mode, redis_prefix = resolve_counters(redis_url, fail_mode, redis_prefix)
    if not ledger_url and not redis_url:
        return Metering.open(data_dir, admin_key=admin_key, ensure_admin=ensure_admin, synchronous=synchronous,
                             **kwargs)
    data_dir = Path(data_dir)
    ledger = open_ledger(data_dir, ledger_url=ledger_url, synchronous=synchronous)
    counters = None
    try:
        if redis_url:
            from tokenomy.metering.redis_counters import RedisCounterStore

            counters = RedisCounterStore(
                redis_url, reader=spend_reader(ledger), prefix=redis_prefix, fail_mode=fail_mode,
                server_time=redis_server_time, **({"clock": kwargs["clock"]} if kwargs.get("clock") else {}))
        m = Metering(ledger, counters, **kwargs)
        m.data_dir = data_dir
        m._init_admin(admin_key, ensure_admin)
    except BaseException:
        if counters is not None:
            counters.close()
        ledger.close()
        raise
    return m


def describe(m: Metering) -> dict:
    """Which backends a Metering runs on (for banners and health): {"ledger", "counters"}."""
    from tokenomy.metering.postgres_ledger import redact

    ledger = m.ledger
    url = getattr(ledger, "url", None)
    counters = m._counters
    return {
        "ledger": f"postgresql ({redact(url)})" if url else f"sqlite ({getattr(ledger, 'path', 'memory')})",
        "counters": (f"redis ({redact(counters.url)}, fail_mode={counters.fail_mode})"
                     if hasattr(counters, "fail_mode") else "in-process"),
    }


__all__ = ["ENV_LEDGER_URL", "ENV_REDIS_FAIL_MODE", "ENV_REDIS_PREFIX", "ENV_REDIS_URL", "FAIL_MODES", "describe",
           "open_ledger", "open_metering", "resolve_counters", "spend_reader"]


def ledger_present(data_dir: Path | str) -> bool:
    """True when a ledger can be read: a configured PostgreSQL URL, or a SQLite file in data_dir.

    Read-only commands use it to refuse creating an empty SQLite ledger by accident."""
    from tokenomy.metering.paths import ledger_path

    return bool(os.environ.get(ENV_LEDGER_URL)) or ledger_path(Path(data_dir)).exists()

"""Start-up identities: tenants and keys from the config (keys stored hashed), demo tenant."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tokenomy.config import GatewayConfig
from tokenomy.errors import ConfigError

DEMO_TENANT = "demo"


@dataclass
class Bootstrap:
    demo_key: str | None = None  # plaintext, only when created by this start
    imported_keys: int = 0


CONFIG_ACTOR = "config"  # the audit trail's actor for what the config file creates


def apply_identities(config: GatewayConfig, metering: Any, *, create_demo: bool) -> Bootstrap:
    out = Bootstrap()
    existing = {t["name"] for t in metering.list_tenants()}
    for t in config.tenants:
        if t.name not in existing:
            metering.create_tenant(t.name, budget_usd=t.budget_usd, budget_period=t.budget_period,
                                   soft_budget_usd=t.soft_budget_usd, exist_ok=True, actor=CONFIG_ACTOR)
            existing.add(t.name)
        if t.user_caps:
            have = {c["user"] for c in metering.user_caps(t.name)}
            for user, cap in t.user_caps.items():
                if user not in have:  # the ledger's (set over the API) wins over the file's
                    metering.set_user_cap(t.name, user, budget_usd=None if cap.budget_usd is None else repr(cap.budget_usd),
                                          budget_period=cap.budget_period, rpm=cap.rpm, tpm=cap.tpm, actor=CONFIG_ACTOR)
    for i, k in enumerate(config.keys):
        secret = k.secret if k.secret is not None else os.environ.get(k.secret_env or "")
        if not secret:
            raise ConfigError(f"invalid config: keys[{i}].secret_env: environment variable "
                              f"'{k.secret_env}' is not set")
        out.imported_keys += _import_key(metering, i, k, secret)
    if create_demo and DEMO_TENANT not in existing:
        metering.create_tenant(DEMO_TENANT, exist_ok=True)
        _, out.demo_key = metering.create_key(DEMO_TENANT, name="demo")
    return out


def _import_key(metering: Any, i: int, k, secret: str) -> int:
    """Store a configured key by its hash (idempotent: an existing key id is left alone)."""
    from tokenomy.metering import keyfmt
    from tokenomy.metering.money import to_pusd
    from tokenomy.metering.types import Budget, KeyRecord

    parsed = keyfmt.parse_key(secret)
    if parsed is None:
        raise ConfigError(f"invalid config: keys[{i}].secret: a key must look like tk-<key_id>-<secret> "
                          "(make one with `tokenomy keys create`, or any tk-<id>-<random> string)")
    key_id, raw = parsed
    ledger = metering.ledger
    if ledger.get_key(key_id) is not None:
        return 0
    if ledger.get_tenant(k.tenant) is None:
        metering.create_tenant(k.tenant, exist_ok=True)
    from decimal import Decimal

    def pusd(x):
        return None if x is None else to_pusd(Decimal(repr(float(x))))

    import time

    ledger.insert_key(KeyRecord(key_id=key_id, tenant=k.tenant, name=k.name, secret_hash=keyfmt.hash_secret(key_id, raw),
                                created=time.time(), revoked_at=None,
                                budget=Budget(pusd(k.budget_usd), k.budget_period, pusd(k.soft_budget_usd)),
                                rpm=k.rpm, tpm=k.tpm))
    return 1

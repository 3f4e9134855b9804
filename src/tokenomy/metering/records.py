"""Validation of user-supplied tenant/key settings and their JSON-ready views (money as str)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

from tokenomy.metering.errors import InvalidInput
from tokenomy.metering.money import from_pusd, money_str, to_decimal, to_pusd
from tokenomy.metering.periods import check_period
from tokenomy.metering.types import DEFAULT_USER, Budget, KeyRecord, TenantRecord, UsageEvent, UserCap

BUDGET_FIELDS = ("budget_usd", "budget_period", "soft_budget_usd")
MAX_USER_CHARS = 256  # the gateway's limit on a request's `user` (gateway/validate.py)

MAX_STORED_INT = 2**63 - 1  # SQLite INTEGER / PostgreSQL BIGINT
_MAX_USD = from_pusd(MAX_STORED_INT)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")


def iso_utc(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def usd_text(pusd: int) -> str:
    return "$" + money_str(from_pusd(pusd))


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidInput(f"invalid {kind} name '{name}': use 1-128 letters, digits and _.@:+- (starting with a letter or digit)")
    return name


def check_money(field: str, value) -> int | None:
    if value is None:
        return None
    try:
        amount = to_decimal(value)
    except Exception:
        raise InvalidInput(f"{field} must be a number of USD, not '{value}'") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidInput(f"{field} must be a non-negative number of USD, not '{value}'")
    if amount > _MAX_USD:  # checked before scaling: the ledgers store pico-USD in a signed 64-bit integer
        raise InvalidInput(f"{field} must be at most {money_str(_MAX_USD)} USD, not '{value}'")
    return to_pusd(amount)


def check_limit(field: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_STORED_INT:
        raise InvalidInput(f"{field} must be a positive integer (at most {MAX_STORED_INT}), not '{value}'")
    return value


def parse_budget(budget_usd, budget_period: str, soft_budget_usd) -> Budget:
    return Budget(
        budget_pusd=check_money("budget_usd", budget_usd),
        period=check_period(budget_period or "total"),
        soft_budget_pusd=check_money("soft_budget_usd", soft_budget_usd),
    )


def merge_budget(old: Budget, fields: dict) -> Budget:
    """old with the budget fields given in `fields` changed (None clears an amount)."""
    hard = check_money("budget_usd", fields["budget_usd"]) if "budget_usd" in fields else old.budget_pusd
    soft = check_money("soft_budget_usd", fields["soft_budget_usd"]) if "soft_budget_usd" in fields else old.soft_budget_pusd
    period = check_period(fields.get("budget_period") or "total") if "budget_period" in fields else old.period
    return Budget(hard, period, soft)


def check_user(user) -> str:
    """An end user as the requests name it (their `user` field), or "*" (the tenant's default)."""
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_CHARS or not user.isprintable():
        raise InvalidInput(f"user must be 1 to {MAX_USER_CHARS} printable characters (or '{DEFAULT_USER}' for "
                           "the tenant's default)")
    return user


def budget_dict(b: Budget) -> dict:
    return {
        "budget_usd": None if b.budget_pusd is None else money_str(from_pusd(b.budget_pusd)),
        "budget_period": b.period,
        "soft_budget_usd": None if b.soft_budget_pusd is None else money_str(from_pusd(b.soft_budget_pusd)),
    }


def tenant_dict(t: TenantRecord) -> dict:
    return {"name": t.name, "created": iso_utc(t.created), **budget_dict(t.budget)}


def key_dict(k: KeyRecord) -> dict:
    return {
        "key_id": k.key_id, "tenant": k.tenant, "name": k.name, "created": iso_utc(k.created),
        "revoked_at": iso_utc(k.revoked_at), "active": k.revoked_at is None,
        **budget_dict(k.budget), "rpm": k.rpm, "tpm": k.tpm,
    }


def user_cap_dict(c: UserCap) -> dict:
    b = budget_dict(c.budget)
    return {"tenant": c.tenant, "user": c.user, "default": c.user == DEFAULT_USER, "budget_usd": b["budget_usd"],
            "budget_period": b["budget_period"], "rpm": c.rpm, "tpm": c.tpm}


def change_dict(c) -> dict:
    return {"id": c.id, "ts": c.ts, "time": iso_utc(c.ts), "actor": c.actor, "action": c.action, "target": c.target,
            "before": c.before, "after": c.after}


_TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "cache_write_tokens")


def check_event(event: UsageEvent) -> None:
    """Reject a malformed event at the caller, before it can reach a shared transaction."""
    if not isinstance(event, UsageEvent):
        raise InvalidInput(f"expected a UsageEvent, got {type(event).__name__}")
    if not event.id or not isinstance(event.id, str):
        raise InvalidInput("usage event needs a non-empty string id")
    cost, price = event.cost_usd, event.price_usd
    # Hot path (every request): finite non-negative Decimals need no conversion to be valid.
    if not (type(cost) is Decimal and type(price) is Decimal and cost.is_finite() and price.is_finite()
            and cost >= 0 and price >= 0):
        for field in ("cost_usd", "price_usd"):
            check_money(field, getattr(event, field))
    for field in _TOKEN_FIELDS:
        value = getattr(event, field)
        if type(value) is not int or value < 0:  # type(): excludes bool (and int subclasses)
            raise InvalidInput(f"usage event {event.id}: {field} must be a non-negative integer, not {value!r}")

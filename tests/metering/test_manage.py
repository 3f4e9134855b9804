"""Key and tenant management in Metering: changes apply at once on the instance that made them and
within cache_ttl_s on another instance on the same ledger (another replica, or the CLI beside a
running gateway); every change is one audit row, at the injected clock's time."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tokenomy.metering import AuthError, BudgetExceeded, Metering, RateLimited

from .conftest import FakeClock


@pytest.fixture
def pair(tmp_path, wall):
    """Two Metering instances on one SQLite ledger, each with its own fake monotonic clock."""
    mono_a, mono_b = FakeClock(100.0), FakeClock(100.0)
    a = Metering.open(tmp_path, admin_key="adm", clock=wall, monotonic=mono_a, synchronous="NORMAL")
    b = Metering.open(tmp_path, admin_key="adm", clock=wall, monotonic=mono_b, synchronous="NORMAL")
    yield a, b, mono_b
    a.shutdown()
    b.shutdown()


def test_revoke_reaches_the_other_instance_within_the_cache_ttl(pair):
    a, b, mono_b = pair
    key_id, key = a.create_key("acme")
    assert b.authenticate(key).key_id == key_id  # b caches the key (1 s)
    a.revoke_key(key_id, actor="admin")
    with pytest.raises(AuthError, match="revoked"):
        a.authenticate(key)  # here: at once
    assert b.authenticate(key).key_id == key_id  # there: still cached ...
    mono_b.advance(1.01)
    with pytest.raises(AuthError, match="revoked"):
        b.authenticate(key)  # ... for at most cache_ttl_s


def test_rotate_and_limits_reach_the_other_instance(pair):
    a, b, mono_b = pair
    key_id, old = a.create_key("acme")
    b.authenticate(old)
    _, new = a.rotate_key(key_id)
    a.update_key(key_id, rpm=1)
    a.set_user_cap("acme", "*", budget_usd="0.5")
    mono_b.advance(1.01)
    with pytest.raises(AuthError, match="invalid API key"):
        b.authenticate(old)
    p = b.authenticate(new)
    b.check_rate(p, 1)
    with pytest.raises(RateLimited, match=f"key {key_id} \\(1 requests/min\\)"):
        b.check_rate(p, 1)
    with pytest.raises(BudgetExceeded, match="user 'u1' of tenant 'acme'"):
        b.reserve(replace(p, user="u1"), Decimal("0.6"))


def test_every_change_is_one_audit_row(pair, wall):
    a, _, _ = pair
    key_id, _ = a.create_key("acme", actor="admin")  # the tenant too
    wall.advance(5)
    a.update_key(key_id, budget_usd="3", actor="admin")
    a.update_key(key_id, budget_usd="3", actor="admin")  # no change: no row
    a.update_tenant("acme", budget_usd="9", budget_period="daily", actor="admin")
    a.revoke_key(key_id, actor="admin")
    a.revoke_key(key_id, actor="admin")  # already revoked: no row
    rows = a.changes()
    assert [(r["action"], r["ts"] - rows[-1]["ts"]) for r in rows] == [
        ("key.revoke", 5), ("tenant.update", 5), ("key.update", 5), ("key.create", 0), ("tenant.create", 0)]
    assert rows[2]["before"]["budget_usd"] is None and rows[2]["after"]["budget_usd"] == "3"
    assert rows[1]["after"]["budget_period"] == "daily" and rows[0]["after"]["active"] is False
    with pytest.raises(Exception, match="unknown key field"):
        a.update_key(key_id, secret_hash="x")

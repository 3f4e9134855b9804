"""Plan files: the example loads; bad fields name their path; ledger-warmed cap counters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenomy.billing.caps import check_caps
from tokenomy.billing.plans import load_plans, parse_plans
from tokenomy.errors import ConfigError

from .helpers import utc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plans.yaml"


def test_example_shows_every_plan_kind():
    b = load_plans(EXAMPLE)
    plans = b.plans.values()
    assert {c.at_cap for p in plans for c in p.caps} == {"block", "downgrade", "overage"}
    assert {pr.scheme for p in plans for pr in (p.usage or {}).values()} == {"unit", "graduated", "volume", "package"}
    assert any(p.cost_plus for p in plans) and any(p.free for p in plans)
    assert any(p.minimum_commitment_usd for p in plans)
    assert any(len(t.subscriptions) > 1 for t in b.tenants.values())
    assert any(len(t.credits) > 1 and any(c.expires_at for c in t.credits) for t in b.tenants.values())


@pytest.mark.parametrize("data, message", [
    ({"plans": [{"name": "a", "subscription_usd": 1, "caps": [{"window": "5h", "limit": 1, "at_cap": "downgrade"}]}]},
     "plans.a.caps[0]: at_cap: downgrade needs downgrade_group"),
    ({"plans": [{"name": "a", "usage": {"input": {"scheme": "graduated", "tiers": [{"up_to": 5, "usd": 1},
                                                                                  {"up_to": 3, "usd": 1}]}}}]},
     "tier up_to values must increase"),
    ({"plans": [{"name": "a", "subscription_usd": 1, "caps": [{"window": "5 hours", "limit": 1}]}]},
     "window '5 hours' must look like 5h"),
    ({"plans": [{"name": "a", "subscription_usd": 1}], "tenants": {"t": {"subscriptions": [{"plan": "b", "start": "2026-01-01"}]}}},
     "unknown plan 'b'"),
    ({"plans": [{"name": "a", "subscription_usd": -1}]}, "plans.a.subscription_usd: Input should be greater than or equal to 0"),
    ({"plans": [{"name": "a"}]}, "a plan needs at least one of"),
    ({"plan": []}, "expected a mapping with a top-level 'plans:'"),
])
def test_bad_plan_files_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_plans(data, origin="p.yaml")


def test_counter_warmed_from_the_ledger_blocks_after_restart(ledger):
    b = parse_plans({"plans": [{"name": "f", "subscription_usd": 5,
                                "caps": [{"window": "5h", "limit": 2, "unit": "requests", "at_cap": "block"}]}]})
    t = utc("2026-11-05T10:00:00")
    ledger.add("acme", t - 3600, input_tokens=10)
    ledger.add("acme", t - 60, input_tokens=10)
    ledger.add("acme", t - 6 * 3600, input_tokens=10)  # outside the window
    counter = ledger.source().rolling_counter("acme", t, 5 * 3600)
    d = check_caps(b.plans["f"], counter.window(t))
    assert d.action == "block" and d.reset_at == (t - 3600) // 60 * 60 + 60 + 5 * 3600


def test_enforcer_per_tenant_plan_and_warm_start(ledger):
    from tokenomy.billing.enforcer import CapEnforcer

    b = parse_plans({"plans": [{"name": "f", "subscription_usd": 5,
                                "caps": [{"window": "5h", "limit": 2, "unit": "requests", "at_cap": "block"}]}],
                     "tenants": {"acme": {"subscriptions": [{"plan": "f", "start": "2026-01-01"}]}}})
    t = utc("2026-11-05T10:00:00")
    ledger.add("acme", t - 600, input_tokens=10)
    enf = CapEnforcer(b, ledger.source())
    assert enf.check("acme", t).action == "allow"  # one request in the window (from the ledger)
    enf.record("acme", t, 10)
    assert enf.check("acme", t + 1).action == "block"
    assert enf.check("walkin", t + 1).action == "allow"  # on the list plan: no caps

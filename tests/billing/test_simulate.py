"""Simulator math on small hand-checkable populations; numpy tiers agree with the exact rater."""

from __future__ import annotations

import numpy as np
import pytest

from tokenomy.billing import simulate as sim
from tokenomy.billing.plans import CategoryPrice, parse_plans
from tokenomy.billing.tiers import charge

BOOK = parse_plans({
    "model_groups": {"big": {"list": {"input": 2, "output": 8}}, "small": {"list": {"input": 0.2, "output": 0.8}}},
    "plans": {
        "flat": {"model_group": "big", "subscription_usd": 10,
                 "caps": [{"window": "30d", "limit": 2_000_000, "unit": "tokens", "at_cap": "block"}]},
        "down": {"model_group": "big", "subscription_usd": 10,
                 "caps": [{"window": "30d", "limit": 2_000_000, "unit": "tokens", "at_cap": "downgrade",
                           "downgrade_group": "small"}]},
    },
})
A = sim.Assumptions(output_share=0.5, cached_share=0.0, target_margin=0.2)


def pop(*tokens: float) -> sim.Population:
    t = np.array(tokens, dtype=float)
    return sim.Population(np.stack([t / 2, 0 * t, t / 2], axis=1), t / 1000)


def test_flat_plan_block_and_downgrade_by_hand():
    p = pop(1_000_000, 4_000_000)  # 30 d window sees ~98.6% of a month: the heavy user is capped
    costs = sim.group_costs(BOOK)
    frac = 30 / sim.DAYS_PER_MONTH
    o = sim.evaluate(BOOK.plans["flat"], p, costs["big"], costs, A)
    kept = 2_000_000 / (4_000_000 * frac)
    # blended big cost $5/Mtok (half input at $2, half output at $8)
    assert o.cost == pytest.approx([5.0, 4 * kept * 5.0])
    assert o.revenue.tolist() == [10.0, 10.0]
    d = sim.evaluate(BOOK.plans["down"], p, costs["big"], costs, A)
    assert d.cost[1] == pytest.approx(4 * kept * 5.0 + 4 * (1 - kept) * 0.5)  # the rest at $0.5/Mtok


def test_recommended_cap_is_the_largest_limit_meeting_the_target():
    p = sim.lognormal_population(3000, 14.0, 1.5, A, np.random.default_rng(7))
    costs = sim.group_costs(BOOK)
    plan = BOOK.plans["flat"]
    rec = sim.recommend_cap(plan, p, costs["big"], costs, A, None)
    limit = rec["limit"]
    assert limit is not None and rec["margin_share"] >= 0.2

    def share(lim: int) -> float:
        cap = plan.caps[0].model_copy(update={"limit": lim})
        o = sim.evaluate(plan.model_copy(update={"caps": [cap]}), p, costs["big"], costs, A)
        return 1 - o.cost.sum() / o.revenue.sum()

    assert share(limit) >= 0.2 > share(int(limit * 1.01) + 1)


@pytest.mark.parametrize("price", [
    CategoryPrice(scheme="graduated", tiers=[{"up_to": 1000, "usd": 3}, {"up_to": 5000, "usd": 2}, {"usd": 1}]),
    CategoryPrice(scheme="volume", tiers=[{"up_to": 1000, "usd": 3}, {"up_to": 5000, "usd": 2}, {"usd": 1}]),
    CategoryPrice(scheme="package", per=100, usd="0.7"),
    CategoryPrice(usd="1.5"),
])
def test_numpy_charges_match_the_exact_rater(price):
    q = np.array([0, 1, 999, 1000, 1001, 4999, 5000, 5001, 123456])
    got = sim.charge_np(price, q.astype(float), "input")
    want = [float(charge(price, int(x), "input")) for x in q]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_route_mix_validation():
    assert sim.parse_route_mix(["small=0.3,big=0.2"]) == {"small": 0.3, "big": 0.2}
    with pytest.raises(Exception, match="add up to 1.2"):
        sim.parse_route_mix(["small=0.7", "big=0.5"])
    with pytest.raises(Exception, match="GROUP=SHARE"):
        sim.parse_route_mix(["small"])

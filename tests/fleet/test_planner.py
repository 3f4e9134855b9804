import itertools
import math

import numpy as np
import pytest

from tokenomy.errors import TokenomyError
from tokenomy.fleet.capacity import Infeasible, OperatingPoint, operating_point
from tokenomy.fleet.costing import energy_usd_per_hour, rental_usd_per_hour
from tokenomy.fleet.planner import (
    Bucket, Candidate, PlanRequest, make_buckets, plan_fleet, plan_growth, solve_milp,
)
from tokenomy.fleet.workload import scale_rate, window

MELANGE = ("l4", "a10g", "a100-80g", "h100")


@pytest.fixture(scope="module")
def small_conv(conv):
    return scale_rate(window(conv, 0, 240), 4.0)  # ~1,300 requests in 60 s


def _req(catalog, **kw):
    base = dict(model=catalog.model("llama-2-7b"), accelerators=tuple(catalog.accelerator(a) for a in MELANGE),
                slo_tpot_ms=40.0, slo_ttft_ms=2000.0, counts=(1, 2))
    base.update(kw)
    return PlanRequest(**base)


def test_operating_point_grows_with_looser_tpot_and_respects_batch1_floor(h100_sm):
    kw = dict(prompt_tokens=1000, output_tokens=200, slo_ttft_ms=2000.0)
    tight = operating_point(h100_sm, slo_tpot_ms=25.0, **kw)
    loose = operating_point(h100_sm, slo_tpot_ms=120.0, **kw)
    assert isinstance(tight, OperatingPoint) and isinstance(loose, OperatingPoint)
    assert loose.rate_per_s > tight.rate_per_s and loose.batch >= tight.batch
    assert tight.step_seconds <= 0.9 * 0.025
    floor_ms = h100_sm.step_seconds(decode_seqs=1, kv_tokens=1100) * 1000
    below = operating_point(h100_sm, slo_tpot_ms=floor_ms * 0.99, **kw)
    assert isinstance(below, Infeasible) and below.reason == "tpot"
    assert below.needed_ms == pytest.approx(floor_ms)
    # The rate is B / (output x mean step time).
    assert loose.rate_per_s == pytest.approx(loose.batch / (200 * loose.step_seconds))


def test_buckets_partition_the_trace(small_conv):
    buckets, idx = make_buckets(small_conv)
    assert (idx >= 0).all()
    assert sum(b.requests for b in buckets) == len(small_conv)
    total_rate = sum(b.rate_per_s for b in buckets)
    assert total_rate == pytest.approx(len(small_conv) / small_conv.duration_seconds)
    for i, b in enumerate(buckets):
        assert b.prompt_tokens == pytest.approx(small_conv.prompt_tokens[idx == i].mean())


def test_milp_matches_brute_force_on_a_tiny_instance(catalog):
    # Two request sizes, two replica types with hand-set capacities and prices.
    small, big = catalog.accelerator("l4"), catalog.accelerator("h100")
    buckets = [Bucket(100, 50, 9.0, 100), Bucket(2000, 400, 2.0, 100)]
    cands = [
        Candidate(small, 1, "bf16", None, 1.0, [OperatingPoint(8, 4.0, 0.02, 70, "tpot"),
                                                 Infeasible("tpot", 90.0)], 70.0),
        Candidate(big, 1, "bf16", None, 3.0, [OperatingPoint(64, 20.0, 0.02, 700, "tpot"),
                                               OperatingPoint(32, 1.5, 0.03, 700, "kv")], 700.0),
    ]
    req = PlanRequest(model=catalog.model("llama-2-7b"), accelerators=(small, big), slo_tpot_ms=40,
                      max_utilization=1.0)
    sol = solve_milp(req, buckets, cands)
    # Brute force: bucket 1 needs ceil(2/1.5)=2 big; leftover big capacity serves part of bucket 0.
    best = math.inf
    for ns, nb in itertools.product(range(5), range(5)):
        big_free = nb - 2.0 / 1.5
        if big_free < -1e-9:
            continue
        need_small = max(0.0, 9.0 - big_free * 20.0) / 4.0
        if ns + 1e-9 >= need_small:
            best = min(best, ns * 1.0 + nb * 3.0)
    assert sol.usd_per_hour == pytest.approx(best)
    assert sol.usd_per_hour == pytest.approx(6.0)  # 2 big: 2/1.5 + 9/20 = 1.78 <= 2
    only_small = solve_milp(req, buckets, cands, allowed=lambda c: c.accelerator.id == "l4")
    assert only_small is None  # the small type cannot serve the big requests


def test_plan_is_verified_and_beats_or_ties_best_single(catalog, small_conv):
    out = plan_fleet(small_conv, _req(catalog))
    for key in ("usd_per_hour", "usd_per_mtok", "assignments", "best_single", "saving_fraction", "slo_attainment"):
        assert key in out
    assert out["slo_attainment"] >= 0.99
    assert out["usd_per_hour"] == pytest.approx(sum(a["usd_per_hour"] for a in out["assignments"]), abs=1e-3)
    for a in out["assignments"]:
        acc = catalog.accelerator(a["accelerator"])
        assert a["replicas"] >= 1 and a["replica_usd_per_hour"] == pytest.approx(
            rental_usd_per_hour(acc) * a["count"], abs=1e-3)
    assert out["usd_per_hour"] <= out["best_single"]["usd_per_hour"] + 1e-9
    assert out["saving_fraction"] == pytest.approx(1 - out["usd_per_hour"] / out["best_single"]["usd_per_hour"], abs=1e-5)
    # $/Mtok over the tokens served: requests beyond the 4,096-token context are excluded (and reported).
    fits = (small_conv.prompt_tokens + small_conv.output_tokens) <= 4096
    assert out["excluded_overlong"]["requests"] == int((~fits).sum()) > 0
    served = int((small_conv.prompt_tokens + small_conv.output_tokens)[fits].sum())
    served_s = float(small_conv.arrived_at[fits].max() - small_conv.arrived_at[fits].min())
    tokens_per_hour = served / served_s * 3600
    assert out["usd_per_mtok"] == pytest.approx(out["usd_per_hour"] / tokens_per_hour * 1e6, rel=1e-3)
    assert out["verification"][-1]["slo_attainment"] >= 0.99 or out["slo_attainment"] >= 0.99


def test_tpot_slo_below_batch1_step_is_named(catalog, small_conv, make_sm):
    with pytest.raises(TokenomyError, match=r"TPOT SLO 2 ms is below the batch-1 step time") as exc:
        plan_fleet(small_conv, _req(catalog, slo_tpot_ms=2.0), verify=False)
    fastest = min(make_sm("llama-2-7b", a, c).step_seconds(decode_seqs=1, kv_tokens=1) for a in MELANGE for c in (1, 2))
    assert "fastest is" in str(exc.value)
    ms = float(str(exc.value).split(" at ")[-1].split(" ms")[0])
    assert ms >= fastest * 1000


def test_power_cap_too_low_is_named(catalog, small_conv):
    req = _req(catalog, sites=(catalog.site("us-va"),), power_caps_mw={"us-va": 0.0001})
    with pytest.raises(TokenomyError, match="power cap too low"):
        plan_fleet(small_conv, req, verify=False)


def test_sites_energy_price_and_power_caps(catalog, small_conv):
    tx, ca = catalog.site("us-tx"), catalog.site("us-ca")
    free = plan_fleet(small_conv, _req(catalog, sites=(ca, tx)), verify=False)
    assert {a["site"] for a in free["assignments"]} == {"us-tx"}  # same PUE, cheaper power
    for a in free["assignments"]:
        acc = catalog.accelerator(a["accelerator"])
        expected = rental_usd_per_hour(acc) * a["count"] + energy_usd_per_hour(a["it_watts_per_replica"], tx)
        assert a["replica_usd_per_hour"] == pytest.approx(expected, abs=1e-3)
    need_mw = free["site_mw"]["us-tx"]
    capped = plan_fleet(small_conv, _req(catalog, sites=(ca, tx), power_caps_mw={"us-tx": need_mw * 0.5}), verify=False)
    assert capped["site_mw"].get("us-tx", 0.0) <= need_mw * 0.5 + 1e-9  # absent: no replica fits under the cap
    assert capped["site_mw"].get("us-ca", 0) > 0
    assert capped["usd_per_hour"] > free["usd_per_hour"]


def test_growth_plan_costs_rise_and_caps_bind(catalog, small_conv):
    tx = catalog.site("us-tx")
    growth = plan_growth(small_conv, _req(catalog, sites=(tx,), power_caps_mw={"us-tx": 0.01}),
                         monthly_growth=0.5, months=12)
    months = growth["months"]
    feasible = [m for m in months if m["feasible"]]
    costs = [m["usd_per_hour"] for m in feasible]
    assert costs == sorted(costs) and costs[-1] > costs[0]
    assert months[-1]["feasible"] is False and months[-1]["binding"] == "power cap"
    assert all(m["site_mw"]["us-tx"] <= 0.01 + 1e-9 for m in feasible)
    assert growth["infeasible_from_month"] == months[-1]["month"]
    assert months[-1]["month"] == len(feasible)
    if growth["caps_first_binding"]:
        assert growth["caps_first_binding"]["us-tx"] <= months[-1]["month"]


def test_cost_vs_slo_is_monotone_and_marks_infeasible(catalog, small_conv):
    from tokenomy.fleet.planner import cost_vs_slo

    pts = cost_vs_slo(small_conv, _req(catalog, accelerators=(catalog.accelerator("a10g"), catalog.accelerator("h100"))),
                      [120, 2, 40, 20], verify=False)
    assert [p["slo_tpot_ms"] for p in pts] == [2, 20, 40, 120]
    assert pts[0]["feasible"] is False and "batch-1" in pts[0]["reason"]
    costs = [p["usd_per_hour"] for p in pts[1:]]
    assert costs == sorted(costs, reverse=True)  # looser SLO never costs more
    assert all(p["usd_per_hour"] <= p["best_single_usd_per_hour"] + 1e-9 for p in pts[1:])

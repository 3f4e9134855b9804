"""Plans over the day (issue 17): one MILP over the intervals, a reserved base with on-demand and
spot on top, every interval of every schedule judged by the real simulator."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tokenomy.fleet.autoscale import AutoscaleRequest, plan_autoscale, split_intervals
from tokenomy.fleet.metrics import slo_met
from tokenomy.fleet.milp import PlanRequest
from tokenomy.fleet.schedule_milp import TypePrices, solve_schedule
from tokenomy.fleet.simulator import SchedulerConfig, simulate
from tokenomy.fleet.workload import load_workload

NEED = {"a": [2, 2, 3, 4, 6, 6, 5, 3]}  # replicas of type a alone, per 3-hour interval


def _solve(types=None, need=None, **kw):
    base = dict(interval_hours=3.0, min_replicas=1)
    base.update(kw)
    return solve_schedule(types or [TypePrices("a", 1.0, reserved=0.6, spot=0.3)], need or NEED, **base)


# -- the MILP ----------------------------------------------------------------------------------

def test_autoscaling_follows_the_need_and_the_static_fleet_is_sized_for_the_peak():
    static, auto = _solve(static=True), _solve()
    assert static.on_demand == [{"a": 6}] * 8 and static.usd == 6 * 24 * 1.0
    assert [o["a"] for o in auto.on_demand] == NEED["a"] and auto.usd == sum(NEED["a"]) * 3.0
    assert auto.usd_per_interval == [n * 3.0 for n in NEED["a"]]
    assert 1 - auto.usd / static.usd == pytest.approx(1 - 31 / 48)  # mean/peak of this curve


def test_reserved_base_only_for_replicas_used_long_enough_to_pay_for_a_reservation():
    for c_r in (0.99, 0.6, 0.3):
        s = _solve(types=[TypePrices("a", 1.0, reserved=c_r)], use_reserved=True)
        r = s.reserved.get("a", 0)
        # the k-th replica is worth reserving iff it is needed in >= c_r/c_o of the intervals
        expect = max((k for k in range(0, 7) if sum(n >= k for n in NEED["a"]) >= c_r * 8 or k == 0), default=0)
        assert r == expect
        for h, n in enumerate(NEED["a"]):
            assert s.replicas(h, "a") == max(n, r)  # on-demand tops the reserved base up to the need
    # reservation dearer per hour than on-demand: no reserved base above the minimum hourly need
    assert _solve(types=[TypePrices("a", 1.0, reserved=0.99)], use_reserved=True).reserved == {"a": min(NEED["a"])}
    assert _solve(types=[TypePrices("a", 1.0, reserved=1.01)], use_reserved=True).reserved == {}


def test_spot_counts_at_its_availability_and_more_options_never_cost_more():
    s = _solve(use_spot=True, spot_availability=0.9)
    for h, n in enumerate(NEED["a"]):
        assert s.replicas(h, "a") - 0.1 * s.spot[h].get("a", 0) >= n - 1e-9
    costs = [_solve(static=True).usd, _solve().usd, _solve(use_reserved=True).usd,
             _solve(use_reserved=True, use_spot=True, spot_availability=0.9).usd]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[1]


def test_cost_is_monotone_in_the_need_and_in_prices():
    base = _solve().usd
    more = dict(NEED)
    more["a"] = [n + (h == 4) for h, n in enumerate(NEED["a"])]
    assert _solve(need=more).usd == base + 3.0
    assert _solve(types=[TypePrices("a", 0.8)]).usd < base
    # a second type can only help: a cheaper way to cover some intervals
    two = {"a": NEED["a"], "b": [math.ceil(n / 2) for n in NEED["a"]]}
    s = _solve(types=[TypePrices("a", 1.0), TypePrices("b", 1.5)], need=two)
    assert s.usd <= base and s.usd == sum(math.ceil(n / 2) * 1.5 for n in NEED["a"]) * 3.0


def test_lead_time_bills_each_scale_up_before_it_serves_and_the_floor_holds():
    s = _solve(lead_hours=0.5)
    ups = sum(max(0, NEED["a"][h] - NEED["a"][h - 1]) for h in range(8))  # cyclic: hour 0 follows hour 7
    assert ups == 4
    assert s.usd == pytest.approx(sum(NEED["a"]) * 3.0 + 0.5 * ups)
    quiet = {"a": [0, 0, 1, 0]}
    f = solve_schedule([TypePrices("a", 1.0)], quiet, interval_hours=1.0, min_replicas=2)
    assert [o["a"] for o in f.on_demand] == [2, 2, 2, 2]
    assert solve_schedule([TypePrices("a", 1.0)], {"a": [1, math.inf]}, interval_hours=1.0) is None


# -- the day, simulated --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def day():
    return load_workload("diurnal:6:86400:code", seed=3, peak_to_mean=1.5)  # ~518k requests over a day


def _req(catalog, accs=("a100-80g",), slo_tpot_ms=120.0):
    return PlanRequest(model=catalog.model("llama-3-8b"), accelerators=tuple(catalog.accelerator(a) for a in accs),
                       slo_tpot_ms=slo_tpot_ms, slo_ttft_ms=2000.0, counts=(1,))


AR = dict(interval_minutes=120.0, check_seconds=240.0, min_replicas=1, lead_minutes=10.0)
KEY = "a100-80gx1/bf16"


@pytest.fixture(scope="module")
def spot_plan(catalog, day):
    return plan_autoscale(day, _req(catalog), AutoscaleRequest(**AR, spot=True, spot_interruptions_per_hour=0.2))


@pytest.fixture(scope="module")
def od_plan(catalog, day):
    return plan_autoscale(day, _req(catalog), AutoscaleRequest(**AR))


def test_split_intervals_covers_the_day(day):
    ivs = split_intervals(day, 7200.0, 240.0)
    assert len(ivs) == 12 and sum(iv.requests for iv in ivs) == len(day)
    busiest = max(range(12), key=lambda h: ivs[h].requests)
    assert busiest in (6, 7)  # the sinusoid peaks at 14:00
    assert ivs[busiest].requests > 2.0 * min(iv.requests for iv in ivs)
    assert all(iv.sample.duration_seconds < 240.0 for iv in ivs)


def test_every_interval_meets_the_slo_in_an_independent_simulation(catalog, day, make_sm, spot_plan):
    r = spot_plan
    assert r["meets_target"] and r["intervals"] == 12 and r["horizon_hours"] == 24.0
    assert r["usd_per_day"] <= r["usd_per_day_autoscale_on_demand"] <= r["usd_per_day_static"]
    assert r["saving_vs_static"] == pytest.approx(1 - r["usd_per_day"] / r["usd_per_day_static"], abs=1e-5)
    ivs = split_intervals(day, 7200.0, 240.0)
    interrupted = 0
    for row, iv in zip(r["schedule"], ivs):
        assert row["simulated_requests"] == len(iv.sample)
        live = {k: sum(v.values()) - row["spot_interrupted"].get(k, 0) for k, v in row["replicas"].items()}
        interrupted += sum(row["spot_interrupted"].values())
        if len(live) == 1:  # pooled: re-simulate here, without the planner's caches
            (key, n), = live.items()
            res = simulate(iv.sample, make_sm("llama-3-8b", key.split("x")[0]), replicas=n, config=SchedulerConfig())
            att = float(slo_met(res, slo_ttft_ms=2000.0, slo_tpot_ms=120.0).mean())
            assert att == pytest.approx(row["slo_attainment"], abs=1e-6) and att >= 0.99
        else:
            assert row["slo_attainment"] >= 0.99
    assert interrupted > 0  # spot replicas were taken out and the SLO still held
    spot_total = sum(v["spot"] for row in r["schedule"] for v in row["replicas"].values())
    assert spot_total > 0 and r["price_classes"] == {"on_demand": "hyperscaler-on-demand", "reserved": None,
                                                     "spot": "spot"}


def test_schedule_follows_the_load_and_costs_less_than_the_static_fleet(od_plan):
    r = od_plan
    n = [sum(sum(v.values()) for v in row["replicas"].values()) for row in r["schedule"]]
    rates = [row["rate_per_s"] for row in r["schedule"]]
    assert n[rates.index(max(rates))] == max(n) > n[rates.index(min(rates))] >= 1
    assert r["static_fleet"] == {KEY: max(n)}
    assert r["usd_per_day_static"] == pytest.approx(max(n) * 27.44705 / 8 * 24, abs=1e-2)  # p4de on-demand
    assert r["needs"][KEY] == n  # on-demand only: exactly the simulated need of every interval
    assert r["usd_per_day"] == r["usd_per_day_autoscale_on_demand"] < r["usd_per_day_static"]
    assert r["meets_target"] and r["simulations"] > 0


def test_a_looser_slo_never_costs_more(catalog, day, od_plan):
    tight = plan_autoscale(day, _req(catalog, slo_tpot_ms=40.0), AutoscaleRequest(**AR))
    loose = od_plan  # TPOT 120 ms
    assert loose["usd_per_day"] <= tight["usd_per_day"] and loose["usd_per_day_static"] <= tight["usd_per_day_static"]
    assert all(a <= b for a, b in zip(loose["needs"][KEY], tight["needs"][KEY]))


def test_bad_autoscale_requests_are_errors(catalog, day):
    from tokenomy.errors import TokenomyError

    for kw, msg in ((dict(interval_minutes=0), "--interval-minutes must be > 0"),
                    (dict(lead_minutes=90), r"--lead-minutes must be in \[0, --interval-minutes\)"),
                    (dict(reserved_class="spot"), "--reserved takes reserved-1y or reserved-3y"),
                    (dict(reserved_class="bogus"), "unknown price class 'bogus'"),
                    (dict(min_replicas=-1), "--min-replicas must be >= 0")):
        with pytest.raises(TokenomyError, match=msg):
            plan_autoscale(day, _req(catalog), AutoscaleRequest(**kw))
    with pytest.raises(TokenomyError, match="shorter than half an interval"):
        split_intervals(load_workload("poisson:1:600:code"), 3600.0)


# -- the CLI -------------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=600)


def test_cli_autoscale_json_plot_and_reserved_from_a_user_catalog(tmp_path):
    cat = tmp_path / "reserved.yaml"  # a test quote: the shipped catalog has no public GPU reservation price
    cat.write_text("accelerators:\n  h100:\n    rental_prices:\n"
                   "      - {provider: aws, usd_per_hour: 3.0, kind: reserved, price_class: reserved-1y, "
                   "source: test quote, date: '2026-12'}\n")
    png = tmp_path / "day.png"
    r = subprocess.run([sys.executable, "-m", "tokenomy", "plan", "--autoscale", "--trace", "diurnal:1:86400:code",
                        "--model", "llama-3-8b", "--slo-tpot-ms", "120", "--accelerators", "h100,l4", "--counts", "1",
                        "--interval-minutes", "120", "--check-seconds", "240", "--reserved", "reserved-1y",
                        "--plot", str(png), "--json"], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "TOKENOMY_CATALOG": str(cat)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kind"] == "fleet-autoscale" and out["not_offered"] == {"reserved": ["l4"]}
    h = out["types"][[t["key"] for t in out["types"]].index("h100x1/bf16")]
    assert h["usd_per_hour_reserved"] == 3.0 and h["usd_per_hour_on_demand"] == 6.88
    base = out["reserved_base"].get("h100x1/bf16", 0)
    need = out["needs"]["h100x1/bf16"]
    # 3.0/6.88 = 44 % of the intervals: the k-th reserved replica is needed in at least that many
    assert base >= min(need) and sum(n >= base for n in need) >= 0.436 * len(need)
    assert out["usd_per_day"] <= out["usd_per_day_autoscale_on_demand"] <= out["usd_per_day_static"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,msg", [
    (["--autoscale", "--interval-minutes", "0"], "--interval-minutes must be > 0"),
    (["--autoscale", "--reserved", "spot"], "--reserved takes reserved-1y or reserved-3y"),
    (["--spot"], "add --autoscale"),
    (["--autoscale", "--slo-sweep", "40,120"], "--autoscale plans one schedule"),
    (["--autoscale", "--peak-to-mean", "1.5"], "--peak-to-mean shapes a synthetic diurnal"),
])
def test_cli_bad_autoscale_flags_exit_2_with_one_line(args, msg):
    r = _cli("plan", "--trace", "code", "--model", "llama-3-8b", "--slo-tpot-ms", "120", *args)
    assert r.returncode == 2 and msg in r.stderr and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = _cli("plan", "--trace", "diurnal:1:86400:code", "--peak-to-mean", "3", "--model", "llama-3-8b",
             "--slo-tpot-ms", "120", "--autoscale")
    assert r.returncode == 2 and "peak-to-mean must be in [1, 2]" in r.stderr

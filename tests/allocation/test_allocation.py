"""Real cost of self-hosted deployments: bill = allocated + idle exactly, on real ledgers
(SQLite and PostgreSQL), across replicas and restarts; $/Mtok falls as load rises and matches the
cost model at the observed utilisation."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenomy.allocation.allocate import allocate_interval
from tokenomy.allocation.recorder import CapacityRecorder
from tokenomy.allocation.report import allocated_by_request, costs_report
from tokenomy.allocation.spec import CostSpec, rates_of
from tokenomy.allocation.store import CapacityStore, Interval, Served

H100 = CostSpec("llama-3-8b@h100", "llama-3-8b", "h100", 1, "bf16", "us-va", 2048, None, 1.0)
T0 = 1_800_000_000  # a fixed epoch: every clock here is injected


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def served(i: int, start: float, seconds: float, out_tokens: int = 100, dep: str = H100.deployment) -> Served:
    return Served(f"r{i}", "acme", dep, start, start + seconds, 200, out_tokens, 0, 0)


def test_idle_interval_and_one_request_and_equal_split():
    rates = rates_of(H100.key())
    iv = Interval(H100.deployment, T0, 60, H100.key())
    idle = allocate_interval(iv, rates, [])
    assert idle.allocated_pusd == 0 and idle.idle_pusd == idle.bill_pusd > 0
    assert idle.rent_pusd == round(rates.hourly_usd / 60 * 1e12)  # a minute of the hourly price
    two = allocate_interval(iv, rates, [served(1, T0 + 10, 20), served(2, T0 + 10, 20)])
    assert two.allocations["r1"] == pytest.approx(two.allocations["r2"], abs=1)  # shared equally
    assert two.busy_s == 20 and two.allocated_pusd + two.idle_pusd == two.bill_pusd
    # energy: busy time at the 2-in-flight power is dearer than idle time
    assert two.energy_pusd > idle.energy_pusd


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-30, 90), st.floats(0, 80)), max_size=40))
def test_allocated_plus_idle_is_the_bill_exactly(spans):
    rates = rates_of(H100.key())
    iv = Interval(H100.deployment, T0, 60, H100.key())
    c = allocate_interval(iv, rates, [served(i, T0 + s, d) for i, (s, d) in enumerate(spans)])
    assert c.allocated_pusd + c.idle_pusd == c.bill_pusd
    assert all(v >= 0 for v in c.allocations.values()) and c.idle_pusd >= 0
    assert c.rent_pusd + c.energy_pusd == c.bill_pusd


def commit(m, reqs: list[Served]) -> None:
    from tokenomy.metering import UsageEvent

    m.create_tenant("acme", exist_ok=True)
    for r in reqs:
        assert m.commit_blocking(UsageEvent(
            id=r.id, ts=r.end_s, tenant="acme", key_id="k", model="llama-3-8b", deployment=r.deployment,
            input_tokens=r.input_tokens, cached_input_tokens=0, output_tokens=r.output_tokens, reasoning_tokens=0,
            cost_usd=Decimal("0.0001"), price_usd=Decimal("0.0002"), energy_joules=1.0, ttft_ms=10.0,
            latency_ms=(r.end_s - r.start_s) * 1000, status="ok"))


def test_light_then_heavy_load_reconciles_and_unit_cost_falls(ledger):
    m, store = ledger
    clock = Clock(T0)
    # two replicas of the gateway record the same deployment: it is billed once per interval
    recorders = [CapacityRecorder(store, [H100], interval_s=60, clock=clock) for _ in range(2)]
    for minute in range(20):
        clock.t = T0 + minute * 60 + 1.5
        for r in recorders:
            r.tick()
    light = [served(i, T0 + i * 60 + 5, 4.0, out_tokens=300) for i in range(10)]  # one short request a minute
    cap = rates_of(H100.key()).capacity_output_tokens_per_s
    heavy = [served(100 + i, T0 + 600 + (i % 10) * 60 + (i // 10) * 0.5, 30.0, out_tokens=int(cap * 60 * 0.6 / 40))
             for i in range(400)]  # ~60 % of the token capacity, 40 requests a minute
    commit(m, light + heavy)
    lo = costs_report(store, T0, T0 + 600)["deployments"][H100.deployment]
    hi = costs_report(store, T0 + 600, T0 + 1200)["deployments"][H100.deployment]
    hourly = rates_of(H100.key()).hourly_usd
    for d in (lo, hi):
        assert Decimal(d["allocated_usd"]) + Decimal(d["idle_usd"]) == Decimal(d["bill_usd"])  # exactly
        assert d["provisioned_s"] == 600  # 10 intervals, once each despite two recorders
        assert Decimal(d["rent_usd"]) == pytest.approx(Decimal(repr(hourly)) * 600 / 3600, rel=Decimal("1e-9"))
    assert hi["usd_per_mtok_actual"] < lo["usd_per_mtok_actual"] / 10  # unit cost falls as load rises
    assert Decimal(hi["idle_usd"]) < Decimal(lo["idle_usd"])
    assert lo["busy_share"] == pytest.approx(40 / 600) and hi["busy_share"] == pytest.approx(49.5 / 60)
    assert hi["utilization"] == pytest.approx(0.6, rel=0.02)
    # the cost model at the observed utilisation predicts the actual output $/Mtok
    assert hi["usd_per_mtok_output_actual"] == pytest.approx(hi["usd_per_mtok_output_modelled"], rel=0.10)
    # margins' view: every request's allocation, the rest idle, adding up to the bill
    alloc, idle = allocated_by_request(store, T0, T0 + 1200)
    total = costs_report(store, T0, T0 + 1200)["total"]
    assert Decimal(sum(alloc.values()) + sum(idle.values())).scaleb(-12) == Decimal(total["bill_usd"])


def test_a_restart_and_a_ledger_outage_lose_no_interval(tmp_path):
    from tokenomy.metering import Metering

    m = Metering.open(tmp_path / "data", ensure_admin=False)
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    clock = Clock(T0 + 1)
    rec = CapacityRecorder(store, [H100], interval_s=60, clock=clock)
    rec.tick()
    broken = CapacityStore(path=tmp_path / "data" / "ledger.db")
    broken.record = lambda rows, at: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked"))
    rec.store = broken
    clock.t = T0 + 61
    rec.tick()  # the ledger is away: kept pending
    rec2 = CapacityRecorder(store, [H100], interval_s=60, clock=clock)  # a restarted gateway, same minute
    rec.store = store
    clock.t = T0 + 121
    rec.tick()
    rec2.tick()
    starts = [iv.start for iv in store.intervals(T0, T0 + 180)]
    assert starts == [T0, T0 + 60, T0 + 120]
    m.shutdown()


def test_costs_cli_json_contract(tmp_path):
    from tokenomy.metering import Metering

    m = Metering.open(tmp_path / "data", ensure_admin=False)
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    import time

    now = time.time()
    clock = Clock(now - 300)
    rec = CapacityRecorder(store, [H100], interval_s=60, clock=clock)
    for k in range(6):
        clock.t = now - 300 + k * 60
        rec.tick()
    commit(m, [served(i, now - 250 + i * 20, 5.0) for i in range(5)])
    m.shutdown()
    r = subprocess.run([sys.executable, "-m", "tokenomy", "costs", "--since", "10m", "--json", "--data-dir",
                        str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    d = out["deployments"][H100.deployment]
    assert set(d) >= {"hourly_usd", "bill_usd", "allocated_usd", "idle_usd", "tokens", "usd_per_mtok_actual",
                      "utilization"}
    assert d["tokens"] == 5 * 300 and Decimal(d["allocated_usd"]) + Decimal(d["idle_usd"]) == Decimal(d["bill_usd"])
    assert set(out["total"]) >= {"bill_usd", "allocated_usd", "idle_usd"}
    bad = subprocess.run([sys.executable, "-m", "tokenomy", "costs", "--since", "yesterday-ish", "--data-dir",
                          str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_margins_use_the_allocated_cost_and_show_idle_on_its_own_line(tmp_path):
    from tokenomy.billing.margins import margins
    from tokenomy.billing.periods import period_of
    from tokenomy.billing.plans import parse_plans
    from tokenomy.billing.service import Billing
    from tokenomy.metering import Metering

    m = Metering.open(tmp_path / "data", ensure_admin=False)
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    clock = Clock(T0 + 1)
    rec = CapacityRecorder(store, [H100], interval_s=60, clock=clock)
    for k in range(5):
        clock.t = T0 + 1 + 60 * k
        rec.tick()
    commit(m, [served(i, T0 + 10 + 50 * i, 20.0) for i in range(5)])
    m.shutdown()
    period = period_of(T0)
    alloc, idle = allocated_by_request(store, period.start, period.end)
    b = Billing.open(tmp_path / "data", parse_plans({"plans": {}, "default_plan": "list"}), clock=lambda: T0 + 400)
    out = margins(b, period, allocation=(alloc, idle))
    b.close()
    acme = next(r for r in out["rows"] if r["key"] == "acme")
    allocated = Decimal(sum(alloc.values())).scaleb(-12)
    assert Decimal(acme["cost_usd"]) == allocated.quantize(Decimal("1e-6"))  # not 5 x the provisional $0.0001
    assert Decimal(out["total"]["idle_usd"]) == Decimal(sum(idle.values())).scaleb(-12).quantize(Decimal("1e-6"))
    assert Decimal(out["total"]["margin_after_idle_usd"]) == (
        Decimal(acme["revenue_usd"]) - allocated - Decimal(sum(idle.values())).scaleb(-12)).quantize(Decimal("1e-6"))

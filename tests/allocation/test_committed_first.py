"""committed-first: owned / reserved capacity takes traffic up to its SLO headroom (the perf model's
batch at the SLO), priced at its marginal energy, before anything spills; `tokenomy route savings`
prices the same traffic under cost routing on list prices."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tokenomy.allocation.recorder import CapacityRecorder
from tokenomy.allocation.report import costs_report
from tokenomy.allocation.savings import committed_savings
from tokenomy.allocation.spec import CostSpec, rates_of, spec_of
from tokenomy.allocation.store import CapacityStore
from tokenomy.config import parse_config
from tokenomy.errors import ConfigError
from tokenomy.gateway.lifecycle.dispatch import Attempts
from tokenomy.gateway.pricing import resolve_price
from tokenomy.gateway.routing import DeploymentRuntime, build_groups
from tokenomy.gateway.lifecycle.retry import RetryPolicy
from tokenomy.gateway.health import RetryBudget

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000  # a fixed epoch: the clocks here are injected


def _bench():
    spec = importlib.util.spec_from_file_location("committed_first_bench", ROOT / "benchmarks" / "committed_first.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


def runtime(policy: str = "committed-first"):
    gc = parse_config(bench.fleet_config(policy), "<test>")
    deps = {d.name: DeploymentRuntime(d, resolve_price(d), gc) for d in gc.deployments}
    return gc, deps, build_groups(gc, deps)["llama"]


def test_commitment_is_validated_and_owned_hardware_is_priced_at_ownership_cost():
    cfg = bench.fleet_config("committed-first")
    bad = json.loads(json.dumps(cfg))
    bad["deployments"][1]["commitment"] = "owned"  # an API has no hourly cost to commit to
    with pytest.raises(ConfigError, match=r"deployments\[1\].*commitment owned needs self_hosted pricing"):
        parse_config(bad, "<test>")
    bad["deployments"][1]["commitment"] = "rented"
    with pytest.raises(ConfigError, match=r"commitment"):
        parse_config(bad, "<test>")
    gc = parse_config(cfg, "<test>")
    owned, api = gc.deployments
    assert owned.committed and owned.paid_as == "owned" and not api.committed and api.paid_as == "pay_per_token"
    spec = spec_of(owned)
    assert spec.ownership and spec.committed and CostSpec.from_key(owned.name, spec.key()) == spec
    rented = parse_config({**cfg, "deployments": [{**cfg["deployments"][0], "commitment": "reserved"}, cfg["deployments"][1]]},
                          "<test>").deployments[0]
    assert spec_of(rented).reserved and not spec_of(rented).ownership
    # ownership (amortised purchase + hosting) is cheaper per hour than the rental price
    assert rates_of(spec.key()).hourly_usd < rates_of(spec_of(rented).key()).hourly_usd
    assert resolve_price(owned).usd_per_mtok_output < resolve_price(rented).usd_per_mtok_output
    # on list prices the API is cheaper per output token than the owned H100 (why `cost` idles it)
    assert resolve_price(api).usd_per_mtok_output < resolve_price(owned).usd_per_mtok_output


def test_committed_capacity_first_up_to_its_slo_headroom_then_immediate_spill():
    _, deps, g = runtime()
    owned, api = deps[bench.OWNED], deps[bench.API]
    cap = g.headroom[bench.OWNED].capacity
    assert cap == 14  # the perf model's largest batch within TPOT 9 ms at 2048 tokens (llama-3-8b, H100)
    d = g.rank(30, 96)
    assert [x.name for x in d.order] == [bench.OWNED, bench.API] and d.slo_met is True
    # what `cost` would have chosen on list prices is recorded: the API
    assert d.counterfactual["deployment"] == bench.API and d.counterfactual["committed"] == [bench.OWNED]
    owned.in_flight = cap - 1
    assert g.rank(30, 96).order[0] is owned and not g.full(owned)
    owned.in_flight = cap  # headroom gone: the very next request spills, the owned one is the last resort
    assert [x.name for x in g.rank(30, 96).order] == [bench.API, bench.OWNED] and g.full(owned)
    owned.in_flight = 0
    for _ in range(5):
        owned.breaker.failure()  # an open breaker is no headroom either
    assert g.rank(30, 96).order[0] is api
    # the marginal cost of committed capacity is the energy it adds: waking an idle GPU for one
    # sequence is dear (idle -> busy power), one more sequence in a running batch costs little
    c = g.headroom[bench.OWNED]
    api_usd = api.expected_cost_usd(30, 96)
    assert 0 < c.marginal_usd(5, 30, 96) < api_usd / 10 and api_usd < c.marginal_usd(0, 30, 96)
    # `cost` on the same fleet sends everything to the API
    _, deps2, g2 = runtime("cost")
    assert g2.rank(30, 96).order[0].name == bench.API and not g2.headroom


def test_a_ttft_slo_the_prefill_cannot_meet_leaves_no_headroom():
    cfg = bench.fleet_config("committed-first")
    cfg["model_groups"]["llama"]["slo"] = {"tpot_ms": 9.0, "ttft_ms": 50.0}
    gc = parse_config(cfg, "<test>")
    deps = {d.name: DeploymentRuntime(d, resolve_price(d), gc) for d in gc.deployments}
    g = build_groups(gc, deps)["llama"]
    assert g.rank(30, 96).order[0].name == bench.OWNED  # a 30-token prefill: ~14 ms (weights read once)
    assert g.rank(60_000, 96).order[0].name == bench.API  # a 60k-token prefill misses 50 ms


async def test_dispatch_rechecks_the_headroom_the_instant_it_takes_the_slot():
    _, deps, g = runtime()
    owned, api = deps[bench.OWNED], deps[bench.API]
    order = g.rank(30, 96).order  # ranked while the owned H100 had room ...
    assert order[0] is owned
    owned.in_flight = g.headroom[bench.OWNED].capacity  # ... filled while this request awaited
    plan = Attempts(order, RetryPolicy(), RetryBudget(0.2, 10), None, g.full)
    assert await plan.next() is api  # spilled, not over the SLO
    assert await plan.next() is owned  # the API failed: the owned one is still a fallback
    assert await plan.next() is None


async def test_committed_first_beats_cost_on_the_same_traffic_through_the_real_gateway(tmp_path):
    runs = {p: await bench.run_policy(p, tmp_path / p, requests=60, concurrency=24) for p in ("cost", "committed-first")}
    c, f = runs["cost"], runs["committed-first"]
    assert c.requests == f.requests == 60 and c.errors == f.errors == 0
    assert c.served == {bench.API: 60}  # list prices: the owned H100 idles
    assert f.served[bench.OWNED] > 0 and f.served[bench.API] > 0  # filled, then spilled
    assert 0 < f.max_running_owned <= f.capacity == 14  # never above its SLO headroom
    # the headroom caps the batch at the perf model's steady-state limit (asserted above); a sequence's
    # measured TPOT also holds the prefill steps of requests that arrived during its decode, and how
    # many did depends on arrival interleaving (the machine's load), so not every one is guaranteed
    assert f.slo_met >= 0.95 * f.requests and c.slo_met >= 0.95 * c.requests
    assert f.api_usd < c.api_usd
    # the owned H100's rent is the same hours either way: total at equal rent is lower
    assert c.owned_rent_usd + f.owned_energy_usd + f.api_usd < c.total_usd
    # route savings, from the committed-first run alone: the counterfactual re-prices every request
    # at the API's list price with its own tokens = exactly what the cost run spent on the API
    s = f.savings
    assert s["requests"] == 60 and s["on_committed"] == f.served[bench.OWNED] and s["spilled"] == f.served[bench.API]
    assert Decimal(s["cost_routing_api_usd"]) == c.api_usd
    assert Decimal(s["api_usd"]) == f.api_usd and Decimal(s["saved_usd"]) > 0
    assert c.savings["requests"] == 0  # cost routing records no counterfactual


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _commit(m, rid: str, dep: str, ts: float, seconds: float, inp: int, out: int, cost: str, cf_dep: str,
            committed=("own@h100",)) -> None:
    from tokenomy.metering import UsageEvent

    cf = {"deployment": cf_dep, "usd_per_mtok": ["0.02", "0.02", "0.04", "0.04"], "committed": list(committed)}
    assert m.commit_blocking(UsageEvent(
        id=rid, ts=ts, tenant="acme", key_id="k", model="llama", deployment=dep, input_tokens=inp,
        cached_input_tokens=0, output_tokens=out, reasoning_tokens=0, cost_usd=Decimal(cost), price_usd=Decimal(cost),
        energy_joules=1.0, ttft_ms=10.0, latency_ms=seconds * 1000, status="ok",
        extra={"policy": "committed-first", "counterfactual": cf}))


def test_savings_figures_on_an_injected_clock(ledger, tmp_path):
    m, store = ledger
    own = CostSpec("own@h100", "llama-3-8b", "h100", 1, "bf16", "us-va", 2048, None, 1.0, ownership=True)
    m.create_tenant("acme", exist_ok=True)
    clock = lambda: T0 + 0.5  # noqa: E731
    CapacityRecorder(store, [own], interval_s=60, clock=clock).tick()
    # 10 requests on the owned H100 (cost would have sent them to the API), 4 spilled to the API
    for i in range(10):
        _commit(m, f"o{i}", "own@h100", T0 + 5 + i * 5, 4.0, 100, 500, "0.00001", "api")
    for i in range(4):
        _commit(m, f"a{i}", "api", T0 + 6 + i * 5, 2.0, 100, 500, "0.000022", "api")
    s = committed_savings(store, T0, T0 + 60)
    bill = Decimal(costs_report(store, T0, T0 + 60)["deployments"]["own@h100"]["bill_usd"])
    rates = rates_of(own.key())
    idle_bill = (Decimal(repr(rates.rent_pusd_per_s)) * 60 + Decimal(repr(rates.idle_watts * 60 * rates.energy_pusd_per_j))) \
        .scaleb(-12)
    assert s["requests"] == 14 and s["on_committed"] == 10 and s["spilled"] == 4
    assert Decimal(s["committed_bill_usd"]) == bill
    assert Decimal(s["api_usd"]) == Decimal("0.000088")  # 4 x the ledger's cost
    assert Decimal(s["actual_usd"]) == bill + Decimal("0.000088")
    # cost routing: all 14 at the API's list price (100 x $0.02 + 500 x $0.04 per Mtok = $0.000022 each),
    # the H100 at rent + idle power (every token it served would have moved)
    assert Decimal(s["cost_routing_api_usd"]) == Decimal("0.000022") * 14
    assert Decimal(s["cost_routing_committed_bill_usd"]) == pytest.approx(idle_bill, abs=Decimal("1e-11"))
    assert Decimal(s["saved_usd"]) == Decimal(s["cost_routing_usd"]) - Decimal(s["actual_usd"])
    assert s["deployments"]["own@h100"]["tokens_cost_routing_moves"] == 6000
    # the CLI: `tokenomy route savings --json` carries the same figures (on either ledger)
    env = {**os.environ, **({"TOKENOMY_LEDGER_URL": store.db.url} if store.db.url else {})}
    window = ["--since", _iso(T0), "--until", _iso(T0 + 60)]
    out = subprocess.run([sys.executable, "-m", "tokenomy", "route", "savings", "--data-dir", str(tmp_path / "data"),
                          *window, "--json"], capture_output=True, text=True, check=True, env=env)
    cli = json.loads(out.stdout)["committed_first"]
    assert cli["saved_usd"] == s["saved_usd"] and cli["requests"] == 14
    text = subprocess.run([sys.executable, "-m", "tokenomy", "route", "savings", "--data-dir", str(tmp_path / "data"),
                           *window], capture_output=True, text=True, check=True, env=env)
    assert "committed-first requests: 14" in text.stdout and f"saved:         ${s['saved_usd']}" in text.stdout


async def test_the_dashboard_shows_the_same_savings(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "gateway"))
    from gw_helpers import ADMIN_KEY, gateway

    own = CostSpec("own@h100", "llama-3-8b", "h100", 1, "bf16", "us-va", 2048, None, 1.0, ownership=True)
    async with gateway(bench.fleet_config("committed-first"), tmp_path / "data") as g:
        g.metering.create_tenant("acme", exist_ok=True)
        store = CapacityStore.for_ledger(g.metering.ledger)
        CapacityRecorder(store, [own], interval_s=60, clock=lambda: T0 + 0.5).tick()
        for i in range(3):
            _commit(g.metering, f"o{i}", "own@h100", T0 + 5 + i * 5, 4.0, 100, 500, "0.00001", "api")
        _commit(g.metering, "a0", "api", T0 + 30, 2.0, 100, 500, "0.000022", "api")
        want = committed_savings(store, T0, T0 + 60)
        store.close()
        status, _, body = await g.get(f"/dashboard/api/costs?since={T0}&until={T0 + 60}", ADMIN_KEY)
    assert status == 200, body
    got = body["totals"]["committed_first"]
    assert (got["requests"], got["on_committed"], got["spilled"]) == (4, 3, 1)
    assert got == want
    # three lone requests (batch 1) on an otherwise idle H100: the energy they add (idle -> busy power)
    # costs more than the cheap API would have; the figure says so rather than claiming a saving
    assert Decimal(got["saved_usd"]) < 0 and got["cost_routing_api_usd"] == "0.000088"


async def test_a_stream_goes_to_committed_capacity_and_records_the_counterfactual(tmp_path):
    import openai

    sys.path.insert(0, str(ROOT / "tests" / "gateway"))
    from gw_helpers import gateway

    async with gateway(bench.fleet_config("committed-first", time_scale=0.05), tmp_path / "data") as g:
        client = openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("acme"), max_retries=0)
        async with client.chat.completions.with_streaming_response.create(
                model="llama", max_tokens=16, stream=True, messages=[{"role": "user", "content": "hi"}]) as r:
            assert r.headers["x-tokenomy-deployment"] == bench.OWNED
            rid = r.headers["x-tokenomy-request-id"]
            chunks = [c async for c in await r.parse()]
        await client.close()
        assert chunks and g.gw.deployments[bench.OWNED].in_flight == 0
    store = CapacityStore(path=tmp_path / "data" / "ledger.db")
    (raw,) = store.db.run("SELECT json_extract(extra, '$.counterfactual') FROM events WHERE id = ?", (rid,))[0]
    store.close()
    assert json.loads(raw) == {"deployment": bench.API, "usd_per_mtok": ["0.02", "0.02", "0.04", "0.04"],
                               "committed": [bench.OWNED]}

import math

import numpy as np
import pytest

from tokenomy.fleet.deployment import KVCapped
from tokenomy.fleet.metrics import slo_met, summarize
from tokenomy.fleet.simulator import SchedulerConfig, simulate
from tokenomy.fleet.workload import Trace, head, scale_rate


def _trace(arrivals, prompts, outputs):
    return Trace(np.array(arrivals, float), np.array(prompts, np.int64), np.array(outputs, np.int64), "t")


def test_low_load_ttft_is_prefill_time_and_tpot_is_batch1_step(h100_sm):
    # Requests far apart: each runs alone on the replica.
    prompts, outputs = [300, 1000, 1800], [50, 200, 120]
    tr = _trace([0.0, 100.0, 200.0], prompts, outputs)
    res = simulate(tr, h100_sm, replicas=1)
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        prefill = h100_sm.step_seconds(prefill_tokens=p)
        assert res.ttft_seconds[i] == pytest.approx(prefill, rel=1e-9)
        # Decode steps of batch 1 while the KV grows from p+1 to p+o-1 tokens.
        decode = [h100_sm.step_seconds(decode_seqs=1, kv_tokens=p + 1 + k) for k in range(o - 1)]
        assert res.tpot_seconds[i] == pytest.approx(sum(decode) / (o - 1), rel=1e-4)
        assert res.tpot_seconds[i] == pytest.approx(
            h100_sm.step_seconds(decode_seqs=1, kv_tokens=p + o // 2), rel=2e-3)
        assert res.e2e_seconds[i] == pytest.approx(prefill + sum(decode), rel=1e-4)
    assert res.preemptions == 0 and res.completed == 3


def test_long_prompt_is_prefilled_in_budget_chunks(h100_sm):
    tr = _trace([0.0], [5000], [2])
    res = simulate(tr, h100_sm, config=SchedulerConfig(max_batched_tokens=2048))
    chunks = [(2048, 0), (2048, 2048), (904, 4096)]
    expected = sum(h100_sm.step_seconds(prefill_tokens=c, prefill_context=ctx, prefill_seqs=1) for c, ctx in chunks)
    assert res.ttft_seconds[0] == pytest.approx(expected, rel=1e-9)
    assert res.steps[0] == 3 + 1


@pytest.mark.parametrize("lb", ["least-loaded", "round-robin"])
@pytest.mark.parametrize("kv_cap", [None, 20_000])
def test_macro_steps_match_step_by_step_reference(h100_sm, conv_head, lb, kv_cap):
    # The fast path (decode steps taken together between events) must reproduce a plain
    # step-by-step simulation: same routing, same steps, same times and energy.
    sm = KVCapped(h100_sm, kv_cap) if kv_cap else h100_sm
    tr = scale_rate(head(conv_head, 300), 4.0)
    fast = simulate(tr, sm, replicas=2, config=SchedulerConfig(lb=lb))
    ref = simulate(tr, sm, replicas=2, config=SchedulerConfig(lb=lb, macro_steps=False))
    assert np.array_equal(fast.replica, ref.replica)
    assert np.array_equal(fast.steps, ref.steps)
    assert fast.preemptions == ref.preemptions
    if kv_cap:
        assert fast.preemptions > 0
    assert np.allclose(fast.finished_at, ref.finished_at, rtol=1e-9, atol=1e-9)
    assert np.allclose(fast.first_token_at, ref.first_token_at, rtol=1e-9, atol=1e-9)
    assert fast.energy_joules.sum() == pytest.approx(ref.energy_joules.sum(), rel=1e-5)


@pytest.mark.parametrize("lb", ["least-loaded", "round-robin"])
@pytest.mark.parametrize("policy", ["preempt", "reserve"])
def test_conservation_every_request_finishes_once(h100_sm, conv_head, lb, policy):
    small = KVCapped(h100_sm, 30_000)
    tr = scale_rate(conv_head, 8.0)
    res = simulate(tr, small, replicas=3, config=SchedulerConfig(lb=lb, kv_policy=policy))
    fits = (tr.prompt_tokens + tr.output_tokens) <= 30_000
    assert np.array_equal(res.finish_count, fits.astype(np.int64))
    assert np.array_equal(res.rejected, ~fits)
    done = res.finish_count == 1
    assert np.all(res.finished_at[done] >= res.first_token_at[done])
    assert np.all(res.first_token_at[done] > res.arrived_at[done])
    assert set(res.replica[done].tolist()) == {0, 1, 2}
    if lb == "round-robin":
        order = np.flatnonzero(fits)
        assert np.array_equal(res.replica[order], np.arange(len(order)) % 3)


def test_kv_capacity_respected_and_preemption_happens(h100_sm, conv_head):
    tr = scale_rate(conv_head, 10.0)
    cap = 25_000
    pre = simulate(tr, KVCapped(h100_sm, cap), replicas=1, config=SchedulerConfig(kv_policy="preempt"))
    assert pre.preemptions > 0
    assert pre.peak_kv_tokens.max() <= cap
    assert pre.peak_kv_tokens.max() > 0.9 * cap  # it does fill the cache
    res = simulate(tr, KVCapped(h100_sm, cap), replicas=1, config=SchedulerConfig(kv_policy="reserve"))
    assert res.preemptions == 0
    assert res.peak_kv_tokens.max() <= cap
    # Requests longer than the cache are rejected, not run.
    tiny = simulate(_trace([0, 1], [3000, 100], [10, 10]), KVCapped(h100_sm, 2000), replicas=1)
    assert tiny.rejected.tolist() == [True, False] and tiny.finish_count.tolist() == [0, 1]


def test_overload_grows_queues_and_drops_attainment(h100_sm, conv_head):
    tr = head(conv_head, 800)
    ok = simulate(tr, h100_sm, replicas=1)
    over = simulate(scale_rate(tr, 25.0), h100_sm, replicas=1)
    slo = dict(slo_ttft_ms=2000.0, slo_tpot_ms=50.0)
    att_ok = slo_met(ok, **slo).mean()
    att_over = slo_met(over, **slo).mean()
    assert att_ok >= 0.99
    assert att_over < 0.5
    q = over.queue_at_arrival
    assert q[len(q) // 2:].mean() > 5 * max(1.0, q[: len(q) // 10].mean())  # the queue keeps growing
    assert np.nanpercentile(over.ttft_seconds, 90) > 10 * np.nanpercentile(ok.ttft_seconds, 90)
    assert over.completed == len(tr)  # everything still finishes, late


def test_more_replicas_lower_latency(h100_sm, conv_head):
    tr = scale_rate(conv_head, 6.0)
    one = simulate(tr, h100_sm, replicas=1)
    four = simulate(tr, h100_sm, replicas=4)
    assert np.nanmedian(four.e2e_seconds) < np.nanmedian(one.e2e_seconds)
    util1 = one.busy_seconds.sum() / one.duration_seconds
    util4 = four.busy_seconds.sum() / (4 * four.duration_seconds)
    assert util4 < util1


def test_deterministic(h100_sm, conv_head):
    a = simulate(conv_head, h100_sm, replicas=3)
    b = simulate(conv_head, h100_sm, replicas=3)
    for f in ("first_token_at", "finished_at", "replica", "energy_joules", "steps"):
        assert np.array_equal(getattr(a, f), getattr(b, f))


def test_idle_energy_and_cost_summary(h100_sm, catalog):
    tr = _trace([0.0, 1000.0], [100, 100], [10, 10])
    res = simulate(tr, h100_sm, replicas=2, config=SchedulerConfig(lb="round-robin"))
    busy_j = [
        h100_sm.step_seconds(prefill_tokens=100) * h100_sm.step_watts(prefill_tokens=100)
    ]
    assert res.idle_seconds.sum() == pytest.approx(2 * res.duration_seconds - res.busy_seconds.sum())
    idle_j = res.idle_seconds.sum() * h100_sm.idle_watts
    assert res.energy_joules.sum() > idle_j + 2 * busy_j[0]
    site = catalog.site("us-va")
    s = summarize(res, replica_usd_per_hour=3.0, site=site)
    energy_usd = res.energy_joules.sum() / 3.6e6 * site.pue * site.usd_per_kwh
    rental = 2 * 3.0 * res.duration_seconds / 3600
    assert s["cost_usd"] == pytest.approx(rental + energy_usd, rel=1e-5)
    assert s["usd_per_mtok"] == pytest.approx(s["cost_usd"] / (220 / 1e6), rel=1e-5)
    assert s["energy_kwh"] == pytest.approx(res.energy_joules.sum() / 3.6e6, rel=1e-5)
    assert s["requests_completed"] == 2 and s["slo_attainment"] == 1.0
    assert 0 < s["busy_share"] < 0.01 and "utilization" not in s  # renamed: busy time is not capacity used


def test_single_token_outputs_have_no_tpot(h100_sm):
    res = simulate(_trace([0.0], [200], [1]), h100_sm)
    assert math.isnan(res.tpot_seconds[0])
    assert res.e2e_seconds[0] == pytest.approx(res.ttft_seconds[0])
    assert slo_met(res, slo_ttft_ms=1e4, slo_tpot_ms=1.0).tolist() == [True]

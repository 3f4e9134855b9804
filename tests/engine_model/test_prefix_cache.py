"""The prefix cache in the shared engine model, Mooncake traces and prefix-affinity routing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tokenomy.catalog import load_catalog
from tokenomy.engine.blocks import PrefixCache, chain_block_hashes
from tokenomy.engine.affinity import PrefixAffinityRouter
from tokenomy.engine.scheduler import SchedulerConfig
from tokenomy.fleet.deployment import KVCapped
from tokenomy.fleet.metrics import summarize
from tokenomy.fleet.simulator import simulate
from tokenomy.fleet.workload import Trace, head, load_trace, scale_rate
from tokenomy.perf import make_step_model


@pytest.fixture(scope="module")
def sm():
    cat = load_catalog()
    return make_step_model(cat.model("llama-3-8b"), cat.accelerator("h100"))


def _trace(arrivals, prompts, outputs, hashes, block=16):
    return Trace(np.array(arrivals, float), np.array(prompts, np.int64), np.array(outputs, np.int64), "t",
                 tuple(tuple(h) for h in hashes), block)


def test_chain_hashes_cover_full_blocks_and_depend_on_the_prefix():
    a = chain_block_hashes(list(range(40)), 16)
    b = chain_block_hashes([99] + list(range(1, 40)), 16)
    assert len(a) == 2  # the 8-token tail is never cached
    assert a[0] != b[0] and a[1] != b[1]  # block 1 is equal text but a different prefix
    assert chain_block_hashes(list(range(32)), 16) == a


def test_cached_prefix_skips_prefill_compute(sm):
    # Two requests 10 s apart share their first 3 of 4 blocks (of 16 tokens).
    tr = _trace([0.0, 10.0], [64, 64], [4, 4], [[1, 2, 3, 4], [1, 2, 3, 9]])
    res = simulate(tr, sm, replicas=1)
    assert res.cached_tokens.tolist() == [0, 48]
    assert res.prefix_cache_hit_share == pytest.approx(48 / 128)
    # the second prefill computes 16 tokens, its attention reading the 48 cached ones
    assert res.ttft_seconds[1] == pytest.approx(
        sm.step_seconds(prefill_tokens=16, prefill_context=48, prefill_seqs=1), rel=1e-9)
    assert res.ttft_seconds[0] == pytest.approx(sm.step_seconds(prefill_tokens=64), rel=1e-9)
    off = simulate(tr, sm, replicas=1, config=SchedulerConfig(prefix_caching=False))
    assert off.cached_tokens.tolist() == [0, 0] and off.ttft_seconds[1] > res.ttft_seconds[1]


def test_the_last_prompt_token_is_always_computed(sm):
    tr = _trace([0.0, 10.0], [64, 64], [2, 2], [[1, 2, 3, 4], [1, 2, 3, 4]])
    res = simulate(tr, sm, replicas=1)
    assert res.cached_tokens.tolist() == [0, 48]  # 64 tokens: 3 full blocks reusable, the 4th recomputed


def test_lru_eviction_when_running_requests_need_memory(sm):
    # KV for 200 tokens: request 0 leaves 4 cached blocks (64 tokens); request 1 (unrelated,
    # 160 tokens + output) needs room for itself: the tail blocks 4, 3, 2 are evicted (only what
    # is needed, tail first), so request 2 still finds block 1.
    tr = _trace([0.0, 10.0, 20.0], [64, 160, 64], [2, 20, 2], [[1, 2, 3, 4], list(range(10, 20)), [1, 2, 3, 4]])
    res = simulate(tr, KVCapped(sm, 200), replicas=1)
    assert res.completed == 3 and res.preemptions == 0
    assert res.cached_tokens.tolist() == [0, 0, 16]
    assert res.peak_kv_tokens.max() <= 200
    roomy = simulate(tr, KVCapped(sm, 2000), replicas=1)
    assert roomy.cached_tokens.tolist() == [0, 0, 48]


def test_prefix_cache_unit_refcounts_and_lru():
    c = PrefixCache(16)
    assert c.publish(1) and c.publish(2) and not c.publish(1)
    assert c.refs == {1: 2, 2: 1} and c.tokens == 32 and c.evictable_tokens == 0
    c.release([1, 2], 2)
    assert c.refs == {1: 1, 2: 0} and list(c.lru) == [2]
    assert c.evict(100) == 16 and c.refs == {1: 1}  # referenced blocks are never evicted
    assert c.match([1, 5], 10) == (1, 0)


def test_router_prefers_the_replica_holding_the_prefix_under_a_load_bound():
    r = PrefixAffinityRouter(4, capacity_blocks=100, load_factor=1.25)
    assert r.choose([7, 8, 9], [0, 0, 0, 0]) == (0, 0)  # unknown: least loaded
    assert r.choose([7, 8, 10], [0, 1, 0, 0]) == (0, 2)  # holds 2 leading blocks
    # replica 0 is over the bound ceil(1.25 x (sum+1)/4) = 3: no usable match, least loaded
    assert r.choose([7, 8, 11], [6, 0, 1, 1]) == (1, 0)
    r.record(2, [7])
    assert r.choose([7, 12], [6, 2, 1, 1]) == (2, 1)  # 1 and 2 hold block 7; 2 is less loaded


def test_router_trades_held_tokens_against_excess_load():
    # score = held tokens - 1024 x (load - mean load, if above); a loose hard bound (x4)
    r = PrefixAffinityRouter(4, capacity_blocks=100, load_factor=4.0, block_tokens=512,
                             load_penalty_tokens=1024)
    r.record(2, [20, 21, 22, 23])
    assert r.choose([20, 21, 22, 23, 24], [0, 0, 2, 0]) == (2, 4)  # 2048 - 1024 x 1.5 > 0
    assert r.last_affinity
    assert r.choose([20, 21, 22, 23, 25], [0, 0, 3, 0]) == (0, 0)  # 2048 - 1024 x 2.25 < 0: least loaded
    assert not r.last_affinity


def test_mooncake_trace_loads_with_hashes_and_affinity_beats_round_robin(sm):
    tr = head(load_trace("mooncake"), 1000)
    assert tr.hash_block_tokens == 512 and len(tr.hashes) == 1000
    assert tr.hashes[0][:2] == (0, 1) and tr.prompt_tokens[0] == 6758
    tr = scale_rate(tr, 0.5)  # 4 replicas ~70 % busy
    cat = load_catalog()
    h200 = make_step_model(cat.model("llama-3-8b"), cat.accelerator("h200"))
    rr = simulate(tr, h200, replicas=4, config=SchedulerConfig(lb="round-robin"))
    pa = simulate(tr, h200, replicas=4, config=SchedulerConfig(lb="prefix-affinity"))
    assert rr.completed == pa.completed == 1000
    assert pa.prefix_cache_hit_share > 1.5 * rr.prefix_cache_hit_share > 0
    # block 0 (a system prompt) is everywhere: only later turns of a session are affinity choices
    assert 0 < pa.affinity_routed.mean() < 0.5 and not rr.affinity_routed.any()
    assert set(pa.replica.tolist()) == {0, 1, 2, 3}  # the load bound spreads the shared head
    s = summarize(pa)
    assert s["prefix_cache_hit_share"] == pytest.approx(pa.prefix_cache_hit_share, abs=1e-6)
    assert s["cached_input_tokens"] == int(pa.cached_tokens.sum())


def test_busy_share_is_not_capacity_used(sm):
    # Far-apart single requests: the replica is busy while one sequence runs, batch slots are ~empty.
    tr = Trace(np.array([0.0, 1.0, 2.0]), np.array([100, 100, 100]), np.array([200, 200, 200]), "t")
    s = summarize(simulate(tr, sm, replicas=1))
    assert s["busy_share"] > 0.5
    assert s["batch_slot_utilization"] < s["busy_share"] / 100
    assert s["token_budget_utilization"] < s["busy_share"] / 100


def _run(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=120)


def test_cli_simulate_mooncake_with_routing():
    r = _run("simulate", "--trace", "mooncake", "--limit", "300", "--replicas", "2",
             "--routing", "prefix-affinity", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["deployment"]["routing"] == "prefix-affinity"
    assert 0 < d["prefix_cache_hit_share"] < 1 and d["ttft_ms"]["p99"] > 0 and d["usd_per_mtok"] > 0
    bad = _run("simulate", "--trace", "mooncake", "--routing", "nope")
    assert bad.returncode == 2 and "unknown load balancer 'nope'" in bad.stderr

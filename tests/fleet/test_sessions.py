"""Issue 18's session model: shared system prompt + multi-turn growth, fitted to Kimi's Mooncake
trace, giving block hashes to workloads without them. Figures asserted against the shipped slice
and the full trace's published share (36.6 % reusable prompt blocks, one unbounded cache)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tokenomy.catalog import load_catalog
from tokenomy.errors import TokenomyError
from tokenomy.fleet.planner import PlanRequest, plan_fleet
from tokenomy.fleet.sessions import (
    MOONCAKE,
    MOONCAKE_REUSABLE_BLOCK_SHARE,
    apply_session_model,
    attach_sessions,
    fit_sessions,
    reusable_block_share,
    session_workload,
)
from tokenomy.fleet.workload import head, load_trace, load_workload, scale_rate

SLICE_SHARE = 0.3142  # the shipped 3,000-request slice (16.5 min), measured by reusable_block_share
TOLERANCE = 0.015  # generated one-hour share vs Mooncake's 36.6 %, every seed


@pytest.fixture(scope="module")
def mooncake():
    return load_trace("mooncake")


def test_slice_figures_and_the_fit_on_it(mooncake):
    assert reusable_block_share(mooncake.hashes) == pytest.approx(SLICE_SHARE, abs=1e-4)
    fit = fit_sessions(mooncake)
    assert fit.system_tokens == 512 and fit.block_tokens == 512  # one shared 512-token system block
    assert fit.continue_p == pytest.approx(0.322, abs=1e-3)  # follow-up share in 16.5 min (hour: 0.387)
    # the slice's lognormals agree with the full-hour constants shipped in MOONCAKE
    for a, b, tol in ((fit.first_prompt_mu, MOONCAKE.first_prompt_mu, 0.2), (fit.output_mu, MOONCAKE.output_mu, 0.05),
                      (fit.user_mu, MOONCAKE.user_mu, 0.2), (fit.gap_mu, MOONCAKE.gap_mu, 0.2)):
        assert abs(a - b) < tol
    with pytest.raises(TokenomyError, match="needs a trace with hash_ids"):
        fit_sessions(load_trace("conv"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_hour_reproduces_mooncakes_reusable_share_and_rate(seed):
    w = session_workload(3.40, 3537.0, seed=seed)  # Mooncake: 12,031 requests in 3,537 s
    assert abs(reusable_block_share(w.hashes) - MOONCAKE_REUSABLE_BLOCK_SHARE) <= TOLERANCE
    assert w.rate_per_s == pytest.approx(3.40, rel=0.03)
    assert w.prompt_tokens.mean() == pytest.approx(12035, rel=0.15)  # Mooncake's mean input
    assert (w.prompt_tokens <= MOONCAKE.max_prompt_tokens).all() and (w.output_tokens <= 2000).all()
    assert all(len(h) == -(-p // 512) for h, p in zip(w.hashes, w.prompt_tokens.tolist()))
    assert all(h[0] == 0 for h, p in zip(w.hashes, w.prompt_tokens.tolist()) if p >= 512)  # shared system block


def test_generated_window_of_the_slices_length_reproduces_the_slice():
    shares = [reusable_block_share(session_workload(3.04, 987.0, seed=s).hashes) for s in range(3)]
    assert abs(np.mean(shares) - SLICE_SHARE) < 0.03  # a shorter window sees fewer follow-ups


def test_generation_is_deterministic_per_seed():
    a, b, c = (session_workload(2.0, 300.0, seed=s) for s in (7, 7, 8))
    assert a.hashes == b.hashes and (a.arrived_at == b.arrived_at).all()
    assert a.hashes != c.hashes


def test_attach_sessions_gives_an_azure_trace_hashes_with_the_fitted_follow_up_share():
    conv = head(load_trace("conv"), 4000)
    tr = attach_sessions(conv, block_tokens=16)
    assert (tr.prompt_tokens == conv.prompt_tokens).all() and (tr.arrived_at == conv.arrived_at).all()
    assert tr.hash_block_tokens == 16 and len(tr.hashes) == len(conv)
    assert all(len(h) == -(-p // 16) for h, p in zip(tr.hashes, tr.prompt_tokens.tolist()))
    fit = fit_sessions(tr)
    # continuations need a prompt holding the session's last one: at or a bit below p = 0.387
    assert 0.33 < fit.continue_p <= MOONCAKE.continue_p + 0.01
    assert fit.system_tokens == 48  # Mooncake's 4.25 % system-prompt share of conv's ~1.2k-token prompts
    assert 0.2 < reusable_block_share(tr.hashes) < 0.35  # measured 0.258
    with pytest.raises(TokenomyError, match="already has block hashes"):
        attach_sessions(tr)
    with pytest.raises(TokenomyError, match="unknown session model 'x'"):
        apply_session_model(conv, "x")
    with pytest.raises(TokenomyError, match="BLOCK_TOKENS must be an integer"):
        apply_session_model(conv, "mooncake:0")


def test_cli_session_model_and_session_workload():
    r = subprocess.run([sys.executable, "-m", "tokenomy", "simulate", "--trace", "conv", "--limit", "600",
                        "--session-model", "mooncake:16", "--model", "llama-3-8b", "--accelerator", "h100",
                        "--replicas", "2", "--routing", "prefix-affinity", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["trace"]["hash_block_tokens"] == 16 and d["trace"]["reusable_block_share"] > 0.1
    assert d["prefix_cache_hit_share"] > 0.05
    bad = subprocess.run([sys.executable, "-m", "tokenomy", "simulate", "--trace", "mooncake", "--session-model",
                          "mooncake"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "already has block hashes" in bad.stderr and "Traceback" not in bad.stderr
    assert load_workload("session:2:120", seed=1).hashes is not None
    with pytest.raises(TokenomyError, match="expected session:RATE"):
        load_workload("session:x")


def _plan(tr, caching, routing, ttft_ms):
    cat = load_catalog()
    req = PlanRequest(model=cat.model("llama-3.1-8b"), accelerators=(cat.accelerator("h100"),), slo_tpot_ms=60.0,
                      slo_ttft_ms=ttft_ms, attainment_target=0.95, counts=(1,), prefix_caching=caching,
                      routing=routing)
    return plan_fleet(tr, req)


# (workload, routing, TTFT SLO ms, GPUs measured with / without the cache; deterministic simulations)
CASES = [("mooncake", "prefix-affinity", 8000.0, (10, 12)),
         ("session:6:240", "prefix-affinity", 8000.0, (8, 8)),
         ("session:6:600", "least-loaded", 4000.0, (10, 11))]


@pytest.mark.parametrize("workload,routing,ttft_ms,measured", CASES)
def test_planner_counts_cache_hits_same_slo_fewer_or_equal_gpus(workload, routing, ttft_ms, measured, mooncake):
    tr = scale_rate(head(mooncake, 1500), 2.0) if workload == "mooncake" else load_workload(workload, seed=0)
    on, off = _plan(tr, True, routing, ttft_ms), _plan(tr, False, routing, ttft_ms)
    for p in (on, off):
        assert p["meets_target"]
    gpus = lambda p: sum(a["devices"] for a in p["assignments"])  # noqa: E731
    assert gpus(on) <= gpus(off) and on["usd_per_hour"] <= off["usd_per_hour"]
    assert (gpus(on), gpus(off)) == measured

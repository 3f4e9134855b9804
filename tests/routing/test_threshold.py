"""ShareThreshold: the strong-share target followed on live scores (per observation, no clock)."""

from __future__ import annotations

import numpy as np
import pytest

from tokenomy.routing.quality.threshold import ShareThreshold


def _live_share(th: ShareThreshold, scores) -> float:
    strong = 0
    for s in scores:
        strong += s >= th.value   # decided with the cut in force, then observed
        th.observe(s)
    return strong / len(scores)


def test_follows_a_shifted_distribution_to_the_target_share():
    rng = np.random.default_rng(1)
    start = rng.beta(2, 5, 300)                    # the start-up sample: mostly low scores
    th = ShareThreshold(0.3, start, half_life=1000)
    static = th.value
    live = rng.beta(5, 2, 6000)                     # live traffic scores far higher
    assert (live >= static).mean() > 0.8           # a fixed cut would send > 80 % strong
    _live_share(th, live[:3000])                    # adapt
    assert _live_share(th, live[3000:]) == pytest.approx(0.3, abs=0.03)
    assert th.strong_share_estimate() == pytest.approx(0.3, abs=0.02)
    assert th.to_json()["observed"] == 6000


def test_deterministic_and_edges():
    scores = list(np.random.default_rng(2).random(500))
    a, b = ShareThreshold(0.5, scores[:50]), ShareThreshold(0.5, scores[:50])
    for s in scores:
        a.observe(s)
        b.observe(s)
    assert a.value == b.value
    nobody = ShareThreshold(0.0, scores)
    assert not any(s >= nobody.value for s in scores)
    everybody = ShareThreshold(1.0, scores)
    assert all(s >= everybody.value for s in scores)
    with pytest.raises(ValueError):
        ShareThreshold(1.5)


def test_many_observations_do_not_overflow_and_merge_pools_replicas():
    rng = np.random.default_rng(3)
    a = ShareThreshold(0.2, half_life=50, refresh_every=1)
    for s in rng.random(40000):                    # the weight grows 0.5 ** (-1/50) per step: renormalised
        a.observe(s)
    assert np.isfinite(a.counts).all() and a.value == pytest.approx(0.8, abs=0.08)
    b = ShareThreshold(0.2, half_life=50)
    for s in rng.random(2000) * 0.5:              # another replica saw lower scores
        b.observe(s)
    a.merge(b)
    assert 0.4 < a.value < 0.8                     # the pooled quantile lies between the two


def test_peer_histograms_make_one_cut_for_skewed_replicas():
    """Replica A sees low scores, B high ones; exchanging histograms every 8 decisions (what
    share_sync does through Redis) gives both the same cut, and the COMBINED strong share meets the
    target while A's own share falls below it; without peers each replica meets it on its own."""
    rng = np.random.default_rng(4)
    low, high = rng.beta(2, 6, 4000), rng.beta(6, 2, 4000)

    def run(exchange: bool):
        a, b = ShareThreshold(0.3, half_life=500), ShareThreshold(0.3, half_life=500)
        went_a, went_b = [], []
        for i in range(4000):
            went_a.append(low[i] >= a.value)
            went_b.append(high[i] >= b.value)
            a.observe(low[i])
            b.observe(high[i])
            if exchange and (i + 1) % 8 == 0:
                a.set_peers([b.normalised()])
                b.set_peers([a.normalised()])
        return np.mean(went_a[2000:]), np.mean(went_b[2000:]), a, b

    share_a, share_b, a, b = run(True)
    assert (share_a + share_b) / 2 == pytest.approx(0.3, abs=0.02)
    assert share_a < 0.1 and share_b > 0.5 and a.value == pytest.approx(b.value, rel=0.05)
    assert a.to_json()["peer_mass"] == pytest.approx(b.normalised().sum(), rel=0.05)
    local_a, local_b, _, _ = run(False)
    assert local_a == pytest.approx(0.3, abs=0.03) and local_b == pytest.approx(0.3, abs=0.03)
    a.set_peers([])                                  # peers gone (Redis away): back to the own histogram
    assert a.peers.sum() == 0 and a.value < b.value

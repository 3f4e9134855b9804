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

"""RouteLLM metrics on cases small enough to compute by hand."""

import numpy as np
import pytest

from tokenomy.routing.quality.metrics import apgr, bootstrap_apgr, cpt, curve, evaluate_scores

# Four prompts:       A     B     C     D
WEAK = [0.0, 0.0, 1.0, 1.0]
STRONG = [1.0, 1.0, 1.0, 0.0]
# W = 0.5, S = 0.75, gap = 0.25; total gain n*gap = 1.


def test_router_curve_apgr_cpt_by_hand():
    # Scores rank A > C > B > D, so the gains in routing order are +1, 0, +1, -1 and the
    # cumulative gain G(k) at k = 0..4 strong calls is 0, 1, 1, 2, 1.  PGR(share) = G(4 share) / 1.
    c = curve([0.9, 0.7, 0.8, 0.1], WEAK, STRONG)
    assert c.weak_mean == 0.5 and c.strong_mean == 0.75
    # Quality at 25% strong calls: W + G(1)/4 = 0.75; at 75%: 0.5 + 2/4 = 1.0.
    assert c.quality_at(0.25) == pytest.approx(0.75)
    assert c.quality_at(0.75) == pytest.approx(1.0)
    # The 101-point grid hits the knots 0.25/0.5/0.75, so the trapezoid is exact:
    # 0.25 * [(0+1)/2 + (1+1)/2 + (1+2)/2 + (2+1)/2] = 0.25 * 4.5 = 1.125.
    assert apgr(c) == pytest.approx(1.125)
    # 50% of the gap = gain 0.5, reached on the first segment (G = k) at k = 0.5 -> 12.5%.
    assert cpt(c, 50) == pytest.approx(12.5)
    assert cpt(c, 80) == pytest.approx(20.0)
    # 120% of the gap: G = 1.2 on segment k in [2, 3] (G from 1 to 2) at k = 2.2 -> 55%.
    assert cpt(c, 120) == pytest.approx(55.0)
    # PGR never exceeds 2, so 250% is never reached.
    assert cpt(c, 250) is None


def test_oracle_with_ties_by_hand():
    # Oracle scores = gains (1, 1, 0, -1): A and B tie, routed as a block (expected gain 1 each).
    # Knots (k, G): (0,0) (2,2) (3,2) (4,1) -> PGR at shares (0,0) (.5,2) (.75,2) (1,1).
    # Area: 0.5*(0+2)/2 + 0.25*2 + 0.25*(2+1)/2 = 0.5 + 0.5 + 0.375 = 1.375.
    c = curve([1, 1, 0, -1], WEAK, STRONG)
    assert apgr(c) == pytest.approx(1.375)
    assert cpt(c, 50) == pytest.approx(12.5)  # G = k on [0, 2]


def test_constant_router_is_the_random_diagonal():
    # All scores tie: G(k) = k * (total gain / n), PGR(p) = p, area 1/2, CPT(x) = x.
    c = curve([0.3] * 4, WEAK, STRONG)
    assert apgr(c) == pytest.approx(0.5)
    assert cpt(c, 50) == pytest.approx(50.0)
    assert cpt(c, 80) == pytest.approx(80.0)


def test_grid_error_when_knots_fall_between_grid_points():
    # n = 3, gains (1, 0, 0) in routing order: PGR(p) = min(3p, 1); exact area 1 - 1/6 = 5/6.
    # The 101-point trapezoid cuts the kink at p = 1/3 between 0.33 and 0.34, losing 3.3e-5.
    c = curve([3, 2, 1], [0, 0, 0], [1, 0, 0])
    assert apgr(c) == pytest.approx(5 / 6 - 1 / 30000, abs=1e-9)
    assert cpt(c, 50) == pytest.approx(100 / 6)


def test_no_gap_is_an_error():
    with pytest.raises(ValueError, match="gap"):
        apgr(curve([1, 2], [1, 1], [1, 0]))


def test_evaluate_and_bootstrap():
    rng = np.random.default_rng(1)
    weak = rng.integers(0, 2, 400).astype(float)
    strong = np.maximum(weak, rng.integers(0, 2, 400)).astype(float)
    perfect = strong - weak
    res = evaluate_scores(perfect, weak, strong, n_boot=200, seed=3)
    assert res.n == 400
    # Oracle with only non-negative gains: PGR(p) = min(p / g, 1), g = share of gains;
    # area = 1 - g/2.
    g = perfect.mean()
    assert res.apgr == pytest.approx(1 - g / 2, abs=1e-3)
    lo, hi = res.apgr_ci
    assert lo <= res.apgr <= hi and hi - lo < 0.1
    assert bootstrap_apgr(perfect, weak, strong, n_boot=50, seed=3) == bootstrap_apgr(perfect, weak, strong, n_boot=50, seed=3)
    assert set(res.to_json()) == {"n", "apgr", "cpt50", "cpt80", "weak_mean", "strong_mean", "apgr_ci95"}

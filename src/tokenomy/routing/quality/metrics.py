"""RouteLLM's routing metrics: the quality vs strong-call-share curve, APGR and CPT.

A router gives each prompt a score; routing "the top x% highest-scored prompts to the strong
model" gives a quality Q(x) between the all-weak mean W (x = 0) and the all-strong mean S
(x = 100%). PGR(x) = (Q(x) - W) / (S - W) is the share of the gap recovered.

- APGR: area under PGR over strong-call share in [0, 1], trapezoid rule on 101 points
  (0%, 1%, ..., 100%).
- CPT(x): the smallest strong-call share (in %) whose PGR reaches x%.

Two conventions make the metrics exact and deterministic:
- ties in the score are routed as a block in random order, so their expected gain is used
  (a constant router gives exactly the random diagonal, APGR = 0.5);
- a fractional number of strong calls (x * n not an integer) counts the marginal prompt
  fractionally (the curve is linear between prompts).
Both make the curve the piecewise-linear function G(k) of k in [0, n] strong calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

GRID_POINTS = 101


@dataclass(frozen=True, slots=True)
class Curve:
    """Cumulative gain knots: routing knots_k[i] prompts to strong gains knots_gain[i] in total."""

    n: int
    weak_mean: float
    strong_mean: float
    knots_k: np.ndarray
    knots_gain: np.ndarray

    def quality_at(self, share: np.ndarray | float) -> np.ndarray:
        """Mean quality when a share in [0, 1] of prompts goes to the strong model."""
        k = np.asarray(share, dtype=float) * self.n
        return self.weak_mean + np.interp(k, self.knots_k, self.knots_gain) / self.n

    @property
    def gap(self) -> float:
        return self.strong_mean - self.weak_mean


def curve(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float]) -> Curve:
    s = np.asarray(scores, dtype=float)
    w = np.asarray(weak, dtype=float)
    st = np.asarray(strong, dtype=float)
    if not (s.shape == w.shape == st.shape) or s.ndim != 1 or s.size == 0:
        raise ValueError("scores, weak and strong must be equal-length non-empty 1-D arrays")
    gain = st - w
    order = np.argsort(-s, kind="stable")
    s_sorted, g_sorted = s[order], gain[order]
    # Knots at the end of each tie group; inside a group G is linear (expected gain).
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True]) + 1
    # A group of distinct scores still needs a knot per prompt: every group end is a knot, and
    # ends of size-1 groups are exactly per-prompt knots.
    cum = np.cumsum(g_sorted)
    knots_k = np.r_[0.0, ends.astype(float)]
    knots_gain = np.r_[0.0, cum[ends - 1]]
    return Curve(s.size, float(w.mean()), float(st.mean()), knots_k, knots_gain)


def pgr_curve(c: Curve, points: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(share in %, PGR) on an evenly spaced grid of `points` shares from 0% to 100%."""
    if c.gap <= 0:
        raise ValueError("strong mean quality must exceed weak mean quality (no gap to recover)")
    share = np.linspace(0.0, 1.0, points)
    pgr = (c.quality_at(share) - c.weak_mean) / c.gap
    return share * 100.0, pgr


def apgr(c: Curve, points: int = GRID_POINTS) -> float:
    share_pct, pgr = pgr_curve(c, points)
    # trapezoid rule over share in [0, 1]
    dx = 1.0 / (points - 1)
    return float(dx * (pgr.sum() - 0.5 * (pgr[0] + pgr[-1])))


def cpt(c: Curve, percent: float) -> float | None:
    """Smallest strong-call share (%) recovering `percent`% of the gap; None if never reached."""
    if c.gap <= 0:
        raise ValueError("strong mean quality must exceed weak mean quality (no gap to recover)")
    target = percent / 100.0 * c.gap * c.n
    k, g = c.knots_k, c.knots_gain
    eps = 1e-12 * max(1.0, abs(target))
    if target <= eps:
        return 0.0
    hit = np.flatnonzero(g >= target - eps)
    if hit.size == 0:
        return None
    i = int(hit[0])  # first knot at/above target; g[i-1] < target so the segment rises
    k_at = k[i - 1] + (target - g[i - 1]) * (k[i] - k[i - 1]) / (g[i] - g[i - 1])
    return float(100.0 * k_at / c.n)


def bootstrap_apgr(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float], *,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of APGR over prompts (resamples with a zero gap are skipped)."""
    s, w, st = (np.asarray(a, dtype=float) for a in (scores, weak, strong))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, s.size, s.size)
        c = curve(s[idx], w[idx], st[idx])
        if c.gap > 0:
            vals.append(apgr(c))
    if not vals:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(vals, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True, slots=True)
class EvalResult:
    n: int
    apgr: float
    cpt50: float | None
    cpt80: float | None
    weak_mean: float
    strong_mean: float
    apgr_ci: tuple[float, float] | None = None

    def to_json(self) -> dict:
        out = {"n": self.n, "apgr": round(self.apgr, 4),
               "cpt50": None if self.cpt50 is None else round(self.cpt50, 2),
               "cpt80": None if self.cpt80 is None else round(self.cpt80, 2),
               "weak_mean": round(self.weak_mean, 4), "strong_mean": round(self.strong_mean, 4)}
        if self.apgr_ci is not None:
            out["apgr_ci95"] = [round(self.apgr_ci[0], 4), round(self.apgr_ci[1], 4)]
        return out


def evaluate_scores(scores: Sequence[float], weak: Sequence[float], strong: Sequence[float], *,
                    n_boot: int = 0, seed: int = 0) -> EvalResult:
    c = curve(scores, weak, strong)
    ci = bootstrap_apgr(scores, weak, strong, n_boot=n_boot, seed=seed) if n_boot > 0 else None
    return EvalResult(c.n, apgr(c), cpt(c, 50), cpt(c, 80), c.weak_mean, c.strong_mean, ci)

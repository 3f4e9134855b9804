"""Threshold by target: `strong_share: 0.3` means about 30 % of *live* traffic goes strong.

A fixed score cut learned on a sample drifts away from the target as soon as live prompts differ
from the sample (longer, more code, another language). `ShareThreshold` keeps an exponentially
decayed histogram of the scores the router gave to the traffic it actually saw and puts the cut
at its (1 - share) quantile; it starts from a shipped sample of real users' requests
(`startup_prompts`, weighted as `prior_weight` observations) so the first requests are routed sensibly.

- Decay is per observation (half-life `half_life` requests), never per wall-clock second: the
  estimate depends only on the sequence of scores (deterministic, testable, no clock).
- Bins are in logit space (0.01 wide over [-12, 12]): fine where scores crowd near 0 or 1.
- Replicas: each replica keeps its own estimate from the requests it serves, and `set_peers` adds
  the other replicas' histograms (`share_sync.ShareSync` exchanges them through Redis every few
  dozen decisions, off the request path): the cut is then the quantile of ALL replicas' traffic, so
  `strong_share` holds for the fleet even when a load balancer sends one replica the easy requests
  and another the hard ones (per-replica cuts would each send their own 30 %). Without peers (no
  Redis, or it is away) the estimate is the replica's own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_LO, _HI, _BINS = -12.0, 12.0, 2400
_WIDTH = (_HI - _LO) / _BINS


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


def _bin(score: float) -> int:
    return min(_BINS - 1, max(0, int((_logit(score) - _LO) / _WIDTH)))


def _score_at(edge_bin: int) -> float:
    """The score at the lower edge of a bin."""
    z = _LO + edge_bin * _WIDTH
    return 1.0 / (1.0 + math.exp(-z))


class ShareThreshold:
    """Online (1 - share) quantile of observed router scores (see the module doc)."""

    def __init__(self, share: float, initial_scores: Sequence[float] = (), *, half_life: float = 2000.0,
                 prior_weight: float = 300.0, refresh_every: int = 16):
        if not 0.0 <= share <= 1.0:
            raise ValueError("strong share must be in [0, 1]")
        if half_life <= 0 or prior_weight < 0 or refresh_every < 1:
            raise ValueError("half_life must be > 0, prior_weight >= 0, refresh_every >= 1")
        self.share = float(share)
        self.decay = 0.5 ** (1.0 / half_life)
        self.refresh_every = refresh_every
        self.counts = np.zeros(_BINS)
        self.peers = np.zeros(_BINS)   # the other replicas' histograms (normalised), see set_peers
        self._inc = 1.0          # weight of the next observation (grows instead of decaying all bins)
        self.observed = 0
        init = list(initial_scores)
        if init:
            w = prior_weight / len(init)
            for s in init:
                self.counts[_bin(float(s))] += w
        self._value = self._quantile()

    @property
    def value(self) -> float:
        """The current score threshold (go strong when score >= value)."""
        return self._value

    def observe(self, score: float) -> None:
        self._inc /= self.decay
        self.counts[_bin(float(score))] += self._inc
        self.observed += 1
        if self._inc > 1e12:     # renormalise before the weights overflow
            self.counts /= self._inc
            self._inc = 1.0
        if self.observed % self.refresh_every == 0:
            self._value = self._quantile()

    def _combined(self) -> np.ndarray:
        return self.counts + self.peers * self._inc if self.peers.any() else self.counts

    def _quantile(self) -> float:
        counts = self._combined()
        total = counts.sum()
        if total <= 0:
            return 0.5
        if self.share <= 0.0:
            return 1.0 + 1e-9    # nobody reaches it
        above = np.cumsum(counts[::-1])[::-1]   # mass at or above each bin
        # the highest bin whose mass at or above reaches the target share
        hit = np.flatnonzero(above >= self.share * total)
        return _score_at(int(hit[-1])) if hit.size else 0.0

    def strong_share_estimate(self) -> float:
        """Share of the decayed observed mass (peers' included) at or above the current threshold."""
        counts = self._combined()
        total = counts.sum()
        if total <= 0:
            return 0.0
        return float(counts[_bin(self._value):].sum() / total) if self._value <= 1.0 else 0.0

    def normalised(self) -> np.ndarray:
        """This replica's own histogram in units of the latest observation's weight (what peers add)."""
        return self.counts / self._inc

    def set_peers(self, histograms: Sequence[np.ndarray]) -> None:
        """Replace the other replicas' part of the estimate with these (normalised) histograms."""
        peers = np.zeros(_BINS)
        for h in histograms:
            h = np.asarray(h, dtype=float)
            if h.shape != (_BINS,) or not np.isfinite(h).all() or (h < 0).any():
                continue   # a foreign or corrupt entry never moves the cut
            peers += h
        self.peers = peers
        self._value = self._quantile()

    def merge(self, other: "ShareThreshold") -> None:
        """Add another estimate's (normalised) histogram into this one's own counts."""
        self.counts += other.normalised() * self._inc
        self._value = self._quantile()

    def to_json(self) -> dict:
        return {"share": self.share, "threshold": self._value, "observed": self.observed,
                "strong_share_estimate": round(self.strong_share_estimate(), 4),
                "peer_mass": round(float(self.peers.sum()), 2)}


def _calibration() -> dict:
    path = Path(__file__).resolve().parent.parent / "calibration_prompts.json"
    return json.loads(path.read_text(encoding="utf-8"))


def calibration_prompts() -> list[str]:
    """The shipped 300-prompt calibration sample (tokenomy/routing/calibration_prompts.json)."""
    return list(_calibration()["prompts"])


def startup_prompts() -> list[str]:
    """The start-up sample of a live threshold: the calibration sample's 100 AlpacaEval instructions
    (real users' requests). Its MMLU / GSM8K prompts are long benchmark-formatted questions: with them
    the start-up cut sat so high that a one-line hard request ("Implement a lock-free MPMC queue")
    went weak until live traffic had moved it."""
    d = _calibration()
    return list(d["prompts"][: int(d["chat_prompts"])])


def startup_threshold(router, share: float) -> float:
    """The threshold sending `share` of the start-up sample strong (what a gateway starts with)."""
    from tokenomy.routing.quality.choose import threshold_for_strong_share

    return threshold_for_strong_share(router, startup_prompts(), share)

"""The routing decision the gateway makes for an `auto` request.

Two kinds of router:
- a multi-model router (has `quality_of`) that knows every candidate: pick the cheapest
  candidate whose predicted quality >= threshold (a minimum quality); if none reaches it, the
  candidate with the highest predicted quality;
- a binary router (only `strong_win_rate`): candidates are ordered by price; the most
  expensive one is "strong", the cheapest "weak"; go strong when strong_win_rate >= threshold.

`threshold_for_strong_share` turns a target strong-call share into a binary threshold by
calibrating on sample prompts (as RouteLLM does).

Gateway integration (for the lead; the gateway owns the wiring):
- config: an alias (e.g. `auto`) -> routing group {candidates: [(model, price)], router:
  "default" | "mf" | artifact path, threshold | strong_share | min_quality}. Price per
  request or per Mtok, any one unit per group. With `strong_share`, compute the threshold once
  at startup with `threshold_for_strong_share(router, sample_prompts, share)`.
- per request: `d = choose_model(last_user_message, group.candidates, threshold, router=r)`
  (load `r` once; the default router decides in well under 1 ms, so call it inline), then
  dispatch to `d.model`'s deployments as usual; attach `d.headers()` to the response and
  `d.to_json()` as `extra["routing"]` of the UsageEvent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tokenomy.errors import TokenomyError


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    predicted_quality: float | None   # of the chosen model (multi-model routers only)
    threshold: float
    strong_win_rate: float
    reason: str                        # "meets_threshold" | "best_available" | "strong" | "weak"

    def to_json(self) -> dict:
        return asdict(self)

    def headers(self) -> dict[str, str]:
        """Response headers the gateway can attach."""
        h = {"x-tokenomy-route-model": self.model, "x-tokenomy-route-threshold": f"{self.threshold:.4f}",
             "x-tokenomy-route-strong-win-rate": f"{self.strong_win_rate:.4f}",
             "x-tokenomy-route-reason": self.reason}
        if self.predicted_quality is not None:
            h["x-tokenomy-route-predicted-quality"] = f"{self.predicted_quality:.4f}"
        return h


_default_router = None


def _router_or_default(router):
    global _default_router
    if router is not None:
        return router
    if _default_router is None:
        from tokenomy.routing.quality.registry import load_router

        _default_router = load_router("default")
    return _default_router


def choose_model(prompt: str, candidates: Sequence[tuple[str, float]], threshold: float, *,
                 router=None) -> Decision:
    """Choose among (model, price) candidates for `prompt` (price in any consistent unit)."""
    if not candidates:
        raise TokenomyError("routing group has no candidate models")
    router = _router_or_default(router)
    names = [m for m, _ in candidates]
    prices = np.array([float(p) for _, p in candidates])
    order = np.argsort(prices, kind="stable")           # cheapest first; ties keep config order
    cheapest, dearest = int(order[0]), int(order[-1])

    known = getattr(router, "models", None)
    if hasattr(router, "quality_of") and known is not None and all(m in known for m in names):
        q = router.quality_of(prompt, names)
        swr = float((1.0 + q[dearest] - q[cheapest]) / 2.0)
        for i in order:
            if q[i] >= threshold:
                return Decision(names[i], float(q[i]), threshold, swr, "meets_threshold")
        best = int(np.argmax(q))
        return Decision(names[best], float(q[best]), threshold, swr, "best_available")

    swr = float(router.strong_win_rate(prompt))
    if swr >= threshold and dearest != cheapest:
        return Decision(names[dearest], None, threshold, swr, "strong")
    return Decision(names[cheapest], None, threshold, swr, "weak")


def threshold_for_strong_share(router, prompts: Sequence[str], strong_share: float) -> float:
    """Win-rate threshold sending about `strong_share` (0..1) of these prompts to the strong model."""
    if not 0.0 <= strong_share <= 1.0:
        raise TokenomyError("strong-call share must be in [0, 1]")
    if not prompts:
        raise TokenomyError("need sample prompts to calibrate a strong-call share")
    from tokenomy.routing.quality.registry import score_prompts

    scores = np.sort(score_prompts(router, prompts))[::-1]
    k = int(round(strong_share * len(scores)))
    if k <= 0:
        return float(np.nextafter(scores[0], np.inf))   # nobody reaches it
    return float(scores[k - 1])

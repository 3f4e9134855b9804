"""Deployment selection inside a model group: cost, latency, cost-under-slo, weighted.

`rank()` orders the group's deployments for ONE request (first = chosen, rest = fallbacks).
Cost is the expected cost of this request, not a sum of list prices:
    input_tokens x ((1 - f) x input price + f x cached-input price) + predicted_output x output price
with f the deployment's observed cached-input fraction (EWMA; 0 until seen) and predicted
output = min(max_tokens, the group's EWMA of observed output lengths).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenomy.config import Deployment, GatewayConfig, ModelGroup
from tokenomy.gateway.health import Breaker, Ewma
from tokenomy.gateway.pricing import DeploymentPrice


class DeploymentRuntime:
    """A configured deployment plus its live state (breaker, EWMAs, in-flight)."""

    __slots__ = ("name", "cfg", "price", "p_in", "p_cached", "p_out", "p_reason", "base_url", "headers",
                 "model", "breaker", "ttft_ms", "tpot_ms", "cached_frac", "in_flight", "max_in_flight",
                 "timeout")

    def __init__(self, cfg: Deployment, price: DeploymentPrice, gc: GatewayConfig):
        self.name, self.cfg, self.price = cfg.name, cfg, price
        self.p_in, self.p_cached, self.p_out, self.p_reason = price.floats
        self.base_url = (cfg.base_url or "").rstrip("/")
        self.headers: dict[str, str] = {"Content-Type": "application/json", **cfg.headers}
        self.model = cfg.upstream_model
        self.breaker = Breaker(gc.breaker.failure_threshold, gc.breaker.cooldown_s)
        self.ttft_ms = Ewma()
        self.tpot_ms = Ewma()
        self.cached_frac = Ewma(value=0.0)
        self.in_flight = 0
        self.max_in_flight = cfg.max_in_flight
        self.timeout = None  # aiohttp.ClientTimeout, set by the app

    def set_base_url(self, url: str) -> None:
        self.base_url = url.rstrip("/")

    def expected_cost_usd(self, input_tokens: int, output_tokens: float) -> float:
        f = self.cached_frac.value or 0.0
        return input_tokens * ((1.0 - f) * self.p_in + f * self.p_cached) + output_tokens * self.p_out

    def expected_latency_ms(self, output_tokens: float) -> float:
        # Unobserved deployments score 0 so they get explored once.
        return (self.ttft_ms.value or 0.0) + (self.tpot_ms.value or 0.0) * output_tokens


@dataclass(slots=True)
class Decision:
    order: list[DeploymentRuntime]
    predicted_output_tokens: float
    slo_met: bool | None = None  # cost-under-slo only


class GroupRuntime:
    __slots__ = ("alias", "cfg", "deployments", "policy", "out_tokens", "limits", "weights", "rng")

    def __init__(self, alias: str, cfg: ModelGroup, deps: dict[str, DeploymentRuntime], prior_out: float,
                 seed: int = 0):
        self.alias, self.cfg, self.policy = alias, cfg, cfg.policy
        self.deployments = [deps[n] for n in cfg.deployments]
        self.out_tokens = Ewma(alpha=0.1, value=prior_out)
        self.limits = {d.name: cfg.in_flight_limit(d.name, d.max_in_flight) for d in self.deployments}
        self.weights = [float((cfg.weights or {}).get(d.name, 0.0)) for d in self.deployments]
        self.rng = random.Random(seed)

    def at_capacity(self, d: DeploymentRuntime) -> bool:
        limit = self.limits[d.name]
        return limit is not None and d.in_flight >= limit

    def observe_output(self, output_tokens: int) -> None:
        self.out_tokens.update(float(output_tokens))

    def rank(self, input_tokens: int, max_tokens: int | None) -> Decision:
        pred = self.out_tokens.value or 0.0
        if max_tokens is not None and max_tokens < pred:
            pred = float(max_tokens)
        deps = self.deployments
        if len(deps) == 1:
            return Decision(list(deps), pred)
        policy = self.policy
        if policy == "cost":
            key = lambda d: (not d.breaker.available(), self.at_capacity(d),  # noqa: E731
                             d.expected_cost_usd(input_tokens, pred))
            return Decision(sorted(deps, key=key), pred)
        if policy == "latency":
            key = lambda d: (not d.breaker.available(), self.at_capacity(d),  # noqa: E731
                             d.expected_latency_ms(pred))
            return Decision(sorted(deps, key=key), pred)
        if policy == "cost-under-slo":
            return self._cost_under_slo(input_tokens, pred)
        return self._weighted(pred)

    def _slo_badness(self, d: DeploymentRuntime) -> float:
        """max(observed / target) over TTFT and TPOT; <= 1 meets the SLO (unobserved counts as met)."""
        slo = self.cfg.slo
        bad = 0.0
        if slo is not None:
            if slo.ttft_ms and d.ttft_ms.value is not None:
                bad = max(bad, d.ttft_ms.value / slo.ttft_ms)
            if slo.tpot_ms and d.tpot_ms.value is not None:
                bad = max(bad, d.tpot_ms.value / slo.tpot_ms)
        return bad

    def _cost_under_slo(self, input_tokens: int, pred: float) -> Decision:
        meeting, missing = [], []
        for d in self.deployments:
            bad = self._slo_badness(d)
            ok = d.breaker.available() and bad <= 1.0 and not self.at_capacity(d)
            (meeting if ok else missing).append((d.expected_cost_usd(input_tokens, pred), bad, d))
        meeting.sort(key=lambda t: t[0])
        # Least bad first among those that miss: available, with capacity, smallest violation.
        missing.sort(key=lambda t: (not t[2].breaker.available(), self.at_capacity(t[2]), t[1], t[0]))
        order = [t[2] for t in meeting] + [t[2] for t in missing]
        return Decision(order, pred, slo_met=bool(meeting))

    def _weighted(self, pred: float) -> Decision:
        live = [(w, d) for w, d in zip(self.weights, self.deployments)
                if w > 0 and d.breaker.available() and not self.at_capacity(d)]
        rest = sorted(self.deployments, key=lambda d: -self.weights[self.deployments.index(d)])
        if not live:
            return Decision(rest, pred)
        x = self.rng.random() * sum(w for w, _ in live)
        chosen = live[-1][1]
        for w, d in live:
            x -= w
            if x < 0:
                chosen = d
                break
        return Decision([chosen] + [d for d in rest if d is not chosen], pred)


def build_groups(gc: GatewayConfig, deps: dict[str, DeploymentRuntime]) -> dict[str, GroupRuntime]:
    return {alias: GroupRuntime(alias, g, deps, gc.defaults.predicted_output_tokens, seed=i)
            for i, (alias, g) in enumerate(gc.groups().items())}

"""Prometheus metrics of one gateway (own registry, so several apps can live in one process).

Labelled children are cached per label tuple: `.labels()` does a lock + dict walk, too slow to
repeat several times per request on the hot path. Breaker state and in-flight counts are read
at scrape time by a collector (no hot-path cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from tokenomy.gateway.health import STATE_NAMES

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _Live:
    def __init__(self, deployments: Callable[[], Iterable]):
        self._deployments = deployments

    def collect(self):
        state = GaugeMetricFamily("tokenomy_breaker_state",
                                  "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
                                  labels=["deployment", "state"])
        inflight = GaugeMetricFamily("tokenomy_in_flight", "Requests in flight per deployment",
                                     labels=["deployment"])
        for d in self._deployments():
            state.add_metric([d.name, STATE_NAMES[d.breaker.state]], d.breaker.state)
            inflight.add_metric([d.name], d.in_flight)
        yield state
        yield inflight


class Metrics:
    def __init__(self, deployments: Callable[[], Iterable]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tokenomy_requests", "Requests served",
                                ["model", "deployment", "tenant", "status"], registry=r)
        self.tokens = Counter("tokenomy_tokens", "Tokens by category",
                              ["deployment", "tenant", "category"], registry=r)
        self.cost = Counter("tokenomy_cost_usd", "Cost at the deployment's price (USD)",
                            ["deployment", "tenant"], registry=r)
        self.energy = Counter("tokenomy_energy_joules", "Estimated energy (J)", ["deployment", "tenant"],
                              registry=r)
        self.latency = Histogram("tokenomy_request_latency_seconds", "End-to-end latency",
                                 ["deployment", "tenant"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tokenomy_ttft_seconds", "Time to first token (streams)",
                              ["deployment", "tenant"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("tokenomy_upstream_errors", "Failed upstream attempts",
                                       ["deployment", "kind"], registry=r)
        self.rejections = Counter("tokenomy_rejections", "Requests refused before dispatch",
                                  ["reason"], registry=r)
        r.register(_Live(deployments))
        self._children: dict[tuple, tuple] = {}

    def observe(self, ev) -> None:
        key = (ev.model, ev.deployment, ev.tenant, ev.status)
        ch = self._children.get(key)
        if ch is None:
            d, t = ev.deployment, ev.tenant
            ch = (self.requests.labels(ev.model, d, t, ev.status),
                  self.tokens.labels(d, t, "input"), self.tokens.labels(d, t, "cached_input"),
                  self.tokens.labels(d, t, "output"), self.tokens.labels(d, t, "reasoning"),
                  self.cost.labels(d, t), self.energy.labels(d, t), self.latency.labels(d, t),
                  self.ttft.labels(d, t))
            self._children[key] = ch
        req, t_in, t_cached, t_out, t_reason, cost, energy, latency, ttft = ch
        req.inc()
        if ev.input_tokens:
            t_in.inc(ev.input_tokens)
        if ev.cached_input_tokens:
            t_cached.inc(ev.cached_input_tokens)
        if ev.output_tokens:
            t_out.inc(ev.output_tokens)
        if ev.reasoning_tokens:
            t_reason.inc(ev.reasoning_tokens)
        if ev.cost_usd:
            cost.inc(float(ev.cost_usd))
        if ev.energy_joules:
            energy.inc(ev.energy_joules)
        latency.observe(ev.latency_ms / 1000.0)
        if ev.ttft_ms is not None:
            ttft.observe(ev.ttft_ms / 1000.0)

    def upstream_error(self, deployment: str, kind: str) -> None:
        self.upstream_errors.labels(deployment, kind).inc()

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

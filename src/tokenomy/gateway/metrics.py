"""Prometheus metrics of one gateway (own registry, so several apps can live in one process).

The hot path touches plain Python numbers only: per label tuple one small slotted object
holds the counters and histogram buckets, updated without prometheus_client's per-sample
locks (every update runs on the event loop's thread). A collector turns them into metric
families at scrape time, as do breaker state and in-flight counts (no hot-path cost).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from tokenomy.gateway.health import STATE_NAMES

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_BUCKET_LABELS = tuple(floatToGoString(b) for b in _LATENCY_BUCKETS) + ("+Inf",)
_TOKEN_CATEGORIES = ("input", "cached_input", "output", "reasoning")


class _Hist:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # per bucket (not cumulative); last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_LATENCY_BUCKETS, value)] += 1  # first bound >= value ("le")
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for label, n in zip(_BUCKET_LABELS, self.counts):
            acc += n
            out.append((label, float(acc)))
        return out


class _PerDeploymentTenant:
    """Counters of one (deployment, tenant)."""

    __slots__ = ("tokens", "cost", "energy", "latency", "ttft")

    def __init__(self) -> None:
        self.tokens = [0, 0, 0, 0]  # _TOKEN_CATEGORIES
        self.cost = 0.0
        self.energy = 0.0
        self.latency = _Hist()
        self.ttft = _Hist()


class _Series:
    """What one (model, deployment, tenant, status) updates: its request count and the
    (deployment, tenant) counters (shared by every model and status)."""

    __slots__ = ("requests", "dt")

    def __init__(self, dt: _PerDeploymentTenant) -> None:
        self.requests = 0
        self.dt = dt


class _Collector:
    def __init__(self, metrics: "Metrics", deployments: Callable[[], Iterable]):
        self._m = metrics
        self._deployments = deployments

    def collect(self):
        m = self._m
        requests = CounterMetricFamily("tokenomy_requests", "Requests by outcome: status ok | upstream_error (the "
                                       "deployment failed) | error (the client's own: a 4xx passed back) | cancelled "
                                       "(the client went away); only upstream_error reflects the deployment's health",
                                       labels=["model", "deployment", "tenant", "status"])
        for key, s in m._series.items():
            requests.add_metric(list(key), float(s.requests))
        tokens = CounterMetricFamily("tokenomy_tokens", "Tokens by category", labels=["deployment", "tenant", "category"])
        cost = CounterMetricFamily("tokenomy_cost_usd", "Cost at the deployment's price (USD)",
                                   labels=["deployment", "tenant"])
        energy = CounterMetricFamily("tokenomy_energy_joules", "Estimated energy (J)", labels=["deployment", "tenant"])
        latency = HistogramMetricFamily("tokenomy_request_latency_seconds", "End-to-end latency",
                                        labels=["deployment", "tenant"])
        ttft = HistogramMetricFamily("tokenomy_ttft_seconds", "Time to first token (streams)",
                                     labels=["deployment", "tenant"])
        for (dep, tenant), c in m._dt.items():
            for category, n in zip(_TOKEN_CATEGORIES, c.tokens):
                tokens.add_metric([dep, tenant, category], float(n))
            cost.add_metric([dep, tenant], c.cost)
            energy.add_metric([dep, tenant], c.energy)
            latency.add_metric([dep, tenant], c.latency.cumulative(), c.latency.sum)
            ttft.add_metric([dep, tenant], c.ttft.cumulative(), c.ttft.sum)
        errors = CounterMetricFamily("tokenomy_upstream_errors", "Failed upstream attempts", labels=["deployment", "kind"])
        for key, n in m._upstream_errors.items():
            errors.add_metric(list(key), float(n))
        anomalies = CounterMetricFamily("tokenomy_usage_anomalies",
                                        "Answers whose reported usage was invalid or out of bounds (billed bounded)",
                                        labels=["deployment"])
        for dep, n in m._usage_anomalies.items():
            anomalies.add_metric([dep], float(n))
        rejections = CounterMetricFamily("tokenomy_rejections", "Requests refused before dispatch", labels=["reason"])
        for reason, n in m._rejections.items():
            rejections.add_metric([reason], float(n))
        state = GaugeMetricFamily("tokenomy_breaker_state",
                                  "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
                                  labels=["deployment", "state"])
        inflight = GaugeMetricFamily("tokenomy_in_flight", "Requests in flight per deployment",
                                     labels=["deployment"])
        for d in self._deployments():
            state.add_metric([d.name, STATE_NAMES[d.breaker.state]], d.breaker.state)
            inflight.add_metric([d.name], d.in_flight)
        yield from (requests, tokens, cost, energy, latency, ttft, errors, anomalies, rejections, state, inflight)


class Metrics:
    def __init__(self, deployments: Callable[[], Iterable]):
        self.registry = CollectorRegistry()
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._dt: dict[tuple[str, str], _PerDeploymentTenant] = {}
        self._upstream_errors: dict[tuple[str, str], int] = {}
        self._rejections: dict[str, int] = {}
        self._usage_anomalies: dict[str, int] = {}
        self.registry.register(_Collector(self, deployments))

    def _new_series(self, key: tuple[str, str, str, str]) -> _Series:
        dt_key = (key[1], key[2])
        dt = self._dt.get(dt_key)
        if dt is None:
            dt = self._dt[dt_key] = _PerDeploymentTenant()
        s = self._series[key] = _Series(dt)
        return s

    def observe(self, ev) -> None:
        key = (ev.model, ev.deployment, ev.tenant, ev.status)
        s = self._series.get(key) or self._new_series(key)
        s.requests += 1
        c = s.dt
        tokens = c.tokens
        tokens[0] += ev.input_tokens
        tokens[1] += ev.cached_input_tokens
        tokens[2] += ev.output_tokens
        tokens[3] += ev.reasoning_tokens
        if ev.cost_usd:
            c.cost += float(ev.cost_usd)
        if ev.energy_joules:
            c.energy += ev.energy_joules
        c.latency.observe(ev.latency_ms / 1000.0)
        if ev.ttft_ms is not None:
            c.ttft.observe(ev.ttft_ms / 1000.0)

    def upstream_error(self, deployment: str, kind: str) -> None:
        key = (deployment, kind)
        self._upstream_errors[key] = self._upstream_errors.get(key, 0) + 1

    def usage_anomaly(self, deployment: str) -> None:
        self._usage_anomalies[deployment] = self._usage_anomalies.get(deployment, 0) + 1

    def rejected(self, reason: str) -> None:
        self._rejections[reason] = self._rejections.get(reason, 0) + 1

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""A whole benchmark: each endpoint in turn (its own load, one run per offered rate), then
pricing, optional judged quality and optional contract compliance. An endpoint that
cannot be reached, refuses the key or breaks mid-stream gets its errors counted by kind;
the others are unaffected."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import aiohttp

from tokenomy.errors import TokenomyError

from .client import RequestResult
from .judge import Quality, judge_pairs, sample_pairs
from .load import LoadPlan, Target, arrival_offsets, run_load
from .metrics import Metrics, Slo, compute_metrics
from .pricing import Pricing, resolve_pricing
from .spec import EndpointSpec
from .terms import Measured, ProviderTerms, check_terms

DEFAULT_TIMEOUT_S = 60.0


@dataclass
class BenchConfig:
    endpoints: list[EndpointSpec]
    lengths: list[tuple[int, int]]
    rates: list[float] | None = None  # open loop, one run per rate (a sweep)
    concurrency: int | None = None  # closed loop
    arrivals_s: list[float] | None = None  # trace replay (when neither rates nor concurrency)
    max_requests: int | None = None
    duration_s: float | None = None
    slo: Slo = field(default_factory=Slo)
    timeout_s: float = DEFAULT_TIMEOUT_S
    seed: int = 0
    seed_texts: list[str] | None = None
    judge: EndpointSpec | None = None
    judge_samples: int = 8
    terms: dict[str, ProviderTerms] | None = None
    workload: dict = field(default_factory=dict)  # description, for the output

    def plans(self, keep_text: bool) -> list[LoadPlan]:
        common = dict(lengths=self.lengths, max_requests=self.max_requests, duration_s=self.duration_s,
                      seed=self.seed, seed_texts=self.seed_texts, keep_text=keep_text)
        if self.concurrency is not None:
            return [LoadPlan(concurrency=self.concurrency, **common)]
        if self.rates:
            return [LoadPlan(rate_per_s=r, **common) for r in self.rates]
        if self.arrivals_s is not None:
            return [LoadPlan(arrivals_s=self.arrivals_s, **common)]
        return [LoadPlan(concurrency=1, **common)]


@dataclass
class EndpointRun:
    rate_per_s: float | None
    concurrency: int | None
    metrics: Metrics
    pricing: Pricing | None = None  # priced at this run's own throughput

    def to_dict(self) -> dict:
        rate = None if self.rate_per_s is None else ("inf" if math.isinf(self.rate_per_s) else self.rate_per_s)
        p = self.pricing
        return {"rate_per_s": rate, "concurrency": self.concurrency, **self.metrics.to_dict(),
                "usd_per_mtok_input": p.usd_per_mtok_input if p else None,
                "usd_per_mtok_output": p.usd_per_mtok_output if p else None,
                "usd_per_1k_requests": p.usd_per_1k_requests if p else None}


@dataclass
class EndpointResult:
    spec: EndpointSpec
    model: str
    runs: list[EndpointRun] = field(default_factory=list)
    pricing: Pricing | None = None
    quality: Quality | None = None
    compliance: dict | None = None
    results: list[RequestResult] = field(default_factory=list, repr=False)

    @property
    def metrics(self) -> Metrics:
        """The headline figures: the last run (the highest load of an increasing sweep)."""
        return self.runs[-1].metrics

    def to_dict(self) -> dict:
        m = self.metrics.to_dict()
        p = self.pricing
        return {
            "url": self.spec.base_url, "model": self.model, **m,
            "usd_per_mtok_input": p.usd_per_mtok_input if p else None,
            "usd_per_mtok_output": p.usd_per_mtok_output if p else None,
            "usd_per_1k_requests": p.usd_per_1k_requests if p else None,
            "pricing": p.to_dict() if p else None,
            "quality": self.quality.to_dict() if self.quality else None,
            "compliance": self.compliance,
            "sweep": [r.to_dict() for r in self.runs] if len(self.runs) > 1 else None,
        }


@dataclass
class BenchResult:
    config: BenchConfig
    endpoints: dict[str, EndpointResult]

    def to_dict(self) -> dict:
        c = self.config
        return {
            "endpoints": {name: e.to_dict() for name, e in self.endpoints.items()},
            "workload": c.workload,
            "load": {"rates_per_s": [("inf" if math.isinf(r) else r) for r in c.rates] if c.rates else None,
                     "concurrency": c.concurrency, "trace_replay": c.arrivals_s is not None and not c.rates
                     and c.concurrency is None, "max_requests": c.max_requests, "duration_s": c.duration_s,
                     "seed": c.seed, "timeout_s": c.timeout_s},
            "slo": {"ttft_ms": c.slo.ttft_ms, "tpot_ms": c.slo.tpot_ms},
        }


class Progress:
    """Progress callbacks (the CLI draws a rich bar with them)."""

    def start(self, label: str, total: int | None) -> None: ...
    def advance(self, label: str, result: RequestResult) -> None: ...
    def finish(self, label: str) -> None: ...


def endpoint_headers(spec: EndpointSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json", **spec.headers}
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise TokenomyError(f"endpoint {spec.name}: environment variable {spec.api_key_env} is not set")
        headers["Authorization"] = f"Bearer {key}"
    return headers


def validate_prices(specs: list[EndpointSpec]) -> None:
    """Resolve price ids, accelerators and sites before any load is sent (fail fast)."""
    for s in specs:
        p = s.price
        if p is None:
            continue
        if p.kind == "map":
            from tokenomy.catalog.prices import default_price_map

            default_price_map().get(p.price_id or p.text)
        elif p.kind == "self_hosted":
            from tokenomy.catalog import load_catalog
            from tokenomy.economics import ownership_price, rental_price

            cat = load_catalog()
            acc = cat.accelerator(p.accelerator or "")
            cat.site(p.site or "")
            ownership_price(acc) if p.ownership else rental_price(acc)


async def resolve_model(spec: EndpointSpec, headers: dict[str, str], timeout_s: float) -> str:
    """The endpoint's model: as given, else the first id of GET /models, else "default"."""
    if spec.model:
        return spec.model
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=min(timeout_s, 10.0))) as session:
            async with session.get(spec.base_url + "/models", headers=headers) as resp:
                if resp.status == 200:
                    data = (await resp.json(content_type=None)).get("data") or []
                    if data and isinstance(data[0], dict) and data[0].get("id"):
                        return str(data[0]["id"])
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
        pass  # the benchmark's requests will report the problem by kind
    return "default"


def run_label(spec: EndpointSpec, plan: LoadPlan) -> str:
    if plan.concurrency is not None:
        return f"{spec.name} c={plan.concurrency}"
    if plan.rate_per_s is not None:
        return f"{spec.name} {plan.rate_per_s:g} req/s"
    return f"{spec.name} trace"


def plan_total(plan: LoadPlan) -> int | None:
    if plan.concurrency is None:
        return len(arrival_offsets(plan))
    return plan.max_requests if plan.duration_s is None else None


async def bench_endpoint(spec: EndpointSpec, cfg: BenchConfig, progress: Progress) -> EndpointResult:
    headers = endpoint_headers(spec)
    timeout_s = spec.timeout_seconds or cfg.timeout_s
    model = await resolve_model(spec, headers, timeout_s)
    target = Target(spec.name, spec.base_url + "/chat/completions", model, headers, timeout_s)
    out = EndpointResult(spec, model)
    for plan in cfg.plans(keep_text=cfg.judge is not None):
        label = run_label(spec, plan)
        progress.start(label, plan_total(plan))
        load = await run_load(target, plan, on_result=lambda r, label=label: progress.advance(label, r))
        progress.finish(label)
        metrics = compute_metrics(load.results, load.duration_s, cfg.slo)
        out.runs.append(EndpointRun(plan.rate_per_s, plan.concurrency, metrics, resolve_pricing(spec.price, metrics)))
        out.results.extend(load.results)
    out.pricing = resolve_pricing(spec.price, out.metrics)
    return out


def compliance_for(result: EndpointResult, terms: ProviderTerms) -> dict:
    m, p = result.metrics, result.pricing
    measured = Measured(p.usd_per_mtok_input if p else None, p.usd_per_mtok_output if p else None,
                        m.ttft_samples_ms, m.tpot_samples_ms, m.availability, m.requests)
    return check_terms(terms, measured)


async def run_bench(cfg: BenchConfig, progress: Progress | None = None) -> BenchResult:
    progress = progress or Progress()
    validate_prices(cfg.endpoints)
    for s in cfg.endpoints:
        endpoint_headers(s)  # missing API-key variables fail before any load
    judge_target = None
    if cfg.judge is not None:
        jh = endpoint_headers(cfg.judge)
        jt = cfg.judge.timeout_seconds or cfg.timeout_s
        judge_target = Target(cfg.judge.name, cfg.judge.base_url + "/chat/completions",
                              await resolve_model(cfg.judge, jh, jt), jh, jt)
    results: dict[str, EndpointResult] = {}
    for spec in cfg.endpoints:
        res = await bench_endpoint(spec, cfg, progress)
        if judge_target is not None:
            pairs = sample_pairs(res.results, cfg.judge_samples, cfg.seed)
            res.quality = await judge_pairs(judge_target, pairs)
        if cfg.terms is not None and spec.name in cfg.terms:
            res.compliance = compliance_for(res, cfg.terms[spec.name])
        results[spec.name] = res
    return BenchResult(cfg, results)


def run_bench_sync(cfg: BenchConfig, progress: Progress | None = None) -> BenchResult:
    import asyncio

    return asyncio.run(run_bench(cfg, progress))


__all__ = ["BenchConfig", "BenchResult", "EndpointResult", "EndpointRun", "Progress", "run_bench", "run_bench_sync"]

"""What the same traffic would have cost without routing (pure functions).

- all-strong: every request served by the strongest model (the configured one, else the
  model with the highest per-token rates), at that model's request-weighted deployment rates;
- single-deployment: each model's requests all served by ONE deployment of that model (the
  configured one, else the first deployment of its gateway group, else its most used one).

Per-token rates come from the gateway's deployment prices when the gateway runs in the same
app; otherwise from the ledger itself (a deployment's cost / tokens, one blended rate).
Token counts follow OpenAI usage: input includes cached input, output includes reasoning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token by category."""

    input: float
    cached_input: float
    output: float
    reasoning: float

    def cost_usd(self, input_tokens: int, cached_input_tokens: int, output_tokens: int, reasoning_tokens: int) -> float:
        cached = min(cached_input_tokens, input_tokens)
        reasoning = min(reasoning_tokens, output_tokens)
        return ((input_tokens - cached) * self.input + cached * self.cached_input
                + (output_tokens - reasoning) * self.output + reasoning * self.reasoning)

    @property
    def weight(self) -> tuple[float, float]:
        return (self.output, self.input)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token and cost totals of one (model, deployment) pair."""

    model: str
    deployment: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float


def observed_rates(usage: Iterable[Usage]) -> dict[str, Rates]:
    """Blended USD per token of each deployment: its cost / (input + output tokens)."""
    tot: dict[str, list[float]] = {}
    for u in usage:
        t = tot.setdefault(u.deployment, [0.0, 0.0])
        t[0] += u.cost_usd
        t[1] += u.input_tokens + u.output_tokens
    out = {}
    for dep, (cost, tokens) in tot.items():
        r = cost / tokens if tokens else 0.0
        out[dep] = Rates(r, r, r, r)
    return out


def model_rates(usage: Iterable[Usage], dep_rates: Mapping[str, Rates]) -> dict[str, Rates]:
    """Each model's rates: its deployments' rates weighted by the requests they served."""
    acc: dict[str, list[float]] = {}
    for u in usage:
        r = dep_rates.get(u.deployment)
        if r is None or u.requests <= 0:
            continue
        a = acc.setdefault(u.model, [0.0] * 5)
        w = float(u.requests)
        a[0] += w * r.input
        a[1] += w * r.cached_input
        a[2] += w * r.output
        a[3] += w * r.reasoning
        a[4] += w
    return {m: Rates(a[0] / a[4], a[1] / a[4], a[2] / a[4], a[3] / a[4]) for m, a in acc.items() if a[4] > 0}


def pick_strong(models: Mapping[str, Rates], configured: str | None = None) -> str | None:
    if configured:
        return configured if configured in models else None
    if not models:
        return None
    return max(models, key=lambda m: (models[m].weight, m))


def pinned_deployments(usage: Iterable[Usage], configured: Mapping[str, str] | None = None,
                       group_first: Mapping[str, str] | None = None) -> dict[str, str]:
    """model -> the one deployment the single-deployment baseline sends all its requests to."""
    counts: dict[str, dict[str, int]] = {}
    for u in usage:
        counts.setdefault(u.model, {}).setdefault(u.deployment, 0)
        counts[u.model][u.deployment] += u.requests
    out = {}
    for model, per_dep in counts.items():
        chosen = (configured or {}).get(model) or (group_first or {}).get(model)
        if not chosen:
            chosen = max(per_dep, key=lambda d: (per_dep[d], d))
        out[model] = chosen
    return out


@dataclass(frozen=True, slots=True)
class Baselines:
    strong_model: str | None
    pinned: dict[str, str]
    dep_rates: dict[str, Rates]
    model_rates: dict[str, Rates]

    def all_strong_usd(self, u: Usage) -> float:
        r = self.model_rates.get(self.strong_model) if self.strong_model else None
        if r is None:
            return u.cost_usd
        return r.cost_usd(u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens)

    def single_deployment_usd(self, u: Usage) -> float:
        r = self.dep_rates.get(self.pinned.get(u.model, ""))
        if r is None:
            return u.cost_usd
        return r.cost_usd(u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens)


def make_baselines(usage: list[Usage], *, known_rates: Mapping[str, Rates] | None = None,
                   strong_model: str | None = None, pinned: Mapping[str, str] | None = None,
                   group_first: Mapping[str, str] | None = None) -> Baselines:
    """Baselines for a set of usage rows; known (configured) rates win over observed ones."""
    dep_rates = observed_rates(usage)
    dep_rates.update(known_rates or {})
    models = model_rates(usage, dep_rates)
    return Baselines(pick_strong(models, strong_model), pinned_deployments(usage, pinned, group_first),
                     dep_rates, models)


def savings(actual_usd: float, baseline_usd: float) -> dict:
    saved = baseline_usd - actual_usd
    return {"baseline_usd": round(baseline_usd, 9), "saved_usd": round(saved, 9),
            "saved_fraction": round(saved / baseline_usd, 6) if baseline_usd > 0 else None}

"""A deployment's price per token category (USD) and energy per token (J).

Resolved once at start from the config: list prices, a price-map entry (catalog), or a
self-hosted deployment priced by the cost model (economics). Money is Decimal (the ledger
sums it); floats are kept alongside for routing arithmetic on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tokenomy.config import Deployment

_MTOK = Decimal(1_000_000)


def _dec(x: float | None) -> Decimal | None:
    return None if x is None else Decimal(repr(float(x)))


@dataclass(frozen=True, slots=True)
class DeploymentPrice:
    usd_per_mtok_input: Decimal
    usd_per_mtok_cached_input: Decimal
    usd_per_mtok_output: Decimal
    usd_per_mtok_reasoning: Decimal
    joules_per_token_input: float
    joules_per_token_output: float
    source: str  # e.g. "list", "price_map:gpt-4o-mini", "self_hosted:llama-3-8b/h100x1@us-va"
    usd_per_mtok_cache_write: Decimal | None = None  # None: charged as input

    @property
    def floats(self) -> tuple[float, float, float, float]:
        """USD per token: input, cached input, output, reasoning."""
        return (float(self.usd_per_mtok_input) / 1e6, float(self.usd_per_mtok_cached_input) / 1e6,
                float(self.usd_per_mtok_output) / 1e6, float(self.usd_per_mtok_reasoning) / 1e6)

    def cost_usd(self, input_tokens: int, cached_input_tokens: int, output_tokens: int,
                 reasoning_tokens: int, cache_write_tokens: int = 0) -> Decimal:
        """Input counts include cached and cache-write ones, output counts include reasoning ones
        (OpenAI usage, with tokenomy's prompt_tokens_details.cache_write_tokens)."""
        cached = min(cached_input_tokens, input_tokens)
        reasoning = min(reasoning_tokens, output_tokens)
        write = min(cache_write_tokens, input_tokens - cached)
        total = ((input_tokens - cached - write) * self.usd_per_mtok_input
                 + (output_tokens - reasoning) * self.usd_per_mtok_output)
        if cached:  # the rare categories cost Decimal work only when present
            total += cached * self.usd_per_mtok_cached_input
        if write:
            total += write * (self.usd_per_mtok_input if self.usd_per_mtok_cache_write is None
                              else self.usd_per_mtok_cache_write)
        if reasoning:
            total += reasoning * self.usd_per_mtok_reasoning
        return total / _MTOK

    def energy_joules(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.joules_per_token_input + output_tokens * self.joules_per_token_output


def resolve_price(dep: Deployment) -> DeploymentPrice:
    """Price one configured deployment. Unknown names raise UnknownNameError (a TokenomyError)."""
    p = dep.pricing
    j_in, j_out = p.joules_per_token_input, p.joules_per_token_output
    if p.list_ is not None:
        lp = p.list_
        inp = _dec(lp.input)
        out = _dec(lp.output)
        return DeploymentPrice(inp, _dec(lp.cached_input) if lp.cached_input is not None else inp, out,
                               _dec(lp.reasoning) if lp.reasoning is not None else out,
                               j_in or 0.0, j_out or 0.0, "list", _dec(lp.cache_write))
    if p.price_map is not None:
        from tokenomy.catalog.prices import default_price_map

        from tokenomy.errors import TokenomyError

        api = default_price_map().get(p.price_map)
        tiers = api.tiers
        if p.tier not in tiers:
            raise TokenomyError(f"deployment {dep.name}: price map entry '{p.price_map}' has no tier "
                                f"'{p.tier}' (has: {', '.join(sorted(tiers))})")
        tp = tiers[p.tier]
        per_m = lambda v: Decimal(repr(float(v))) * _MTOK  # noqa: E731  USD/token -> USD/Mtok
        return DeploymentPrice(per_m(tp.usd_per_token("input")), per_m(tp.usd_per_token("cached_input")),
                               per_m(tp.usd_per_token("output")), per_m(tp.usd_per_token("reasoning")),
                               j_in or 0.0, j_out or 0.0, f"price_map:{p.price_map}",
                               per_m(tp.usd_per_token("cache_write")))
    sh = p.self_hosted
    assert sh is not None
    from tokenomy.catalog import load_catalog
    from tokenomy.economics import self_hosted_unit_cost

    cat = load_catalog()
    uc = self_hosted_unit_cost(cat.model(sh.model), cat.accelerator(sh.accelerator), cat.site(sh.site),
                               count=sh.count, dtype=sh.dtype, slo_tpot_ms=sh.slo_tpot_ms,
                               context=sh.context, utilization=sh.utilization,
                               ownership=dep.paid_as == "owned")  # owned hardware: amortised purchase + hosting
    inp = _dec(uc.usd_per_mtok_input)
    out = _dec(uc.usd_per_mtok_output)
    jt = uc.joules_per_token or 0.0
    return DeploymentPrice(inp, inp, out, out,
                           j_in if j_in is not None else (uc.joules_per_token_input or jt),
                           j_out if j_out is not None else (uc.joules_per_token_output or jt),
                           f"self_hosted:{sh.model}/{sh.accelerator}x{sh.count}@{sh.site}")


def latency_prior_ms(dep: Deployment) -> tuple[float, float] | None:
    """(TTFT, TPOT) in ms that the perf model predicts for this deployment, unloaded: a prior for
    the latency EWMAs until requests are observed. None for API providers (no hardware known).

    Emulated deployments use their emulator's model x accelerator and time_scale, since that is
    the timing they will show; self-hosted ones use their pricing spec."""
    spec = dep.emulate or dep.pricing.self_hosted
    if spec is None:
        return None
    from tokenomy.catalog import load_catalog
    from tokenomy.perf import predict_decode_step, predict_prefill

    cat = load_catalog()
    model, acc = cat.model(spec.model), cat.accelerator(spec.accelerator)
    scale = dep.emulate.time_scale if dep.emulate is not None else 1.0
    ttft = predict_prefill(model, acc, tokens=512, count=spec.count, dtype=spec.dtype).seconds
    tpot = predict_decode_step(model, acc, batch=1, context=1024, count=spec.count, dtype=spec.dtype).seconds
    return ttft * 1000.0 * scale, tpot * 1000.0 * scale

"""$/Mtok (input and output separately) and J/token of a deployment.

Self-hosted method
------------------
Operating point: the largest decode batch whose step meets the TPOT SLO and fits in memory
(`perf.batch_at_tpot`), at `context` tokens of KV per sequence. Output tokens/s = batch /
decode step time. Input tokens/s = prompt tokens / prefill time of one `prompt_tokens`-long
prompt (a full prefill step keeps the device busy on its own).

Attribution by time share: a replica spends 1/tokens_per_s_input seconds per input token and
1/tokens_per_s_output seconds per output token; each phase pays for the replica-seconds it
uses, at the power it draws during that phase. For a workload of I input and O output tokens
the two bills add up exactly to the replica's cost over I/tps_in + O/tps_out seconds.

Hourly cost of a replica (count devices) in phase x at utilisation u (busy share of the hour):
    usd_per_s_x = [count * device_usd_per_hour / 3600
                   + pue * usd_per_kwh / 3.6e6 * (u * watts_x + (1 - u) * idle_watts)] / u
    usd_per_token_x = usd_per_s_x / tokens_per_s_x
Energy is added to the rental price too (bare-metal/colocation view, where power is billed at
the site's rate); pass include_energy=False for all-inclusive cloud prices.
J/token is device (board) energy: watts_x / tokens_per_s_x; `joules_per_token` is the output
(decode) figure, the usual headline; facility energy multiplies by the site PUE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenomy.catalog.types import Accelerator, ApiModelPrice, ModelArch, Site
from tokenomy.errors import TokenomyError
from tokenomy.perf import batch_at_tpot, batch_capacity, make_step_model

from .hourly import accelerator_hourly

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True)
class UnitCost:
    usd_per_mtok_input: float | None
    usd_per_mtok_output: float | None
    joules_per_token_input: float | None = None
    joules_per_token_output: float | None = None
    joules_per_token: float | None = None
    tokens_per_s: float | None = None  # output (decode) tokens/s of one replica at the operating point
    max_batch: int | None = None  # decode batch at the operating point (SLO- and memory-limited)
    usd_per_hour: float | None = None  # replica, busy, at decode power
    watts: float | None = None  # replica during decode
    source: str | None = None  # "profile" | "datasheet" | "api"
    # details (None where not applicable)
    model: str | None = None
    accelerator: str | None = None
    count: int | None = None
    site: str | None = None
    dtype: str | None = None
    tokens_per_s_input: float | None = None
    memory_max_batch: int | None = None
    tpot_ms: float | None = None
    slo_tpot_ms: float | None = None
    context: int | None = None
    utilization: float | None = None
    usd_per_hour_accelerators: float | None = None
    usd_per_hour_energy: float | None = None
    watts_input: float | None = None
    gco2_per_mtok_output: float | None = None
    price_basis: str | None = None  # "rental" | "ownership" | "api"
    price_provider: str | None = None
    price_kind: str | None = None
    price_class: str | None = None  # rental price class (tokenomy.catalog.price_classes)
    price_source: str | None = None
    price_date: str | None = None
    price_note: str | None = None
    tier: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def self_hosted_unit_cost(model: ModelArch, acc: Accelerator, site: Site, *, count: int = 1, dtype: str = "bf16",
                          slo_tpot_ms: float | None = None, context: int = 2048, utilization: float = 1.0,
                          ownership: bool = False, provider: str | None = None, engine_efficiency: float = 1.0,
                          prompt_tokens: int | None = None, include_energy: bool = True,
                          price_class: str | None = None) -> UnitCost:
    """Unit cost of serving `model` on `count` x `acc` (one tensor-parallel replica) at `site`."""
    if not 0.0 < utilization <= 1.0:
        raise TokenomyError(f"utilization must be in (0, 1] (got {utilization})")
    if context < 1:
        raise TokenomyError(f"context must be >= 1 token (got {context})")
    sm = make_step_model(model, acc, count=count, dtype=dtype, engine_efficiency=engine_efficiency)
    batch, t_decode = batch_at_tpot(sm, slo_tpot_ms=slo_tpot_ms, context=context)
    kv = batch * (min(context, model.sliding_window) if model.sliding_window else context)
    w_decode = sm.step_watts(decode_seqs=batch, kv_tokens=kv)
    tps_out = batch / t_decode
    prompt = prompt_tokens or context
    t_prefill, w_prefill = sm.step_seconds_and_watts(prefill_tokens=prompt)
    tps_in = prompt / t_prefill

    price = accelerator_hourly(acc, ownership=ownership, provider=provider, price_class=price_class)
    usd_h_acc = price.usd_per_hour * count
    usd_per_j = site.pue * site.usd_per_kwh / JOULES_PER_KWH if include_energy else 0.0
    u = utilization

    def usd_per_s(watts: float) -> float:
        return (usd_h_acc / 3600.0 + usd_per_j * (u * watts + (1.0 - u) * sm.idle_watts)) / u

    usd_in = usd_per_s(w_prefill) / tps_in * 1e6
    usd_out = usd_per_s(w_decode) / tps_out * 1e6
    j_in, j_out = w_prefill / tps_in, w_decode / tps_out
    return UnitCost(
        usd_per_mtok_input=usd_in, usd_per_mtok_output=usd_out,
        joules_per_token_input=j_in, joules_per_token_output=j_out, joules_per_token=j_out,
        tokens_per_s=tps_out, max_batch=batch, usd_per_hour=usd_per_s(w_decode) * 3600.0 * u,
        watts=w_decode, source=sm.source, model=model.id, accelerator=acc.id, count=count, site=site.id,
        dtype=dtype, tokens_per_s_input=tps_in, memory_max_batch=batch_capacity(sm, context=context),
        tpot_ms=t_decode * 1e3, slo_tpot_ms=slo_tpot_ms, context=context, utilization=u,
        usd_per_hour_accelerators=usd_h_acc, usd_per_hour_energy=usd_per_j * w_decode * 3600.0,
        watts_input=w_prefill,
        gco2_per_mtok_output=j_out * site.pue / JOULES_PER_KWH * site.gco2_per_kwh * 1e6,
        price_basis=price.basis, price_provider=price.provider, price_kind=price.kind, price_source=price.source,
        price_date=price.date, price_note=price.note, price_class=price.price_class,
    )


def api_unit_cost(price: ApiModelPrice, tier: str = "standard") -> UnitCost:
    """An API model's list price per million input and output tokens (no energy figures)."""
    prices = price.tiers.get(tier)
    if prices is None:
        raise TokenomyError(f"{price.id} has no '{tier}' price tier (has: {', '.join(sorted(price.tiers))})")
    return UnitCost(
        usd_per_mtok_input=prices.input * 1e6, usd_per_mtok_output=prices.output * 1e6, source="api",
        model=price.id, price_basis="api", price_provider=price.provider, price_source=price.source,
        price_date=price.date, tier=tier,
    )

"""A self-hosted deployment's cost figures, from its config: what an hour of it costs to rent or
own, what it draws at each batch size (the perf model's power at that batch), and how many tokens
it could serve (its throughput at its SLO batch). Pure: catalog + perf + economics."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tokenomy.economics.unit_cost import JOULES_PER_KWH

PUSD_PER_USD = 10**12


@dataclass(frozen=True, slots=True)
class CostSpec:
    """Everything allocation needs about one deployment; stored with each interval row so a
    ledger can be read without the gateway's config."""

    deployment: str
    model: str
    accelerator: str
    count: int
    dtype: str
    site: str
    context: int
    slo_tpot_ms: float | None
    time_scale: float  # an emulated deployment runs its model's timing x this (1 = real hardware)
    ownership: bool = False  # priced at ownership cost (commitment owned), else at its rental price
    reserved: bool = False  # rented but committed (commitment reserved): paid whether used or not

    @property
    def committed(self) -> bool:
        return self.ownership or self.reserved

    def key(self) -> str:
        slo = "" if self.slo_tpot_ms is None else f"{self.slo_tpot_ms:g}"
        paid = "own" if self.ownership else "reserved" if self.reserved else "rent"
        return "|".join([self.model, self.accelerator, str(self.count), self.dtype, self.site, str(self.context),
                         slo, f"{self.time_scale:g}", paid])

    @classmethod
    def from_key(cls, deployment: str, key: str) -> "CostSpec":
        m, a, c, d, s, ctx, slo, ts, paid = key.split("|")
        return cls(deployment, m, a, int(c), d, s, int(ctx), float(slo) if slo else None, float(ts),
                   paid == "own", paid == "reserved")


def spec_of(dep) -> CostSpec | None:
    """The cost spec of a configured deployment; None unless it is self-hosted (priced by hardware)."""
    sh = dep.pricing.self_hosted
    if sh is None:
        return None
    scale = dep.emulate.time_scale if getattr(dep, "emulate", None) is not None else 1.0
    return CostSpec(dep.name, sh.model, sh.accelerator, sh.count, sh.dtype, sh.site, sh.context, sh.slo_tpot_ms, scale,
                    ownership=dep.paid_as == "owned", reserved=dep.paid_as == "reserved")


@dataclass(frozen=True, slots=True)
class Rates:
    """The numbers of one spec: rental in pico-USD per second, energy price in pico-USD per joule,
    idle watts, watts at each batch (callable), output tokens/s at the SLO batch."""

    rent_pusd_per_s: float
    energy_pusd_per_j: float
    idle_watts: float
    capacity_output_tokens_per_s: float
    hourly_usd: float
    spec_key: str

    def watts(self, in_flight: int) -> float:
        return _watts(self.spec_key, in_flight)


def step_model(key: str):
    """(spec, catalog model, perf step model) of a spec key (cached)."""
    return _model(key)


@lru_cache(maxsize=256)
def _model(key: str):
    from tokenomy.catalog import load_catalog
    from tokenomy.perf.step import make_step_model

    spec = CostSpec.from_key("", key)
    cat = load_catalog()
    model = cat.model(spec.model)
    return spec, model, make_step_model(model, cat.accelerator(spec.accelerator), count=spec.count, dtype=spec.dtype)


@lru_cache(maxsize=4096)
def _watts(key: str, in_flight: int) -> float:
    """Power of the replica with `in_flight` sequences decoding (the perf model's power at that batch)."""
    spec, model, sm = _model(key)
    if in_flight <= 0:
        return sm.idle_watts
    ctx = min(spec.context, model.sliding_window) if model.sliding_window else spec.context
    return sm.step_watts(decode_seqs=in_flight, kv_tokens=in_flight * ctx)


@lru_cache(maxsize=256)
def rates_of(key: str) -> Rates:
    from tokenomy.catalog import load_catalog
    from tokenomy.economics import self_hosted_unit_cost
    from tokenomy.economics.hourly import accelerator_hourly

    spec, model, sm = _model(key)
    cat = load_catalog()
    acc, site = cat.accelerator(spec.accelerator), cat.site(spec.site)
    hourly = accelerator_hourly(acc, ownership=spec.ownership).usd_per_hour * spec.count
    uc = self_hosted_unit_cost(model, acc, site, count=spec.count, dtype=spec.dtype, slo_tpot_ms=spec.slo_tpot_ms,
                               context=spec.context, ownership=spec.ownership)
    return Rates(rent_pusd_per_s=hourly / 3600.0 * PUSD_PER_USD,
                 energy_pusd_per_j=site.pue * site.usd_per_kwh / JOULES_PER_KWH * PUSD_PER_USD,
                 idle_watts=sm.idle_watts, capacity_output_tokens_per_s=uc.tokens_per_s / spec.time_scale,
                 hourly_usd=hourly, spec_key=key)


def modelled_usd_per_mtok_output(key: str, utilization: float) -> float | None:
    """The cost model's output $/Mtok at this utilisation (share of token capacity used)."""
    if not 0 < utilization <= 1:
        return None
    from tokenomy.catalog import load_catalog
    from tokenomy.economics import self_hosted_unit_cost

    spec, model, _ = _model(key)
    cat = load_catalog()
    uc = self_hosted_unit_cost(model, cat.accelerator(spec.accelerator), cat.site(spec.site), count=spec.count,
                               dtype=spec.dtype, slo_tpot_ms=spec.slo_tpot_ms, context=spec.context,
                               utilization=utilization, ownership=spec.ownership)
    return uc.usd_per_mtok_output * spec.time_scale  # an emulated replica's tokens come time_scale x faster

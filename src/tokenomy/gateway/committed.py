"""committed-first: the SLO headroom and the marginal cost of committed (owned / reserved) capacity.

Headroom is the perf model's: the largest decode batch whose step meets the TPOT SLO at the
deployment's context (`perf.batch_at_tpot`, the cost model's operating point), capped by the engine's
batch limit (an emulator's max_batch) and the group's in-flight limit. A request fits while the
deployment has fewer requests in flight than that (the engine then runs every sequence at once: no
queue) and the prefill of its prompt meets the TTFT SLO. The SLO is the group's (what the gateway
observes, so an emulated deployment's is divided by its time_scale to get the hardware's), else the
deployment's pricing `slo_tpot_ms`, else none (the memory-bound batch).

Marginal cost: the hourly price is paid anyway, so one more request costs only the energy it adds:
(watts at k+1 in flight - watts at k) x its predicted time on the replica (prefill + output tokens x
the decode step at k+1), at the site's price per joule x PUE (the allocation's own rates).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from tokenomy.allocation.spec import PUSD_PER_USD, rates_of, spec_of, step_model
from tokenomy.config import Deployment, Slo
from tokenomy.errors import TokenomyError

ENGINE_MAX_BATCH = 256  # the emulator's default running-sequence limit (vLLM's max_num_seqs)


@dataclass(frozen=True, slots=True)
class Committed:
    key: str  # CostSpec key: hardware, site and how it is paid
    capacity: int  # requests in flight it carries within the SLO (0: even one misses it)
    time_scale: float  # wall seconds per hardware second (emulated deployments)

    def ttft_ms(self, input_tokens: int) -> float:
        """Predicted TTFT (wall ms) of a prompt of this length on an otherwise idle prefill."""
        return _prefill_s(self.key, max(1, int(input_tokens))) * self.time_scale * 1e3

    def marginal_usd(self, in_flight: int, input_tokens: int, output_tokens: float) -> float:
        rates = rates_of(self.key)
        k = max(0, in_flight)
        seconds = (_prefill_s(self.key, max(1, int(input_tokens))) + output_tokens * _decode_s(self.key, k + 1)) \
            * self.time_scale
        added_w = max(0.0, rates.watts(k + 1) - rates.watts(k))
        return added_w * seconds * rates.energy_pusd_per_j / PUSD_PER_USD


@lru_cache(maxsize=4096)
def _prefill_s(key: str, tokens: int) -> float:
    return step_model(key)[2].step_seconds(prefill_tokens=tokens)


@lru_cache(maxsize=4096)
def _decode_s(key: str, batch: int) -> float:
    spec, model, sm = step_model(key)
    ctx = min(spec.context, model.sliding_window) if model.sliding_window else spec.context
    return sm.step_seconds(decode_seqs=batch, kv_tokens=batch * ctx)


def committed_of(dep: Deployment, slo: Slo | None, limit: int | None) -> Committed | None:
    """The headroom model of a committed deployment; None for any other."""
    spec = spec_of(dep)
    if spec is None or not dep.committed:
        return None
    from tokenomy.perf import batch_at_tpot

    key = spec.key()
    tpot_ms = slo.tpot_ms / spec.time_scale if slo is not None and slo.tpot_ms else spec.slo_tpot_ms
    try:
        capacity, _ = batch_at_tpot(step_model(key)[2], slo_tpot_ms=tpot_ms, context=spec.context)
    except TokenomyError:  # even one sequence misses the SLO (or none fits): never filled first
        capacity = 0
    engine = (dep.emulate.max_batch or ENGINE_MAX_BATCH) if dep.emulate is not None else None
    for cap in (engine, limit):
        if cap is not None:
            capacity = min(capacity, cap)
    return Committed(key, capacity, spec.time_scale)

"""Summaries of a simulation: latency percentiles, SLO attainment, utilisation, energy, cost."""

from __future__ import annotations

import math

import numpy as np

from tokenomy.catalog.types import Site
from tokenomy.fleet.costing import JOULES_PER_KWH, energy_usd
from tokenomy.fleet.simulator import SimResult


def percentiles_ms(seconds: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99 in milliseconds of the finite values (None when there are none)."""
    v = seconds[np.isfinite(seconds)]
    if len(v) == 0:
        return {"p50": None, "p90": None, "p99": None}
    p = np.percentile(v, [50, 90, 99]) * 1000.0
    return {"p50": round(float(p[0]), 3), "p90": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


def slo_met(result: SimResult, *, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> np.ndarray:
    """Per request: finished and within both SLOs (a single-token output has no TPOT to miss)."""
    ok = result.finish_count == 1
    if slo_ttft_ms is not None:
        ok &= result.ttft_seconds * 1000.0 <= slo_ttft_ms
    if slo_tpot_ms is not None:
        tpot = result.tpot_seconds * 1000.0
        ok &= ~(tpot > slo_tpot_ms)  # NaN (single token) passes
    return ok


def summarize(
    result: SimResult,
    *,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
    replica_usd_per_hour: float = 0.0,
    site: Site | None = None,
) -> dict:
    """The simulate report: latencies, attainment, utilisation, energy, cost and $/Mtok.

    cost_usd = replicas x replica $/h x duration + IT energy x PUE x site $/kWh.
    usd_per_mtok divides by all tokens processed (prompt + output) of completed requests.
    busy_share: share of replica time with any work in flight (was `utilization`);
    batch_slot_utilization: mean running sequences / max_num_seqs; token_budget_utilization:
    mean tokens per step / max_batched_tokens (both time-weighted over the whole duration).
    """
    done = result.finish_count == 1
    replicas = len(result.busy_seconds)
    duration = max(result.duration_seconds, 1e-9)
    energy_j = float(result.energy_joules.sum())
    energy_kwh = energy_j / JOULES_PER_KWH
    rental_usd = replicas * replica_usd_per_hour * duration / 3600.0
    energy_cost = energy_usd(energy_j, site)
    cost = rental_usd + energy_cost
    in_tokens = int(result.prompt_tokens[done].sum())
    out_tokens = int(result.output_tokens[done].sum())
    mtok = (in_tokens + out_tokens) / 1e6
    attainment = float(slo_met(result, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms).mean()) if len(done) else 0.0
    return {
        "requests": int(len(done)),
        "requests_completed": int(done.sum()),
        "requests_rejected": int(result.rejected.sum()),
        "ttft_ms": percentiles_ms(result.ttft_seconds),
        "tpot_ms": percentiles_ms(result.tpot_seconds),
        "e2e_ms": percentiles_ms(result.e2e_seconds),
        "slo_ttft_ms": slo_ttft_ms,
        "slo_tpot_ms": slo_tpot_ms,
        "slo_attainment": round(attainment, 6),
        # Busy time (any work in flight) is NOT capacity used: a step with one sequence is busy.
        # Slot and token-budget utilisation weigh each step by how full its batch was. (The key
        # `utilization` meant busy_share; renamed, it read 98 % at ~25 % of capacity.)
        "busy_share": round(float(result.busy_seconds.sum() / (replicas * duration)), 6),
        "batch_slot_utilization": _weighted_share(result.slot_seconds, result.max_num_seqs, replicas, duration),
        "token_budget_utilization": _weighted_share(result.token_seconds, result.max_batched_tokens, replicas,
                                                    duration),
        "prefix_cache_hit_share": round(result.prefix_cache_hit_share, 6),
        "cached_input_tokens": int(result.cached_tokens[done].sum()) if result.cached_tokens is not None else 0,
        "affinity_routed_share": round(float(result.affinity_routed[done].mean()), 6)
        if result.affinity_routed is not None and done.any() else 0.0,
        "duration_seconds": round(duration, 3),
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / duration, 3),
        "energy_kwh": round(energy_kwh, 6),
        "facility_energy_kwh": round(energy_kwh * (site.pue if site else 1.0), 6),
        "joules_per_token": round(energy_j / (in_tokens + out_tokens), 6) if in_tokens + out_tokens else None,
        "cost_usd": round(cost, 6),
        "cost_breakdown": {"accelerators_usd": round(rental_usd, 6), "energy_usd": round(energy_cost, 6)},
        "usd_per_mtok": round(cost / mtok, 6) if mtok > 0 else None,
        "usd_per_mtok_output": round(cost / (out_tokens / 1e6), 6) if out_tokens else None,
        "preemptions": int(result.preemptions),
        "peak_kv_tokens": int(result.peak_kv_tokens.max()) if replicas else 0,
        "max_kv_tokens": int(result.max_kv_tokens),
        "mean_queue_at_arrival": round(float(result.queue_at_arrival.mean()), 3) if len(done) else 0.0,
        "steps": int(result.steps.sum()),
    }


def _weighted_share(weighted_seconds, capacity: int, replicas: int, duration: float) -> float | None:
    """Time-weighted mean of (used / capacity) over the replicas' whole duration."""
    if weighted_seconds is None or capacity <= 0:
        return None
    return round(float(min(1.0, weighted_seconds.sum() / (capacity * replicas * duration))), 6)


def latency_cdf_plot(result: SimResult, path: str, *, title: str = "", slo_ttft_ms=None, slo_tpot_ms=None) -> None:
    """PNG with the empirical CDFs of TTFT, TPOT and end-to-end latency (ms, log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (label, values, slo) in zip(
        axes,
        [
            ("TTFT (ms)", result.ttft_seconds, slo_ttft_ms),
            ("TPOT (ms)", result.tpot_seconds, slo_tpot_ms),
            ("end-to-end (ms)", result.e2e_seconds, None),
        ],
    ):
        v = np.sort(values[np.isfinite(values)] * 1000.0)
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v))
            if v[0] > 0 and v[-1] / max(v[0], 1e-12) > 20:
                from tokenomy.plotaxes import log_axis

                log_axis(ax, "x", float(v[0]), float(v[-1]))
        if slo is not None and not math.isnan(slo):
            ax.axvline(slo, color="red", linestyle="--", label=f"SLO {slo:g} ms")
            ax.legend(loc="lower right")
        ax.set_xlabel(label)
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

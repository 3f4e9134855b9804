"""Tensor-parallel all-reduce time, fitted on measured NCCL collectives.

    t(bytes, n) = latency(n) + 2 (n-1)/n x bytes / bus_bandwidth(n)        (ring all-reduce)

`latency(n)` and `bus_bandwidth(n)` are fitted per TP degree on the profile's allreduce.csv
(`python -m tokenomy.perf.fit`); see that file's provenance. Measured on NVLink 4 (H100 DGX):
NCCL's small-message time is 20-40 us, not the 8 us of a hand-set constant, and the bus
bandwidth at 64 MB is 62-88 % of the link's one-way datasheet figure.

Another accelerator keeps the fitted latency of the nearest measured degree (NCCL protocol
and kernel-launch time, not link speed) and the fitted bandwidth *efficiency* applied to its
own `interconnect_gb_per_s`: a first-order transfer, untested on PCIe-only parts (L4, A10G).
"""

from __future__ import annotations

import math

# Before the fit (kept for the record and the before/after comparison): one NVLink-class
# small all-reduce taken as 8 us, ring traffic at the full one-way datasheet bandwidth.
UNFITTED_LATENCY_S = 8e-6


def ring_factor(n: int) -> float:
    """Bytes each device sends per byte of an n-way ring all-reduce (reduce-scatter + all-gather)."""
    return 2.0 * (n - 1) / n if n > 1 else 0.0


def allreduce_seconds(nbytes: float, n: int, latency_s: float, bus_gb_per_s: float) -> float:
    if n <= 1:
        return 0.0
    return latency_s + ring_factor(n) * nbytes / (bus_gb_per_s * 1e9)


def nearest_degree(fits: dict[str, dict], n: int) -> dict | None:
    """The fitted entry of degree n, else of the measured degree nearest in log2 (None: no fits)."""
    if not fits:
        return None
    if str(n) in fits:
        return fits[str(n)]
    best = min(fits, key=lambda k: (abs(math.log2(int(k)) - math.log2(n)), int(k)))
    return fits[best]


def comm_terms(fits: dict[str, dict], ref_interconnect_gb_per_s: float | None, interconnect_gb_per_s: float,
               n: int) -> tuple[float, float]:
    """(latency seconds, bus bandwidth GB/s) of one n-way all-reduce on an accelerator whose
    one-way interconnect is `interconnect_gb_per_s`; the unfitted constants without fits."""
    fit = nearest_degree(fits, n)
    if fit is None or not ref_interconnect_gb_per_s:
        return UNFITTED_LATENCY_S, interconnect_gb_per_s
    efficiency = fit["bus_gb_per_s"] / ref_interconnect_gb_per_s
    return fit["latency_s"], efficiency * interconnect_gb_per_s

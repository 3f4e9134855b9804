"""Operator time: a smooth roofline.

An operator that does `flops` of arithmetic and moves `nbytes` through memory takes
    t = (tc**p + tm**p) ** (1/p),   tc = flops / flops_per_s,  tm = nbytes / bytes_per_s
i.e. max(tc, tm) when p is large, and a soft max near the ridge point where neither the
compute units nor the memory system is saturated (what the measured GEMM curves show).
Pure float arithmetic: this sits on the simulator's hot path.
"""

from __future__ import annotations


def roofline_seconds(flops: float, nbytes: float, flops_per_s: float, bytes_per_s: float, p: float) -> float:
    tc = flops / flops_per_s
    tm = nbytes / bytes_per_s
    if tc <= 0.0:
        return tm
    if tm <= 0.0:
        return tc
    return (tc**p + tm**p) ** (1.0 / p)


"""Allocation of a self-hosted deployment's real cost to the requests it served (pure).

The bill of one provisioned interval = rental (hourly price x the interval) + energy (the power
drawn x time x the site's price x PUE), where the power at any instant is the perf model's power
at the number of requests in flight then (idle power when none are).

The rule: the interval is cut at every request start and end; each piece of time costs its rental
share plus its energy at that piece's batch size, and a piece with k requests in flight is split
equally among the k (each request pays for the GPU-seconds it shared). Pieces with nobody in flight
are the deployment's idle cost. Amounts are integer pico-USD: the interval's bill is rounded once,
the requests' shares are rounded by largest remainder and the rounding goes to idle, so
allocated + idle == bill exactly, every interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tokenomy.allocation.spec import Rates
from tokenomy.allocation.store import Interval, Served


@dataclass
class IntervalCost:
    deployment: str
    start: int
    interval_s: int
    bill_pusd: int
    rent_pusd: int
    energy_pusd: int
    idle_pusd: int
    busy_s: float
    allocations: dict[str, int] = field(default_factory=dict)  # request id -> pico-USD

    @property
    def allocated_pusd(self) -> int:
        return sum(self.allocations.values())


def _largest_remainder(shares: dict[str, float], total: int) -> dict[str, int]:
    """Integers summing to `total` (<= sum of shares rounded), proportional to `shares`."""
    floors = {k: math.floor(v) for k, v in shares.items()}
    left = total - sum(floors.values())
    order = sorted(shares, key=lambda k: (-(shares[k] - floors[k]), k))
    for k in order[:max(0, left)]:
        floors[k] += 1
    return floors


def allocate_interval(iv: Interval, rates: Rates, requests: Iterable[Served],
                      watts: Callable[[int], float] | None = None) -> IntervalCost:
    watts = watts or rates.watts
    lo, hi = float(iv.start), float(iv.end)
    edges: list[tuple[float, int, str]] = []
    for r in requests:
        s, e = max(lo, r.start_s), min(hi, r.end_s)
        if e > s:
            edges.append((s, 1, r.id))
            edges.append((e, -1, r.id))
    edges.sort(key=lambda x: (x[0], x[1]))  # ends before starts at the same instant
    shares: dict[str, float] = defaultdict(float)
    live: set[str] = set()
    t = lo
    rent_f = energy_f = idle_f = busy = 0.0
    for at, kind, rid in [*edges, (hi, 0, "")]:
        dt = at - t
        if dt > 0:
            k = len(live)
            piece_rent = rates.rent_pusd_per_s * dt
            piece_energy = watts(k) * dt * rates.energy_pusd_per_j
            rent_f += piece_rent
            energy_f += piece_energy
            if k:
                busy += dt
                each = (piece_rent + piece_energy) / k
                for x in live:
                    shares[x] += each
            else:
                idle_f += piece_rent + piece_energy
            t = at
        if kind == 1:
            live.add(rid)
        elif kind == -1:
            live.discard(rid)
    bill = round(rent_f + energy_f)
    allocated_target = min(bill, round(sum(shares.values())))
    allocations = _largest_remainder(dict(shares), allocated_target) if shares else {}
    return IntervalCost(iv.deployment, iv.start, iv.interval_s, bill, round(rent_f), bill - round(rent_f),
                        bill - sum(allocations.values()), busy, allocations)


def allocate(intervals: Iterable[Interval], served: Iterable[Served], rates_for: Callable[[str], Rates],
             since: float | None = None, until: float | None = None) -> list[IntervalCost]:
    """Every interval's cost and allocations; intervals are clipped to [since, until) (a window
    that starts mid-interval bills the part inside it)."""
    by_dep: dict[str, list[Served]] = defaultdict(list)
    for r in served:
        by_dep[r.deployment].append(r)
    out = []
    for iv in intervals:
        s = max(iv.start, math.floor(since)) if since is not None else iv.start
        e = min(iv.end, math.ceil(until)) if until is not None else iv.end
        if e <= s:
            continue
        clipped = Interval(iv.deployment, s, e - s, iv.spec)
        out.append(allocate_interval(clipped, rates_for(iv.spec), by_dep.get(iv.deployment, ())))
    return out

"""One MILP over the day: an autoscaling schedule with a reserved base, on-demand and spot on top.

Given, per interval h and deployment type g, the replicas n[g, h] of g alone that meet the SLO
for the interval's load (found in the simulator by `fleet.autoscale`), choose integer counts

    r[g]     reserved replicas (held, and paid, every interval of the horizon)
    o[g, h]  on-demand replicas in interval h
    s[g, h]  spot replicas in interval h

    min  sum_g T c_r[g] r[g] + sum_gh dt (c_o[g] o[g,h] + c_s[g] s[g,h])
         + sum_gh L (c_o[g] up_o[g,h] + c_s[g] up_s[g,h])
    s.t. sum_g (r[g] + o[g,h] + a s[g,h]) / n[g,h] >= 1      for every interval with load
         sum_g (r[g] + o[g,h] + s[g,h]) >= min_replicas        for every interval
         up_x[g,h] >= x[g,h] - x[g,h-1]                         (cyclic: the day repeats)

dt: interval length (h), T = H dt the horizon, L the scale-up lead time (h): a replica added
for interval h is started (and billed) L hours before it serves. a = expected share of spot
replicas not interrupted in an interval. Capacities of different types add as shares of the
interval's load (a replica of g carries 1/n[g,h] of it), the linear form of pooling by type.
`static=True` holds one on-demand fleet for the whole horizon (the peak-sized baseline).
Pure: numbers in, schedule out (HiGHS via scipy.optimize.milp, like fleet.milp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TypePrices:
    """USD per replica-hour of one deployment type in each class; None where not offered."""

    key: str
    on_demand: float
    reserved: float | None = None
    spot: float | None = None


@dataclass(frozen=True)
class Schedule:
    reserved: dict[str, int]  # type -> replicas held all horizon
    on_demand: list[dict[str, int]]  # per interval: type -> replicas
    spot: list[dict[str, int]]
    usd: float  # cost of the horizon
    usd_per_interval: list[float]  # rental of each interval (scale-up lead cost included where it falls)

    def replicas(self, h: int, key: str) -> int:
        return self.reserved.get(key, 0) + self.on_demand[h].get(key, 0) + self.spot[h].get(key, 0)


def solve_schedule(types: list[TypePrices], need: dict[str, list[float]], *, interval_hours: float,
                   min_replicas: int = 0, lead_hours: float = 0.0, spot_availability: float = 1.0,
                   use_reserved: bool = False, use_spot: bool = False, static: bool = False) -> Schedule | None:
    """The cheapest schedule (None when infeasible). need[key][h]: replicas of that type alone that
    meet the SLO in interval h (math.inf: it cannot; 0: no load)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    from tokenomy.fleet.milp import _quiet_stdout

    H = len(next(iter(need.values()))) if need else 0
    if not types or H == 0:
        return None
    G = len(types)
    has_r = [use_reserved and not static and t.reserved is not None for t in types]
    has_s = [use_spot and not static and t.spot is not None for t in types]
    # variable layout
    idx: dict[tuple, int] = {}

    def var(*k) -> int:
        if k not in idx:
            idx[k] = len(idx)
        return idx[k]

    for g in range(G):
        if has_r[g]:
            var("r", g)
        for h in range(H):
            var("o", g, 0 if static else h)
            if has_s[g]:
                var("s", g, h)
            if not static:
                var("uo", g, h)
                if has_s[g]:
                    var("us", g, h)
    n = len(idx)
    cost = np.zeros(n)
    horizon = H * interval_hours
    for (kind, g, *rest), j in idx.items():
        t = types[g]
        cost[j] = {"r": lambda: t.reserved * horizon,
                   "o": lambda: t.on_demand * (horizon if static else interval_hours),
                   "s": lambda: t.spot * interval_hours,
                   "uo": lambda: t.on_demand * lead_hours,
                   "us": lambda: t.spot * lead_hours}[kind]()
    rows: list[tuple[dict[int, float], float, float]] = []  # (coefficients, lb, ub)

    def count_terms(g: int, h: int, spot_weight: float) -> dict[int, float]:
        terms: dict[int, float] = {}
        if has_r[g]:
            terms[idx[("r", g)]] = 1.0
        terms[idx[("o", g, 0 if static else h)]] = 1.0
        if has_s[g]:
            terms[idx[("s", g, h)]] = spot_weight
        return terms

    for h in range(H):
        cover: dict[int, float] = {}
        loaded = False
        for g, t in enumerate(types):
            nh = need[t.key][h]
            if nh == 0:
                continue
            loaded = True
            if not math.isfinite(nh):
                continue
            for j, c in count_terms(g, h, spot_availability).items():
                cover[j] = cover.get(j, 0.0) + c / nh
        if loaded:
            if not cover:
                return None  # no type can serve this interval
            rows.append((cover, 1.0, np.inf))
        if min_replicas > 0:
            floor: dict[int, float] = {}
            for g in range(G):
                for j, c in count_terms(g, h, 1.0).items():
                    floor[j] = floor.get(j, 0.0) + c
            rows.append((floor, float(min_replicas), np.inf))
        if not static:
            for g in range(G):
                prev = (h - 1) % H
                rows.append(({idx[("uo", g, h)]: 1.0, idx[("o", g, h)]: -1.0, idx[("o", g, prev)]: 1.0}, 0.0, np.inf)
                            if H > 1 else ({idx[("uo", g, h)]: 1.0}, 0.0, np.inf))
                if has_s[g]:
                    rows.append(({idx[("us", g, h)]: 1.0, idx[("s", g, h)]: -1.0, idx[("s", g, prev)]: 1.0},
                                 0.0, np.inf) if H > 1 else ({idx[("us", g, h)]: 1.0}, 0.0, np.inf))
    a = lil_matrix((len(rows), n))
    lb, ub = np.zeros(len(rows)), np.zeros(len(rows))
    for i, (terms, lo, hi) in enumerate(rows):
        for j, c in terms.items():
            a[i, j] += c
        lb[i], ub[i] = lo, hi
    integrality = np.array([0 if k[0] in ("uo", "us") else 1 for k in idx], dtype=np.int64)
    with _quiet_stdout():
        res = milp(cost, constraints=LinearConstraint(a.tocsr(), lb, ub), integrality=integrality,
                   bounds=Bounds(np.zeros(n), np.full(n, np.inf)), options={"time_limit": 60.0, "mip_rel_gap": 1e-6})
    if res.x is None or res.status not in (0, 1):
        return None
    x = np.rint(res.x).astype(np.int64)
    reserved = {types[g].key: int(x[idx[("r", g)]]) for g in range(G) if has_r[g] and x[idx[("r", g)]] > 0}
    on_demand = [{types[g].key: int(x[idx[("o", g, 0 if static else h)]]) for g in range(G)
                  if x[idx[("o", g, 0 if static else h)]] > 0} for h in range(H)]
    spot = [{types[g].key: int(x[idx[("s", g, h)]]) for g in range(G) if has_s[g] and x[idx[("s", g, h)]] > 0}
            for h in range(H)]
    per = _interval_costs(types, reserved, on_demand, spot, interval_hours, lead_hours, static)
    return Schedule(reserved, on_demand, spot, float(sum(per)), per)


def _interval_costs(types, reserved, on_demand, spot, dt, lead, static) -> list[float]:
    """Rental per interval, from the integer counts (the lead cost of a scale-up in its interval)."""
    by = {t.key: t for t in types}
    H = len(on_demand)
    out = []
    for h in range(H):
        usd = sum(by[k].reserved * c * dt for k, c in reserved.items())
        usd += sum(by[k].on_demand * c * dt for k, c in on_demand[h].items())
        usd += sum(by[k].spot * c * dt for k, c in spot[h].items())
        if not static and H > 1:
            prev = (h - 1) % H
            for k in by:
                usd += by[k].on_demand * lead * max(0, on_demand[h].get(k, 0) - on_demand[prev].get(k, 0))
                if by[k].spot is not None:
                    usd += by[k].spot * lead * max(0, spot[h].get(k, 0) - spot[prev].get(k, 0))
        out.append(float(usd))
    return out

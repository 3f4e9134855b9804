"""Right-sizing against the simulator: the fewest replicas that still reach the attainment target.

The MILP sizes from analytic capacities, which are off in both directions (pessimistic for big
chips at loose TPOT, optimistic for small chips on long prompts). These searches correct it
with the simulator as the judge, downwards as well as upwards: a bisection on the replica count
of one pooled deployment, and a per-column trim of a mixed plan (with the routing held fixed).
Both assume attainment does not fall when a replica is added (least-loaded balancing).
"""

from __future__ import annotations

from collections.abc import Callable


SCAN_BELOW = 8  # counts below this are all tried: attainment is not monotone there


def min_passing_count(ok: Callable[[int], bool], hint: int, n_max: int, scan_below: int = SCAN_BELOW) -> int | None:
    """Smallest n in [1, n_max] with ok(n), starting at `hint`, doubling up and bisecting down;
    None when ok(n_max) fails. Each n is evaluated at most once.

    Bisection assumes ok is monotone; on small fleets it is not quite (least-loaded routing of a
    short trace: the planner audit saw 3 A10G pass, 4 fail, 5 pass), so when the answer is below
    `scan_below` every smaller count is tried too, and the smallest that passes is returned."""
    if n_max < 1:
        return None
    cache: dict[int, bool] = {}

    def test(n: int) -> bool:
        if n not in cache:
            cache[n] = ok(n)
        return cache[n]

    lo, hi = 0, min(max(1, hint), n_max)  # lo: largest known failure (0 = none)
    while not test(hi):
        if hi >= n_max:
            return None
        lo, hi = hi, min(n_max, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    if hi < scan_below:
        return next(n for n in range(1, hi + 1) if test(n))
    return hi


def trim_counts(counts: list[int], unit_cost: list[float], met: Callable[[int, int], int], need: int) -> list[int]:
    """Lower column counts while the total met requests stay >= need. `met(j, n)` is the number of
    SLO-meeting requests of column j with n replicas (its own routed requests, so columns are
    independent). Dearest replicas first; each column gets the slack left by the previous ones."""
    counts = list(counts)
    have = [met(j, n) if n > 0 else 0 for j, n in enumerate(counts)]
    slack = sum(have) - need
    if slack < 0:
        return counts
    for j in sorted(range(len(counts)), key=lambda j: -unit_cost[j]):
        if counts[j] <= 1:
            continue
        floor_met = have[j] - slack
        n = min_passing_count(lambda n, j=j: met(j, n) >= floor_met, max(1, counts[j] // 2), counts[j])
        n = counts[j] if n is None else n
        new = met(j, n)
        slack -= have[j] - new
        have[j], counts[j] = new, n
    return counts

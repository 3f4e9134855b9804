"""Compare deployments: every accelerator x site (x devices) that can serve a model, cheapest first."""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenomy.catalog.types import Accelerator, ModelArch, Site
from tokenomy.errors import TokenomyError
from tokenomy.perf import min_devices

from .unit_cost import UnitCost, api_unit_cost, self_hosted_unit_cost


def _counts(model: ModelArch, acc: Accelerator, dtype: str) -> list[int]:
    """Tensor-parallel degrees to try: powers of two from the fewest devices that hold the weights."""
    n, out = min_devices(model, acc, dtype), []
    while n <= acc.max_count:
        out.append(n)
        n *= 2
    return out


def compare_deployments(model: ModelArch, accelerators: Iterable[Accelerator], sites: Iterable[Site], *,
                        slo_tpot_ms: float | None = None, context: int = 2048, utilization: float = 1.0,
                        ownership: bool = False, dtype: str = "bf16",
                        engine_efficiency: float = 1.0,
                        price_class: str | None = None) -> tuple[list[UnitCost], list[dict]]:
    """(rows sorted by $/Mtok output, skipped accelerators with the reason).

    Per accelerator, the device count (power of two, within one node) with the lowest $/Mtok
    output among those that hold the model and meet the SLO.
    """
    sites = list(sites)
    rows: list[UnitCost] = []
    skipped: list[dict] = []
    for acc in accelerators:
        reason = "does not fit in one node"
        chosen, best = None, float("inf")
        for n in _counts(model, acc, dtype):
            try:
                uc = self_hosted_unit_cost(model, acc, sites[0], count=n, dtype=dtype, slo_tpot_ms=slo_tpot_ms,
                                           context=context, utilization=utilization, ownership=ownership,
                                           engine_efficiency=engine_efficiency, price_class=price_class)
            except TokenomyError as exc:
                if chosen is None:
                    reason = str(exc)
                if any(m in reason for m in ("no fp8", "no rental price", "no purchase price", "price in the catalog")):
                    break
                continue
            if uc.usd_per_mtok_output < best:  # more devices can be cheaper: room for a bigger batch
                chosen, best = n, uc.usd_per_mtok_output
        if chosen is None:
            skipped.append({"accelerator": acc.id, "reason": reason})
            continue
        for site in sites:
            rows.append(self_hosted_unit_cost(model, acc, site, count=chosen, dtype=dtype, slo_tpot_ms=slo_tpot_ms,
                                              context=context, utilization=utilization, ownership=ownership,
                                              engine_efficiency=engine_efficiency, price_class=price_class))
    rows.sort(key=lambda r: (r.usd_per_mtok_output, r.usd_per_mtok_input))
    return rows, skipped


def best_site_per_accelerator(rows: Iterable[UnitCost]) -> list[UnitCost]:
    """One row per (accelerator, device count): its cheapest site; cheapest output first."""
    best: dict[tuple[str, int], UnitCost] = {}
    for r in rows:
        key = (r.accelerator, r.count)
        if key not in best or (r.usd_per_mtok_output, r.usd_per_mtok_input) < (
                best[key].usd_per_mtok_output, best[key].usd_per_mtok_input):
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.usd_per_mtok_output, r.usd_per_mtok_input))


def ranked(rows: Iterable[UnitCost], api_rows: Iterable[UnitCost]) -> list[UnitCost]:
    """Self-hosted deployments and API offers in one ranking, cheapest output first."""
    return sorted([*rows, *api_rows], key=lambda r: (r.usd_per_mtok_output, r.usd_per_mtok_input))


def _tokens(s: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", s.lower()) if t]


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(h == n for h in it) for n in needle)


def api_reference_rows(model: ModelArch, price_map=None, limit: int = 5) -> list[UnitCost]:
    """API offers of the same model (ids whose tokens contain the model id's tokens in order),
    cheapest output first: e.g. llama-3-8b matches together_ai/meta-llama/Llama-3-8b-chat-hf."""
    if price_map is None:
        from tokenomy.catalog.prices import default_price_map

        price_map = default_price_map()
    needle = _tokens(model.id)
    found = []
    for p in price_map.all():
        if p.mode not in (None, "chat", "completion") or "standard" not in p.tiers:
            continue
        tokens = _tokens(p.id)
        if "guard" in tokens:  # safety classifiers, not chat models
            continue
        if _is_subsequence(needle, tokens) and p.tiers["standard"].output > 0:
            found.append(api_unit_cost(p))
    found.sort(key=lambda u: (u.usd_per_mtok_output, u.usd_per_mtok_input))
    return found[:limit]

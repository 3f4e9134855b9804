"""Cascade evaluation: RouteLLM's APGR/CPT over the escalation share, and the cost-aware view.

A cascade always pays the weak call and escalates a share x of requests: cost 1 + R*x in
units of one weak call, with R = strong/weak cost per call. A prompt-only gate sends the same
share straight to the strong model: cost (1 - x) + R*x. Always-strong costs R. For a quality
target (90% / 95% of the strong model's mean quality) each kind needs the smallest share x at
which its quality curve reaches the target; the saving vs always-strong is 1 - cost / R.
The cascade pays for itself when its better decisions (smaller x) outweigh the weak call it
always pays: R > x_prompt / (x_prompt - x_cascade).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.routing.cascade.data import CascadeRow, as_rows
from tokenomy.routing.cascade.registry import load_verifier, score_answers
from tokenomy.routing.quality.metrics import Curve, cpt, curve, evaluate_scores

QUALITY_TARGETS = (0.90, 0.95)


def share_for_quality(c: Curve, target_quality: float) -> float | None:
    """Smallest strong-call share (in [0, 1]) whose mean quality reaches `target_quality`."""
    if target_quality <= c.weak_mean + 1e-12:
        return 0.0
    if c.gap <= 0:
        return None
    pct = cpt(c, 100.0 * (target_quality - c.weak_mean) / c.gap)
    return None if pct is None else pct / 100.0


def cascade_cost(share: float, price_ratio: float) -> float:
    return 1.0 + price_ratio * share


def prompt_only_cost(share: float, price_ratio: float) -> float:
    return (1.0 - share) + price_ratio * share


def _side(share: float | None, cost: float | None, price_ratio: float) -> dict:
    if share is None or cost is None:
        return {"strong_share_pct": None, "cost": None, "saving_pct": None}
    return {"strong_share_pct": round(100.0 * share, 2), "cost": round(cost, 4),
            "saving_pct": round(100.0 * (1.0 - cost / price_ratio), 2)}


def cost_view(cascade_curve: Curve, prompt_curve: Curve | None, price_ratio: float,
              targets: Iterable[float] = QUALITY_TARGETS) -> dict:
    """Costs (units of one weak call) and savings vs always-strong at each quality target."""
    if price_ratio <= 0:
        raise TokenomyError("price ratio (strong/weak cost per call) must be positive")
    out: dict = {"price_ratio": price_ratio, "always_strong_cost": price_ratio, "targets": {}}
    for t in targets:
        q = t * cascade_curve.strong_mean
        xc = share_for_quality(cascade_curve, q)
        entry = {"quality_target": round(q, 4),
                 "cascade": _side(xc, None if xc is None else cascade_cost(xc, price_ratio), price_ratio)}
        if prompt_curve is not None:
            xp = share_for_quality(prompt_curve, q)
            entry["prompt_only"] = _side(xp, None if xp is None else prompt_only_cost(xp, price_ratio), price_ratio)
            be = None
            if xp is not None and xc is not None and xp > xc:
                be = round(xp / (xp - xc), 3)
            entry["cascade_pays_off_above_price_ratio"] = be
            entry["cheaper"] = None if xp is None or xc is None else (
                "cascade" if cascade_cost(xc, price_ratio) < prompt_only_cost(xp, price_ratio) else "prompt_only")
        out["targets"][f"{round(t * 100)}"] = entry
    return out


def _prompt_router_scores(rows: list[CascadeRow], prompt_router) -> tuple[str, np.ndarray | None, str | None]:
    """Scores of the prompt-only router (name or object); (name, None, reason) if unavailable."""
    from tokenomy.routing.quality import load_router, score_prompts

    name = prompt_router if isinstance(prompt_router, str) else getattr(prompt_router, "name", "prompt-router")
    try:
        router = load_router(prompt_router, rows=rows) if isinstance(prompt_router, str) else prompt_router
        return name, np.asarray(score_prompts(router, [r.prompt for r in rows]), float), None
    except TokenomyError as exc:
        return name, None, str(exc)


def evaluate(rows, verifier_name_or_artifact="cascade-default", *, price_ratio: float | None = None,
             prompt_router="default", n_boot: int = 0, seed: int = 0, by_source: bool = False,
             progress: Callable[[int], None] | None = None) -> dict:
    """APGR / CPT of a cascade verifier on rows carrying `weak_output`, plus (price_ratio) the
    cost view next to the prompt-only router `prompt_router` (name or router object)."""
    rows = as_rows(rows)
    if not rows:
        raise TokenomyError("no rows to evaluate")
    v = verifier_name_or_artifact
    verifier = load_verifier(v, rows=rows, seed=seed) if isinstance(v, str) or hasattr(v, "suffix") else v
    name = str(v) if isinstance(v, str) or hasattr(v, "suffix") else getattr(v, "name", "verifier")
    weak = np.array([r.weak for r in rows])
    strong = np.array([r.strong for r in rows])
    if strong.mean() <= weak.mean():
        raise TokenomyError("strong mean quality does not exceed weak mean quality: APGR is undefined")
    quality = score_answers(verifier, [r.prompt for r in rows], [r.weak_output for r in rows], progress)
    escalate = 1.0 - quality   # higher = escalate first
    res = evaluate_scores(escalate, weak, strong, n_boot=n_boot, seed=seed)
    out = {**res.to_json(), "router": name, "kind": "cascade"}
    if by_source:
        src = np.array([r.source or "all" for r in rows])
        out["by_source"] = {s: evaluate_scores(escalate[src == s], weak[src == s], strong[src == s], n_boot=n_boot,
                                               seed=seed).to_json()
                            for s in sorted(set(src)) if strong[src == s].mean() > weak[src == s].mean()}
    if price_ratio is not None:
        pname, pscores, why = (None, None, None) if prompt_router is None else \
            _prompt_router_scores(rows, prompt_router)
        pcurve = None
        if pscores is not None:
            pcurve = curve(pscores, weak, strong)
            out["prompt_only"] = {**evaluate_scores(pscores, weak, strong, n_boot=n_boot, seed=seed).to_json(),
                                  "router": pname}
        elif pname is not None:
            out["prompt_only"] = {"router": pname, "error": why}
        out["cost"] = cost_view(curve(escalate, weak, strong), pcurve, float(price_ratio))
    return out


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def format_eval(out: dict) -> str:
    """Human-readable lines for `tokenomy route eval` on cascade rows."""
    ci = out.get("apgr_ci95")
    lines = [f"{out['router']} (cascade): n={out['n']} APGR={out['apgr']:.3f}"
             + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
             + f" CPT(50%)={_fmt_pct(out['cpt50'])} CPT(80%)={_fmt_pct(out['cpt80'])} "
             f"weak={out['weak_mean']:.3f} strong={out['strong_mean']:.3f}"]
    for s, v in out.get("by_source", {}).items():
        lines.append(f"  {s}: n={v['n']} APGR={v['apgr']:.3f} CPT(50%)={_fmt_pct(v['cpt50'])} "
                     f"CPT(80%)={_fmt_pct(v['cpt80'])}")
    po = out.get("prompt_only")
    if po:
        lines.append(f"prompt-only {po['router']}: " + (f"APGR={po['apgr']:.3f} CPT(50%)={_fmt_pct(po['cpt50'])} "
                                                        f"CPT(80%)={_fmt_pct(po['cpt80'])}" if "apgr" in po
                                                        else f"unavailable ({po.get('error')})"))
    cost = out.get("cost")
    if cost:
        lines.append(f"cost vs always-strong (R = {cost['price_ratio']:g} weak calls per strong call):")
        for t, e in cost["targets"].items():
            c = e["cascade"]
            row = (f"  {t}% of strong quality (>= {e['quality_target']:.3f}): cascade escalates "
                   f"{_fmt_pct(c['strong_share_pct'])}, saves {_fmt_pct(c['saving_pct'])}")
            if "prompt_only" in e:
                p = e["prompt_only"]
                be = e["cascade_pays_off_above_price_ratio"]
                row += (f" | prompt-only routes {_fmt_pct(p['strong_share_pct'])} to strong, saves "
                        f"{_fmt_pct(p['saving_pct'])} | cheaper: {e['cheaper']}"
                        + (f" (cascade pays off above R={be:g})" if be is not None else " (cascade never pays off)"))
            lines.append(row)
    return "\n".join(lines)

"""Read models of the dashboard pages, computed from the rollup tables only (never raw events),
through store.RollupStore: the same code and numbers on the SQLite and PostgreSQL ledgers.

Every function returns {"meta", "totals", "tables": {name: [row dicts]}} so the API can
serve any table as JSON or CSV. Money sums are exact (integer pico-USD) and returned as
strings in totals; chart series carry floats.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tokenomy.dashboard.baselines import Rates, Usage, make_baselines, savings
from tokenomy.dashboard.rollups import RESOLUTIONS, percentile, pick_resolution, snap
from tokenomy.dashboard.store import PICO, RollupStore, UsageBucket
MAX_FILLED_POINTS = 2000


@dataclass(frozen=True, slots=True)
class Window:
    since: int
    until: int
    res: str

    @property
    def step(self) -> int:
        return RESOLUTIONS[self.res]

    @property
    def seconds(self) -> int:
        return self.until - self.since

    def meta(self) -> dict:
        return {"since": self.since, "until": self.until, "resolution": self.res, "step_s": self.step,
                "since_iso": iso(self.since), "until_iso": iso(self.until)}


@dataclass(frozen=True, slots=True)
class Context:
    """What baselines and live state need from outside the ledger."""

    known_rates: Mapping[str, Rates] = field(default_factory=dict)
    strong_model: str | None = None
    pinned: Mapping[str, str] = field(default_factory=dict)
    group_first: Mapping[str, str] = field(default_factory=dict)
    live: Mapping[str, dict] = field(default_factory=dict)  # deployment -> gateway state
    near_limit_fraction: float = 0.8
    now: float | None = None  # the dashboard's clock (None: time.time())


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def make_window(since: float, until: float, res: str | None = None) -> Window:
    res = res or pick_resolution(since, until)
    lo, hi = snap(since, until, res)
    return Window(lo, max(hi, lo + RESOLUTIONS[res]), res)


def _money(pusd: int) -> str:
    from tokenomy.metering.money import from_pusd, money_str

    return money_str(from_pusd(pusd))


def _per_mtok(usd: float, tokens: int) -> float | None:
    return usd / tokens * 1e6 if tokens else None


def _per_token(joules: float, tokens: int) -> float | None:
    return joules / tokens if tokens else None


def _buckets(w: Window) -> list[int]:
    n = w.seconds // w.step
    if n > MAX_FILLED_POINTS:
        return []
    return [w.since + i * w.step for i in range(n)]


def _rows(r: RollupStore, w: Window, tenant: str | None) -> list[UsageBucket]:
    return r.usage(w.res, w.since, w.until, tenant)


def _merge_usage(rows: list[UsageBucket]) -> list[Usage]:
    agg: dict[tuple[str, str], list] = {}
    for x in rows:
        a = agg.setdefault((x.model, x.deployment), [0, 0, 0, 0, 0, 0])
        a[0] += x.requests
        a[1] += x.input_tokens
        a[2] += x.cached_input_tokens
        a[3] += x.output_tokens
        a[4] += x.reasoning_tokens
        a[5] += x.cost_pusd
    return [Usage(m, d, a[0], a[1], a[2], a[3], a[4], a[5] / PICO) for (m, d), a in agg.items()]


def _totals(rows: list[UsageBucket]) -> dict:
    t = {"requests": 0, "errors": 0, "client_errors": 0, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
         "reasoning_tokens": 0}
    cost = price = 0
    energy = 0.0
    for x in rows:
        for k in t:
            t[k] += getattr(x, k)
        cost += x.cost_pusd
        price += x.price_pusd
        energy += x.energy_joules
    tokens = t["input_tokens"] + t["output_tokens"]
    t.update(tokens=tokens, cost_usd=_money(cost), price_usd=_money(price), energy_joules=round(energy, 6),
             usd_per_mtok=_per_mtok(cost / PICO, tokens), price_usd_per_mtok=_per_mtok(price / PICO, tokens),
             joules_per_token=_per_token(energy, tokens))
    return t


ALL_STRONG_DEFINITION = ("routed requests (model 'auto' and other routed aliases) with their own tokens re-priced "
                         "at their strongest candidate, against what they cost; the same figure as "
                         "`tokenomy route savings` for this window")
SINGLE_DEPLOYMENT_DEFINITION = ("each model's requests all on one deployment (the configured one, else the one "
                                "that served most of its requests), against the deployments the router chose")


def overview(r: RollupStore, w: Window, tenant: str | None, ctx: Context, routed: dict | None = None) -> dict:
    """`routed`: routing.savings.savings() for this window and tenant (with bucket_s = the window's
    step): the all-strong baseline, defined once for the CLI and the dashboard."""
    rows = _rows(r, w, tenant)
    base = make_baselines(_merge_usage(rows), known_rates=ctx.known_rates, strong_model=ctx.strong_model,
                          pinned=ctx.pinned)
    series: dict[int, dict] = {b: _empty_point(b) for b in _buckets(w)}
    single_total = actual_total = 0.0
    for x in rows:
        p = series.get(x.bucket) or series.setdefault(x.bucket, _empty_point(x.bucket))
        u = x.usage()
        s_d = base.single_deployment_usd(u)
        p["requests"] += x.requests
        p["errors"] += x.errors
        p["client_errors"] += x.client_errors
        p["input_tokens"] += x.input_tokens
        p["output_tokens"] += x.output_tokens
        p["cost_usd"] += u.cost_usd
        p["price_usd"] += x.price_pusd / PICO
        p["energy_joules"] += x.energy_joules
        p["single_deployment_usd"] += s_d
        single_total += s_d
        actual_total += u.cost_usd
    routed = routed or {"requests": 0, "actual_usd": "0", "all_strong_usd": "0", "series": []}
    for q in routed.get("series") or []:  # routed requests only: their actual vs all-strong cost
        p = series.get(q["ts"]) or series.setdefault(q["ts"], _empty_point(q["ts"]))
        p["routed_usd"] += q["actual_usd"]
        p["all_strong_usd"] += q["all_strong_usd"]
    points = [series[b] for b in sorted(series)]
    for p in points:
        tokens = p["input_tokens"] + p["output_tokens"]
        p["tokens"] = tokens
        p["usd_per_mtok"] = _per_mtok(p["cost_usd"], tokens)
        p["joules_per_token"] = _per_token(p["energy_joules"], tokens)
    totals = _totals(rows)
    totals["savings"] = {
        "all_strong": {"definition": ALL_STRONG_DEFINITION, "routed_requests": routed["requests"],
                       "strong_share": routed.get("strong_share"), "actual_usd": float(routed["actual_usd"]),
                       **savings(float(routed["actual_usd"]), float(routed["all_strong_usd"]))},
        "single_deployment": {"definition": SINGLE_DEPLOYMENT_DEFINITION, "pinned": base.pinned,
                              **savings(actual_total, single_total)},
    }
    return {"meta": w.meta() | {"tenant": tenant}, "totals": totals, "tables": {"series": points}}


def _empty_point(bucket: int) -> dict:
    return {"ts": bucket, "time": iso(bucket), "requests": 0, "errors": 0, "client_errors": 0, "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0, "price_usd": 0.0, "energy_joules": 0.0, "routed_usd": 0.0, "all_strong_usd": 0.0,
            "single_deployment_usd": 0.0}


def routing(r: RollupStore, w: Window, tenant: str | None, feedback: list[tuple[str, float | None, float]]) -> dict:
    """Model mix, strong-call share and (where feedback exists) predicted vs observed quality.
    feedback: (model, predicted_quality or None, observed score) per labelled request."""
    rows = _rows(r, w, tenant)
    models = sorted({x.model for x in rows})
    mix: dict[tuple[str, str], dict] = {}
    series: dict[int, dict] = {b: {"ts": b, "time": iso(b), "routed": 0, "strong": 0, "strong_share": None,
                                   **{m: 0 for m in models}} for b in _buckets(w)}
    routed = strong = pq_n = 0
    pq_sum = 0.0
    for x in rows:
        m = mix.setdefault((x.model, x.deployment), {"model": x.model, "deployment": x.deployment, "requests": 0,
                                                     "tokens": 0, "cost_pusd": 0})
        m["requests"] += x.requests
        m["tokens"] += x.input_tokens + x.output_tokens
        m["cost_pusd"] += x.cost_pusd
        p = series.get(x.bucket) or series.setdefault(
            x.bucket, {"ts": x.bucket, "time": iso(x.bucket), "routed": 0, "strong": 0, "strong_share": None,
                       **{k: 0 for k in models}})
        p[x.model] += x.requests
        p["routed"] += x.routed
        p["strong"] += x.strong
        routed += x.routed
        strong += x.strong
        pq_sum += x.pq_sum
        pq_n += x.pq_n
    points = [series[b] for b in sorted(series)]
    for p in points:
        p["strong_share"] = p["strong"] / p["routed"] if p["routed"] else None
    total_requests = sum(m["requests"] for m in mix.values()) or 0
    mix_rows = []
    for m in sorted(mix.values(), key=lambda m: (-m["requests"], m["model"], m["deployment"])):
        cost = m.pop("cost_pusd")
        m["cost_usd"] = _money(cost)
        m["share"] = m["requests"] / total_requests if total_requests else None
        mix_rows.append(m)
    fb = _feedback_tables(feedback)
    totals = {"requests": total_requests, "models": models, "routed": routed, "strong": strong,
              "strong_share": strong / routed if routed else None,
              "predicted_quality_mean": pq_sum / pq_n if pq_n else None, "feedback_n": len(feedback)}
    return {"meta": w.meta() | {"tenant": tenant}, "totals": totals,
            "tables": {"mix": mix_rows, "series": points, **fb}}


def _feedback_tables(feedback: list[tuple[str, float | None, float]]) -> dict:
    by_model: dict[str, list[float]] = {}
    bins: dict[int, list[float]] = {}
    for model, predicted, observed in feedback:
        a = by_model.setdefault(model, [0, 0.0, 0, 0.0])
        a[0] += 1
        a[1] += observed
        if predicted is not None:
            a[2] += 1
            a[3] += predicted
            b = bins.setdefault(min(9, max(0, int(predicted * 10))), [0, 0.0, 0.0])
            b[0] += 1
            b[1] += predicted
            b[2] += observed
    quality = [{"model": m, "n": a[0], "observed_mean": a[1] / a[0],
                "predicted_mean": a[3] / a[2] if a[2] else None} for m, a in sorted(by_model.items())]
    calibration = [{"bin": f"{k / 10:.1f}-{(k + 1) / 10:.1f}", "n": b[0], "predicted_mean": b[1] / b[0],
                    "observed_mean": b[2] / b[0]} for k, b in sorted(bins.items())]
    return {"quality": quality, "calibration": calibration}


def deployments(r: RollupStore, w: Window, tenant: str | None, ctx: Context) -> dict:
    rows = _rows(r, w, tenant)
    per: dict[str, dict] = {}
    names = sorted({x.deployment for x in rows} | set(ctx.live))
    series: dict[int, dict] = {b: {"ts": b, "time": iso(b), **{d: 0 for d in names}} for b in _buckets(w)}
    lat_series: dict[int, dict] = {}
    for x in rows:
        d = per.setdefault(x.deployment, {"deployment": x.deployment, "requests": 0, "errors": 0, "client_errors": 0,
                                          "tokens": 0,
                                          "output_tokens": 0, "cost_pusd": 0, "energy_joules": 0.0, "latency_ms_sum": 0.0})
        d["requests"] += x.requests
        d["errors"] += x.errors
        d["client_errors"] += x.client_errors
        d["tokens"] += x.input_tokens + x.output_tokens
        d["output_tokens"] += x.output_tokens
        d["cost_pusd"] += x.cost_pusd
        d["energy_joules"] += x.energy_joules
        d["latency_ms_sum"] += x.latency_ms_sum
        p = series.get(x.bucket) or series.setdefault(x.bucket, {"ts": x.bucket, "time": iso(x.bucket), **{n: 0 for n in names}})
        p[x.deployment] = p.get(x.deployment, 0) + x.requests
        lp = lat_series.setdefault(x.bucket, {})
        acc = lp.setdefault(x.deployment, [0.0, 0])
        acc[0] += x.latency_ms_sum
        acc[1] += x.requests
    hists = _histograms(r, w, tenant)
    out_rows = []
    span_s = max(1, min(w.until, int(time.time() if ctx.now is None else ctx.now)) - w.since)
    for name in names:
        d = per.get(name) or {"deployment": name, "requests": 0, "errors": 0, "client_errors": 0, "tokens": 0,
                              "output_tokens": 0,
                              "cost_pusd": 0, "energy_joules": 0.0, "latency_ms_sum": 0.0}
        cost = d.pop("cost_pusd")
        lat_sum = d.pop("latency_ms_sum")
        h = hists.get(name, {})
        live = ctx.live.get(name, {})
        mean_in_flight = lat_sum / 1000.0 / span_s  # Little's law: busy request-seconds per second
        max_in_flight = live.get("max_in_flight")
        d.update(
            # upstream failures only: a client's bad or abandoned request says nothing of the deployment
            error_rate=d["errors"] / d["requests"] if d["requests"] else None,
            client_error_rate=d["client_errors"] / d["requests"] if d["requests"] else None,
            cost_usd=_money(cost), usd_per_mtok=_per_mtok(cost / PICO, d["tokens"]),
            joules_per_token=_per_token(d["energy_joules"], d["tokens"]),
            mean_in_flight=mean_in_flight,
            utilization=mean_in_flight / max_in_flight if max_in_flight else None,
            latency_ms_mean=lat_sum / d["requests"] if d["requests"] else None,
            latency_ms_p50=percentile(h.get("latency", {}), 0.5), latency_ms_p99=percentile(h.get("latency", {}), 0.99),
            ttft_ms_p50=percentile(h.get("ttft", {}), 0.5), ttft_ms_p99=percentile(h.get("ttft", {}), 0.99),
            breaker=live.get("breaker"), in_flight=live.get("in_flight"), max_in_flight=max_in_flight,
            ttft_ms_ewma=live.get("ttft_ms_ewma"), tpot_ms_ewma=live.get("tpot_ms_ewma"))
        out_rows.append(d)
    latency_points = []
    for b in sorted(set(series) | set(lat_series)):
        lp = lat_series.get(b, {})
        latency_points.append({"ts": b, "time": iso(b),
                               **{n: (lp[n][0] / lp[n][1] if n in lp and lp[n][1] else None) for n in names}})
    return {"meta": w.meta() | {"tenant": tenant, "live": bool(ctx.live)},
            "totals": {"deployments": names, "open_breakers": [n for n in names if ctx.live.get(n, {}).get("breaker") == "open"]},
            "tables": {"deployments": out_rows, "requests": [series[b] for b in sorted(series)],
                       "latency": latency_points}}


def _histograms(r: RollupStore, w: Window, tenant: str | None) -> dict[str, dict[str, dict[int, int]]]:
    res = "day" if w.res == "day" else "hour"
    lo, hi = snap(w.since, w.until, res)
    return r.histograms(res, lo, hi, tenant)


def _period_start(period: str, now: float) -> int | None:
    from tokenomy.metering.periods import period_bounds

    start, _ = period_bounds(period, now)
    return None if start is None else int(start)


def tenants(r: RollupStore, w: Window, tenant: str | None, tenant_records: list, key_records: list, ctx: Context,
            now: float | None = None) -> dict:
    """Usage in the window, margin, and spend vs budgets / rate caps now, per tenant and key."""
    now = (time.time() if ctx.now is None else ctx.now) if now is None else now
    usage = {name: (u.requests, u.tokens, u.cost_pusd, u.price_pusd, u.energy_joules)
             for name, u in r.tenant_usage(w.res, w.since, w.until, tenant).items()}
    spend_cache: dict[tuple[str, str, str], int] = {}

    def spent(col: str, subject: str, period: str) -> int:
        k = (col, subject, period)
        if k not in spend_cache:
            spend_cache[k] = r.spend_pusd("key" if col == "key_id" else "tenant", subject, _period_start(period, now))
        return spend_cache[k]

    peaks = r.key_peaks(int(now // 60) * 60 - 3600)
    rows, near, keys_out = [], [], []
    frac = ctx.near_limit_fraction
    for rec in tenant_records:
        if tenant is not None and rec.name != tenant:
            continue
        req, tok, cost, price, energy = usage.get(rec.name, (0, 0, 0, 0, 0.0))
        b = rec.budget
        s = spent("tenant", rec.name, b.period)
        used = s / b.budget_pusd if b.budget_pusd else None
        row = {"tenant": rec.name, "requests": req, "tokens": tok, "cost_usd": _money(cost), "revenue_usd": _money(price),
               "margin_usd": _money(price - cost), "margin_fraction": (price - cost) / price if price else None,
               "energy_joules": round(energy, 6), "budget_usd": _money(b.budget_pusd) if b.budget_pusd is not None else None,
               "soft_budget_usd": _money(b.soft_budget_pusd) if b.soft_budget_pusd is not None else None,
               "budget_period": b.period, "period_spend_usd": _money(s), "budget_used": used}
        rows.append(row)
        if used is not None and used >= frac:
            near.append({"kind": "tenant budget", "tenant": rec.name, "subject": rec.name, "used": used,
                         "detail": f"{row['period_spend_usd']} of {row['budget_usd']} ({b.period})"})
        if b.soft_budget_pusd and s >= b.soft_budget_pusd:
            near.append({"kind": "tenant soft budget", "tenant": rec.name, "subject": rec.name,
                         "used": s / b.soft_budget_pusd, "detail": f"{row['period_spend_usd']} >= soft {row['soft_budget_usd']}"})
    for k in key_records:
        if tenant is not None and k.tenant != tenant:
            continue
        b = k.budget
        s = spent("key_id", k.key_id, b.period)
        rpm_peak, tpm_peak = peaks.get(k.key_id, (0, 0))
        entry = {"key_id": k.key_id, "tenant": k.tenant, "name": k.name, "active": k.revoked_at is None,
                 "budget_usd": _money(b.budget_pusd) if b.budget_pusd is not None else None, "budget_period": b.period,
                 "period_spend_usd": _money(s), "budget_used": s / b.budget_pusd if b.budget_pusd else None,
                 "rpm": k.rpm, "rpm_peak_last_hour": rpm_peak, "tpm": k.tpm, "tpm_peak_last_hour": tpm_peak}
        keys_out.append(entry)
        if not entry["active"]:
            continue
        for kind, used, detail in (
                ("key budget", entry["budget_used"], f"{entry['period_spend_usd']} of {entry['budget_usd']} ({b.period})"),
                ("key rpm", rpm_peak / k.rpm if k.rpm else None, f"peak {rpm_peak}/min of {k.rpm} in the last hour"),
                ("key tpm", tpm_peak / k.tpm if k.tpm else None, f"peak {tpm_peak} tokens/min of {k.tpm} in the last hour")):
            if used is not None and used >= frac:
                near.append({"kind": kind, "tenant": k.tenant, "subject": k.key_id, "used": used, "detail": detail})
    near.sort(key=lambda n: -n["used"])
    total_cost = sum(u[2] for t, u in usage.items() if tenant is None or t == tenant)
    total_price = sum(u[3] for t, u in usage.items() if tenant is None or t == tenant)
    negative = [r_["tenant"] for r_ in rows if r_["requests"] and r_["margin_fraction"] is not None and r_["margin_fraction"] < 0]
    return {"meta": w.meta() | {"tenant": tenant, "near_limit_fraction": frac},
            "totals": {"tenants": len(rows), "cost_usd": _money(total_cost), "revenue_usd": _money(total_price),
                       "margin_usd": _money(total_price - total_cost), "near_limit": len(near),
                       "negative_margin_tenants": negative},
            "tables": {"tenants": rows, "near_limit": near, "keys": keys_out}}


# What a tenant's key never sees: the operator's serving cost and everything derived from it
# (margins, savings against baselines, $/Mtok of serving). A tenant sees its own usage, what it
# is billed (price_usd, price_usd_per_mtok), its budgets and limits.
OPERATOR_ONLY = frozenset({
    "cost_usd", "cost_pusd", "margin_usd", "margin_fraction", "negative_margin_tenants", "usd_per_mtok",
    "savings", "all_strong_usd", "single_deployment_usd", "routed_usd", "revenue_usd", "utilization",
    "mean_in_flight", "in_flight", "max_in_flight"})


def tenant_view(data):
    """`data` without the operator-only fields, at any depth (JSON and every CSV table)."""
    if isinstance(data, dict):
        return {k: tenant_view(v) for k, v in data.items() if k not in OPERATOR_ONLY}
    if isinstance(data, list):
        return [tenant_view(v) for v in data]
    return data

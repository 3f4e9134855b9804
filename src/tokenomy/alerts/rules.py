"""Which alerts are due now (pure functions over a snapshot of spend, caps and history).

Every alert has an id made of what it is about, so the same crossing evaluated by any replica,
at any tick, has the same id: `budget:key:k1:monthly:2026-12:0.8`, `cap:acme:requests/5h:<window>`,
`anomaly:acme:<hour>`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetUse:
    kind: str  # key | tenant
    subject: str  # key id or tenant name
    tenant: str
    period: str  # total | daily | monthly
    period_key: str  # 'all', '2026-12-07', '2026-12'
    limit_pusd: int
    spent_pusd: int


@dataclass(frozen=True, slots=True)
class CapUse:
    tenant: str
    plan: str
    cap: str  # "50 requests / 5h"
    window_s: float
    used: int
    limit: int
    at_cap: str


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    kind: str  # budget | cap | anomaly
    tenant: str
    subject: str
    title: str
    text: str
    fields: dict


def _usd(pusd: int) -> str:
    return f"${pusd / 1e12:,.2f}" if pusd >= 10**10 else f"${pusd / 1e12:.6f}".rstrip("0")


def budget_alerts(uses: list[BudgetUse], thresholds: list[float]) -> list[Alert]:
    """One alert per (budget, period, threshold) reached: only the highest threshold reached is
    announced in one tick, the lower ones are claimed silently so they are never sent late."""
    out = []
    for u in uses:
        if u.limit_pusd <= 0:
            continue
        frac = u.spent_pusd / u.limit_pusd
        reached = [t for t in sorted(thresholds) if frac >= t]
        for t in reached:
            who = f"key {u.subject} of tenant '{u.tenant}'" if u.kind == "key" else f"tenant '{u.tenant}'"
            period = "" if u.period == "total" else f" {u.period} ({u.period_key})"
            title = f"Budget {t:.0%} reached: {who}"
            text = (f"{who} has spent {_usd(u.spent_pusd)} of its{period} budget of {_usd(u.limit_pusd)} "
                    f"({frac:.1%}).")
            out.append(Alert(f"budget:{u.kind}:{u.subject}:{u.period}:{u.period_key}:{t:g}", "budget", u.tenant,
                             u.subject, title, text,
                             {"threshold": t, "fraction": round(frac, 6), "spent_usd": u.spent_pusd / 1e12,
                              "budget_usd": u.limit_pusd / 1e12, "period": u.period, "period_key": u.period_key,
                              "silent": t != reached[-1]}))
    return out


def cap_alerts(uses: list[CapUse], now: float) -> list[Alert]:
    """A plan cap reached: once per cap per window (the window's index since the epoch)."""
    out = []
    for u in uses:
        if u.used < u.limit:
            continue
        window = int(now // u.window_s)
        out.append(Alert(f"cap:{u.tenant}:{u.cap}:{window}", "cap", u.tenant, u.tenant,
                         f"Plan cap reached: tenant '{u.tenant}' ({u.plan})",
                         f"tenant '{u.tenant}' used {u.used:,} of {u.cap} on plan {u.plan}; at the cap: {u.at_cap}.",
                         {"plan": u.plan, "cap": u.cap, "used": u.used, "limit": u.limit, "at_cap": u.at_cap}))
    return out


def anomaly_alerts(last_hour_pusd: dict[str, int], trailing_week_pusd: dict[str, int], now: float, *,
                   factor: float, min_pusd: int) -> list[Alert]:
    """Spend in the last hour above `factor` x the trailing week's hourly mean (and above a floor):
    once per tenant per hour."""
    out = []
    hour = int(now // 3600)
    for tenant, spent in last_hour_pusd.items():
        mean = trailing_week_pusd.get(tenant, 0) / (7 * 24)
        if spent >= min_pusd and spent > factor * mean:
            ratio = spent / mean if mean else None
            out.append(Alert(f"anomaly:{tenant}:{hour}", "anomaly", tenant, tenant,
                             f"Spend anomaly: tenant '{tenant}'",
                             f"tenant '{tenant}' spent {_usd(spent)} in the last hour, "
                             + (f"{ratio:.1f}x its trailing-week hourly mean of {_usd(int(mean))}." if ratio
                                else "with no spend in the trailing week."),
                             {"last_hour_usd": spent / 1e12, "trailing_hourly_mean_usd": mean / 1e12,
                              "ratio": ratio, "factor": factor}))
    return out

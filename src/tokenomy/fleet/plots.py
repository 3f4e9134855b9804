"""Plots of plans (PNG): plan composition, cost vs SLO, cost vs rate, plan over time, autoscaling schedule."""

from __future__ import annotations


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plan_composition_plot(plan: dict, path: str) -> None:
    """Stacked $/h bars: the mixed plan vs the best single-type plan, by accelerator config and site;
    and a panel of $/h per month when the plan has a growth trajectory."""
    plt = _plt()
    growth = [m for m in (plan.get("growth") or {}).get("months", []) if m.get("feasible")]
    fig, axes = plt.subplots(1, 2 if growth else 1, figsize=(12 if growth else 6.5, 4.2))
    ax = axes[0] if growth else axes
    bars = [("mixed plan", plan["assignments"])]
    if plan.get("best_single"):
        bars.append((f"best single ({plan['best_single']['accelerator']})", plan["best_single"]["assignments"]))
    labels = sorted({_label(a) for _, assigns in bars for a in assigns})
    colors = {lab: plt.cm.tab20(i % 20) for i, lab in enumerate(labels)}
    for x, (name, assigns) in enumerate(bars):
        bottom = 0.0
        for a in sorted(assigns, key=_label):
            ax.bar(x, a["usd_per_hour"], bottom=bottom, color=colors[_label(a)], edgecolor="white")
            ax.text(x, bottom + a["usd_per_hour"] / 2, f"{a['replicas']}x", ha="center", va="center", fontsize=8)
            bottom += a["usd_per_hour"]
        ax.text(x, bottom, f"${bottom:.2f}/h", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars])
    ax.set_ylabel("USD per hour")
    sat = plan.get("slo_attainment")
    ax.set_title(f"{plan['model']}: TPOT {plan['slo_tpot_ms']:g} ms, TTFT {plan['slo_ttft_ms']:g} ms"
                 + (f", attainment {sat:.1%}" if sat is not None else ""), fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[lab]) for lab in labels]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if growth:
        gx = axes[1]
        gx.plot([m["month"] for m in growth], [m["usd_per_hour"] for m in growth], marker="o", label="$/h")
        gx.set_xlabel("month")
        gx.set_ylabel("USD per hour")
        g2 = gx.twinx()
        g2.plot([m["month"] for m in growth], [m["usd_per_mtok"] for m in growth], color="tab:orange",
                marker=".", label="$/Mtok")
        g2.set_ylabel("USD per Mtok")
        gx.set_title("plan over time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label(a: dict) -> str:
    from tokenomy.fleet.planner import _mix_key

    return _mix_key(a)


def cost_vs_slo_plot(points: list[dict], path: str, *, title: str = "") -> None:
    """points: [{"slo_tpot_ms", "usd_per_hour", "best_single_usd_per_hour"}] -> line plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [p["slo_tpot_ms"] for p in points]
    ax.plot(xs, [p["usd_per_hour"] for p in points], marker="o", label="mixed plan")
    ax.plot(xs, [p["best_single_usd_per_hour"] for p in points], marker="s", label="best single type")
    ax.set_xlabel("TPOT SLO (ms)")
    ax.set_ylabel("USD per hour")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_vs_rate_plot(points: list[dict], path: str, *, title: str = "") -> None:
    """points: feasible cost_vs_rate points -> $/h (left) and $/Mtok (right) vs the rate scale,
    for the mixed plan and the best single type, with the mix annotated at each rate."""
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [p.get("rate_scale_total", p["rate_scale"]) for p in points]  # x the original trace
    ax.plot(xs, [p["usd_per_hour"] for p in points], marker="o", label="mixed plan")
    ax.plot(xs, [p["best_single_usd_per_hour"] for p in points], marker="s", ls="--", label="best single type")
    for i, p in enumerate(points):
        mix = "\n".join(f"{n} × {k}" for k, n in p["mix"].items())  # replicas × accelerator x TP / dtype
        right = i >= len(points) / 2  # keep the labels inside the axes
        ax.annotate(mix, (xs[i], p["usd_per_hour"]), textcoords="offset points",
                    xytext=(-6 if right else 6, 4 if right else -4), ha="right" if right else "left",
                    va="bottom" if right else "top", fontsize=6.5, color="dimgray")
    ax.set_ylabel("USD per hour")
    ax.set_title("fleet cost", fontsize=10)
    bx.plot(xs, [p["usd_per_mtok"] for p in points], marker="o", label="mixed plan")
    bx.plot(xs, [p["best_single_usd_per_mtok"] for p in points], marker="s", ls="--", label="best single type")
    bx.set_ylabel("USD per million tokens")
    bx.set_title("unit cost", fontsize=10)
    for a, keys in ((ax, ("usd_per_hour", "best_single_usd_per_hour")),
                    (bx, ("usd_per_mtok", "best_single_usd_per_mtok"))):
        top = max((p[k] for p in points for k in keys if p.get(k) is not None), default=1.0)
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 4:
            a.set_xscale("log", base=2)
        a.set_xticks(xs, [f"{x:g}x\n{p['rate_per_s']:.3g}/s" for x, p in zip(xs, points)], fontsize=8)
        a.minorticks_off()
        a.set_xlabel("arrival rate (x trace rate, requests/s)")
        a.set_ylim(0, top * 1.15)
        a.grid(alpha=0.3)
        a.legend(fontsize=8, loc="upper left" if a is ax else "lower left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def autoscale_plot(result: dict, path: str) -> None:
    """Replicas over the day by price class (stacked steps) and USD per interval, with the
    static peak-sized fleet's cost for comparison."""
    import numpy as np

    plt = _plt()
    rows = result["schedule"]
    x = np.array([r["start_hour"] for r in rows] + [result["horizon_hours"]])
    fig, (ax, cx) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bottom = np.zeros(len(rows))
    colors = {"reserved": "tab:green", "on_demand": "tab:blue", "spot": "tab:orange"}
    for cls in ("reserved", "on_demand", "spot"):
        v = np.array([sum(rep[cls] for rep in r["replicas"].values()) for r in rows], dtype=float)
        if v.any():
            ax.fill_between(x, np.append(bottom, bottom[-1]), np.append(bottom + v, (bottom + v)[-1]), step="post",
                            color=colors[cls], alpha=0.75, label=cls.replace("_", "-"))
            bottom = bottom + v
    static_n = sum(result["static_fleet"].values())
    ax.hlines(static_n, x[0], x[-1], colors="black", linestyles="--", label=f"static fleet ({static_n})")
    ax.set_ylabel("replicas in service")
    ax.set_ylim(0, max(static_n, float(bottom.max()) if len(bottom) else 0) * 1.15 + 0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    dt = result["interval_minutes"] / 60.0
    usd_h = [r["usd"] / dt for r in rows]
    cx.step(x, usd_h + usd_h[-1:], where="post", color="tab:blue", label="autoscaled")
    cx.hlines(result["usd_per_day_static"] / 24.0, x[0], x[-1], colors="black", linestyles="--", label="static")
    cx.set_ylabel("USD per hour")
    cx.set_xlabel("hour of the horizon")
    cx.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle(f"{result['model']} on {result['trace']['name']}: \\${result['usd_per_day']:.0f}/day vs "
                 f"\\${result['usd_per_day_static']:.0f}/day static ({result['saving_vs_static']:.0%} saved), "
                 f"TPOT {result['slo_tpot_ms']:g} ms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""A self-contained HTML report (no external assets: plots are inline base64 PNGs)."""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path

from .run import BenchResult, EndpointResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#1d232a;
padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dde;padding-bottom:4px}
.meta{color:#5a6470;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin-top:8px;width:100%}
th,td{border:1px solid #dfe3e8;padding:5px 8px;text-align:right;white-space:nowrap}
th{background:#f3f5f8;font-weight:600;white-space:normal} td:first-child,th:first-child{text-align:left}
td.l{text-align:left;white-space:normal;word-break:break-word} .wrap{overflow-x:auto}
tr.failed td{background:#fff4f2} .ok{color:#17803d;font-weight:600} .bad{color:#c0392b;font-weight:600}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px;margin-top:12px}
.plots figure{margin:0;border:1px solid #e3e6ea;border-radius:6px;padding:8px;background:#fff}
.plots img{width:100%;height:auto} figcaption{font-size:12px;color:#5a6470;margin-top:4px}
code{background:#f3f5f8;padding:1px 4px;border-radius:3px}
"""


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _png(fig) -> str:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cdf_plot(endpoints: dict[str, EndpointResult], attr: str, title: str, slo_ms: float | None) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    drawn = False
    for name, e in endpoints.items():
        samples = getattr(e.metrics, attr)
        if not samples:
            continue
        xs = np.sort(np.asarray(samples))
        ys = np.arange(1, len(xs) + 1) / len(xs)
        ax.step(xs, ys, where="post", label=f"{name} (n={len(xs)})", linewidth=1.8)
        drawn = True
    every = [v for e in endpoints.values() for v in getattr(e.metrics, attr) if v > 0]
    if every and max(every) / max(min(every), 1e-9) > 50:
        from tokenomy.plotaxes import log_axis

        log_axis(ax, "x", min(every), max(every))  # endpoints an order of magnitude apart: keep both readable
    if slo_ms is not None:
        ax.axvline(slo_ms, color="#c0392b", linestyle="--", linewidth=1, label=f"SLO {slo_ms:g} ms")
    if not drawn:
        ax.text(0.5, 0.5, "no successful requests", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{title} (ms)")
    ax.set_ylabel("share of requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{title} CDF")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    return _png(fig)


def _throughput_plot(endpoints: dict[str, EndpointResult]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    closed = any(r.concurrency is not None for e in endpoints.values() for r in e.runs)
    for name, e in endpoints.items():
        pts = [((r.concurrency if closed else r.rate_per_s), r.metrics) for r in e.runs]
        pts = [(x, m) for x, m in pts if x is not None and math.isfinite(x)]
        if not pts or not any(m.requests_ok for _, m in pts):
            continue
        ax.plot([x for x, _ in pts], [m.output_tokens_per_s for _, m in pts], marker="o", label=name)
    ax.set_xlabel("concurrency (clients)" if closed else "offered rate (requests/s)")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Throughput vs load")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no successful run on an offered-rate axis", ha="center", va="center",
                transform=ax.transAxes)
    return _png(fig)


def _cost_quality_plot(endpoints: dict[str, EndpointResult]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    priced = [(n, e) for n, e in endpoints.items() if e.pricing and e.pricing.usd_per_1k_requests is not None]
    judged = [(n, e) for n, e in priced if e.quality and e.quality.mean is not None]
    if judged:
        for name, e in judged:
            assert e.pricing is not None and e.quality is not None
            ax.scatter([e.pricing.usd_per_1k_requests], [e.quality.mean], s=60)
            ax.annotate(name, (e.pricing.usd_per_1k_requests, e.quality.mean), textcoords="offset points",
                        xytext=(6, 4), fontsize=9)
        ax.set_xlabel("$ per 1k requests of this workload")
        ax.set_ylabel("judged quality (1-10)")
        ax.set_ylim(0, 10.5)
        ax.margins(x=0.2)  # room for the labels
        ax.set_title("Cost vs quality")
    elif priced:
        names = [n for n, _ in priced]
        ax.barh(names, [e.pricing.usd_per_1k_requests for _, e in priced], color="#4c78a8")  # type: ignore[union-attr]
        ax.set_xlabel("$ per 1k requests of this workload")
        ax.set_title("Cost (quality not judged: pass --judge NAME)")
    else:
        ax.text(0.5, 0.5, "no priced endpoint with successful requests\n(add price=... to --endpoint)",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Cost vs quality")
    ax.grid(alpha=0.3)
    return _png(fig)


def _table(result: BenchResult) -> str:
    head = ("<tr><th>endpoint</th><th>model</th><th>ok</th><th>errors</th><th>TTFT p50/p90/p99 ms</th>"
            "<th>TPOT p50/p90/p99 ms</th><th>ITL p50 ms</th><th>E2E p50/p99 ms</th><th>out tok/s</th>"
            "<th>req/s</th><th>goodput req/s</th><th>$/Mtok in</th><th>$/Mtok out</th><th>$/1k req</th>"
            "<th>quality</th><th>terms</th></tr>")
    rows = []
    for name, e in result.endpoints.items():
        m = e.metrics
        errs = ", ".join(f"{k} {v}" for k, v in m.errors.items() if v) or "0"
        p = e.pricing
        q = e.quality.mean if e.quality else None
        comp = "–" if e.compliance is None else (
            '<span class="ok">met</span>' if e.compliance["compliant"] else '<span class="bad">breached</span>')
        tri = lambda d: "/".join(_fmt(d[k]) for k in ("p50", "p90", "p99"))  # noqa: E731
        cls = ' class="failed"' if m.requests_ok == 0 else ""
        rows.append(
            f"<tr{cls}><td>{html.escape(name)}</td><td>{html.escape(e.model)}</td><td>{m.requests_ok}/{m.requests}</td>"
            f"<td>{html.escape(errs)}</td><td>{tri(m.ttft_ms)}</td><td>{tri(m.tpot_ms)}</td><td>{_fmt(m.itl_ms['p50'])}</td>"
            f"<td>{_fmt(m.e2e_ms['p50'])}/{_fmt(m.e2e_ms['p99'])}</td><td>{_fmt(m.output_tokens_per_s)}</td>"
            f"<td>{_fmt(m.requests_per_s, 2)}</td><td>{_fmt(m.goodput_rps, 2)}</td>"
            f"<td>{_money(p.usd_per_mtok_input if p else None)}</td><td>{_money(p.usd_per_mtok_output if p else None)}</td>"
            f"<td>{_money(p.usd_per_1k_requests if p else None)}</td><td>{_fmt(q)}</td><td>{comp}</td></tr>")
    return f"<div class='wrap'><table>{head}{''.join(rows)}</table></div>"


def _errors_section(result: BenchResult) -> str:
    items = []
    for name, e in result.endpoints.items():
        for kind, example in e.metrics.error_examples.items():
            items.append(f"<li><b>{html.escape(name)}</b> — {html.escape(kind)} x{e.metrics.errors.get(kind, 0)}: "
                         f"<code>{html.escape(example)}</code></li>")
    return f"<h2>Errors</h2><ul>{''.join(items)}</ul>" if items else ""


def _pricing_section(result: BenchResult) -> str:
    rows = []
    for name, e in result.endpoints.items():
        p = e.pricing
        if p is None:
            continue
        extra = ""
        if p.basis == "self_hosted":
            extra = (f"${p.usd_per_hour:.3f}/h (devices ${p.usd_per_hour_devices:.3f} + energy "
                     f"${p.usd_per_hour_energy:.3f}); prefill share of busy time {_fmt((p.share_prefill or 0) * 100)}%")
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(p.basis)}</td><td>{html.escape(p.spec)}</td>"
                    f"<td class='l'>{html.escape(extra)}</td><td class='l'>{html.escape(p.source or '')}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Pricing</h2><table><tr><th>endpoint</th><th>basis</th><th>spec</th><th>detail</th><th>source</th></tr>"
            + "".join(rows) + "</table><p class='meta'>Self-hosted: the replica's hourly cost over the benchmark's "
            "duration, split between input and output by time in prefill (TTFT) vs decode, over the measured tokens.</p>")


def _compliance_section(result: BenchResult) -> str:
    rows = []
    for name, e in result.endpoints.items():
        if not e.compliance:
            continue
        for check, c in e.compliance["checks"].items():
            committed = c.get("committed", c.get("committed_ms", c.get("committed_pct")))
            measured = c.get("measured", c.get("measured_ms", c.get("measured_pct")))
            label = check + (f" p{c['percentile']:g}" if "percentile" in c else "")
            ok = c["ok"]
            mark = '<span class="ok">ok</span>' if ok else ('<span class="bad">breach</span>' if ok is False else "n/a")
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(label)}</td><td>{_fmt(committed, 3)}</td>"
                        f"<td>{_fmt(measured, 3)}</td><td>{mark}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Contract compliance</h2><table><tr><th>endpoint</th><th>term</th><th>committed</th><th>measured</th>"
            "<th></th></tr>" + "".join(rows) + "</table>")


def render_html(result: BenchResult) -> str:
    import matplotlib

    matplotlib.use("Agg")
    eps = result.endpoints
    c = result.config
    plots = [
        (_cdf_plot(eps, "ttft_samples_ms", "TTFT", c.slo.ttft_ms), "Time to first token, per request."),
        (_cdf_plot(eps, "tpot_samples_ms", "TPOT", c.slo.tpot_ms), "Time per output token after the first."),
        (_throughput_plot(eps), "Output tokens/s at each offered load (one point per --rate of a sweep)."),
        (_cost_quality_plot(eps), "$ per 1k requests of this workload vs judged quality."),
    ]
    figs = "".join(f'<figure><img alt="plot" src="data:image/png;base64,{png}"><figcaption>{html.escape(cap)}'
                   f"</figcaption></figure>" for png, cap in plots)
    d = result.to_dict()
    load = d["load"]
    load_desc = (f"concurrency {load['concurrency']}" if load["concurrency"] else
                 f"Poisson {', '.join(str(r) for r in load['rates_per_s'])} req/s" if load["rates_per_s"] else
                 "trace replay")
    bounds = ", ".join(x for x in (f"{load['max_requests']} requests" if load["max_requests"] else "",
                                   f"{load['duration_s']:g} s" if load["duration_s"] else "") if x)
    slo = (f"SLO TTFT {c.slo.ttft_ms or '–'} ms, TPOT {c.slo.tpot_ms or '–'} ms" if c.slo.any else "no SLO given "
           "(goodput = all successful requests)")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    wl = html.escape(", ".join(f"{k}={v}" for k, v in c.workload.items()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tokenomy bench</title><style>{_CSS}</style>"
            f"</head><body><h1>Endpoint benchmark</h1><p class='meta'>{when} · workload {wl} · {html.escape(load_desc)}"
            f" · bounded by {html.escape(bounds)} · {html.escape(slo)} · metrics as vLLM benchmark_serving "
            f"(TPOT = (E2E − TTFT)/(output − 1)); figures are from the last load level of a sweep.</p>"
            f"<h2>Comparison</h2>{_table(result)}{_errors_section(result)}<h2>Plots</h2><div class='plots'>{figs}</div>"
            f"{_pricing_section(result)}{_compliance_section(result)}</body></html>")


def write_report(result: BenchResult, path: Path | str) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path

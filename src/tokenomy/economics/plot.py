"""Bar chart of a deployment comparison (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

from .unit_cost import UnitCost

MAX_BARS = 30


def plot_compare(model_id: str, rows: Sequence[UnitCost], api_rows: Sequence[UnitCost], path: str, *,
                 slo_tpot_ms: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one bar per accelerator config at its cheapest site keeps the chart readable
    best: dict[tuple[str, int], UnitCost] = {}
    for r in rows:
        key = (r.accelerator, r.count)
        if key not in best or r.usd_per_mtok_output < best[key].usd_per_mtok_output:
            best[key] = r
    self_rows = sorted(best.values(), key=lambda r: r.usd_per_mtok_output)[:MAX_BARS]
    labels = [f"{r.count}x {r.accelerator} @ {r.site}" for r in self_rows]
    out_vals = [r.usd_per_mtok_output for r in self_rows]
    in_vals = [r.usd_per_mtok_input for r in self_rows]
    colors = ["tab:blue"] * len(self_rows)
    for a in api_rows:
        labels.append(f"API {a.model.split('/')[-1][:34]}")
        out_vals.append(a.usd_per_mtok_output)
        in_vals.append(a.usd_per_mtok_input)
        colors.append("tab:gray")
    n = len(labels)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.42 * max(n, 1)))
    ys = list(range(n))[::-1]
    h = 0.38
    ax.barh([y + h / 2 for y in ys], out_vals, height=h, color=colors, label="output $/Mtok")
    ax.barh([y - h / 2 for y in ys], in_vals, height=h, color=colors, alpha=0.45, label="input $/Mtok")
    for y, v in zip(ys, out_vals):
        ax.text(v, y + h / 2, f" {v:.3g}", va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlabel("USD per million tokens (dark: output, light: input; grey: API list price)")
    title = f"{model_id}: cost per million tokens, cheapest site per accelerator"
    if slo_tpot_ms:
        title += f" (TPOT <= {slo_tpot_ms:g} ms)"
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

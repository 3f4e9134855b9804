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

    from .compare import best_site_per_accelerator, ranked

    # one bar per accelerator config at its cheapest site keeps the chart readable; API offers
    # are ranked in with the deployments (grey), named with their provider
    bars = ranked(best_site_per_accelerator(rows)[:MAX_BARS], api_rows)
    labels = [f"API {r.price_provider}: {r.model.split('/')[-1][:30]}" if r.price_basis == "api"
              else f"{r.count}x {r.accelerator} @ {r.site}" for r in bars]
    out_vals = [r.usd_per_mtok_output for r in bars]
    in_vals = [r.usd_per_mtok_input for r in bars]
    colors = ["tab:gray" if r.price_basis == "api" else "tab:blue" for r in bars]
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
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="self-hosted, output"),
                       Patch(color="tab:blue", alpha=0.45, label="self-hosted, input"),
                       Patch(color="tab:gray", label="API list price, output"),
                       Patch(color="tab:gray", alpha=0.45, label="API list price, input")],
              loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=4, fontsize=8, frameon=False)
    fig.tight_layout()  # the legend sits below the axis label, never over a bar or its value
    fig.savefig(path, dpi=110)
    plt.close(fig)

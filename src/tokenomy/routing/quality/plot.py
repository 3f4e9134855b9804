"""PNG of the quality vs strong-call-share curve, with the random and oracle references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenomy.routing.quality.metrics import Curve, pgr_curve


def plot_curves(curves: dict[str, Curve], path: Path | str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 4.4), dpi=120)
    first = next(iter(curves.values()))
    for name, c in curves.items():
        share, _ = pgr_curve(c)
        style = {"random": dict(ls="--", color="grey"), "oracle": dict(ls=":", color="black")}.get(name, {})
        ax.plot(share, c.quality_at(share / 100.0), label=name, **style)
    ax.axhline(first.weak_mean, color="tab:red", lw=0.8, alpha=0.6, label="all weak")
    ax.axhline(first.strong_mean, color="tab:green", lw=0.8, alpha=0.6, label="all strong")
    ax.set_xlabel("strong-model calls (%)")
    ax.set_ylabel("mean quality")
    ax.set_xlim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the axes, never over a curve
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(path))
    plt.close(fig)


def random_curve(weak: np.ndarray, strong: np.ndarray) -> Curve:
    from tokenomy.routing.quality.metrics import curve

    return curve(np.zeros(len(weak)), weak, strong)   # all ties = random order in expectation

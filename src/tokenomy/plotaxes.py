"""Readable log axes for the project's PNG plots.

matplotlib's default log axis labels every minor tick as "2 x 10^1" when the data spans less
than a decade or so; on a 4-inch-wide panel those labels overprint one another (and need
mathtext fonts). Latency axes get plain numbers on 1-2-5 ticks instead, minor ticks unlabelled.
"""

from __future__ import annotations

import math


def log_axis(ax, axis: str = "x", lo: float | None = None, hi: float | None = None) -> None:
    """Log scale on `axis` with plain-number major labels: 1-1.5-2-3-5-7 steps within about a
    decade, 1-2-5 steps up to 3 decades, decades only beyond (never more than ~8 labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    decades = math.log10(hi / lo) if lo and hi and lo > 0 and hi > lo else 10.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1.3 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    a.set_major_locator(LogLocator(base=10, subs=subs, numticks=10))
    a.set_major_formatter(FuncFormatter(lambda v, _pos: short_number(v)))
    a.set_minor_formatter(NullFormatter())


def short_number(v: float) -> str:
    """Tick label: 20, 500, 2k, 10k, 1.5M, 0.05 (narrow enough for 1-2-5 ticks side by side)."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"

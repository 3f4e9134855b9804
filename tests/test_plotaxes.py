"""Log axes of the PNG plots: tick labels never overprint one another (issue 20: the TTFT axis
of `simulate --plot` printed "2x10^1 3x10^1 4x10^1 ..." on top of each other)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tokenomy.plotaxes import log_axis, short_number  # noqa: E402


def _labels(fig, ax):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lo, hi = ax.get_xlim()
    return [(t.get_text(), t.get_window_extent(r)) for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
            if t.get_visible() and t.get_text() and lo <= t.get_position()[0] <= hi]


@pytest.mark.parametrize("lo,hi", [(15, 490), (70, 9000), (7, 18), (0.4, 3), (30, 200), (1, 1e6), (120, 150_000)])
def test_no_overlapping_tick_labels_on_a_panel(lo, hi):
    fig, ax = plt.subplots(figsize=(13 / 3, 3.8))  # one panel of simulate's 3-panel CDF figure
    v = np.geomspace(lo, hi, 200)
    ax.plot(v, np.linspace(0, 1, len(v)))
    log_axis(ax, "x", lo, hi)
    labels = _labels(fig, ax)
    assert len(labels) >= 2, labels  # something readable on the axis
    boxes = sorted(labels, key=lambda t: t[1].x0)
    for (ta, a), (tb, b) in zip(boxes, boxes[1:]):
        assert a.x1 < b.x0, f"'{ta}' overlaps '{tb}' on [{lo}, {hi}]"
    assert all("$" not in t for t, _ in labels)  # plain numbers, no mathtext
    plt.close(fig)


def test_short_numbers():
    assert [short_number(x) for x in (20, 500, 1000, 2000, 10000, 1.5e6, 0.05)] == \
        ["20", "500", "1k", "2k", "10k", "1.5M", "0.05"]

"""Charts as server-rendered SVG: no chart library, no script, nothing to vendor. Pure.

Labels are escaped here because the SVG is built as text and marked safe for Jinja.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

BAR_H = 22
LABEL_W = 150
WIDTH = 600


def bars(items: Sequence[tuple[str, int]], title: str) -> Markup:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    if not items:
        return Markup("")
    top = max(v for _, v in items) or 1
    height = BAR_H * len(items) + 4
    rows = []
    for i, (label, value) in enumerate(items):
        y = i * BAR_H + 2
        w = max(1, int((WIDTH - LABEL_W - 90) * value / top)) if value else 0
        rows.append(
            f'<text x="{LABEL_W - 6}" y="{y + 15}" text-anchor="end">{escape(label[:24])}</text>'
            f'<rect class="bar" x="{LABEL_W}" y="{y + 3}" width="{w}" height="{BAR_H - 6}"/>'
            f'<text x="{LABEL_W + w + 6}" y="{y + 15}">{value:,}</text>'
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(rows)}</svg>'
    )


def rate(samples: Sequence[tuple[float, int]], title: str) -> Markup:
    """Devices finished per minute over time, from (seconds, finished so far) samples."""
    points = [
        (t1, max(0.0, (n1 - n0) * 60 / (t1 - t0)))
        for (t0, n0), (t1, n1) in itertools.pairwise(samples)
        if t1 > t0
    ]
    if len(points) < 2:
        return Markup(f'<p class="muted">{escape(title)}: collecting samples…</p>')
    height, pad = 120, 30
    t_first, t_last = points[0][0], points[-1][0]
    span = (t_last - t_first) or 1.0
    top = max(v for _, v in points) or 1.0
    coords = " ".join(
        f"{pad + (WIDTH - pad - 10) * (t - t_first) / span:.1f},"
        f"{height - pad + 10 - (height - pad) * v / top:.1f}"
        for t, v in points
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<line class="axis" x1="{pad}" y1="{height - pad + 10}" x2="{WIDTH - 10}" '
        f'y2="{height - pad + 10}"/>'
        f'<text x="{pad}" y="12">peak {top:,.0f}/min</text>'
        f'<text x="{WIDTH - 10}" y="{height - 4}" text-anchor="end">last {span:,.0f} s</text>'
        f'<polyline class="line" points="{coords}"/></svg>'
    )

"""Inline SVG charts written by hand: no plotting dependency, nothing fetched when the page opens.

Every bar is a `<rect class="bar" data-count="N">`, so a test (or a reader's script) can sum the
marks and check them against the data.

>>> svg = bars("tools", {"calculator": 3, "python": 1})
>>> svg.count('class="bar"'), 'data-count="3"' in svg
(2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 420
ROW_H = 18
LABEL_W = 150
HIST_H = 140


def _num(x: float) -> str:
    return f"{x:.4g}"


def bars(name: str, counts: dict[str, int], title: str = "", ordered: bool = False) -> str:
    """Horizontal bars, one row per label: largest first, or in the given order (`ordered`)."""
    rows = (
        list(counts.items()) if ordered else sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    top = max((n for _, n in rows), default=0) or 1
    height = ROW_H * max(len(rows), 1) + 4
    span = WIDTH - LABEL_W - 50
    parts = []
    for i, (label, n) in enumerate(rows):
        y = i * ROW_H + 2
        w = max(span * n / top, 1 if n else 0)
        text = escape(str(label))
        parts.append(
            f'<text x="{LABEL_W - 4}" y="{y + 13}" text-anchor="end">{text[:40]}</text>'
            f'<rect class="bar" data-label="{text}" data-count="{n}" x="{LABEL_W}" y="{y}" '
            f'width="{w:.1f}" height="{ROW_H - 4}"><title>{text}: {n}</title></rect>'
            f'<text x="{LABEL_W + w + 4:.1f}" y="{y + 13}">{n}</text>'
        )
    return _svg(name, title, WIDTH, height, "".join(parts) or _empty())


def histogram(name: str, edges: Sequence[float], counts: Sequence[int], title: str = "") -> str:
    """Vertical bars over `len(counts)` bins; `edges` has one more value than `counts`."""
    n = len(counts)
    top = max(counts, default=0) or 1
    bar_w = (WIDTH - 20) / max(n, 1)
    parts = []
    for i, c in enumerate(counts):
        h = (HIST_H - 32) * c / top
        x = 10 + i * bar_w
        lo, hi = _num(edges[i]), _num(edges[i + 1]) if i + 1 < len(edges) else "?"
        parts.append(
            f'<rect class="bar" data-count="{c}" x="{x:.1f}" y="{HIST_H - 18 - h:.1f}" '
            f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>[{lo}, {hi}): {c}</title></rect>"
        )
        if c and n <= 20:  # the count over its bar
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{HIST_H - 20 - h:.1f}" '
                f'text-anchor="middle">{c}</text>'
            )
    if edges:
        parts.append(f'<text x="10" y="{HIST_H - 4}">{_num(edges[0])}</text>')
        parts.append(
            f'<text x="{WIDTH - 10}" y="{HIST_H - 4}" text-anchor="end">{_num(edges[-1])}</text>'
        )
    return _svg(name, title, WIDTH, HIST_H, "".join(parts) if counts else _empty())


def _empty() -> str:
    return '<text x="10" y="14">no data</text>'


def _svg(name: str, title: str, w: int, h: int, body: str) -> str:
    label = escape(title or name)
    return (
        f'<figure class="chart"><figcaption>{label}</figcaption>'
        f'<svg class="chart" data-chart="{escape(name)}" role="img" aria-label="{label}" '
        f'width="{w}" height="{h}" viewBox="0 0 {w} {h}">{body}</svg></figure>'
    )


def columns(name: str, labels: Sequence[str], counts: Sequence[int], title: str = "") -> str:
    """Vertical bars in order (a time series); the first and last labels are printed."""
    n = len(counts)
    top = max(counts, default=0) or 1
    bar_w = (WIDTH - 20) / max(n, 1)
    parts = []
    for i, (label, c) in enumerate(zip(labels, counts, strict=True)):
        h = (HIST_H - 20) * c / top
        text = escape(str(label))
        parts.append(
            f'<rect class="bar" data-label="{text}" data-count="{c}" x="{10 + i * bar_w:.1f}" '
            f'y="{HIST_H - 18 - h:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{text}: {c}</title></rect>"
        )
    if labels:
        parts.append(f'<text x="10" y="{HIST_H - 4}">{escape(str(labels[0]))}</text>')
        last = escape(str(labels[-1]))
        parts.append(f'<text x="{WIDTH - 10}" y="{HIST_H - 4}" text-anchor="end">{last}</text>')
    return _svg(name, title, WIDTH, HIST_H, "".join(parts) if counts else _empty())

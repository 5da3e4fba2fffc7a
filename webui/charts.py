"""Small server-side SVG charts, inlined in the page: no charting script, no CDN.

The box may be offline and the CSP allows no inline script or style, so charts are plain
SVG markup drawn here. Colours come from classes in ``app.css`` (``svg.chart .bar``,
``.bar.blocked``, ``text``, ``.axis``), never ``style=`` attributes, which the CSP blocks.
Every label (domain names and client addresses come from the network: attacker-controlled)
goes through ``markupsafe.escape``; the result is ``Markup`` so Jinja inserts it as is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

LABEL_CHARS = 52


def _num(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _nice_max(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value``."""
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10


def _clock(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%H:%M")


def minute_bars(series: Sequence[tuple[int, int, int]], *, label: str) -> Markup:
    """Stacked bars per minute: allowed below, blocked on top. ``series`` holds
    (unix minute, total, blocked), oldest first."""
    width, height, left, bottom, top_pad = 600, 170, 34, 18, 8
    plot_h = height - bottom - top_pad
    top = _nice_max(max((t for _, t, _ in series), default=0) or 1)
    slot = (width - left) / max(len(series), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
        f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{width}"'
        f' y2="{top_pad + plot_h}"/>',
        f'<line class="axis" x1="{left}" y1="{top_pad}" x2="{width}" y2="{top_pad}"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{top}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
    ]
    for i, (minute, total, blocked) in enumerate(series):
        x = left + i * slot + 1
        w = max(slot - 2, 1)
        h_all = plot_h * total / top
        h_blocked = plot_h * blocked / top
        base = top_pad + plot_h
        tip = f"{_clock(minute)} UTC: {total} queries, {blocked} blocked"
        parts.append(f"<g><title>{escape(tip)}</title>")
        if total > blocked:
            parts.append(
                f'<rect class="bar" x="{_num(x)}" y="{_num(base - h_all)}"'
                f' width="{_num(w)}" height="{_num(h_all - h_blocked)}"/>'
            )
        if blocked:
            parts.append(
                f'<rect class="bar blocked" x="{_num(x)}" y="{_num(base - h_blocked)}"'
                f' width="{_num(w)}" height="{_num(h_blocked)}"/>'
            )
        parts.append("</g>")
    if series:
        ends = ((0, "start"), (len(series) // 2, "middle"), (len(series) - 1, "end"))
        for i, anchor in ends:
            x = (
                left
                + i * slot
                + (0 if anchor == "start" else slot if anchor == "end" else slot / 2)
            )
            text = escape(_clock(series[i][0]))
            parts.append(
                f'<text x="{_num(x)}" y="{height - 4}" text-anchor="{anchor}">{text}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def bar_list(
    items: Sequence[tuple[str, int]],
    *,
    label: str,
    blocked: bool = False,
    link: Callable[[str], str] | None = None,
) -> Markup:
    """A bar per item (label, count), in the order given: the label and count on a line,
    the bar under them, so long domain names keep the card's whole width. A label that
    ``link`` turns into a URL becomes a link (the query log filtered to it)."""
    width, row_h = 320, 30
    height = max(len(items), 1) * row_h
    most = max((n for _, n in items), default=0) or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label)}</title>",
    ]
    if not items:
        parts.append('<text x="0" y="14">nothing yet</text>')
    for i, (name, count) in enumerate(items):
        y = i * row_h
        text = f'<text x="0" y="{y + 12}"><title>{escape(name)}</title>'
        text += f"{escape(_short(name))}</text>"
        if link is not None:
            text = f'<a href="{escape(link(name))}">{text}</a>'
        parts += [
            text,
            f'<text x="{width}" y="{y + 12}" text-anchor="end">{count}</text>',
            f'<rect class="bar{" blocked" if blocked else ""}" x="0" y="{y + 16}"'
            f' width="{_num(max(width * count / most, 1))}" height="8"/>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))

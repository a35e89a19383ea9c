"""SVG plots of the post-call report, drawn with matplotlib's object API.

Each function returns one standalone `<svg>` element as text, sized by its viewBox so that it
scales with the page and prints sharply. Nothing here touches pyplot or matplotlib's global
state: every figure is a fresh `Figure` rendered under a local `rc_context`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from face_core.emotions import EMOTIONS

# The same colours as the live pages (static/emotions.js): Okabe-Ito, which stays
# distinguishable for the common colour-vision deficiencies and in greyscale print.
EMOTION_COLORS: dict[str, str] = {
    "angry": "#D55E00",
    "disgust": "#7A5C1E",
    "fear": "#CC79A7",
    "happy": "#E69F00",
    "sad": "#0072B2",
    "surprise": "#009E73",
    "neutral": "#A0A0A0",
}

# Past this many points a curve is averaged into bins: a two-hour call at one point per second
# would otherwise make a megabyte of SVG that looks the same.
MAX_POINTS = 600

_RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: searchable, selectable, small
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "svg.hashsalt": "confbot",  # stable ids: the same report renders to the same bytes
}


@dataclass(frozen=True, kw_only=True)
class Marker:
    """A numbered vertical marker on the time axis (a peak moment)."""

    t_s: float
    label: str


def clock(t_s: float) -> str:
    """Seconds since the call started as HH:MM:SS."""
    total = max(0, round(t_s))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _bin(ts: Sequence[float], rows: Sequence[Sequence[float]]) -> tuple[list[float], list[list[float]]]:
    """Average consecutive points so that at most MAX_POINTS remain."""
    n = len(ts)
    if n <= MAX_POINTS:
        return list(ts), [list(r) for r in rows]
    step = -(-n // MAX_POINTS)
    out_t = [sum(ts[i : i + step]) / len(ts[i : i + step]) for i in range(0, n, step)]
    out_rows = []
    for row in rows:
        out_rows.append([sum(row[i : i + step]) / len(row[i : i + step]) for i in range(0, n, step)])
    return out_t, out_rows


def _svg(fig: object, title: str) -> str:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    start = text.index("<svg")
    svg = text[start:]
    # Let CSS size it: keep the viewBox, drop the fixed width and height in points.
    head_end = svg.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", svg[:head_end])
    escaped = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    head += f' role="img" aria-label="{escaped}"'
    return head + svg[head_end:]


def _time_axis(ax: object, end_s: float) -> None:
    from matplotlib.axes import Axes
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    assert isinstance(ax, Axes)
    ax.set_xlim(0, max(end_s, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 3, 5, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: clock(v)))


def audience_svg(
    t_s: Sequence[float],
    mean_valence: Sequence[float],
    shares: dict[str, Sequence[float]],
    markers: Sequence[Marker],
    *,
    end_s: float,
) -> str:
    """Mean valence (top) and the share of faces showing each emotion (bottom) over the call."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(9, 5.2))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
        rows = [mean_valence, *(shares[e] for e in EMOTIONS)]
        bt, binned = _bin(t_s, rows)
        top.axhline(0, color="#555555", linewidth=0.8)
        top.plot(bt, binned[0], color="#222222", linewidth=1.6)
        top.set_ylim(-1.05, 1.05)
        top.set_yticks([-1, -0.5, 0, 0.5, 1])
        top.set_ylabel("mean valence")
        top.set_title("Audience: how pleasant faces looked (1 = pleasant, -1 = unpleasant)",
                      loc="left", fontsize=10)
        bottom.stackplot(bt, binned[1:], colors=[EMOTION_COLORS[e] for e in EMOTIONS],
                         labels=list(EMOTIONS), linewidth=0)
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("share of faces")
        bottom.yaxis.set_major_formatter("{x:.0%}")
        bottom.set_title("Share of faces showing each emotion", loc="left", fontsize=10)
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
        for marker in markers:
            for ax in (top, bottom):
                ax.axvline(marker.t_s, color="#000000", linestyle="--", linewidth=0.9)
            top.annotate(marker.label, (marker.t_s, 1.0), xytext=(3, -2), textcoords="offset points",
                         va="top", fontsize=9, fontweight="bold")
        _time_axis(bottom, end_s)
        bottom.set_xlabel("time since the call started (HH:MM:SS)")
        return _svg(fig, "Audience curve: mean valence and emotion shares over the call")


def participant_svg(
    name: str,
    distribution: dict[str, float],
    t_s: Sequence[float],
    valence: Sequence[float],
    *,
    end_s: float,
) -> str:
    """One participant: the share of their samples per top emotion, and valence over time."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(9, 2.4))
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 2.2]})
        values = [distribution.get(e, 0.0) for e in EMOTIONS]
        y = list(range(len(EMOTIONS)))
        left.barh(y, values, color=[EMOTION_COLORS[e] for e in EMOTIONS])
        left.set_yticks(y, labels=list(EMOTIONS))
        left.invert_yaxis()
        left.set_xlim(0, 1)
        left.xaxis.set_major_formatter("{x:.0%}")
        left.grid(axis="y", visible=False)
        left.set_title("time showing each emotion", loc="left", fontsize=10)
        for yi, v in zip(y, values, strict=True):
            if v > 0:
                left.text(min(v, 0.8) + 0.02, yi, f"{v:.0%}", va="center", fontsize=8)
        bt, binned = _bin(t_s, [valence])
        right.axhline(0, color="#555555", linewidth=0.8)
        if bt:
            right.plot(bt, binned[0], color="#222222", linewidth=1.2)
        right.set_ylim(-1.05, 1.05)
        right.set_yticks([-1, 0, 1])
        right.set_title("valence over time", loc="left", fontsize=10)
        _time_axis(right, end_s)
        return _svg(fig, f"{name}: emotion distribution and valence over time")

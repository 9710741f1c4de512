"""Static HTML for Workspace, Sync, SyncRun, Preview and run history: no ipywidgets needed.

Reads well in JupyterLab (light and dark themes), VS Code and an nbconvert HTML export:
inline styles only (no <style> blocks, which VS Code and some sanitisers drop), no
scripts, and colours that keep their contrast on a dark background. The widgets in
:mod:`dfsync.widgets` render their parts with these same functions, so a static repr
and a live panel look alike.

>>> from dfsync import _html
>>> "healthy" in _html.badge("healthy")
True
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .states import RECORD_META

if TYPE_CHECKING:

    pass

#: one colour per sync status and per run status, used as the background of white text (badges,
#: bars): each passes WCAG AA (4.5:1) against white, so it reads the same in light and dark themes
COLORS = {
    "pending": "#6b7280", "healthy": "#15803d", "failed": "#b91c1c", "disabled": "#4b5563",
    "started": "#2563eb", "querying": "#1d4ed8", "queued": "#7c3aed", "in_progress": "#b45309",
    "success": "#047857", "paused": "#a16207",
}
RUN_STEPS = ("started", "querying", "queued", "in_progress")
FINAL_STEPS = ("success", "paused", "failed")
#: the counters a panel shows, in order (docs/STATES.md has the full list)
PANEL_COUNTERS = ("inserted", "updated", "deleted", "unchanged", "invalid", "failed")
COUNTER_ORDER = ("queried", "inserted", "updated", "deleted", "unchanged", "invalid", "sent", "succeeded",
                 "failed", "skipped", "retried")
#: text colours follow the notebook's theme (JupyterLab's CSS variables), with fallbacks that pass
#: AA on white for a page without them (an nbconvert export, GitHub)
#: record columns a person never needs to see in a sample of rows
INTERNAL = RECORD_META
TEXT = "var(--jp-content-font-color1, #111827)"
MUTED = "var(--jp-content-font-color2, #4b5563)"
ERROR = "var(--jp-error-color1, #b91c1c)"
WARN = "var(--jp-warn-color1, #92400e)"
LINE = "#9ca3af80"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"


def esc(v: Any) -> str:
    """HTML-escape any value (None -> empty)."""
    return html.escape("" if v is None else str(v))


def fmt_float(v: float) -> str:
    """A value of the user's data as polars prints it, not its full repr (``6.90468`` for the
    float64 ``6.904679999999999`` a CSV's ``6.90468`` was read as): 15 significant digits (what a
    float64 holds of a decimal), trailing zeros off, ``.0`` kept on a whole number; a float32
    widened to a Python float (``0.10000000149011612``) as the float32 (``0.1``)."""
    import numpy as np

    if v != v or v in (float("inf"), float("-inf")):
        return "NaN" if v != v else ("inf" if v > 0 else "-inf")
    if float(np.float32(v)) == v:
        return str(np.float32(v))  # its shortest float32 text: ends in .0 when whole, as polars
    text = f"{v:.15g}"
    return text if any(ch in text for ch in ".e") else text + ".0"


def label(step: str) -> str:
    """``in_progress`` -> ``In Progress``."""
    return step.replace("_", " ").title()


def fmt_seconds(s: float | None) -> str:
    """A short human duration: ``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if s is None:
        return ""
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def fmt_time(t: datetime | None) -> str:
    if t is None:
        return ""
    return t.strftime("%Y-%m-%d %H:%M:%S")


def fmt_rate(rows: float) -> str:
    """Rows per second, short: ``850 rows/s``, ``12.4k rows/s``, ``1.2M rows/s``."""
    if rows >= 1e6:
        return f"{rows / 1e6:.1f}M rows/s"
    if rows >= 1e4:
        return f"{rows / 1e3:.1f}k rows/s"
    return f"{rows:,.0f} rows/s"


def badge(status: str) -> str:
    """A coloured pill for a sync or run status (``data-status`` carries the raw value)."""
    c = COLORS.get(status, "#374151")
    return (f'<span class="dfsync-badge" data-status="{esc(status)}" style="background:{c};color:#ffffff;'
            f'border-radius:9px;padding:1px 8px;font-size:0.85em;font-weight:600;white-space:nowrap">'
            f'{esc(status)}</span>')


def box(title: str, body: str, *, cls: str = "dfsync") -> str:
    """A titled, bordered block that takes the width it needs, never more than its container."""
    return (f'<div class="{cls}" style="{FONT};color:{TEXT};border:1px solid {LINE};border-radius:8px;'
            f'padding:8px 12px;margin:4px 0;width:fit-content;max-width:100%;box-sizing:border-box">'
            f'<div style="font-weight:600;margin-bottom:4px">{title}</div>{body}</div>')


_box = box


def scroll(inner: str, cls: str = "dfsync-scroll", *, fill: bool = False) -> str:
    """Wide content (a table) scrolls sideways inside its box instead of widening the page.

    ``fill=True``: the content never widens its box at all (``width:0;min-width:100%`` adds
    nothing to the box's own width): rows of records take the width the panel has.
    """
    size = "width:0;min-width:100%" if fill else "max-width:100%"
    return f'<div class="{cls}" style="overflow-x:auto;{size}">{inner}</div>'


def table(rows: list[dict[str, Any]], columns: list[str], *, raw: tuple[str, ...] = ("status",),
          headers: dict[str, str] | None = None, numeric: tuple[str, ...] = (), fill: bool = False) -> str:
    """An HTML table; cells of the ``raw`` columns are already HTML, the rest are escaped.

    Headers and cells share their alignment (numbers right, text left) and nothing wraps.
    """
    headers = headers or {}

    def align(c: str) -> str:
        return "right" if c in numeric else "left"

    head = "".join(f'<th style="text-align:{align(c)};padding:2px 8px;border-bottom:1px solid {LINE};'
                   f'white-space:nowrap">{esc(headers.get(c, c))}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="text-align:{align(c)};padding:2px 8px;white-space:nowrap">'
                         f'{r.get(c) if c in raw else esc(_cell(r.get(c)))}</td>' for c in columns) + "</tr>"
        for r in rows)
    return scroll(f'<table style="border-collapse:collapse;font-size:0.9em;color:{TEXT}"><thead><tr>{head}</tr>'
                  f'</thead><tbody>{body}</tbody></table>', fill=fill)


def _cell(v: Any) -> Any:
    if isinstance(v, datetime):
        return fmt_time(v)
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return v


def counter(name: str, value: int) -> str:
    """One big number with its name under it (``data-value`` carries the raw count)."""
    return (f'<div class="dfsync-count" data-counter="{esc(name)}" data-value="{int(value)}" '
            f'style="{FONT};text-align:center;min-width:70px">'
            f'<div style="font-size:1.25em;font-weight:600">{int(value):,}</div>'
            f'<div style="color:{MUTED};font-size:0.8em">{esc(name)}</div></div>')


def counters(counts: dict[str, int], names: tuple[str, ...] = COUNTER_ORDER) -> str:
    cells = "".join(f'<div class="dfsync-counter-{esc(k)}" style="padding:2px 6px">{counter(k, counts.get(k, 0))}'
                    f'</div>' for k in names if k in counts)
    return f'<div class="dfsync-counters" style="display:flex;flex-wrap:wrap">{cells}</div>'

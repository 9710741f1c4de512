"""Static HTML of a sync's run history: a chart that reads at a glance and an aligned table.

The chart puts rows on a log scale, so a 6k-row run next to a 200k-row run is visible, and
shows per run what was planned against what was sent (an aborted run is a visibly partial
bar), the rows held back as invalid, and the throughput on its own axis.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any

from ._html import (
    COLORS,
    FONT,
    LINE,
    MUTED,
    PANEL_COUNTERS,
    TEXT,
    badge,
    box,
    esc,
    fmt_seconds,
    fmt_time,
    table,
)
from ._html_run import run_body, run_view, to_send

if TYPE_CHECKING:
    import polars as pl

    from .workspace import Sync, Workspace

PLANNED = "#94a3b8"
INVALID = "#be123c"
THROUGHPUT = "#7c3aed"


def _short(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M".replace(".0M", "M")
    if n >= 1e3:
        return f"{n / 1e3:.1f}k".replace(".0k", "k")
    return f"{n:,.0f}"


def sending_seconds(store: Any, runs: pl.DataFrame) -> dict[int, float]:
    """Seconds each run that sent rows spent sending (``in_progress``), as its panel's rows/s counts
    them: a run's whole duration holds its reading and, for a run paused overnight, the night."""
    from datetime import datetime, timezone

    from ._html_run import durations

    out = {}
    for r in runs.iter_rows(named=True):
        if not r["sent"]:
            continue
        view = {"timeline": store.run_timeline(r["run_id"]), "finished_at": r["finished_at"],
                "now": datetime.now(timezone.utc)}
        out[r["run_id"]] = durations(view).get("in_progress", 0.0)
    return out


def run_rows(runs: pl.DataFrame, sending: dict[int, float] | None = None) -> list[dict[str, Any]]:
    """Per run (oldest first): counts plus planned (rows to send) and throughput (rows sent per
    second of sending when ``sending`` (:func:`sending_seconds`) has the run, else of its duration)."""
    out = []
    for r in reversed(list(runs.iter_rows(named=True))):
        counts = {k: int(r.get(k) or 0) for k in ("queried", "inserted", "updated", "deleted", "unchanged",
                                                  "invalid", "sent", "succeeded", "failed", "skipped")}
        secs = (sending or {}).get(r["run_id"]) or float(r["duration_s"] or 0.0)
        out.append({**r, **counts, "planned": to_send(counts),
                    "rate": counts["sent"] / secs if secs > 0 and counts["sent"] else 0.0})
    return out


def history_chart(runs: pl.DataFrame, *, width: int = 600, height: int = 230,
                  sending: dict[int, float] | None = None) -> str:
    """An inline SVG: planned vs sent (log scale, left axis), invalid rows, throughput (right axis)."""
    data = run_rows(runs, sending)
    if not data:
        return ""
    left, right, top, bottom = 58, 64, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_rows = max(max(max(d["planned"], d["sent"], d["invalid"]) for d in data), 1)
    decades = max(math.ceil(math.log10(top_rows + 1)), 1)

    def y_rows(n: float) -> float:  # log10(1 + n): 0 sits on the axis, 10^decades at the top
        return top + plot_h - plot_h * math.log10(1 + n) / decades

    max_rate = max(max(d["rate"] for d in data), 1e-9)

    def y_rate(v: float) -> float:
        return top + plot_h - plot_h * v / max_rate

    slot = plot_w / len(data)
    bar_w = max(min(slot * 0.42, 34), 3)
    inv_w = max(min(slot * 0.14, 10), 2)
    p = [f'<svg class="dfsync-history-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" role="img" style="{FONT};font-size:11px;color:{TEXT};max-width:100%">',
         '<title>rows planned and sent per run (log scale), invalid rows and throughput</title>']
    # axes, ticks at powers of ten, axis titles
    p.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="currentColor" stroke-opacity="0.6"/>')
    p.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="currentColor" '
             f'stroke-opacity="0.6"/>')
    for k in range(decades + 1):
        n = 10 ** k - 1 if k else 0
        y = y_rows(n)
        p.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="{LINE}" '
                 f'stroke-dasharray="2,3"/>')
        p.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">'
                 f'{_short(10 ** k) if k else "0"}</text>')
    p.append(f'<text class="dfsync-axis-label" x="12" y="{top + plot_h / 2:.0f}" fill="currentColor" '
             f'text-anchor="middle" transform="rotate(-90 12 {top + plot_h / 2:.0f})">rows (log scale)</text>')
    p.append(f'<text class="dfsync-axis-label" x="{width - 10}" y="{top + plot_h / 2:.0f}" fill="currentColor" '
             f'text-anchor="middle" transform="rotate(90 {width - 10} {top + plot_h / 2:.0f})">rows/s</text>')
    p.append(f'<text x="{left + plot_w + 6}" y="{top + 4}" fill="currentColor">{_short(max_rate)}</text>')
    p.append(f'<text x="{left + plot_w + 6}" y="{top + plot_h + 4}" fill="currentColor">0</text>')
    p.append(f'<text class="dfsync-axis-label" x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle" '
             f'fill="currentColor">run</text>')
    points = []
    for i, d in enumerate(data):
        x = left + i * slot + (slot - bar_w - inv_w - 2) / 2
        base = top + plot_h
        planned, sent = d["planned"], d["sent"]
        partial = sent < planned
        colour = COLORS.get(d["status"], "#2563eb")
        tip = (f'run {d["run_id"]} ({d["status"]}): sent {sent:,} of {planned:,} planned, {d["invalid"]:,} invalid, '
               f'{fmt_seconds(float(d["duration_s"] or 0))}')
        p.append(f'<g class="dfsync-run-bar" data-run="{d["run_id"]}" data-sent="{sent}" data-planned="{planned}" '
                 f'data-invalid="{d["invalid"]}" data-partial="{str(partial).lower()}"><title>{esc(tip)}</title>')
        yp = y_rows(planned)
        p.append(f'<rect x="{x:.1f}" y="{yp:.1f}" width="{bar_w:.1f}" height="{max(base - yp, 0):.1f}" '
                 f'fill="{PLANNED}" fill-opacity="0.35" stroke="{PLANNED}"/>')
        ys = y_rows(sent)
        p.append(f'<rect x="{x:.1f}" y="{ys:.1f}" width="{bar_w:.1f}" height="{max(base - ys, 1):.1f}" '
                 f'fill="{colour}"/>')
        if d["invalid"]:
            yi = y_rows(d["invalid"])
            p.append(f'<rect x="{x + bar_w + 2:.1f}" y="{yi:.1f}" width="{inv_w:.1f}" height="{max(base - yi, 1):.1f}" '
                     f'fill="{INVALID}"/>')
        lab = _short(sent) if not partial else f"{_short(sent)}/{_short(planned)}"
        p.append(f'<text x="{x + bar_w / 2:.1f}" y="{min(yp, ys) - 4:.1f}" text-anchor="middle" fill="currentColor" '
                 f'font-size="10">{lab}</text></g>')
        p.append(f'<text x="{x + bar_w / 2:.1f}" y="{base + 14}" text-anchor="middle" fill="currentColor">'
                 f'{d["run_id"]}</text>')
        points.append((x + bar_w / 2, y_rate(d["rate"])))
    if len(points) > 1:
        p.append(f'<polyline points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in points)}" fill="none" '
                 f'stroke="{THROUGHPUT}" stroke-width="1.5"/>')
    p += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{THROUGHPUT}"/>' for a, b in points]
    # legend
    items = [("sent", COLORS["success"], "rect"), ("planned", PLANNED, "rect"), ("invalid", INVALID, "rect"),
             ("rows/s", THROUGHPUT, "dot")]
    x = left
    for name, colour, shape in items:
        mark = (f'<rect x="{x}" y="8" width="10" height="10" fill="{colour}"/>' if shape == "rect"
                else f'<circle cx="{x + 5}" cy="13" r="4" fill="{colour}"/>')
        p.append(f'{mark}<text x="{x + 14}" y="17" fill="currentColor">{name}</text>')
        x += 14 + 8 * len(name) + 14
    p.append("</svg>")
    return "".join(p)


def runs_table(runs: pl.DataFrame, sending: dict[int, float] | None = None) -> str:
    """Recent runs (a ``sync.runs()`` frame) as a table: status, start, duration, counts, rows/s."""
    rows = []
    for d in reversed(run_rows(runs, sending)):
        rows.append({
            "run": d["run_id"], "status": badge(d["status"]), "started": fmt_time(d["started_at"]),
            "duration": fmt_seconds(d["duration_s"]), **{k: d[k] for k in PANEL_COUNTERS},
            "sent": d["sent"], "planned": d["planned"], "rows/s": f'{d["rate"]:,.0f}' if d["rate"] else "",
            "error": (d["error"] or "")[:80],
        })
    cols = ["run", "status", "started", "duration", *PANEL_COUNTERS, "sent", "planned", "rows/s", "error"]
    return table(rows, cols, numeric=("run", "duration", *PANEL_COUNTERS, "sent", "planned", "rows/s"))


def history_html(name: str, runs: pl.DataFrame, sending: dict[int, float] | None = None) -> str:
    """Run history of one sync: chart and table (``runs`` is ``sync.runs(limit)``; ``sending``:
    :func:`sending_seconds` of them)."""
    if runs.height == 0:
        return box(f"runs of <code>{esc(name)}</code>", "<i>no runs yet</i>", cls="dfsync dfsync-history-box")
    return box(f"runs of <code>{esc(name)}</code> ({runs.height} most recent)",
               f'<div style="overflow-x:auto;max-width:100%">{history_chart(runs, sending=sending)}</div>'
               + runs_table(runs, sending),
               cls="dfsync dfsync-history-box")


__all__ = ["history_chart", "history_html", "run_rows", "runs_table", "sending_seconds"]


# ---------------------------------------------------------------------- reprs of a sync and a workspace
def workspace_html(ws: Workspace) -> str:
    df = ws.syncs()
    rows = []
    for r in df.iter_rows(named=True):
        r = dict(r)
        r["status"] = badge(r["status"])
        r["last run"] = (f'#{r["last_run_id"]} {badge(r["last_run_status"])}' if r["last_run_status"] else "never")
        r["finished"] = fmt_time(r["last_run_finished_at"])
        r["next run"] = fmt_time(r["next_run_at"]) or ("manual" if not r["schedule"] else "")
        with contextlib.suppress(Exception):  # a sync gone meanwhile still lists its kind
            r["destination"] = ws.sync(r["name"]).describe_destination()
        rows.append(r)
    body = table(rows, ["name", "status", "source", "destination", "destination_mode", "last run",
                        "finished", "next run"], raw=("status", "last run"),
                 headers={"destination_mode": "mode"}) if rows else "<i>no syncs yet</i>"
    return box(f"dfsync workspace <code>{esc(ws.path)}</code>", body)


def sync_html(sync: Sync) -> str:
    run = sync.last_run()
    d = sync.definition
    sched = f" · schedule {esc(sync.schedule)}" if sync.schedule else ""
    info = (f'<div style="color:{MUTED};margin-bottom:4px">{esc(d["source"]["kind"])} → '
            f'{esc(sync.describe_destination())} · {esc(sync.destination_mode.value)} · '
            f'key {esc(", ".join(sync.primary_key))} · {esc(sync.sync_mode.value)}{sched}</div>')
    body = info
    if run is None:
        body += "<i>no runs yet</i>"
    else:
        body += (f'<div style="margin-bottom:4px">run {run.id} · started {esc(fmt_time(run.started_at))}</div>'
                 + run_body(run_view(run)))
        runs = sync.runs(limit=5)
        if runs.height > 1:
            body += (f'<div style="margin-top:6px;color:{MUTED}">recent runs</div>'
                     + runs_table(runs, sending_seconds(sync.workspace.store, runs)))
    return box(f"sync <code>{esc(sync.name)}</code> {badge(sync.status.value)}", body)

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

if TYPE_CHECKING:
    import polars as pl

    from .workspace import Preview, Sync, SyncRun, Workspace

#: one colour per sync status and per run status
COLORS = {
    "pending": "#6b7280", "healthy": "#15803d", "failed": "#b91c1c", "disabled": "#9ca3af",
    "started": "#2563eb", "querying": "#2563eb", "queued": "#7c3aed", "in_progress": "#d97706",
    "success": "#15803d", "paused": "#ca8a04",
}
RUN_STEPS = ("started", "querying", "queued", "in_progress")
FINAL_STEPS = ("success", "paused", "failed")
#: the counters a panel shows, in order (STATES.md has the full list)
PANEL_COUNTERS = ("inserted", "updated", "deleted", "unchanged", "invalid", "failed")
COUNTER_ORDER = ("queried", "inserted", "updated", "deleted", "unchanged", "invalid", "sent", "succeeded",
                 "failed", "skipped", "retried")
MUTED = "#6b7280"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"


def esc(v: Any) -> str:
    """HTML-escape any value (None -> empty)."""
    return html.escape("" if v is None else str(v))


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


def badge(status: str) -> str:
    """A coloured pill for a sync or run status (``data-status`` carries the raw value)."""
    c = COLORS.get(status, "#374151")
    return (f'<span class="dfsync-badge" data-status="{esc(status)}" style="background:{c};color:white;'
            f'border-radius:9px;padding:1px 8px;font-size:0.85em;font-weight:600;white-space:nowrap">'
            f'{esc(status)}</span>')


def _box(title: str, body: str) -> str:
    return (f'<div class="dfsync" style="{FONT};border:1px solid #9ca3af80;'
            f'border-radius:8px;padding:8px 12px;margin:4px 0;max-width:960px">'
            f'<div style="font-weight:600;margin-bottom:4px">{title}</div>{body}</div>')


def table(rows: list[dict[str, Any]], columns: list[str], *, raw: tuple[str, ...] = ("status",),
          headers: dict[str, str] | None = None) -> str:
    """An HTML table; cells of the ``raw`` columns are already HTML, the rest are escaped."""
    headers = headers or {}
    head = "".join(f'<th style="text-align:left;padding:2px 8px;border-bottom:1px solid #9ca3af80">'
                   f'{esc(headers.get(c, c))}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="padding:2px 8px;white-space:nowrap">{r.get(c) if c in raw else esc(_cell(r.get(c)))}</td>'
                         for c in columns) + "</tr>"
        for r in rows)
    return (f'<table style="border-collapse:collapse;font-size:0.9em"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table>')


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
    cells = "".join(f'<td style="padding:2px 6px">{counter(k, counts.get(k, 0))}</td>' for k in names if k in counts)
    return f"<table><tr>{cells}</tr></table>"


def timeline(status: str, durations: dict[str, float] | None = None) -> str:
    """Started → Querying → Queued → In Progress → Success/Paused/Failed, the current step highlighted.

    Steps already passed are green, the current one is filled with its colour, later ones grey;
    each step shows the time spent in it when ``durations`` (``SyncRun.durations``) is given.
    """
    durations = durations or {}
    final = status if status in FINAL_STEPS else None
    reached = RUN_STEPS.index(status) if status in RUN_STEPS else len(RUN_STEPS)
    parts = []
    steps = [*RUN_STEPS, final or "success"]
    for i, step in enumerate(steps):
        current = step == status
        if current:
            c = COLORS.get(step, "#374151")
            style = f"color:white;background:{c};border-radius:4px;padding:1px 6px;font-weight:600"
        elif i < reached:
            style = "color:#15803d"
        else:
            style = f"color:{MUTED};opacity:0.7"
        name = label(step) if final or i < len(RUN_STEPS) else "Success / Paused / Failed"
        t = durations.get(step)
        sub = f'<div style="font-size:0.75em;color:{MUTED}">{fmt_seconds(t)}</div>' if t is not None else ""
        cur = ' data-current="true"' if current else ""
        parts.append(f'<div class="dfsync-step" data-step="{esc(step)}"{cur} style="display:inline-block;'
                     f'text-align:center;vertical-align:top"><span style="{style}">{esc(name)}</span>{sub}</div>')
    arrow = f'<div style="display:inline-block;color:{MUTED};padding:0 6px;vertical-align:top">→</div>'
    return f'<div class="dfsync-timeline" data-status="{esc(status)}" style="{FONT}">{arrow.join(parts)}</div>'


def error_html(error: str | None) -> str:
    if not error:
        return ""
    return (f'<div class="dfsync-error-text" style="color:#dc2626;white-space:pre-wrap;'
            f'font-family:ui-monospace,monospace;font-size:0.85em;margin-top:4px">{esc(error)}</div>')


# ---------------------------------------------------------------------- reprs
def workspace_html(ws: Workspace) -> str:
    df = ws.syncs()
    rows = []
    for r in df.iter_rows(named=True):
        r = dict(r)
        r["status"] = badge(r["status"])
        r["last run"] = badge(r["last_run_status"]) if r["last_run_status"] else ""
        r["finished"] = fmt_time(r["last_run_finished_at"])
        r["next run"] = fmt_time(r["next_run_at"]) or ("manual" if not r["schedule"] else "")
        rows.append(r)
    body = table(rows, ["name", "status", "source", "destination", "destination_mode", "last run",
                        "finished", "next run"], raw=("status", "last run"),
                 headers={"destination_mode": "mode"}) if rows else "<i>no syncs yet</i>"
    return _box(f"dfsync workspace <code>{esc(ws.path)}</code>", body)


def sync_html(sync: Sync) -> str:
    run = sync.last_run()
    d = sync.definition
    sched = f" · schedule {esc(sync.schedule)}" if sync.schedule else ""
    info = (f'<div style="color:{MUTED};margin-bottom:4px">{esc(d["source"]["kind"])} → '
            f'{esc(sync.destination.describe())} · {esc(sync.destination_mode.value)} · '
            f'key {esc(", ".join(sync.primary_key))} · {esc(sync.sync_mode.value)}{sched}</div>')
    body = info + (run_body(run) if run else "<i>no runs yet</i>")
    if run is not None:
        runs = sync.runs(limit=5)
        if runs.height > 1:
            body += f'<div style="margin-top:6px;color:{MUTED}">recent runs</div>' + runs_table(runs)
    return _box(f"sync <code>{esc(sync.name)}</code> {badge(sync.status.value)}", body)


def run_body(run: SyncRun) -> str:
    row = run._row
    st = row["status"]
    counts = run.counts
    sent = f'<div style="color:{MUTED};font-size:0.85em">{progress_text(st, counts)}</div>'
    return (f'<div style="margin-bottom:4px">run {run.id} · started {esc(fmt_time(row["started_at"]))}</div>'
            f'{timeline(st, run.durations)}{counters(counts, PANEL_COUNTERS)}{sent}{error_html(row["error"])}')


def run_html(run: SyncRun) -> str:
    return _box(f"run {run.id} of <code>{esc(run.sync_name)}</code> {badge(run.status.value)}", run_body(run))


def preview_html(p: Preview) -> str:
    body = counters(p.counts, ("insert", "update", "delete", "unchanged", "invalid"))
    if p.problems:
        body += "".join(f'<div style="color:#b45309">{esc(x)}</div>' for x in p.problems)
    changes = p.changes
    if changes.height:
        more = f'<div style="color:{MUTED}">first 10 of {changes.height:,} changed rows</div>' if changes.height > 10 else ""
        body += more + changes.head(10)._repr_html_()
    else:
        body += "<i>nothing would change</i>"
    return _box(f"preview of <code>{esc(p.sync_name)}</code> (nothing sent)", body)


# ---------------------------------------------------------------------- progress and history
def pending_total(counts: dict[str, int]) -> int:
    """Rows the run has to send: staged actions minus quarantined rows."""
    return max(int(counts.get("inserted", 0)) + int(counts.get("updated", 0)) + int(counts.get("deleted", 0))
               - int(counts.get("invalid", 0)), int(counts.get("sent", 0)))


def progress_text(status: str, counts: dict[str, int]) -> str:
    total, sent = pending_total(counts), int(counts.get("sent", 0))
    if status in ("started", "querying"):
        return "reading the source…"
    return f"sent {sent:,} of {total:,} rows · {max(total - sent, 0):,} pending"


def runs_table(runs: pl.DataFrame) -> str:
    """Recent runs (a ``sync.runs()`` frame) as a table: status, start, duration, counts."""
    rows = []
    for r in runs.iter_rows(named=True):
        rows.append({
            "run": r["run_id"], "status": badge(r["status"]), "started": fmt_time(r["started_at"]),
            "duration": fmt_seconds(r["duration_s"]),
            **{k: r[k] for k in PANEL_COUNTERS}, "sent": r["sent"],
            "error": (r["error"] or "")[:80],
        })
    return table(rows, ["run", "status", "started", "duration", *PANEL_COUNTERS, "sent", "error"])


def history_chart(runs: pl.DataFrame, *, width: int = 520, height: int = 120) -> str:
    """An inline SVG: rows changed (bars) and duration (dots) per run, oldest on the left."""
    data = list(reversed(list(runs.iter_rows(named=True))))
    if not data:
        return ""
    rows = [int(r["inserted"] or 0) + int(r["updated"] or 0) + int(r["deleted"] or 0) for r in data]
    secs = [float(r["duration_s"] or 0.0) for r in data]
    max_rows, max_secs = max(max(rows), 1), max(max(secs), 1e-9)
    pad, plot_h = 30, height - 30
    slot = (width - 2 * pad) / len(data)
    bar_w = max(min(slot * 0.6, 40), 2)
    parts = [f'<svg class="dfsync-history-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" style="{FONT};font-size:10px">',
             f'<text x="{pad}" y="10" fill="#2563eb">rows changed (max {max_rows:,})</text>',
             f'<text x="{width - pad}" y="10" fill="#d97706" text-anchor="end">duration (max {fmt_seconds(max_secs)})</text>']
    points = []
    for i, (r, n, s) in enumerate(zip(data, rows, secs, strict=False)):
        x = pad + i * slot + (slot - bar_w) / 2
        h = (plot_h - 16) * n / max_rows
        y = plot_h - h
        colour = COLORS.get(r["status"], "#2563eb")
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 1):.1f}" fill="{colour}" '
                     f'opacity="0.8"><title>run {r["run_id"]}: {n:,} rows, {fmt_seconds(s)}, {r["status"]}</title></rect>')
        cx = x + bar_w / 2
        cy = plot_h - (plot_h - 16) * s / max_secs
        points.append(f"{cx:.1f},{cy:.1f}")
        parts.append(f'<text x="{cx:.1f}" y="{height - 14}" text-anchor="middle" fill="{MUTED}">{r["run_id"]}</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#d97706" stroke-width="1.5"/>')
    parts += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.5" fill="#d97706"/>' for p in points]
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 2}" text-anchor="middle" fill="{MUTED}">run</text></svg>')
    return "".join(parts)


def history_html(name: str, runs: pl.DataFrame) -> str:
    """Run history of one sync: chart and table (``runs`` is ``sync.runs(limit)``)."""
    if runs.height == 0:
        return _box(f"runs of <code>{esc(name)}</code>", "<i>no runs yet</i>")
    return _box(f"runs of <code>{esc(name)}</code> ({runs.height} most recent)",
                history_chart(runs) + runs_table(runs))

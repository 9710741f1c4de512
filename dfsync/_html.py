"""Static HTML for Workspace, Sync, SyncRun and Preview: no ipywidgets needed.

Reads well in JupyterLab, VS Code and an nbconvert HTML export (inline styles only).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workspace import Preview, Sync, SyncRun, Workspace

COLORS = {
    "pending": "#6b7280", "healthy": "#15803d", "failed": "#b91c1c", "disabled": "#9ca3af",
    "started": "#2563eb", "querying": "#2563eb", "queued": "#7c3aed", "in_progress": "#d97706",
    "success": "#15803d", "paused": "#ca8a04",
}
RUN_STEPS = ("started", "querying", "queued", "in_progress")
COUNTER_ORDER = ("queried", "inserted", "updated", "deleted", "unchanged", "invalid", "sent", "succeeded",
                 "failed", "skipped", "retried")


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def badge(status: str) -> str:
    c = COLORS.get(status, "#374151")
    return (f'<span class="dfsync-badge" style="background:{c};color:white;border-radius:9px;'
            f'padding:1px 8px;font-size:0.85em;font-weight:600">{esc(status)}</span>')


def _box(title: str, body: str) -> str:
    return (f'<div class="dfsync" style="font-family:system-ui,sans-serif;border:1px solid #d1d5db;'
            f'border-radius:8px;padding:8px 12px;margin:4px 0;max-width:900px">'
            f'<div style="font-weight:600;margin-bottom:4px">{title}</div>{body}</div>')


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f'<th style="text-align:left;padding:2px 8px">{esc(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="padding:2px 8px">{r.get(c) if c == "status" else esc(r.get(c))}</td>' for c in columns) + "</tr>"
        for r in rows)
    return f'<table style="border-collapse:collapse;font-size:0.9em"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def counters(counts: dict[str, int]) -> str:
    cells = "".join(f'<td style="padding:2px 10px;text-align:center"><div style="font-size:1.2em;font-weight:600">'
                    f'{counts.get(k, 0):,}</div><div style="color:#6b7280;font-size:0.8em">{k}</div></td>'
                    for k in COUNTER_ORDER if k in counts)
    return f"<table><tr>{cells}</tr></table>"


def timeline(status: str) -> str:
    final = status if status in ("success", "failed", "paused") else None
    parts = []
    reached = RUN_STEPS.index(status) if status in RUN_STEPS else len(RUN_STEPS)
    for i, step in enumerate(RUN_STEPS):
        style = "color:#9ca3af"
        if i < reached:
            style = "color:#15803d"
        if step == status:
            style = "color:white;background:#d97706;border-radius:4px;padding:0 4px"
        parts.append(f'<span style="{style}">{step.replace("_", " ").title()}</span>')
    if final:
        parts.append(badge(final))
    return " → ".join(parts)


def workspace_html(ws: Workspace) -> str:
    df = ws.syncs()
    rows = []
    for r in df.iter_rows(named=True):
        r = dict(r)
        r["status"] = badge(r["status"])
        rows.append(r)
    body = table(rows, ["name", "status", "source", "destination", "destination_mode", "last_run_status",
                        "last_run_finished_at", "next_run_at"]) if rows else "<i>no syncs yet</i>"
    return _box(f"dfsync workspace <code>{esc(ws.path)}</code>", body)


def sync_html(sync: Sync) -> str:
    run = sync.last_run()
    d = sync.definition
    info = (f"<div>{esc(d['source']['kind'])} → {esc(sync.destination.describe())} · "
            f"{esc(sync.destination_mode.value)} · key {esc(', '.join(sync.primary_key))} · "
            f"{esc(sync.sync_mode.value)}</div>")
    body = info + (run_body(run) if run else "<i>no runs yet</i>")
    return _box(f"sync <code>{esc(sync.name)}</code> {badge(sync.status.value)}", body)


def run_body(run: SyncRun) -> str:
    st = run.status.value
    err = f'<div style="color:#b91c1c;white-space:pre-wrap">{esc(run.error)}</div>' if run.error else ""
    return f"<div>run {run.id}: {timeline(st)}</div>{counters(run.counts)}{err}"


def run_html(run: SyncRun) -> str:
    return _box(f"run {run.id} of <code>{esc(run.sync_name)}</code> {badge(run.status.value)}", run_body(run))


def preview_html(p: Preview) -> str:
    body = counters(p.counts)
    if p.problems:
        body += "".join(f'<div style="color:#b45309">{esc(x)}</div>' for x in p.problems)
    body += p.changes.head(10)._repr_html_() if p.changes.height else "<i>nothing would change</i>"
    return _box(f"preview of <code>{esc(p.sync_name)}</code>", body)

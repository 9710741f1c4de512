"""Static HTML of one run: what it did, why rows were held back, how fast and how long.

The live panel (:class:`dfsync.widgets.SyncPanel`), the HTML that ``sync.run()`` shows in a
notebook and ``SyncRun._repr_html_`` all render :func:`run_body` of a :func:`run_view`, so a
finished run looks the same in a live session, a saved notebook, nbconvert HTML and GitHub.

>>> view = run_view(run)             # reads the workspace once
>>> html = run_body(view)            # pure function of the view
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import polars as pl

from ._html import (
    COLORS,
    ERROR,
    FINAL_STEPS,
    FONT,
    INTERNAL,
    LINE,
    MUTED,
    PANEL_COUNTERS,
    RUN_STEPS,
    TEXT,
    badge,
    box,
    counters,
    esc,
    fmt_rate,
    fmt_seconds,
    fmt_time,
    label,
    scroll,
)
from ._html_preview import action_table
from ._words import plural
from .errors import PermissionDenied
from .states import ACTIVE_RUNS
from .store import BUCKET_STATES, COUNTERS, bucket_summary

if TYPE_CHECKING:
    from .run import SyncRun

ACTIVE = ACTIVE_RUNS
SAMPLE_ROWS = 5


# ---------------------------------------------------------------------- reading a run
def run_view(run: SyncRun, row: dict[str, Any] | None = None, *, details: bool = True) -> dict[str, Any]:
    """Everything :func:`run_body` shows, read from the workspace (``row``: a fresher run row).

    ``details=False`` skips the per-check and per-error breakdown (a live redraw mid-transfer).
    """
    store = run.workspace.store
    row = row if row is not None else store.run_row(run.id)
    counts = {c: int(row.get(c) or 0) for c in COUNTERS}
    view: dict[str, Any] = {
        "run_id": run.id, "sync": run.sync_name, "status": row["status"], "error": row.get("error"),
        "counts": counts, "started_at": row.get("started_at"), "finished_at": row.get("finished_at"),
        "timeline": store.run_timeline(run.id), "now": datetime.now(timezone.utc), "checks": [], "errors": [],
        "buckets": _bucket_states(store, run.id),
    }
    if details and row["status"] not in ACTIVE:
        sync_id = row["sync_id"]
        # example rows come from the records, which a viewer of a shared workspace may not read
        records = (counts["invalid"] or counts["failed"]) and "records" in store.capabilities(sync_id)
        if counts["invalid"]:
            for c in store.failed_checks(run.id):
                sample = (store.record_sample(sync_id, run.id, "invalid", check=c["check"], limit=SAMPLE_ROWS)
                          if records else pl.DataFrame())
                view["checks"].append({**c, "sample": _public(sample)})
        if counts["failed"] and records:
            for err, n in store.failed_errors(sync_id, run.id):
                sample = store.record_sample(sync_id, run.id, "failed", error=err, limit=SAMPLE_ROWS)
                view["errors"].append({"error": err, "rows": n, "sample": _public(sample)})
    return view


def _bucket_states(store: Any, run_id: int) -> dict[str, int] | None:
    """A partitioned run's buckets per state (None: no buckets, or a role the workspace's recipe
    has not yet granted the buckets table: the rest of the view still shows)."""
    try:
        return store.bucket_states([run_id]).get(run_id)
    except PermissionDenied:
        return None


def _public(df: Any) -> Any:
    """Only the record's own columns (no _fingerprint, _status, _checks...)."""
    return df.drop([c for c in df.columns if c in INTERNAL or c.startswith("_dfsync")]) if df.width else df


def segments(view: dict[str, Any]) -> list[tuple[str, float]]:
    """(state, seconds) in the order the run went through them; a resumed run's pause is its own segment."""
    tl = view["timeline"]
    end = view["finished_at"] or view["now"]
    out: list[tuple[str, float]] = []
    for (state, t0), nxt in zip(tl, [*tl[1:], (None, end)], strict=True):
        if state in ("success", "failed"):
            continue
        t1 = nxt[1] if nxt[1] is not None else end
        out.append((state, max((t1 - t0).total_seconds(), 0.0)))
    return out


def durations(view: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for state, secs in segments(view):
        out[state] = out.get(state, 0.0) + secs
    return out


def to_send(counts: dict[str, int]) -> int:
    """Rows the run has to send (rows that passed the checks: inserts, updates and deletes)."""
    i, u, d = counts.get("inserted", 0), counts.get("updated", 0), counts.get("deleted", 0)
    inv, q, unch = counts.get("invalid", 0), counts.get("queried", 0), counts.get("unchanged", 0)
    # older workspaces counted quarantined rows in inserted/updated too (then queried = i + u + unchanged)
    held_in_actions = inv and q == i + u + unch
    return max(i + u + d - (inv if held_in_actions else 0), counts.get("sent", 0))


def speed(view: dict[str, Any]) -> dict[str, float | None]:
    """Elapsed seconds, rows/s while sending, seconds left (None when unknown)."""
    started = view["started_at"]
    end = view["finished_at"] or view["now"]
    elapsed = (end - started).total_seconds() if started else 0.0
    sending = durations(view).get("in_progress", 0.0)
    c = view["counts"]
    sent, total = c.get("sent", 0), to_send(c)
    rate = sent / sending if sending > 0 and sent else None
    eta = (total - sent) / rate if rate and view["status"] in ACTIVE else None
    return {"elapsed": elapsed, "rate": rate, "eta": eta, "sent": sent, "total": total}


# ---------------------------------------------------------------------- rendering
def timeline(status: str, durs: dict[str, float] | None = None) -> str:
    """Started → Querying → Queued → In Progress → Success/Paused/Failed, the current step highlighted.

    Steps already passed carry a ✓, the current one is a filled pill, later ones are muted;
    each step shows the time spent in it when ``durs`` is given. A run that ended before a step
    (failed while querying, say) never went through it: with ``durs`` known, only the steps it
    has a time for carry the ✓.
    """
    durs = durs or {}
    final = status if status in FINAL_STEPS else None
    reached = RUN_STEPS.index(status) if status in RUN_STEPS else len(RUN_STEPS)
    if final and durs:
        reached = max((RUN_STEPS.index(s) + 1 for s in durs if s in RUN_STEPS), default=0)
    parts = []
    steps = [*RUN_STEPS, final or "success"]
    for i, step in enumerate(steps):
        current = step == status
        name = label(step) if final or i < len(RUN_STEPS) else "Success / Paused / Failed"
        if current:
            c = COLORS.get(step, "#374151")
            text = (f'<span style="color:#ffffff;background:{c};border-radius:4px;padding:1px 6px;'
                    f'font-weight:600">{esc(name)}</span>')
        elif i < reached:
            text = f'<span style="color:{TEXT}">✓ {esc(name)}</span>'
        else:
            text = f'<span style="color:{MUTED}">{esc(name)}</span>'
        t = durs.get(step)
        sub = f'<div style="font-size:0.75em;color:{MUTED}">{fmt_seconds(t)}</div>' if t is not None else ""
        cur = ' data-current="true"' if current else ""
        parts.append(f'<div class="dfsync-step" data-step="{esc(step)}"{cur} style="display:inline-block;'
                     f'text-align:center;vertical-align:top">{text}{sub}</div>')
    arrow = f'<div style="display:inline-block;color:{MUTED};padding:0 6px;vertical-align:top">→</div>'
    return (f'<div class="dfsync-timeline" data-status="{esc(status)}" style="{FONT}">'
            f'{arrow.join(parts)}</div>')


def progress_bar(view: dict[str, Any]) -> str:
    """Sent of to-send as a bar; success with nothing to send is a full bar."""
    sp, st = speed(view), view["status"]
    total, sent = sp["total"], sp["sent"]
    pct = 100.0 if (st == "success" and total == 0) else (100.0 * sent / total if total else 0.0)
    colour = {"success": COLORS["success"], "failed": COLORS["failed"], "paused": COLORS["paused"]}.get(
        st, COLORS["started"])
    return (f'<div class="dfsync-bar" data-sent="{sent}" data-total="{total}" data-percent="{pct:.1f}" '
            f'style="width:100%;max-width:420px;height:10px;border-radius:5px;background:{LINE};overflow:hidden">'
            f'<div style="width:{pct:.1f}%;height:100%;background:{colour}"></div></div>')


def speed_line(view: dict[str, Any]) -> str:
    """Live: rows read, sent, pending, rows/s, elapsed, time left. Finished: total duration and rate."""
    sp, st, c = speed(view), view["status"], view["counts"]
    if st in ("started", "querying"):
        parts = [f"reading the source… {plural(c.get('queried', 0), 'row', sep=True)} read", f"elapsed {fmt_seconds(sp['elapsed'])}"]
    else:
        pending = max(int(sp["total"]) - int(sp["sent"]), 0)
        parts = [f"{c.get('queried', 0):,} read", f"{int(sp['sent']):,} sent of {int(sp['total']):,}",
                 f"{pending:,} not sent" if st == "failed" else f"{pending:,} pending"]
        if sp["rate"]:
            parts.append(fmt_rate(sp["rate"]))
        if st in ACTIVE:
            parts.append(f"elapsed {fmt_seconds(sp['elapsed'])}")
            if sp["eta"] is not None:
                parts.append(f"about {fmt_seconds(sp['eta'])} left")
        elif st == "paused":  # the time it ran until it paused, not that plus the time it has been paused
            tl, t0 = view.get("timeline") or [], view["started_at"]
            ran = (tl[-1][1] - t0).total_seconds() if tl and tl[-1][0] == "paused" and t0 else sp["elapsed"]
            parts.append(f"paused after {fmt_seconds(ran)}")
        else:
            parts.append(f"took {fmt_seconds(sp['elapsed'])}")
    attrs = " ".join(f'data-{k}="{v:.3f}"' for k, v in sp.items() if isinstance(v, float))
    return (f'<div class="dfsync-speed" {attrs} style="color:{MUTED};font-size:0.85em;margin:2px 0">'
            f'{esc(" · ".join(parts))}</div>')


def buckets_line(view: dict[str, Any]) -> str:
    """A partitioned run's buckets: how many done, running, waiting (and failed); "" without buckets."""
    b = view.get("buckets")
    if not b:
        return ""
    attrs = " ".join(f'data-{s}="{int(b.get(s, 0))}"' for s in BUCKET_STATES)
    return (f'<div class="dfsync-buckets" {attrs} style="color:{MUTED};font-size:0.85em;margin:2px 0">'
            f'{esc("buckets: " + bucket_summary(b))}</div>')


def segments_bar(view: dict[str, Any]) -> str:
    """Time per state as one stacked bar, in order; a pause is a segment of its own."""
    segs = [(s, t) for s, t in segments(view) if s != "started" or t >= 0.0005]
    total = sum(t for _, t in segs)
    if not segs or total <= 0:
        return ""
    cells = []
    for state, secs in segs:
        pct = max(100.0 * secs / total, 0.8)
        cells.append(f'<div class="dfsync-segment" data-state="{esc(state)}" data-seconds="{secs:.3f}" '
                     f'title="{esc(label(state))} {esc(fmt_seconds(secs))}" '
                     f'style="flex:{pct:.2f} 0 0;background:{COLORS.get(state, "#374151")};height:10px"></div>')
    legend = " · ".join(f'<span data-state="{esc(s)}"><span style="display:inline-block;width:8px;height:8px;'
                        f'background:{COLORS.get(s, "#374151")};margin-right:3px"></span>{esc(label(s))} '
                        f'{esc(fmt_seconds(t))}</span>' for s, t in segs)
    return (f'<div class="dfsync-segments" data-total="{total:.3f}" style="margin:4px 0">'
            f'<div style="display:flex;width:100%;max-width:420px;border-radius:3px;overflow:hidden;gap:1px">'
            f'{"".join(cells)}</div><div style="color:{MUTED};font-size:0.8em;margin-top:2px">'
            f'total {esc(fmt_seconds(total))}: {legend}</div></div>')


def _sample_table(df: Any) -> str:
    if df is None or not df.height:
        return f'<div style="color:{MUTED};font-size:0.85em">(rows not kept)</div>'
    return action_table(df.to_dicts(), list(df.columns), None, [])


def breakdown(view: dict[str, Any]) -> str:
    """``invalid`` per check and ``failed`` per destination error, each opening to its first rows."""
    out = []
    for c in view["checks"]:
        what = c["check"]  # the check's name as the records and validate() give it (a user's name too)
        dataset = c.get("scope") == "dataset" or (c.get("scope") is None and (c.get("level") or "row") != "row")
        scope = " (checked on every row read)" if dataset else ""
        out.append(f'<details class="dfsync-check" data-check="{esc(c["check"])}" data-rows="{int(c["rows"])}">'
                   f'<summary style="cursor:pointer"><b>{esc(what)}</b>{esc(scope)} '
                   f'<span class="dfsync-check-rows">{int(c["rows"]):,}</span> {"row" if int(c["rows"]) == 1 else "rows"}</summary>'
                   f'<div style="margin:2px 0 4px 16px">{_sample_table(c["sample"])}</div></details>')
    if out:
        out.insert(0, f'<div style="color:{MUTED};font-size:0.85em;margin-top:4px">invalid rows per check '
                      f'(held back, not sent):</div>')
    errs = []
    for e in view["errors"]:
        errs.append(f'<details class="dfsync-failure" data-rows="{int(e["rows"])}">'
                    f'<summary style="cursor:pointer"><span style="color:{ERROR}">{esc(e["error"][:160])}</span> '
                    f'{plural(int(e["rows"]), "row", sep=True)}</summary>'
                    f'<div style="margin:2px 0 4px 16px">{_sample_table(e["sample"])}</div></details>')
    if errs:
        out.append(f'<div style="color:{MUTED};font-size:0.85em;margin-top:4px">failed rows per destination '
                   f'error:</div>' + "".join(errs))
    return f'<div class="dfsync-breakdown" style="font-size:0.9em">{"".join(out)}</div>' if out else ""


def error_html(error: str | None) -> str:
    if not error:
        return ""
    return (f'<div class="dfsync-error-text" style="color:{ERROR};white-space:pre-wrap;'
            f'font-family:ui-monospace,monospace;font-size:0.85em;margin-top:4px">{esc(error)}</div>')


def run_body(view: dict[str, Any]) -> str:
    """A run's timeline, progress, speed, time per state, counters, breakdown and error."""
    st = view["status"]
    body = timeline(st, durations(view)) + progress_bar(view) + speed_line(view) + buckets_line(view)
    if st not in ACTIVE:
        body += segments_bar(view)
    return (f'<div class="dfsync-run-body" data-status="{esc(st)}" data-run-id="{view["run_id"]}">{body}'
            f'{counters(view["counts"], PANEL_COUNTERS)}{breakdown(view)}{error_html(view["error"])}</div>')


def run_html(run: SyncRun, row: dict[str, Any] | None = None) -> str:
    view = run_view(run, row)
    title = (f'run {view["run_id"]} of <code>{esc(view["sync"])}</code> {badge(view["status"])} '
             f'<span style="font-weight:normal;color:{MUTED};font-size:0.85em">started '
             f'{esc(fmt_time(view["started_at"]))}</span>')
    return box(title, run_body(view), cls="dfsync dfsync-run-panel")


def run_text(run: SyncRun) -> str:
    """The run repr's breakdown: ``invalid 400 (email not_null 150, email matches 250)``."""
    view = run_view(run)
    parts = []
    if view["checks"]:
        parts.append("invalid by check: " + ", ".join(
            f"{c['check']} {c['rows']}" for c in view["checks"]))
    if view["errors"]:
        parts.append("failed by error: " + ", ".join(
            f"{json.dumps(e['error'][:60])} {e['rows']}" for e in view["errors"]))
    return "; ".join(parts)


__all__ = ["breakdown", "buckets_line", "run_body", "run_html", "run_text", "run_view", "scroll", "segments_bar", "speed"]

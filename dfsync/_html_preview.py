"""Static HTML of a preview: per action a varied sample of rows, only the record's own columns,
updates as before → after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._changes import changed_columns, same
from ._html import INTERNAL, MUTED, WARN, box, counters, esc, fmt_float, scroll
from ._words import plural

if TYPE_CHECKING:
    from .run import Preview

ACTIONS = (("insert", "inserted"), ("update", "updated"), ("delete", "deleted"))
SAMPLE = 5


def _cell(v: Any, full: bool = False) -> str:
    """A value shown (a float as polars prints it; ``full``: its whole repr, for two values that
    print alike but differ)."""
    if v is None:
        return '<span style="opacity:0.75">null</span>'
    if isinstance(v, float):
        return esc(repr(v) if full else fmt_float(v))
    return esc(v)


def action_table(rows: list[dict[str, Any]], columns: list[str], before: dict[Any, dict[str, Any]] | None,
                 key: list[str]) -> str:
    """Rows as a table; with ``before``, a changed field shows ``old → new`` (unchanged fields plain)."""
    th = "".join(f'<th style="text-align:left;padding:2px 8px;white-space:nowrap">{esc(c)}</th>' for c in columns)
    trs = []
    for r in rows:
        old = (before or {}).get(tuple(r.get(k) for k in key))
        tds = []
        for c in columns:
            v = r.get(c)
            if old is not None and c in old and not same(old[c], v) and c not in key:
                full = _cell(old[c]) == _cell(v)  # 0.1 -> 0.1 + 1e-17: both as they are
                tds.append(f'<td class="dfsync-changed" style="padding:2px 8px;white-space:nowrap">'
                           f'<span class="dfsync-before" style="text-decoration:line-through">{_cell(old[c], full)}'
                           f'</span> → <b class="dfsync-after">{_cell(v, full)}</b></td>')
            elif isinstance(v, list):  # the checks an invalid row failed
                tds.append(f'<td style="padding:2px 8px;white-space:nowrap">{esc(", ".join(map(str, v)))}</td>')
            else:
                tds.append(f'<td style="padding:2px 8px;white-space:nowrap">{_cell(v)}</td>')
        trs.append("<tr>" + "".join(tds) + "</tr>")
    return scroll(f'<table class="dfsync-preview-table" style="border-collapse:collapse;font-size:0.9em">'
                  f'<thead><tr>{th}</tr></thead><tbody>{"".join(trs)}</tbody></table>', "dfsync-preview-scroll", fill=True)


def preview_html(p: Preview) -> str:
    body = counters(p.counts, ("insert", "update", "delete", "unchanged", "invalid"))
    if p.problems:
        body += "".join(f'<div style="color:{WARN}">{esc(x)}</div>' for x in p.problems)
    samples = getattr(p, "samples", None)
    if samples is None:  # a Preview made without its sync: the first changed rows
        samples = {a: p.changes.filter(p.changes["_action"] == a).head(SAMPLE) for a, _ in ACTIONS} \
            if p.changes.height else {}
    before = getattr(p, "before", None) or {}
    key = list(getattr(p, "primary_key", []) or [])
    shown = False
    for action in ("insert", "update", "delete", "invalid"):
        df = samples.get(action)
        if df is None or not df.height:
            continue
        shown = True
        n = p.counts.get(action, df.height)
        cols = [c for c in df.columns if c not in INTERNAL]
        note = ""
        if action == "update":
            where = getattr(p, "before_source", "")
            note = (f' <span style="color:{MUTED};font-weight:normal">(before → after; before from the {where})</span>'
                    if before else f' <span style="color:{MUTED};font-weight:normal">(previous values not '
                    f'readable)</span>')
        rows = df.to_dicts()
        if action == "update" and before:  # the key, then the fields that changed, then the rest
            changed: list[str] = []
            for r in rows:
                old = before.get(tuple(r.get(k) for k in key))
                changed += [c for c in (changed_columns(old, r, cols) if old else ()) if c not in changed]
            cols = [*[c for c in key if c in cols], *[c for c in changed if c not in key],
                    *[c for c in cols if c not in key and c not in changed]]
        if action == "invalid":
            cols = [*cols, "failed checks"]
            rows = [{**r, "failed checks": r.get("_checks") or []} for r in rows]
        body += (f'<div class="dfsync-preview-action" data-action="{action}" style="margin-top:6px">'
                 f'<div style="font-weight:600">{action} · {df.height} of {plural(n, "row", sep=True)}{note}</div>'
                 f'{action_table(rows, cols, before if action == "update" else None, key)}</div>')
    if not shown:
        body += "<i>nothing would change</i>"
    return box(f"preview of <code>{esc(p.sync_name)}</code> (nothing sent)", body, cls="dfsync dfsync-preview-box")

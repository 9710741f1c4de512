"""What a preview shows of each action: a varied sample of rows, and for updates the values before.

The before values come from the destination where dfsync can read it in place (a DuckDB or
SQLite file, read-only use), else from the values the workspace kept of earlier runs'
delivered rows. The sample is chosen to show different kinds of change: one update per
distinct set of changed columns first, inserts and deletes spread over the key range, not
the first rows by key.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import polars as pl

from ._arrow import to_polars
from ._html import INTERNAL

if TYPE_CHECKING:
    from .run import Preview
    from .workspace import Sync

SAMPLE = 5
CANDIDATES = 2000  # update rows whose before values are read to find different kinds of change


def record_columns(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in INTERNAL and not c.startswith("_dfsync")]


def same(a: Any, b: Any) -> bool:
    """Equal as a person would read them (a SQLite text date equals the datetime it came from)."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def changed_columns(before: dict[str, Any], after: dict[str, Any], columns: list[str]) -> tuple[str, ...]:
    return tuple(c for c in columns if c in before and not same(before[c], after.get(c)))


def _spread(df: pl.DataFrame, k: int) -> pl.DataFrame:
    """``k`` rows spread evenly over ``df`` (first, last and between)."""
    n = df.height
    if n <= k:
        return df
    idx = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return df[idx]


def read_destination(sync: Sync, key: list[str], keys: pl.DataFrame) -> pl.DataFrame | None:
    """Current rows of the destination for ``keys`` where it can be read in place, else None."""
    dest = sync.destination
    kind = getattr(dest, "kind", "")
    if kind not in ("duckdb", "sqlite") or not keys.height:
        return None
    import os

    path = getattr(dest, "path", None)
    name = getattr(dest, "name", None)
    if not path or not os.path.exists(path) or name is None:
        return None
    table = name.sql
    with contextlib.suppress(Exception):  # unreadable (locked, no table yet): the caller falls back
        if kind == "duckdb":
            import duckdb

            con = duckdb.connect(path)
            try:
                con.register("_dfsync_keys", keys.to_arrow())
                on = " AND ".join(f't."{k}" IS NOT DISTINCT FROM k."{k}"' for k in key)
                return to_polars(con.sql(f"SELECT t.* FROM {table} t JOIN _dfsync_keys k ON {on}").to_arrow_table())
            finally:
                con.close()
        import sqlite3

        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = []
            cur = con.cursor()
            where = " AND ".join(f'"{k}" IS ?' for k in key)
            for values in keys.iter_rows():
                cur.execute(f"SELECT * FROM {table} WHERE {where}", values)
                cols = [d[0] for d in cur.description]
                rows += [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
        finally:
            con.close()
    return None


def before_values(sync: Sync, key: list[str], keys: pl.DataFrame) -> tuple[dict[tuple, dict[str, Any]], str]:
    """{key tuple: row} for ``keys`` and where they came from ("destination", "last delivered" or "")."""
    found = read_destination(sync, key, keys)
    where = "destination"
    if found is None or not found.height:
        found = sync.workspace.store.last_sent_values(sync.id, key, keys.to_arrow())
        where = "last delivered"
    if found is None or not found.height or not all(k in found.columns for k in key):
        return {}, ""
    return {tuple(r[k] for k in key): r for r in found.iter_rows(named=True)}, where


def attach_samples(preview: Preview, sync: Sync) -> None:
    """Give ``preview`` per action a varied sample (``samples``) and the updates' ``before`` values."""
    key = list(sync.primary_key)
    preview.primary_key = key  # type: ignore[attr-defined]
    preview.samples = {}  # type: ignore[attr-defined]
    preview.before = {}  # type: ignore[attr-defined]
    preview.before_source = ""  # type: ignore[attr-defined]
    recs = preview.records
    if not recs.height or "_action" not in recs.columns:
        return
    sendable = recs.filter(pl.col("_status") != "invalid") if "_status" in recs.columns else recs
    for action in ("insert", "delete"):
        rows = sendable.filter(pl.col("_action") == action)
        if rows.height:
            preview.samples[action] = _spread(rows.sort(key, nulls_last=True), SAMPLE)  # type: ignore[attr-defined]
    updates = sendable.filter(pl.col("_action") == "update")
    if updates.height:
        candidates = _spread(updates.sort(key, nulls_last=True), CANDIDATES)
        before, where = before_values(sync, key, candidates.select(key))
        preview.before, preview.before_source = before, where  # type: ignore[attr-defined]
        cols = record_columns(candidates)
        picked: list[int] = []
        seen: set[tuple[str, ...]] = set()
        rows = candidates.to_dicts()
        for i, r in enumerate(rows):  # one row per distinct set of changed columns first
            old = before.get(tuple(r[k] for k in key))
            kind = changed_columns(old, r, cols) if old is not None else ()
            if kind not in seen:
                seen.add(kind)
                picked.append(i)
            if len(picked) == SAMPLE:
                break
        for i in [round(j * (len(rows) - 1) / max(SAMPLE - 1, 1)) for j in range(SAMPLE)]:
            if len(picked) >= min(SAMPLE, len(rows)):
                break
            if i not in picked:
                picked.append(i)
        preview.samples["update"] = candidates[sorted(picked)]  # type: ignore[attr-defined]
    if "delete" in preview.samples and preview.samples["delete"].height:  # type: ignore[attr-defined]
        gone, _ = before_values(sync, key, preview.samples["delete"].select(key))  # type: ignore[attr-defined]
        if gone:  # what is deleted: the row as the destination (or the last run) has it
            cols = [c for c in next(iter(gone.values())) if c not in INTERNAL]
            preview.samples["delete"] = pl.DataFrame(  # type: ignore[attr-defined]
                [{c: gone.get(tuple(r[k] for k in key), r).get(c) for c in cols}
                 for r in preview.samples["delete"].to_dicts()], infer_schema_length=None)  # type: ignore[attr-defined]
    invalid = recs.filter(pl.col("_status") == "invalid") if "_status" in recs.columns else recs.clear()
    if invalid.height:
        preview.samples["invalid"] = _spread(invalid, SAMPLE)  # type: ignore[attr-defined]

"""Rows of a batch and a Delta table: keys the table holds, and rows it would refuse.

Used by :class:`dfsync.destinations._delta.DeltaSession`. delta-rs refuses a whole commit for one
row that a NOT NULL column or a CHECK constraint (``delta.constraints.*``) refuses, so such rows
are found here, before the commit, and failed per row; the rest of the batch goes in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import ACTION_COLUMN

__all__ = ["constraints", "present", "refusal", "unfit_rows"]

_ROW = "__dfsync_row"


def constraints(dt: Any) -> dict[str, str]:
    """The table's CHECK constraints: name -> SQL expression (``delta.constraints.<name>``)."""
    conf = dt.metadata().configuration or {}
    return {k.removeprefix("delta.constraints."): str(v) for k, v in conf.items() if k.startswith("delta.constraints.")}


def refusal(exc: BaseException) -> str | None:
    """delta-rs's text of a commit that a CHECK constraint or a NOT NULL column refused (no retry
    helps), without its preview of the refused rows' values; None for any other error."""
    text = str(exc)
    if "failed validation check" not in text.lower():
        return None
    return text.split("Preview of")[0].strip()


def unfit_rows(data: pa.Table, not_null: list[str], primary_key: tuple[str, ...] | list[str],
               checks: dict[str, str]) -> dict[int, str]:
    """Rows a NOT NULL column or a CHECK constraint of the table would refuse (Delta refuses the
    whole commit), and rows whose key is NaN: the MERGE matches no NaN, and a batch holding one
    wrote other keys twice. Rows to delete are not checked."""
    bad: dict[int, str] = {}
    for c in not_null:
        for i in np.flatnonzero(data.column(c).is_null().to_numpy(zero_copy_only=False)):
            bad.setdefault(int(i), f"column {c!r} is NOT NULL in the Delta table and the value is null")
    for k in primary_key:
        if pa.types.is_floating(data.schema.field(k).type):
            nan = pc.fill_null(pc.is_nan(data.column(k)), False).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(nan):
                bad.setdefault(int(i), f"key column {k!r} is NaN, which a Delta MERGE cannot match to a row; "
                                       f"give the row another key, or choose another primary_key")
    if checks and data.num_rows:
        for i, why in _refused_by_constraints(data, checks).items():
            bad.setdefault(i, why)
    return bad


def _refused_by_constraints(data: pa.Table, checks: dict[str, str]) -> dict[int, str]:
    """Rows (not deletes) for which a CHECK constraint is false, evaluated by DuckDB on the batch
    (a constraint is SQL; delta-rs refuses a row for which it is NULL too). A constraint DuckDB cannot evaluate here
    (Spark's dialect, a column the batch lacks) is left to delta-rs at the commit."""
    import duckdb

    rows = data.append_column(_ROW, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    # a constraint is text whoever writes the table's metadata sets: one expression on the batch only,
    # never statements of its own ('...); COPY ... TO ...'), and no files read or written
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        con.register("b", rows)
        bad: dict[int, str] = {}
        for name, expr in checks.items():
            sql = f"SELECT {_ROW} FROM b WHERE {ACTION_COLUMN} <> 'delete' AND ({expr}) IS NOT TRUE"
            try:
                if len(duckdb.extract_statements(sql)) != 1:
                    continue  # not one expression: delta-rs judges it at the commit
                hit = con.execute(sql).fetchall()
            except duckdb.Error:
                continue  # delta-rs judges it at the commit (a refusal then fails the run, naming the rows)
            for (i,) in hit:
                bad.setdefault(int(i), f"the Delta table's CHECK constraint {name!r} ({expr}) refuses this row")
        return bad
    finally:
        con.close()


def present(dt: Any, data: pa.Table, pk: list[str]) -> np.ndarray:
    """For each row: does the table hold its key?"""
    import polars as pl

    if data.num_rows == 0 or dt is None:
        return np.zeros(data.num_rows, dtype=bool)
    batch_keys = pl.from_arrow(data.select(pk)).with_row_index("_i")  # type: ignore[union-attr]
    first = batch_keys[pk[0]].drop_nulls().unique()
    if "%" in str(dt.table_uri):
        # a local path holding a space, '#', '?', '%' or a non-ASCII letter: delta-rs gives its
        # files' paths %-escaped (file_uris()), which polars' Delta scan opens as they are ('No
        # such file'): every insert/update run into such an existing table paused. delta-rs reads
        # its keys itself (its SQL engine, no pruning by the batch's keys)
        from deltalake import QueryBuilder

        names = ", ".join('"' + k.replace('"', '""') + '"' for k in pk)
        keys = pa.table(QueryBuilder().register("t", dt).execute(f"SELECT DISTINCT {names} FROM t").read_all())
        there = pl.from_arrow(keys).cast({k: batch_keys.schema[k] for k in pk})  # type: ignore[union-attr]
    else:
        # polars reads the table (not pyarrow.dataset, whose import pulls in pandas: 0.3 s a process)
        there = (pl.scan_delta(dt).select(pk).filter(pl.col(pk[0]).is_in(first.implode()))
                 .cast({k: batch_keys.schema[k] for k in pk}).unique().collect())
    hit = batch_keys.join(there, on=pk, how="semi")["_i"].to_numpy()
    out = np.zeros(data.num_rows, dtype=bool)
    out[hit] = True
    return out

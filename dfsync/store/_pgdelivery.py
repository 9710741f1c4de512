"""The delivered state, records and checks of a PostgreSQL workspace: what differs from DuckDB's SQL.

The operations themselves (and their transaction boundaries) are :mod:`dfsync.store._delivery`'s;
these override the statements PostgreSQL does not speak:

* ``state_<id>`` key columns get the PostgreSQL type of the staged DuckDB type (``_KEY_TYPES``;
  others are kept as text) and ``_fp`` is a ``bigint`` holding the fingerprint's 64 bits. Read
  back, every key column is cast to its staged type again (``syncs.key_types``), so the diff in
  staging compares like with like.
* ``rec_<id>`` is created from the records' Arrow schema (``arrow_to_pg``), gains columns as
  records need them; a column whose type changes is widened (integers, floats) or becomes text.
  ``rowid`` (bigserial) keeps their order, as DuckDB's rowid does; DuckDB's ``* EXCLUDE`` is a
  column list (:meth:`PgDeliveryOps._all_but`), ``BY NAME`` too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .._arrow import int_array
from .._ident import quote
from .._pgtypes import arrow_to_pg
from ._delivery import rec_table, state_table

__all__ = ["PgDeliveryOps", "duck_to_pg"]

_KEY_TYPES = {
    "BOOLEAN": "boolean", "TINYINT": "smallint", "SMALLINT": "smallint", "UTINYINT": "smallint",
    "INTEGER": "integer", "USMALLINT": "integer", "BIGINT": "bigint", "UINTEGER": "bigint",
    "UBIGINT": "numeric(20,0)", "HUGEINT": "numeric(39,0)", "UHUGEINT": "numeric(39,0)", "FLOAT": "real",
    "DOUBLE": "double precision", "VARCHAR": "text", "DATE": "date", "TIME": "time",
    "TIMESTAMP": "timestamp", "TIMESTAMP WITH TIME ZONE": "timestamptz", "BLOB": "bytea", "UUID": "text",
}
_WIDER = {"smallint": 1, "integer": 2, "bigint": 3, "numeric": 4}


def duck_to_pg(t: str) -> str:
    """The PostgreSQL column type keeping a staged key type exactly (a type without one: text).

    >>> duck_to_pg("DECIMAL(18,3)"), duck_to_pg("TIMESTAMP_NS")
    ('numeric(18,3)', 'text')
    """
    t = t.upper().strip()
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        return f"numeric({m.group(1)},{m.group(2)})"
    return _KEY_TYPES.get(t, "text")


def _columns(con: Any, table: str) -> dict[str, str]:
    rows = con.execute("SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                       [table]).fetchall()
    return dict(rows)


def _cast_keys(tbl: pa.Table, types: dict[str, str] | None) -> pa.Table:
    """Key columns back to their staged DuckDB types (the state holds them in PostgreSQL's)."""
    if not types or tbl.num_rows == 0 and not tbl.num_columns:
        return tbl
    import duckdb

    cols = ", ".join(f"CAST({quote(c)} AS {types[c]}) AS {quote(c)}" if c in types else quote(c)
                     for c in tbl.column_names)
    con = duckdb.connect()
    try:
        con.register("_t", tbl)
        return con.sql(f"SELECT {cols} FROM _t").to_arrow_table()
    finally:
        con.close()


def _widen(have: str, new: str) -> str | None:
    """The type a records column takes when its records' type changes (None: keep it)."""
    if have == new:
        return None
    a, b = _WIDER.get(have.split("(")[0]), _WIDER.get(new.split("(")[0])
    if a is not None and b is not None:
        return None if a >= b else new
    if {have, new} <= {"real", "double precision"}:
        return None if have == "double precision" else new
    return None if have == "text" else "text"


class PgDeliveryOps:
    """Mixed in before :class:`dfsync.store._duckdb.Store` in :class:`PostgresStore`."""

    target: Any

    def _qualified(self, name: str) -> str:
        return f"{quote(self.target.schema)}.{quote(name)}"

    def _key_types(self, con: Any, sync_id: int) -> dict[str, str] | None:
        import json

        row = con.execute("SELECT key_types FROM syncs WHERE id = ?", [sync_id]).fetchall()
        return json.loads(row[0][0]) if row and row[0][0] else None

    # ------------------------------------------------------------------ delivered state
    @staticmethod
    def _state_table_ddl(st: str, key_types: dict[str, str]) -> list[str]:
        cols = ", ".join(f"{quote(k)} {duck_to_pg(t)}" for k, t in key_types.items())
        return [f"CREATE TABLE {st} ({cols}, _fp bigint, _run bigint, _batch integer, _action text, _ok boolean)",
                f"CREATE INDEX ON {st} (_run, _batch)",
                f"CREATE INDEX ON {st} ({', '.join(quote(k) for k in key_types)})"]

    def delivered(self, sync_id: int, key: Sequence[str]) -> pa.RecordBatchReader | None:
        with self._connect() as con:
            if not self._has_table(con, state_table(sync_id)):
                return None
            cols = ", ".join(quote(k) for k in key)
            tbl = con.sql(f"SELECT {cols}, _fp FROM {state_table(sync_id)} WHERE _ok").to_arrow_table()
            types = self._key_types(con, sync_id)
        tbl = _cast_keys(tbl, types)
        return pa.RecordBatchReader.from_batches(tbl.schema, tbl.to_batches())

    def run_delivered(self, sync_id: int, run_id: int, key: Sequence[str],
                      except_batches: Sequence[int] = ()) -> pa.Table | None:
        tbl = super().run_delivered(sync_id, run_id, key, except_batches)  # type: ignore[misc]
        if tbl is None:
            return None
        with self._connect() as con:
            return _cast_keys(tbl, self._key_types(con, sync_id))

    # ------------------------------------------------------------------ records
    def _store_records(self, con: Any, sync_id: int, run_id: int, recs: pa.Table) -> None:
        from ._pgcon import to_pg_arrow

        rt = rec_table(sync_id)
        recs = to_pg_arrow(recs.append_column("_run_id", int_array(np.full(recs.num_rows, run_id))))
        wanted = {f.name: arrow_to_pg(f.type) for f in recs.schema}
        if not self._has_table(con, rt):
            cols = ", ".join(f"{quote(c)} {t}" for c, t in wanted.items())
            con.execute(f"CREATE TABLE {rt} ({cols}, rowid bigserial)")
        have = _columns(con, self._qualified(rt))
        for name, typ in wanted.items():
            if name not in have:
                con.execute(f"ALTER TABLE {rt} ADD COLUMN {quote(name)} {typ}")
            else:
                to = _widen(have[name], typ)
                if to is not None:
                    con.execute(f"ALTER TABLE {rt} ALTER COLUMN {quote(name)} TYPE {to} "
                                f"USING {quote(name)}::{to}")
        con.register("_recs", recs)
        try:
            cols = ", ".join(quote(c) for c in wanted)
            con.execute(f"INSERT INTO {rt} ({cols}) SELECT {cols} FROM pg_temp._recs")
        finally:
            con.unregister("_recs")

    def _all_but(self, con: Any, table: str, exclude: Sequence[str], alias: str = "") -> str:
        p = f"{alias}." if alias else ""
        return ", ".join(p + quote(c) for c in _columns(con, self._qualified(table)) if c not in (*exclude, "rowid"))

    def retry_rows(self, sync_id: int, key: Sequence[str],
                   meta_columns: Sequence[str]) -> tuple[pa.Table | None, pa.Table | None]:
        rows, keys = super().retry_rows(sync_id, key, meta_columns)  # type: ignore[misc]
        if keys is None:
            return rows, keys
        with self._connect() as con:
            return rows, _cast_keys(keys, self._key_types(con, sync_id))

    def copy_checks(self, run_id: int, from_run: int) -> None:
        with self._transaction() as con:
            cols = [c for c in _columns(con, self._qualified("checks")) if c not in ("run_id", "rowid")]
            names = ", ".join(quote(c) for c in cols)
            con.execute("DELETE FROM checks WHERE run_id = ?", [run_id])
            con.execute(f"INSERT INTO checks (run_id, {names}) SELECT ?, {names} FROM checks WHERE run_id = ? "
                        f"ORDER BY rowid", [run_id, from_run])

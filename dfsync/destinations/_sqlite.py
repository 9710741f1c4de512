"""A table in a SQLite database file as a destination, through ADBC's SQLite driver.

    >>> dest = dfsync.destinations.sqlite("app.sqlite", table="customers")

Same flow and guarantees as PostgreSQL (:mod:`dfsync.destinations._arrowsql`): the batch is
bulk-ingested into a TEMP staging table, applied with ``INSERT … ON CONFLICT`` /
``UPDATE … FROM`` / ``DELETE … WHERE (key) IN (staged keys)`` and committed together with its row in the
``_dfsync_batches`` ledger of the same file (exactly once); ``replace`` swaps a new table in
with DROP + RENAME in one transaction. A busy database (another writer) is retried, then the
run pauses.

Arrow -> SQLite declared types, for tables dfsync creates (the key becomes the PRIMARY KEY):
integers -> INTEGER, floats -> REAL (NaN refused: SQLite stores it as NULL), decimal(p,s) ->
DECIMAL TEXT(p,s) (TEXT affinity: the digits as written), strings -> TEXT,
binary -> BLOB, lists / structs / maps -> JSON (JSON text), durations -> DURATION TEXT
(DuckDB's interval text), bool -> BOOLEAN (0/1), date -> DATE, timestamp -> TIMESTAMP (tz-aware: TIMESTAMPTZ, in UTC), time -> TIME
(dates and times are stored as ISO-8601 text by the driver, with as many fractional digits as the
unit; in a table that holds rows, values go in the unit its text already has, so keys keep matching).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

import pyarrow as pa

from .._adbc import connect_sqlite
from .._arrow import is_interval, is_nested, nested_to_json
from .._paths import not_writable, user_path
from .._schema import JSON
from ..errors import ConfigError, DestinationError, MissingDependencyError, SchemaMismatchError
from ._arrowsql import DATA, ROW_COLUMN, TERMINAL, TRANSIENT, ArrowSQLSession, Transient
from ._sql import TableName, drop_key_clashes, q
from .base import (
    ACTION_COLUMN,
    Destination,
    DestinationContext,
    DestinationSession,
    register_destination,
)

__all__ = ["SQLiteDestination", "arrow_to_sqlite"]


#: a stored timestamp's or time's fractional digits -> its unit
_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_UNIT_NAMES = {"s": "whole seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def arrow_to_sqlite(t: pa.DataType) -> str:
    """The declared SQLite type dfsync creates for an Arrow type.

    >>> arrow_to_sqlite(pa.int32())
    'INTEGER'
    """
    if pa.types.is_dictionary(t):
        return arrow_to_sqlite(t.value_type)
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    if pa.types.is_decimal(t):
        # TEXT affinity: the digits are kept as written (NUMERIC affinity would turn
        # 12345678901234567.89 into the integer 12345678901234568)
        return f"DECIMAL TEXT({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return "TEXT"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BLOB"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"  # declared apart: naive and tz-aware never mix
    if pa.types.is_time(t):
        return "TIME"
    if is_nested(t):
        return "JSON"  # JSON text (SQLite's json functions read it)
    if is_interval(t):
        return "DURATION TEXT"  # DuckDB's interval text, e.g. 1 day 00:00:03.000005
    raise SchemaMismatchError(
        f"Arrow type {t} has no SQLite column type in dfsync; convert the column to a string "
        f"(e.g. JSON) in the sync's mapping"
    )


def _affinity(decl: str) -> str:
    """SQLite's column affinity rules, named the way sql.check_compatible speaks."""
    d = decl.upper()
    if d in ("BOOLEAN", "DATE", "TIMESTAMP", "TIME", "DATETIME"):
        return {"DATETIME": "TIMESTAMP"}.get(d, d)
    if "INT" in d:
        return "BIGINT"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "VARCHAR"
    if "BLOB" in d or not d:
        return "BLOB"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "DOUBLE"
    return "DECIMAL"


@register_destination
class SQLiteDestination(Destination):
    """A table in a SQLite file (created if missing)."""
    tells_rows = True
    one_writer = True

    kind = "sqlite"
    needs = ("adbc_driver_sqlite", "adbc-driver-sqlite", "sqlite", "the SQLite destination")
    #: SQLite stores a NaN REAL as NULL: a NaN is refused before anything is sent
    nonfinite = "inf"
    #: dates and timestamps are ISO text of four-digit years: others are refused before sending
    #: (the driver cannot format them, or writes '-001-01-01')
    date_range = timestamp_range = ((1, 1, 1), (10000, 1, 1))
    #: SQLite integers are signed 64-bit: a uint64 value above this is refused before sending
    largest_integer = 2**63 - 1

    def __init__(self, path: str, table: str, *, retry_timeout: float = 30.0) -> None:
        if not table or not isinstance(table, str):
            raise ConfigError("destinations.sqlite() needs table='name'")
        self.path = user_path(path)  # works from any working directory
        self.table = table
        name = TableName.parse(table)
        if name.schema not in (None, "main"):
            raise ConfigError(f"destinations.sqlite(): {table!r} names schema {name.schema!r}; a SQLite "
                              "file has one schema, so give the table name alone")
        self.name = TableName(None, name.table)
        self.retry_timeout = float(retry_timeout)

    def config(self) -> dict[str, Any]:
        return {"path": self.path, "table": self.table, "retry_timeout": self.retry_timeout}

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, "path": os.path.abspath(self.path), "table": self.table})

    def describe(self) -> str:
        return f"sqlite({self.path}, table={self.table!r})"

    def column_type(self, t: pa.DataType) -> str | None:
        return arrow_to_sqlite(t)

    def writes_json(self, t: pa.DataType) -> bool:
        return is_nested(t)

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return SQLiteSession(self, ctx)


class SQLiteSession(ArrowSQLSession):
    destination: SQLiteDestination
    label = "SQLite"
    param_style = "?"

    def _connect(self) -> Any:
        try:
            import adbc_driver_sqlite  # noqa: F401
        except ImportError:
            raise MissingDependencyError("adbc-driver-sqlite", "sqlite", "the SQLite destination") from None
        why = not_writable(self.destination.path)
        if why:
            raise DestinationError(f"cannot write the SQLite destination {self.destination.path}: {why}. "
                                   f"Point destinations.sqlite() at a file in a directory you can write.")
        parent = os.path.dirname(os.path.abspath(self.destination.path))
        os.makedirs(parent, exist_ok=True)
        try:
            con = connect_sqlite(self.destination.path)
            with con.cursor() as cur:
                cur.execute(f"PRAGMA busy_timeout = {int(min(5.0, self.destination.retry_timeout) * 1000)}")
            con.commit()
            return con
        except Exception as exc:
            if self._classify(exc) == TRANSIENT:
                raise Transient(str(exc)) from exc
            raise DestinationError(f"cannot open SQLite destination {self.destination.path}: {exc}") from exc

    def _classify(self, exc: BaseException) -> str:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return TRANSIENT
        if any(k in text for k in ("constraint", "datatype mismatch", "too big", "integrity")):
            return DATA
        if type(exc).__name__ in ("IntegrityError", "DataError"):
            return DATA
        return TERMINAL

    def _rollback(self) -> None:
        if self.con is None:
            return
        with contextlib.suppress(Exception):
            self.con.rollback()

    def _replace_name(self) -> TableName:
        return TableName(None, f"{self.target.table}__dfsync_replace_{self.ctx.run_id}")

    def _stage_sql(self) -> str:
        return f"temp.{q('_dfsync_stage')}"

    def _ledger_ddl(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self._ledger_name().sql} (run_key TEXT NOT NULL, "
                "batch_no INTEGER NOT NULL, rows INTEGER, not_delivered TEXT, "
                "committed_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (run_key, batch_no))")

    def _exists(self, name: TableName) -> bool:
        with self.con.cursor() as cur:
            return bool(self._fetch(cur, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                                    (name.table,))[0][0])

    def _describe(self, name: TableName) -> dict[str, str]:
        with self.con.cursor() as cur:
            rows = self._fetch(cur, "SELECT name, type FROM pragma_table_info(?) ORDER BY cid", (name.table,))
        return {a: t for a, t in rows}

    def _insert_conflicts(self, cur: Any) -> dict[int, str]:
        """Besides insert mode's keys already there: in a table whose columns have a COLLATE (NOCASE,
        RTRIM), rows whose key the key column's collation takes as another key (an existing row's,
        or another staged row's: 'A' and 'a' under NOCASE) would overwrite that row. They fail,
        named, and leave the stage. Tables dfsync creates have no COLLATE: one look at their SQL."""
        failed = super()._insert_conflicts(cur)
        sql = self._fetch(cur, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (self.write_target.table,))
        if not sql or "COLLATE" not in str(sql[0][0] or "").upper():
            return failed
        t, s, pk = self.write_target.sql, self._stage_sql(), self.ctx.primary_key
        keys = ", ".join(f"b.{q(k)}" for k in pk)
        sent = f"b.{q(ACTION_COLUMN)} <> 'delete'"
        on = " AND ".join(f"t.{q(k)} = b.{q(k)}" for k in pk)
        exact = " AND ".join(f"t.{q(k)} = b.{q(k)} COLLATE BINARY" for k in pk)
        # a compound SELECT's column takes the collation of its leftmost part: the table's key column
        cols = ", ".join(q(k) for k in pk)
        grouped = (f"SELECT group_concat(_r), {cols} FROM (SELECT {cols}, NULL AS _r FROM {t} WHERE 0 "
                   f"UNION ALL SELECT {keys}, b.{q(ROW_COLUMN)} FROM {s} b WHERE {sent}) "
                   f"GROUP BY {cols} HAVING count(*) > 1")
        return {**failed, **drop_key_clashes(self._fetch, cur, s, t, pk, on=on, exact=exact, grouped=grouped,
                                             how="COLLATE", tail=" (a key column without COLLATE compares texts "
                                             "as they are)")}

    def _has_unique_key(self, name: TableName) -> bool:
        with self.con.cursor() as cur:
            pk = self._fetch(cur, "SELECT name FROM pragma_table_info(?) WHERE pk > 0", (name.table,))
            idx = self._fetch(cur, "SELECT il.name, ii.name FROM pragma_index_list(?) il, "
                                   "pragma_index_info(il.name) ii WHERE il.\"unique\" AND il.partial = 0",
                              (name.table,))
        want = set(self.ctx.primary_key)
        if {r[0] for r in pk} == want:
            return True
        indexes: dict[str, set[str]] = {}
        for i, col in idx:
            indexes.setdefault(i, set()).add(col)
        return want in indexes.values()

    def _incoming_types(self, schema: pa.Schema) -> dict[str, str]:
        return {f.name: arrow_to_sqlite(f.type) for f in schema}

    def _as_duckdb_types(self, types: dict[str, str]) -> dict[str, str]:
        return {c: _affinity(t) for c, t in types.items()}

    #: SQLite cannot change a column's declared type; its INTEGER and REAL columns already
    #: hold 64-bit values, so the widenings dfsync applies need no change here
    can_widen = False

    def _retype_sql(self, name: TableName, column: str, declared: str, was: str) -> list[str]:
        # no ALTER COLUMN: a column of only NULLs is dropped and added again (it moves to the table's end)
        return [f"ALTER TABLE {name.sql} DROP COLUMN {q(column)}",
                f"ALTER TABLE {name.sql} ADD COLUMN {q(column)} {declared}"]

    def _native_to_arrow(self, declared: str) -> pa.DataType | str | None:
        d = declared.upper().strip()
        if d in ("TIMESTAMP", "DATETIME"):
            return pa.timestamp("ns")  # ISO-8601 text with up to nine fractional digits
        if d == "TIMESTAMPTZ":
            return pa.timestamp("ns", "UTC")
        if d == "TIME":
            return pa.time64("ns")  # ISO-8601 text, up to nine fractional digits
        if d == "JSON":
            return JSON
        if d == "DURATION TEXT":
            return [pa.month_day_nano_interval(), pa.duration("ns")]
        m = re.fullmatch(r"DECIMAL TEXT\((\d+),(\d+)\)", d)
        if m:  # TEXT affinity keeps a decimal's digits as written: any precision and scale reads
            # back equal, so a decimal that widened (a larger scale) needs no change (docs/SCHEMA.md)
            p, sc = int(m.group(1)), int(m.group(2))
            return [pa.decimal128(p, sc) if p <= 38 else pa.decimal256(p, sc),
                    *(pa.decimal128(38, k) for k in range(39))]
        if _affinity(d) == "DECIMAL":  # NUMERIC affinity: stored as a 64-bit integer or float
            return [pa.int64(), pa.float64()]
        return super()._native_to_arrow(declared)

    def _prepare(self, cur: Any, records: pa.Schema) -> None:
        super()._prepare(cur, records)
        # A timestamp (or time of day) is ISO text with as many fractional digits as its unit: after
        # a run of ms values, a source whose unit became ns wrote '...06:00:00.000000000' beside
        # '...06:00:00.000', so a key matched no row (an upsert added a second row, the run a
        # success). Values go in the unit the table's text already has (_conform).
        self.stored_units: dict[str, str] = {}
        if self.ctx.mode.rewrites:
            return
        for f in records:
            t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            if not (pa.types.is_timestamp(t) or pa.types.is_time(t)):
                continue
            rows = self._fetch(cur, f"SELECT {q(f.name)} FROM {self.target.sql} "
                                    f"WHERE typeof({q(f.name)}) = 'text' LIMIT 1")
            m = re.search(r"\d{2}:\d{2}:\d{2}(?:\.(\d+))?", str(rows[0][0])) if rows else None
            unit = _UNITS.get(len(m.group(1) or "")) if m else None
            if unit and unit != t.unit:
                self.stored_units[f.name] = unit

    def _in_stored_units(self, data: pa.Table) -> pa.Table:
        for name, unit in getattr(self, "stored_units", {}).items():
            i = data.schema.get_field_index(name)
            if i < 0:
                continue
            t = data.schema.field(i).type
            to = (pa.timestamp(unit, t.tz) if pa.types.is_timestamp(t)
                  else pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit))
            try:
                col = data.column(i).cast(to)  # safe: refuses a value the unit cannot hold exactly
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                if name in self.ctx.primary_key:
                    raise SchemaMismatchError(
                        f"key column {name!r} is {t} in the source, but table {self.target.display} of "
                        f"{self._where()} holds it as text in {unit} ({_UNIT_NAMES[unit]}), and a value has "
                        f"finer digits: written as it is, its key would match no row there. Round it in the "
                        f"sync's mapping, e.g. mapping={{{name!r}: pl.col({name!r}).dt.truncate('1{unit}')}}, "
                        f"or rewrite the table with destination_mode='replace'") from None
                continue  # a value column keeps its digits (it reads back equal)
            data = data.set_column(i, data.schema.field(i).with_type(to), col)
        return data

    def _conform(self, data: pa.Table) -> pa.Table:
        data = self._in_stored_units(data)
        data = nested_to_json(data, [f.name for f in data.schema if is_nested(f.type) or is_interval(f.type)])
        fields, changed = [], False
        for f in data.schema:
            t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
            if pa.types.is_decimal(t) or pa.types.is_null(t) or pa.types.is_string_view(t) or pa.types.is_time(t):
                t = pa.large_string()  # a time of day as ISO text ("23:59:59.999999"): the driver has no time type
            elif pa.types.is_unsigned_integer(t) and t.bit_width == 64:
                t = pa.int64()  # signed 64-bit; larger values were refused (_schema_values.check_values)
            changed |= t != f.type
            fields.append(pa.field(f.name, t))
        return data.cast(pa.schema(fields)) if changed else data

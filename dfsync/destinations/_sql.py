"""Helpers shared by the SQL destinations: quoting, table names, type names."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .._ident import quote as q
from .._schema import JSON
from ..errors import ConfigError, RunTakenOver
from .base import ACTION_COLUMN, Destination

__all__ = ["FENCE_BATCH", "ROW_COLUMN", "ServerDestination", "TableName", "conflicts_sql", "drop_key_clashes", "duck_to_arrow", "q",
           "row_error", "taken_over"]

#: the row number of each staged row (its position in the batch)
ROW_COLUMN = "_dfsync_row"

#: the ledger row (``_dfsync_batches``) of a run's owner fence: ``rows`` holds the newest owner
#: epoch that opened a session of the run; a batch of an older owner is refused
FENCE_BATCH = -2


def taken_over(ctx: Any, where: str) -> RunTakenOver:
    """The error of a batch (or session) of an owner a newer one took the run over from."""
    return RunTakenOver(f"run {ctx.run_id} of sync {ctx.sync_name!r} was taken over by another process (its owner "
                        f"epoch {ctx.owner_epoch} is no longer the newest in the ledger of {where}); nothing was "
                        f"written and this process stops working on the run")


def row_error(exc: BaseException) -> str:
    """The message of a row the destination rejected, as one line a run can group rows by: ADBC
    quotes the statement it ran (dfsync's own SQL, naming the staged row's number) and PostgreSQL
    adds the failing row ('DETAIL: Failing row contains (...)', which the record holds): each made
    every rejected row's message unique, so a panel's 'failed per destination error' listed 381
    errors of one row each for two CHECK constraints."""
    text = str(exc)
    start = text.find("Failed to execute query '")
    end = text.find("': ", start) if start >= 0 else -1
    if end > 0:
        text = text[:start] + text[end + 3:]
    text = re.sub(r"^DETAIL:\s+Failing row contains .*$", "", text, flags=re.M)
    return re.sub(r"\s+([.,])", r"\1", " ".join(text.split()))


def conflicts_sql(stage: str, target: str, key: Sequence[str], casts: dict[str, str]) -> str:
    """Insert mode: the query for the staged rows' ``ROW_COLUMN`` whose key the table already holds.

    Such keys are in a table that had rows when the run began: rows the user put there before
    the sync's first run, or delivered before a ``sync.reset()``. One set-based query per batch,
    whatever the table declares: without a key constraint the INSERT would append them a second
    time, with one it would fail and cost a bisection naming the database's message instead.
    IN over the table's keys, not a correlated EXISTS: SQLite would scan a keyless table once
    per staged row; IN reads its keys once (or searches its key index).
    """
    bk = ", ".join(f"b.{q(k)}{casts.get(k, '')}" for k in key)
    tk = ", ".join(f"{target}.{q(k)}" for k in key)
    return (f"SELECT b.{q(ROW_COLUMN)} FROM {stage} b WHERE b.{q(ACTION_COLUMN)} <> 'delete' "
            f"AND ({bk}) IN (SELECT {tk} FROM {target})")


def drop_key_clashes(fetch: Callable[[Any, str], list[tuple]], cur: Any, stage: str, target: str,
                      key: Sequence[str], *, on: str, exact: str, grouped: str, how: str,
                      tail: str = "") -> dict[int, str]:
    """Rows of the stage whose key the table's key column takes as another key (a collation or
    type that compares texts that differ as equal: 'A' and 'a' under NOCASE) would overwrite that
    row: failed with a message naming it, and deleted from the stage so no statement applies them.

    ``on`` joins staged rows ``b`` to table rows ``t`` as the table compares them, ``exact`` says
    whether the two keys are the same text; ``grouped`` is the dialect's query of staged rows
    (about to be sent) that the table's comparison takes as one key: each row the staged rows'
    ``ROW_COLUMN`` values joined by commas, then the key. ``how`` names the comparison."""
    n, bad = len(key), {}
    for r in fetch(cur, f"SELECT b.{q(ROW_COLUMN)}, {', '.join(f'b.{q(k)}' for k in key)}, "
                        f"{', '.join(f't.{q(k)}' for k in key)} FROM {stage} b JOIN {target} t ON {on} "
                        f"WHERE b.{q(ACTION_COLUMN)} <> 'delete' AND NOT ({exact})"):
        have = tuple(v.decode(errors="replace") if isinstance(v, bytes) and isinstance(s, str) else v  # citext via ADBC
                     for v, s in zip(r[n + 1:], r[1:n + 1], strict=True))
        bad[int(r[0])] = (f"key {tuple(r[1:n + 1])!r} is the table's existing key {have!r} under the "
                          f"key column's {how}: the row would overwrite it{tail}")
    for r in fetch(cur, grouped):
        for row in str(r[0]).split(","):
            bad.setdefault(int(row), f"keys equal to {tuple(r[1:])!r} under the key column's {how} are one key in "
                                     f"the table: the rows would overwrite each other")
    if bad:
        cur.execute(f"DELETE FROM {stage} WHERE {q(ROW_COLUMN)} IN ({', '.join(map(str, bad))})")
    return bad


_PART = r'("(?:[^"]|"")+"|[^."][^.]*)'  # quoted, or as written (no dot, not opening a quote)
_TABLE_NAME = re.compile(rf"{_PART}(?:\.{_PART})?")


@dataclass(frozen=True)
class TableName:
    schema: str | None
    table: str

    @classmethod
    def parse(cls, name: str) -> TableName:
        """``"table"`` or ``"schema.table"``; quote a part to keep dots in it: ``'"a.b".c'``.
        Anything else (three parts, an empty part, a quote left open) is refused rather than created
        as one table whose name holds the dots."""
        m = _TABLE_NAME.fullmatch(name)
        if m is None:
            raise ConfigError(
                f"table {name!r} is not 'table' or 'schema.table': give at most one schema and a table "
                "name, no empty part; put a part that holds a dot or a double quote in double quotes "
                "(a double quote doubled), e.g. table='\"my.schema\".customers'")
        names = [p[1:-1].replace('""', '"') if p.startswith('"') else p for p in m.groups() if p is not None]
        return cls(names[0], names[1]) if len(names) == 2 else cls(None, names[0])

    @property
    def sql(self) -> str:
        return f"{q(self.schema)}.{q(self.table)}" if self.schema else q(self.table)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


_DUCK_TO_ARROW = {
    "TINYINT": pa.int8(), "SMALLINT": pa.int16(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
    "UTINYINT": pa.uint8(), "USMALLINT": pa.uint16(), "UINTEGER": pa.uint32(), "UBIGINT": pa.uint64(),
    "HUGEINT": pa.decimal128(38, 0), "FLOAT": pa.float32(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
    "VARCHAR": pa.large_string(), "BLOB": pa.large_binary(), "DATE": pa.date32(), "TIME": pa.time64("us"),
    "TIMESTAMP": pa.timestamp("us"), "TIMESTAMP_NS": pa.timestamp("ns"), "TIMESTAMP_MS": pa.timestamp("ms"),
    "TIMESTAMP_S": pa.timestamp("s"), "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", "UTC"),
    "INTERVAL": pa.month_day_nano_interval(), "UUID": None,
}


def duck_to_arrow(name: str) -> pa.DataType | str | None:
    """The Arrow type a column of DuckDB type ``name`` reads back as (None: unknown).

    Destinations describe their tables in these names (``_as_duckdb_types``); "json" stands
    for a JSON column, which holds text and nested values.
    """
    t = name.upper().strip()
    t = {"INT8": "BIGINT", "INT4": "INTEGER", "INT2": "SMALLINT", "INT": "INTEGER", "LONG": "BIGINT",
         "FLOAT8": "DOUBLE", "FLOAT4": "FLOAT", "REAL": "FLOAT", "DOUBLE PRECISION": "DOUBLE",
         "TEXT": "VARCHAR", "STRING": "VARCHAR", "BOOL": "BOOLEAN", "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
         "CHARACTER VARYING": "VARCHAR", "DATETIME": "TIMESTAMP"}.get(t, t)
    if t == "JSON":
        return JSON
    if t.endswith("[]"):
        inner = duck_to_arrow(t[:-2])
        return pa.large_list(inner) if isinstance(inner, pa.DataType) else None
    m = re.fullmatch(r"(?:DECIMAL|NUMERIC)\s*\((\d+)\s*,\s*(\d+)\)", t)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
    if t in ("DECIMAL", "NUMERIC"):  # no declared precision: any number of digits
        return pa.decimal256(76, 38)
    if t.startswith(("VARCHAR(", "CHAR")):
        return pa.large_string()
    return _DUCK_TO_ARROW.get(t)


class ServerDestination(Destination):
    """What the PostgreSQL and MySQL destinations share: a server URI (its password only as an
    ``env:NAME`` reference), a table, and timeouts."""
    tells_rows = True

    uri: str
    table: str
    password: str | None
    retry_timeout: float
    connect_timeout: int

    def config(self) -> dict[str, Any]:
        return {"uri": self.uri, "table": self.table, "password": self.password,
                "retry_timeout": self.retry_timeout, "connect_timeout": self.connect_timeout}

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, "uri": self.uri, "table": self.table})

    def describe(self) -> str:
        return f"{self.kind}({self.uri}, table={self.table!r})"


def duckdb_key_columns(con: Any, name: TableName) -> set[str]:
    """The columns of a DuckDB table in a PRIMARY KEY or UNIQUE constraint (DuckDB cannot retype them)."""
    rows = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
        [name.schema or "main", name.table]).fetchall()
    return {c for (cols,) in rows for c in cols}

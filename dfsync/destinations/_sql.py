"""Helpers shared by the SQL destinations: quoting, table names, type compatibility."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import SchemaMismatchError

__all__ = ["TableName", "check_compatible", "q"]


def q(name: str) -> str:
    """Quote an identifier: any characters, including quotes and semicolons, stay data."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class TableName:
    schema: str | None
    table: str

    @classmethod
    def parse(cls, name: str) -> TableName:
        """``"table"`` or ``"schema.table"``; quote a part to keep dots in it: ``'"a.b".c'``."""
        parts = re.findall(r'"((?:[^"]|"")*)"|([^.]+)', name)
        names = [a.replace('""', '"') if a else b for a, b in parts]
        if len(names) == 2:
            return cls(names[0], names[1])
        return cls(None, name if len(names) != 1 else names[0])

    @property
    def sql(self) -> str:
        return f"{q(self.schema)}.{q(self.table)}" if self.schema else q(self.table)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


_INT_RANK = {"TINYINT": 1, "SMALLINT": 2, "INTEGER": 3, "BIGINT": 4, "HUGEINT": 5,
             "UTINYINT": 1, "USMALLINT": 2, "UINTEGER": 3, "UBIGINT": 4, "UHUGEINT": 5}
_FLOAT_RANK = {"FLOAT": 1, "DOUBLE": 2}
_TS = {"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATETIME"}


def _norm(t: str) -> str:
    t = t.upper().strip()
    return {"INT8": "BIGINT", "INT4": "INTEGER", "INT2": "SMALLINT", "INT": "INTEGER", "LONG": "BIGINT",
            "FLOAT8": "DOUBLE", "FLOAT4": "FLOAT", "REAL": "FLOAT", "DOUBLE PRECISION": "DOUBLE",
            "TEXT": "VARCHAR", "STRING": "VARCHAR", "BOOL": "BOOLEAN", "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
            "CHARACTER VARYING": "VARCHAR"}.get(t, t)


def _family(t: str) -> str:
    if t in _INT_RANK or t in _FLOAT_RANK or t.startswith(("DECIMAL", "NUMERIC")):
        return "number"
    if t in _TS or t.startswith("TIMESTAMP") or t == "DATE":
        return "time"
    if t in ("VARCHAR", "JSON", "UUID") or t.startswith(("VARCHAR(", "CHAR")):
        return "text"
    if t.endswith("[]"):
        return "list"
    return t


def compatible(src: str, dst: str) -> bool:
    """Can values of DuckDB type ``src`` go into a column of type ``dst``?

    Types of one family are compatible (numbers, text, date/time): a value that does not fit
    (an integer overflow, say) is then rejected for that row alone, with the database's message,
    instead of the whole run. Anything scalar can go into a text column.
    """
    s, d = _norm(src), _norm(dst)
    if s == d or s in ('"NULL"', "NULL"):
        return True
    fs, fd = _family(s), _family(d)
    if fs == "list" and fd == "list":
        return compatible(s[:-2], d[:-2])
    if fd == "text":
        return fs not in ("list",) and not s.startswith(("STRUCT", "MAP"))
    return fs == fd and fs in ("number", "time", "text")


def check_compatible(incoming: dict[str, str], existing: dict[str, str], table: str,
                     primary_key: Sequence[str] = ()) -> None:
    """Raise SchemaMismatchError (before anything is sent) listing every problem."""
    problems = []
    existing_ci = {k.lower(): (k, v) for k, v in existing.items()}
    for col, typ in incoming.items():
        found = existing.get(col)
        if found is None and col.lower() in existing_ci:
            found = existing_ci[col.lower()][1]
        if found is None:
            problems.append(f"column {col!r} ({typ}) is missing from the table")
        elif not compatible(typ, found):
            problems.append(f"column {col!r} is {typ} in the records but {found} in the table")
    if problems:
        raise SchemaMismatchError(
            f"the records do not fit table {table}: " + "; ".join(problems)
            + f". The table has: {', '.join(f'{k} {v}' for k, v in existing.items())}. Add the columns "
            "or change their type in the destination, adjust the sync's mapping, or use "
            "destination_mode='replace' to recreate the table. Nothing was sent."
        )

"""Quoting SQL identifiers: the one ``quote`` every SQL-writing module uses (DuckDB, PostgreSQL,
SQLite and the workspace store all take double-quoted identifiers)."""

from __future__ import annotations


def quote(name: str) -> str:
    """Quote an SQL identifier: any characters, including quotes and semicolons, stay data.

    >>> quote('a "b"; c')
    '"a ""b""; c"'
    """
    return '"' + str(name).replace('"', '""') + '"'

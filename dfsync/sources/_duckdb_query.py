"""A DuckDB SQL query, over a DuckDB database file or over files named in the SQL."""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from ..errors import ConfigError, SourceError
from .base import CursorFilter, Source, register_source


@register_source
class DuckDBQuerySource(Source):
    kind = "duckdb_query"

    def __init__(self, sql: str, database: str | None = None) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError("sources.duckdb_query() needs a SQL query string")
        self.sql = sql.strip().rstrip(";")
        self.database = os.fspath(database) if database is not None else None

    def config(self) -> dict[str, Any]:
        return {"sql": self.sql, "database": self.database}

    def describe(self) -> str:
        sql = " ".join(self.sql.split())
        return f"duckdb_query({sql[:60]}{'…' if len(sql) > 60 else ''})"

    def _attach(self, con: Any) -> str | None:
        if self.database is None:
            return None
        if not os.path.exists(self.database):
            raise SourceError(f"DuckDB database {self.database!r} does not exist")
        alias = "dfsync_src"
        attached = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        if alias not in attached:
            path = self.database.replace("'", "''")
            try:
                con.execute(f"ATTACH '{path}' AS {alias} (READ_ONLY)")
            except Exception as exc:
                raise SourceError(f"could not open DuckDB database {self.database!r}: {exc}") from exc
        con.execute(f"USE {alias}")
        return alias

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        self._attach(con)
        try:
            rel = con.sql(self.sql)
        except Exception as exc:
            raise SourceError(f"the source query failed: {exc}") from exc
        finally:
            if self.database is not None:
                con.execute("USE memory")
        if cursor is not None:
            import duckdb

            rel = rel.filter(duckdb.ColumnExpression(cursor.field) >= duckdb.ConstantExpression(cursor.value))
        return rel

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        import duckdb

        con = duckdb.connect()
        try:
            rel = self.duckdb_relation(con, cursor)
            return pl.from_arrow(rel.to_arrow_table()).lazy()  # type: ignore[union-attr]
        finally:
            con.close()

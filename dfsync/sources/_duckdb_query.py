"""A DuckDB SQL query, over a DuckDB database file or over files named in the SQL."""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from .._arrow import to_polars
from .._paths import user_path
from .._stage_input import no_case_clash
from ..errors import ConfigError, SourceError
from .base import CursorFilter, Source, query_text, register_source


@register_source
class DuckDBQuerySource(Source):
    kind = "duckdb_query"
    _names_of: str | None = None  # the query whose column names are checked (schema() reads a wrapped copy)

    def __init__(self, sql: str, database: str | None = None) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError("sources.duckdb_query() needs a SQL query string")
        self.sql = query_text(sql)
        # absolute, so the stored definition works from any working directory (CLI, scheduler)
        self.database = user_path(database) if database is not None else None

    def config(self) -> dict[str, Any]:
        return {"sql": self.sql, "database": self.database}

    def describe(self) -> str:
        sql = " ".join(self.sql.split())
        return f"duckdb_query({sql[:60]}{'…' if len(sql) > 60 else ''})"

    def _source_connection(self) -> Any:
        import duckdb

        if self.database is None:
            return None
        if not os.path.exists(self.database):
            raise SourceError(f"DuckDB database {self.database!r} does not exist")
        try:
            return duckdb.connect(self.database, read_only=True)
        except duckdb.ConnectionException:
            # this process already has the file open read-write: share that instance
            return duckdb.connect(self.database)
        except duckdb.Error as exc:
            raise SourceError(f"could not open DuckDB database {self.database!r}: {exc}") from exc

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        import duckdb

        src_con = self._source_connection()
        sql = self.sql
        params: list[Any] = []
        if cursor is not None:
            field = '"' + cursor.field.replace('"', '""') + '"'
            sql = f"SELECT * FROM ({self.sql}) AS dfsync_q WHERE {cursor.where(field, '?')}"
            params = [cursor.value]
        try:  # names given twice ('SELECT a AS v, b AS v') DuckDB renames ('v_1') once the query is wrapped
            no_case_clash((src_con or con).sql(self._names_of or self.sql).columns)
            if src_con is None:
                rel = con.sql(sql, params=params or None)
                rel.describe  # noqa: B018 - bind now, so a bad query fails here
                _refuse_unions(rel)
                guarded = _wide_integers_guarded(rel, sql)
                return rel if guarded is None else con.sql(guarded, params=params or None)
            query = src_con.sql(sql, params=params or None)
            _refuse_unions(query)
            guarded = _wide_integers_guarded(query, sql)
            if guarded is not None:
                query = src_con.sql(guarded, params=params or None)
            return con.from_arrow(_closing(query.to_arrow_reader(100_000), src_con))
        except (duckdb.Error, SourceError, ConfigError) as exc:
            if src_con is not None:
                src_con.close()
            if isinstance(exc, (SourceError, ConfigError)):
                raise
            raise SourceError(f"the source query failed: {str(exc).splitlines()[0]}").quoting_literals(
                str(exc).splitlines()[0]) from exc

    def schema(self) -> pl.Schema:
        """The query's columns and types from a LIMIT 0 of it: create_sync ran the whole query, and
        held its result in memory, only to learn them."""
        import copy

        empty = copy.copy(self)
        empty.sql, empty._names_of = f"SELECT * FROM ({self.sql}) AS dfsync_q LIMIT 0", self.sql
        return empty.scan().collect_schema()

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        import duckdb

        con = duckdb.connect()
        try:
            rel = self.duckdb_relation(con, cursor)
            return to_polars(rel.to_arrow_table()).lazy()  # type: ignore[union-attr]
        finally:
            con.close()


def _closing(reader: Any, src_con: Any) -> Any:
    """``reader`` closing the source database's connection once drained. A connection left open
    kept the file locked: the user's own ``duckdb.connect(path)`` in the same notebook failed
    ("Can't open a connection to same database file with a different configuration") and no
    other process could write it, for as long as the process lived."""
    import pyarrow as pa

    def batches() -> Any:
        try:
            yield from reader
        finally:
            src_con.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


#: DuckDB types with no form to stage or send as they are (type id -> the ways to select them).
#: Their Arrow export alters the value: TIME WITH TIME ZONE drops the offset ('12:00:00+05:30'
#: became 12:00:00), BIT and BIGNUM arrive as DuckDB's internal bytes ('0101' became
#: b'\x04\xf5'); polars cannot make a series of a UNION.
_UNSTAGED = {
    "union": "as text ({c}::VARCHAR) or one member of it (union_extract({c}, 'MEMBER'))",
    "time with time zone": "as text ({c}::VARCHAR keeps the offset) or as a time of day in UTC "
                           "(timezone('UTC', {c})::TIME)",
    "bit": "as text ({c}::VARCHAR, e.g. '0101')",
    "bignum": "as text ({c}::VARCHAR) or as a number when its values fit ({c}::HUGEINT)",
}


def _type_ids(t: Any) -> Any:
    """The type ids of a DuckDB type and of every type inside it (list, array, struct, map, union)."""
    yield t.id
    if t.id in ("list", "array", "struct", "map", "union"):
        for _, child in t.children:
            if hasattr(child, "id"):
                yield from _type_ids(child)


def _refuse_unions(rel: Any) -> None:
    """A column of a type in ``_UNSTAGED`` (also inside a list or struct) is refused naming the
    column and the ways to select it."""
    for name, t in zip(rel.columns, rel.types, strict=True):
        bad = next((i for i in _type_ids(t) if i in _UNSTAGED), None)
        if bad is not None:
            raise SourceError(
                f"column {name!r} of the query is a DuckDB {t}, which dfsync cannot stage or send as it is; "
                f"select it {_UNSTAGED[bad].format(c=name)}. Nothing was read or sent.")


#: the largest magnitude of a decimal(38, 0), the form HUGEINT and UHUGEINT are staged and sent in
_DEC38 = "9" * 38


def _wide_integers_guarded(rel: Any, sql: str) -> str | None:
    """``sql`` failing, naming the column and the value, when a HUGEINT or UHUGEINT value has more
    than 38 digits; None without such columns. They travel as decimal(38, 0) (Arrow's form): a larger
    value was written into DuckDB's DECIMAL(38,0) as it is, where reading the column back crashed
    DuckDB ('Negation of HUGEINT is out of range'), and into SQLite's decimal text."""
    checks = []
    for name, t in zip(rel.columns, rel.types, strict=True):
        if t.id not in ("hugeint", "uhugeint"):
            continue
        c = '"' + name.replace('"', '""') + '"'
        fits = (f"{c} <= {_DEC38}::UHUGEINT" if t.id == "uhugeint" else
                f"{c} BETWEEN -{_DEC38}::HUGEINT AND {_DEC38}::HUGEINT")
        lit, c_lit = repr(name).replace("'", "''"), c.replace("'", "''")  # inside the message's SQL literal
        message = (f"'column {lit} ({t}) holds ' || {c}::VARCHAR || ', more than the 38 digits dfsync stages "
                   f"and sends (as a decimal(38,0)); select it as text ({c_lit}::VARCHAR keeps every digit) or as a "
                   f"DOUBLE; nothing was sent'")
        checks.append(f"CASE WHEN {c} IS NULL OR {fits} THEN {c} ELSE error({message}) END AS {c}")
    if not checks:
        return None
    return f"SELECT * REPLACE ({', '.join(checks)}) FROM ({sql}) AS dfsync_wide"

"""Rows of a SQL query on PostgreSQL, MySQL/MariaDB or SQLite, streamed as Arrow record batches
(ADBC; PyMySQL for MySQL, :mod:`dfsync.sources._mysql`).

    >>> src = dfsync.sources.database("postgresql://app@db/crm", "SELECT * FROM customers",
    ...                               password="env:PGPASSWORD_CRM")
    >>> src = dfsync.sources.database("sqlite:///data/app.sqlite", "SELECT * FROM orders")

``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` follow SQLAlchemy's
convention; a relative path is made absolute when the source is made (the stored sync reads
the same file from any working directory). In incremental mode the cursor condition runs in the database, as a bound
parameter: ``SELECT * FROM (<query>) AS q WHERE "field" >= $1``. Rows travel as Arrow
batches from the driver's reader straight into DuckDB (``duckdb_relation``) or polars
(``scan``), so memory stays bounded by a few batches. Passwords follow the PostgreSQL
destination's rules (``password="env:NAME"``, ``env:NAME`` in the URI, libpq's PGPASSWORD).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa

from .._adbc import connect_postgres, connect_sqlite
from .._arrow import interval_schema, to_polars
from .._paths import user_path
from .._secrets import resolve_secret, take_password
from ..destinations._postgres import PostgresDestination
from ..destinations._sql import q
from ..errors import ConfigError, MissingDependencyError, SourceError, redact
from ._sqlite_types import refuse_rounded_integers, typed_reader
from .base import CursorFilter, Source, query_text, register_source

__all__ = ["DatabaseSource"]


def _text_type(t: pa.DataType) -> pa.DataType:
    """``t`` with the driver's extension types as large strings, also inside a list."""
    if isinstance(t, pa.BaseExtensionType):
        return pa.large_string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _text_type(t.value_type)
        if inner != t.value_type:
            field = t.value_field.with_type(inner)
            return pa.list_(field) if pa.types.is_list(t) else pa.large_list(field)
    return t


def _as_text(schema: pa.Schema) -> pa.Schema:
    """The driver's extension types (numeric, json/jsonb, uuid) as plain text, which they are to
    every destination (docs/SCHEMA.md): a polars mapping can then cast or parse them. Inside an
    array too (``numeric[]``, ``jsonb[]``, ``uuid[]``): a list of the extension type had no column
    type on PostgreSQL (create_sync failed without naming the column), and polars took a
    ``uuid[]`` for bytes although it arrives as text."""
    for i, f in enumerate(schema):
        t = _text_type(f.type)
        if t != f.type:
            schema = schema.set(i, f.with_type(t))
    return schema


def _text_array(col: pa.Array) -> pa.Array:
    if isinstance(col.type, pa.BaseExtensionType):
        return (col.storage.cast(pa.large_string()) if pa.types.is_string(col.storage.type)
                or pa.types.is_large_string(col.storage.type)
                else pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.large_string()))
    if (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) and _text_type(col.type) != col.type:
        kind = pa.ListArray if pa.types.is_list(col.type) else pa.LargeListArray
        return kind.from_arrays(col.offsets, _text_array(col.values), type=_text_type(col.type),
                                mask=col.is_null() if col.null_count else None)
    return col


def _text_columns(rb: pa.RecordBatch) -> pa.RecordBatch:
    if all(_text_type(t) == t for t in rb.schema.types):
        return rb
    return pa.RecordBatch.from_arrays([_text_array(col) for col in rb.columns], schema=_as_text(rb.schema))


#: PostgreSQL's 'infinity' and '-infinity' timestamps (microseconds) and dates (days) as the ADBC
#: driver gives them: moving PostgreSQL's 2000-01-01 epoch to 1970 overflows, so they arrived
#: as dates 292,277 years BC (no PostgreSQL value is that early) and were sent as such. They
#: become DuckDB's infinities, which the DuckDB destination keeps and the others refuse.
_PG_WRAPPED = {pa.int64(): {-9222425352054775809: 2**63 - 1, -9222425352054775808: -(2**63 - 1)},
               pa.int32(): {-2147472692: 2**31 - 1, -2147472691: -(2**31 - 1)}}


def _pg_infinity(col: pa.Array) -> pa.Array | None:
    """One column with PostgreSQL's wrapped infinities made DuckDB's (inside an array too), or None
    when it holds none."""
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_struct(t) and len(col):  # a composite type's fields
        kids = [_pg_infinity(col.field(i)) for i in range(t.num_fields)]
        if all(k is None for k in kids):
            return None
        kids = [col.field(i) if k is None else k for i, k in enumerate(kids)]
        return pa.StructArray.from_arrays(kids, fields=list(t), mask=col.is_null())
    if pa.types.is_list(t) and len(col):  # timestamptz[] / date[]: '{infinity}' arrived as 290279 BC
        col = pa.concat_arrays([col]) if col.offset else col  # from_arrays takes no sliced offsets with a mask
        values = _pg_infinity(col.values)
        return None if values is None else pa.ListArray.from_arrays(col.offsets, values, type=t, mask=col.is_null())
    raw = pa.int64() if pa.types.is_timestamp(t) and t.unit == "us" else pa.int32() if pa.types.is_date32(t) else None
    if raw is None or not len(col):
        return None
    ints, found = col.view(raw), False
    for wrapped, infinity in _PG_WRAPPED[raw].items():
        hit = pc.equal(ints, pa.scalar(wrapped, raw))
        if pc.any(hit).as_py():
            ints, found = pc.if_else(hit, pa.scalar(infinity, raw), ints), True
    return ints.view(t) if found else None


def _pg_infinities(rb: pa.RecordBatch) -> pa.RecordBatch:
    fixed = [_pg_infinity(col) for col in rb.columns]
    if all(f is None for f in fixed):
        return rb
    return pa.RecordBatch.from_arrays([c if f is None else f for c, f in zip(rb.columns, fixed, strict=True)],
                                      schema=rb.schema)


def _leaves(fields: Any, prefix: str = "") -> Iterator[pa.Field]:
    """The fields of ``fields``, a composite type's (struct) named by their path (``"pair.addr"``)."""
    for f in fields:
        if pa.types.is_struct(f.type):
            yield from _leaves(list(f.type), f"{prefix}{f.name}.")
        elif pa.types.is_list(f.type) and pa.types.is_struct(f.type.value_type):
            yield from _leaves(list(f.type.value_type), f"{prefix}{f.name}[].")
        else:
            yield f.with_name(prefix + f.name)


@register_source
class DatabaseSource(Source):
    kind = "database"

    def __init__(self, uri: str, query: str, *, password: str | None = None) -> None:
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("sources.database() needs a SQL query string")
        if not isinstance(uri, str) or not uri.startswith(("postgresql://", "postgres://", "sqlite://", "mysql://",
                                                           "mariadb://")):
            raise ConfigError("sources.database() takes 'postgresql://user@host/db', 'mysql://user@host/db' or "
                              "'sqlite:///path.db' URIs")
        self.uri, self.password, self._literal_password = take_password(uri, password)
        rel = self.uri[len("sqlite:///"):] if self.uri.startswith("sqlite:///") else ""
        if rel and rel != ":memory:" and not rel.startswith(("file:", "/")):
            # absolute, so the stored definition reads this database from any working directory (CLI,
            # scheduler): relative, a run from elsewhere read another file of that name, or failed
            self.uri = "sqlite:///" + user_path(rel)
        self.query = query_text(query)

    @property
    def dialect(self) -> str:
        if self.uri.startswith(("mysql://", "mariadb://")):
            return "mysql"
        return "sqlite" if self.uri.startswith("sqlite://") else "postgres"

    def secret(self) -> str | None:
        """The password (``env:NAME`` resolved now; never stored)."""
        return resolve_secret(self.password, "database password") or self._literal_password

    def config(self) -> dict[str, Any]:
        return {"uri": self.uri, "query": self.query, "password": self.password}

    def describe(self) -> str:
        sql = " ".join(self.query.split())
        return f"database({self.uri}, {sql[:60]}{'…' if len(sql) > 60 else ''})"

    # ------------------------------------------------------------------ reading
    @property
    def literal_secret(self) -> bool:
        """A password given literally (it never leaves this process)."""
        return self._literal_password is not None

    def connect(self) -> Any:
        """A connection to the source database (PostgreSQL, SQLite; autocommit off)."""
        return self._connect()

    def sql(self, cursor: CursorFilter | None) -> tuple[str, tuple]:
        """The query as run for ``cursor`` (with its bound parameters)."""
        return self._sql(cursor)

    def arrow_schema(self, cursor: CursorFilter | None) -> pa.Schema:
        """The Arrow schema of the query's rows, as the reader gives them."""
        return self._arrow_schema(cursor)

    def _connect(self) -> Any:
        try:
            if self.dialect == "sqlite":
                import adbc_driver_sqlite  # noqa: F401

                path = self.uri[len("sqlite:///"):] if self.uri.startswith("sqlite:///") else self.uri[len("sqlite://"):]
                if path and path != ":memory:" and not path.startswith("file:") and not os.path.isfile(path):
                    # SQLite would create an empty database there and the query would fail on a missing table
                    raise SourceError(
                        f"the SQLite database {path} does not exist; nothing was created. Check the path: "
                        f"sqlite:///relative/path.db (relative to the working directory where the source is "
                        f"made) or sqlite:////absolute/path.db")
                return connect_sqlite(path or ":memory:")
            import adbc_driver_postgresql  # noqa: F401
        except ImportError as exc:
            extra = "sqlite" if self.dialect == "sqlite" else "postgres"
            raise MissingDependencyError(str(exc.name), extra, "sources.database()") from None
        holder = PostgresDestination(self.uri, table="_", password=self._literal_password or self.password)
        try:
            return connect_postgres(holder.connection_uri())
        except Exception as exc:
            raise SourceError(f"cannot connect to {self.uri}: {redact(' '.join(str(exc).split()))}") from exc

    def _sql(self, cursor: CursorFilter | None, limit0: bool = False) -> tuple[str, tuple]:
        sql, params = self.query, ()
        if cursor is not None:
            place = "?" if self.dialect == "sqlite" else "$1"
            sql = f"SELECT * FROM ({self.query}) AS q WHERE {cursor.where(self._cursor_column(cursor), place)}"
            params = (cursor.value,)
        if limit0:
            sql = f"SELECT * FROM ({sql}) AS q0 LIMIT 0"
        return sql, params

    def _cursor_column(self, cursor: CursorFilter) -> str:
        """The cursor column as the filter compares it. dfsync keeps the largest delivered text cursor
        in byte order (DuckDB), but PostgreSQL compares text in the column's collation: under
        "en-x-icu" or en_US 'Émile' sorts below 'zoe', so a row 'Émile' added after a cursor 'zoe'
        was never read and the run said success. A text cursor column is compared in byte order
        (COLLATE "C", as its text output for a type that is not text: an enum, citext); any other
        column as it is (a stored text cursor of a column now numeric is not compared as text)."""
        field = q(cursor.field)
        if self.dialect != "postgres" or not isinstance(cursor.value, str):
            return field
        schema = self._arrow_schema(None)
        if cursor.field not in schema.names:
            return field
        col = schema.field(cursor.field)
        if isinstance(col.type, pa.BaseExtensionType) or not (pa.types.is_string(col.type)
                                                               or pa.types.is_large_string(col.type)):
            return field
        pg_type = (col.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
        if pg_type in ("text", "varchar", "bpchar"):  # char(n) keeps its own (blank-insensitive) comparison
            return f'{field} COLLATE "C"'
        return f'({field}::text COLLATE "C")'

    def reader(self, cursor: CursorFilter | None = None) -> pa.RecordBatchReader:
        """The query's rows as an Arrow stream; the connection closes when it is drained.

        >>> src.reader().read_next_batch()  # doctest: +SKIP
        """
        if self.dialect == "mysql":
            from ._mysql import mysql_reader

            return mysql_reader(self, cursor)
        sql, params = self._sql(cursor)
        con = self._connect()
        try:
            cur = con.cursor()
            cur.execute(sql, parameters=params or None)
            inner = cur.fetch_record_batch()
            head: list[pa.RecordBatch] = []
            if self.dialect == "sqlite":
                cur, inner, head = typed_reader(con, cur, inner, sql, params)
        except SourceError:
            con.close()
            raise
        except Exception as exc:
            con.close()
            raise SourceError(f"the source query failed on {self.uri}: {redact(str(exc))}").quoting_literals(
                str(exc)) from exc
        self._names = inner.schema.names  # for read_error: the driver numbers the columns
        try:
            self._refuse_unreadable(inner.schema)
            self.refuse_flattened_arrays(sql, params, inner.schema)
        except SourceError:
            con.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from self.as_read(head)
                yield from self.as_read(inner)
            finally:
                try:
                    cur.close()
                    con.close()
                except Exception:
                    pass

        return pa.RecordBatchReader.from_batches(inner.schema, batches())

    def as_read(self, batches: Any) -> Iterator[pa.RecordBatch]:
        """The driver's batches as every read of this source gives them (the single read and each
        split of a partitioned one): PostgreSQL's infinities made DuckDB's (:data:`_PG_WRAPPED`), SQLite's
        large integers read as REAL refused (:func:`refuse_rounded_integers`)."""
        if self.dialect == "sqlite":
            return refuse_rounded_integers(self, batches)
        return map(_pg_infinities, batches) if self.dialect == "postgres" else iter(batches)

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        return self.reader(cursor)

    def read_error(self, message: str) -> str:
        text = super().read_error(message)
        found = re.search(r"Type mismatch in column (\d+): expected (\w+) but got ([\w/]+)", message) \
            if self.dialect == "sqlite" else None
        if found:  # SQLite columns hold any type; the driver fixes each one's from its first rows
            i, expected, got = int(found.group(1)), found.group(2), found.group(3)
            names = getattr(self, "_names", [])
            col = q(names[i]) if i < len(names) else f"the column number {i + 1}"
            cast = "REAL" if got == "DOUBLE" and expected == "INT64" else "TEXT"
            text += (f". SQLite's driver takes each column's type from the first rows it reads ({expected} here; "
                     f"INTEGER values, say, before a REAL one), and {col} holds {got} values further down: cast "
                     f"it in the query so every row has one type, e.g. SELECT ..., CAST({col} AS {cast}) AS {col} "
                     f"FROM ...; nothing was sent")
        return text

    def _arrow_schema(self, cursor: CursorFilter | None) -> pa.Schema:
        if self.dialect == "mysql":
            from ._mysql import mysql_schema

            return mysql_schema(self, cursor)
        # SQLite's driver infers column types from the first rows it reads (an empty result
        # says int64 for everything), so there the schema comes from the real query's reader
        sql, params = self._sql(cursor, limit0=self.dialect != "sqlite")
        con = self._connect()
        try:
            cur = con.cursor()
            cur.execute(sql, parameters=params or None)
            reader = cur.fetch_record_batch()
            if self.dialect == "sqlite":
                cur, reader, _ = typed_reader(con, cur, reader, sql, params)
            schema = reader.schema
            reader.close()
            cur.close()
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"the source query failed on {self.uri}: {redact(str(exc))}").quoting_literals(
                str(exc)) from exc
        finally:
            con.close()
        self._refuse_unreadable(schema)
        return schema

    def cursor_problem(self, field: str) -> str | None:
        """PostgreSQL numeric, uuid and json arrive as text (docs/SCHEMA.md): the cursor would be
        kept and maximised as text ('9.99' after '10.00') and the filter bound as text, which
        PostgreSQL does not compare with the column's own type."""
        if self.dialect != "postgres":
            return None
        schema = self._arrow_schema(None)
        if field not in schema.names or not isinstance(schema.field(field).type, pa.BaseExtensionType):
            return None
        pg_type = (schema.field(field).metadata or {}).get(b"POSTGRESQL:type", b"").decode() or "an extension type"
        cast = "double precision" if pg_type == "numeric" else "text"
        return (f"cursor_field {field!r} is PostgreSQL {pg_type}, which dfsync reads as text, so its values "
                f"would be ordered as text (9.99 after 10.00) and an incremental run could not filter on it; "
                f"add a cursor column of an ordered type in the query, e.g. SELECT *, {q(field)}::{cast} AS "
                f"{field}_cursor FROM ..., and use cursor_field='{field}_cursor'")

    def refuse_flattened_arrays(self, sql: str, params: tuple, schema: pa.Schema) -> None:
        """The PostgreSQL driver reads a multidimensional array flattened: '{{1,2},{3,4}}' arrived as
        [1, 2, 3, 4] and the run said success. The rows of ``sql`` are asked (on a connection of their
        own: the read's is streaming) whether an array column holds one; if so it is refused, naming
        the column, the value and the casts that keep its shape."""
        arrays = [f.name for f in schema if self.dialect == "postgres" and
                  (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))]
        if not arrays:
            return
        deep = [f"array_ndims({q(c)}) > 1" for c in arrays]
        probe = (f"SELECT {', '.join(deep)}, {', '.join(f'{q(c)}::text' for c in arrays)} FROM ({sql}) AS q0 "
                 f"WHERE {' OR '.join(deep)} LIMIT 1")
        con = self._connect()
        try:
            with con.cursor() as cur:
                cur.execute(probe, parameters=params or None)
                hit = cur.fetchall()
        finally:
            con.close()
        if hit:
            i = list(hit[0][:len(arrays)]).index(True)
            c, value = arrays[i], hit[0][len(arrays) + i]
            raise SourceError(
                f"column {c!r} of {self.describe()} holds a multidimensional array ({value[:80]}), which the "
                f"driver reads flattened into one list; select it as JSON, which keeps its shape (to_jsonb({q(c)}) "
                f"AS {q(c)}), or as text ({q(c)}::text); nothing was sent")

    def _refuse_unreadable(self, schema: pa.Schema) -> None:
        """PostgreSQL types the ADBC driver cannot give as values: ``money`` arrives as integer
        cents (12.34 as 1234), ``oid`` (unsigned) as a signed int32 (4294967295 as -1), and types
        it does not know (inet, cidr, point, ranges, ...) as their raw binary wire format (numeric comes as text, which is kept); arrays of them the
        same, and an array of intervals made polars panic."""
        for f in _leaves(schema):
            t, meta = f.type, f.metadata
            array = pa.types.is_list(t) or pa.types.is_large_list(t)
            if array:
                t, meta = t.value_type, t.value_field.metadata
            pg_type = (meta or {}).get(b"POSTGRESQL:type", b"").decode()
            opaque = getattr(t, "extension_name", None) == "arrow.opaque" and \
                (pa.types.is_binary(t.storage_type) or pa.types.is_large_binary(t.storage_type))
            if opaque or pg_type in ("money", "oid") or (array and t == pa.month_day_nano_interval()):
                got, cast = ("integer cents (12.34 as 1234)", "numeric") if pg_type == "money" \
                    else ("a signed 32-bit integer (4294967295 as -1)", "bigint") if pg_type == "oid" \
                    else ("a value polars cannot hold", "text") if not opaque \
                    else ("its raw binary wire format", "text")
                what, cast = (f"an array of PostgreSQL {pg_type or 'an unknown type'}", cast + "[]") if array \
                    else (f"PostgreSQL {pg_type or 'an unknown type'}", cast)
                top = f.name.split(".")[0].removesuffix("[]")
                way = f"{q(f.name)}::{cast}" if top == f.name else \
                    f"select the composite value as text, {q(top)}::text, or its fields one by one, this one ::{cast}"
                raise SourceError(
                    f"column {f.name!r} of {self.describe()} is {what}, which the driver reads as {got}; cast it "
                    f"in the query ({way}); nothing was sent")

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        from polars.io.plugins import register_io_source

        schema = pl.DataFrame(pa.Table.from_batches([], _as_text(interval_schema(self._arrow_schema(cursor))))).schema

        def source(with_columns: list[str] | None, predicate: Any, n_rows: int | None,
                   batch_size: int | None) -> Iterator[pl.DataFrame]:
            left = n_rows
            for rb in self.reader(cursor):
                df = to_polars(_text_columns(rb))  # PostgreSQL intervals arrive as Arrow intervals, which polars lacks
                for name in [n for n, t in df.schema.items() if t == pl.String and schema[n] == pl.Duration("us")]:
                    raise SourceError(
                        f"column {name!r} of {self.describe()} holds an interval with months "
                        f"({df[name].drop_nulls()[0]}), which has no fixed length as a duration; convert it "
                        f"in the query (EXTRACT(EPOCH FROM {name}) for seconds, or {name}::text); nothing was sent")
                if df.schema != schema:
                    df = df.cast(dict(schema))  # type: ignore[arg-type]
                if with_columns is not None:
                    df = df.select(with_columns)
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df
                if left is not None and left <= 0:
                    return

        return register_io_source(source, schema=schema)

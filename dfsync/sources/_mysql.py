"""Rows of a query on MySQL / MariaDB as Arrow record batches (PyMySQL, streamed).

Used by :class:`dfsync.sources._database.DatabaseSource` for ``mysql://`` and ``mariadb://``
URIs. A read runs in one ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` at
REPEATABLE READ, so every row comes from one InnoDB snapshot; rows stream from the server
(unbuffered cursor) and become Arrow batches of ``BATCH_ROWS`` rows, so memory stays
bounded. The incremental cursor is a bound parameter:
``SELECT * FROM (<query>) AS q WHERE `field` >= %s`` (a text column compared as UTF-8 bytes, as dfsync
orders its cursor, not in its case- and accent-insensitive collation).

Types follow the result's column metadata, not the values: tinyint(1) -> bool (a value other
than 0 or 1 is refused: cast it in the query), integers ->
int64 (bigint unsigned -> uint64), decimal(p,s) -> decimal128(p,s) (p > 38 refused), float -> float32,
double -> float64, date -> date32, datetime(n) -> timestamp[us], timestamp(n) ->
timestamp[us, UTC] (the session runs in UTC), time(n) -> time64[us] (a TIME outside
00:00-24:00 is refused: cast it in the query), year -> int16, JSON/ENUM/SET/text -> string,
binary collations and blobs -> binary. A FLOAT column is read as ``c + 0e0`` (the same value as a
double): the server writes a FLOAT as text with 6 significant digits (16777216 as 16777200,
3.1415927 as 3.14159), so it arrives as the float32 it stores, exactly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ..destinations._mysql_data import mysql_connect
from ..errors import MissingDependencyError, SourceError, redact

__all__ = ["mysql_reader", "mysql_schema"]

BATCH_ROWS = 50_000
_UNSIGNED, _BINARY_CHARSET = 32, 63
_INTS = {1, 2, 3, 8, 9}  # TINY, SHORT, LONG, LONGLONG, INT24
_TEXT = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}


def field_type(f: Any) -> pa.DataType:
    """The Arrow type of one result column (PyMySQL's field metadata)."""
    t, unsigned = f.type_code, bool(f.flags & _UNSIGNED)
    if t == 1 and f.length == 1:
        return pa.bool_()
    if t in _INTS:
        return pa.uint64() if (t == 8 and unsigned) else pa.int64()
    if t in (0, 246):
        precision = f.length - (1 if f.scale else 0) - (0 if unsigned else 1)
        if precision > 38:  # polars and DuckDB (staging) hold 38 digits
            raise SourceError(
                f"column {f.name!r} is decimal({precision},{f.scale}), wider than the 38 digits dfsync can stage "
                f"exactly; select it as text to keep every digit (CAST(`{f.name}` AS CHAR) AS `{f.name}`), or as "
                f"DECIMAL(38,{min(f.scale, 38)}) when its values fit. Nothing was read or sent.")
        return pa.decimal128(max(1, precision), f.scale)
    if t == 4:
        return pa.float32()
    if t == 5:
        return pa.float64()
    if t in (10, 14):
        return pa.date32()
    if t == 12:
        return pa.timestamp("us")
    if t == 7:
        return pa.timestamp("us", "UTC")
    if t == 11:
        return pa.time64("us")
    if t == 13:
        return pa.int16()
    if t == 6:
        return pa.null()
    if t in _TEXT:
        return pa.binary() if f.charsetnr == _BINARY_CHARSET and t != 245 else pa.string()
    return pa.binary()  # BIT, GEOMETRY: their bytes


def _column(values: list, t: pa.DataType, name: str) -> pa.Array:
    if pa.types.is_time(t):
        day = dt.timedelta(days=1)
        out = []
        for v in values:
            if v is not None and not (dt.timedelta(0) <= v < day):
                raise SourceError(f"column {name!r} holds the TIME {v}, outside a time of day; cast it in the "
                                  f"query (e.g. TIME_TO_SEC({name}) for a number of seconds)")
            out.append(None if v is None else (dt.datetime.min + v).time())
        values = out
    elif pa.types.is_timestamp(t) and t.tz:
        values = [None if v is None else v.replace(tzinfo=dt.timezone.utc) for v in values]
    elif pa.types.is_boolean(t):  # tinyint(1), MySQL's BOOL, holds -128..127: only 0 and 1 are booleans
        bad = next((v for v in values if v is not None and v not in (0, 1)), None)
        if bad is not None:
            raise SourceError(f"column {name!r} is tinyint(1), which dfsync reads as a boolean (MySQL's BOOL), but "
                              f"holds {bad}, neither 0 nor 1, which would arrive as true; select it as a number to "
                              f"keep its value (CAST(`{name}` AS SIGNED) AS `{name}`). Nothing was sent.")
        values = [None if v is None else bool(v) for v in values]
    try:
        return pa.array(values, t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        bad = next((v for v in values if isinstance(v, str)), None)
        hint = f" (the server sent {bad!r}: a zero date? select NULLIF(...) or cast it)" if bad else ""
        raise SourceError(f"column {name!r} does not convert to {t}: {exc}{hint}") from None


def _open(source: Any, sql: str, params: tuple, *, snapshot: bool,
          exact_floats: bool = False) -> tuple[Any, Any, list]:
    """A connection, its unbuffered cursor with ``sql`` executed, and the query's columns. With ``exact_floats``, the
    query's columns are first learnt from a ``LIMIT 0`` of it on the same connection (the server
    reads no row for it), so a FLOAT column is read as its exact double from the one execution of
    the query: it was executed, dropped and executed again on a second connection."""
    try:
        con = mysql_connect(source.uri, source.secret())  # MissingDependencyError without pymysql
    except MissingDependencyError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot connect to {source.uri}: {redact(' '.join(str(exc).split()))}") from exc
    import pymysql.cursors

    cur = con.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute("SET SESSION sql_mode = ''")  # the user's query keeps its usual meaning (no ANSI_QUOTES)
        if snapshot:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        probed = _probe(cur, sql, params) if exact_floats else []
        cur.execute(_floats_exact(sql, probed, bool(params)) or sql, params or None)
    except Exception as exc:
        con.close()
        raise SourceError(f"the source query failed on {source.uri}: {redact(str(exc))}").quoting_literals(
            str(exc)) from exc
    return con, cur, probed or list(cur._result.fields)


def _probe(cur: Any, sql: str, params: tuple) -> list:
    """The result columns of ``sql`` (PyMySQL's field metadata) from a ``LIMIT 0`` of it; none when
    it cannot be wrapped (e.g. a column name given twice, which a derived table refuses): such a
    query is read as it is, as before."""
    import pymysql

    try:
        cur.execute(f"SELECT * FROM ({sql}) AS q0 LIMIT 0", params or None)
    except pymysql.err.MySQLError:
        return []
    fields = list(cur._result.fields) if cur._result is not None else []
    cur.fetchall()
    return fields


def query_sql(source: Any, cursor: Any) -> tuple[str, tuple]:
    if cursor is None:
        return source.query, ()
    # with parameters PyMySQL formats the whole text: a % in the query or in the cursor's name is doubled
    field = "`" + str(cursor.field).replace("`", "``").replace("%", "%%") + "`"
    value, place = cursor.value, "%s"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)  # sessions run in UTC
    if isinstance(value, str) and _is_text(source, cursor.field):
        # dfsync keeps the largest delivered text cursor in byte order (DuckDB); the column's collation
        # (utf8mb4_general_ci, utf8mb4_0900_ai_ci: 'a' is 'A', 'é' is 'e') put 'Émile' below the cursor
        # 'zoe', and the row was never read. Compared as UTF-8 bytes, as dfsync orders them (no pad).
        field, place = f"CAST(CONVERT({field} USING utf8mb4) AS BINARY)", "CAST(%s AS BINARY)"
    query = source.query.replace("%", "%%")
    return f"SELECT * FROM ({query}) AS q WHERE {cursor.where(field, place)}", (value,)


def _is_text(source: Any, name: str) -> bool:
    """True when the query's column ``name`` is read as text (not a number whose stored cursor is text)."""
    schema = mysql_schema(source, None)
    return name in schema.names and pa.types.is_string(schema.field(name).type)


def mysql_schema(source: Any, cursor: Any = None) -> pa.Schema:
    sql, params = query_sql(source, cursor)
    con, cur, fields = _open(source, f"SELECT * FROM ({sql}) AS q0 LIMIT 0", params, snapshot=False)
    try:
        cur.fetchall()
        cur.close()
    finally:
        con.close()
    return pa.schema([pa.field(f.name, field_type(f)) for f in fields])


def _drop(con: Any, cur: Any) -> None:
    """Close a connection whose unbuffered result is not read (the rest goes with the socket)."""
    if cur._result is not None:
        cur._result.unbuffered_active = False
    with contextlib.suppress(Exception):
        con.close()


def _floats_exact(sql: str, fields: list, formatted: bool) -> str | None:
    """``sql`` with its FLOAT columns read as doubles (``c + 0e0``, exactly the float32 value), or None
    when it has none. The text protocol writes a FLOAT with 6 significant digits: 16777216 arrived
    as 16777200, 3.1415927 as 3.14159."""
    if not any(f.type_code == 4 for f in fields):
        return None
    cols = []
    for f in fields:  # with parameters PyMySQL formats the text: a % in a name is doubled, as in the query
        q = "`" + str(f.name).replace("`", "``") + "`"
        q = q.replace("%", "%%") if formatted else q
        cols.append(f"{q} + 0e0 AS {q}" if f.type_code == 4 else q)
    return f"SELECT {', '.join(cols)} FROM ({sql}) AS dfsync_floats"


def mysql_reader(source: Any, cursor: Any = None) -> pa.RecordBatchReader:
    """The query's rows as an Arrow stream from one consistent snapshot; closes when drained."""
    sql, params = query_sql(source, cursor)
    con, cur, fields = _open(source, sql, params, snapshot=True, exact_floats=True)
    try:  # the query's own column types: FLOAT ones, read as their exact doubles, stay float32
        schema = pa.schema([pa.field(f.name, field_type(f)) for f in fields])
    except SourceError:
        _drop(con, cur)
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        drained = False
        try:
            while True:
                rows = cur.fetchmany(BATCH_ROWS)
                if not rows:
                    break
                cols = list(zip(*rows, strict=True))
                yield pa.record_batch([_column(list(c), f.type, f.name) for c, f in zip(cols, schema, strict=True)],
                                      schema=schema)
            drained = True
            cur.close()
            con.commit()
        finally:
            if not drained and cur._result is not None:  # stopped early: drop the rest with the socket
                cur._result.unbuffered_active = False
            with contextlib.suppress(Exception):
                con.close()

    return pa.RecordBatchReader.from_batches(schema, batches())

"""MySQL/MariaDB values and types: Arrow -> column types, Arrow -> CSV for ``LOAD DATA``, load warnings.

Used by :mod:`dfsync.destinations._mysql` (the session) and :mod:`dfsync.sources._mysql`.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._arrow import is_nested, nested_to_json
from .._schema import JSON, fraction_unit
from ..errors import DestinationError, MissingDependencyError, SchemaMismatchError
from ._sql import q

__all__ = ["JSON_TYPE", "KEY_CHARS", "fixed_width", "key_chars", "SQL_MODE", "UTC_TYPE", "mysql_to_arrow", "Loader", "RowWarnings", "arrow_to_mysql", "conform", "mysql_connect",
           "mysql_to_duck", "normal_type", "row_message", "unstorable"]

SQL_MODE = ("STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
            "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,ANSI_QUOTES")
KEY_CHARS = 255
#: columns dfsync creates for values MySQL has no type of its own for carry a comment that
#: says what they hold: tz-aware timestamps as their UTC wall clock, nested values as JSON
UTC_TYPE = "datetime(6) COMMENT 'dfsync: UTC'"
JSON_TYPE = "json COMMENT 'dfsync: JSON'"

_INTS = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
         pa.uint8(): "tinyint unsigned", pa.uint16(): "smallint unsigned", pa.uint32(): "int unsigned",
         pa.uint64(): "bigint unsigned"}


def arrow_to_mysql(t: pa.DataType, key: bool = False, chars: int = KEY_CHARS) -> str:
    """The column type dfsync creates for an Arrow type (table in :mod:`dfsync.destinations._mysql`).

    >>> arrow_to_mysql(pa.string(), key=True)
    'varchar(255)'
    """
    if pa.types.is_dictionary(t):
        return arrow_to_mysql(t.value_type, key, chars)
    if is_nested(t):
        return JSON_TYPE
    if pa.types.is_timestamp(t) and t.tz is not None:
        return UTC_TYPE
    if t in _INTS:
        return _INTS[t]
    if pa.types.is_boolean(t):
        return "tinyint(1)"
    if pa.types.is_floating(t):
        return "double" if t == pa.float64() else "float"
    if pa.types.is_decimal(t) and t.precision <= 65:
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return f"varchar({chars})" if key else "longtext"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return f"varbinary({chars})" if key else "longblob"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time(6)"
    if pa.types.is_timestamp(t):
        return "datetime(6)"
    raise SchemaMismatchError(
        f"Arrow type {t} has no MySQL column type in dfsync; convert the column in the sync's mapping "
        f"(durations: a number of microseconds, pl.col(c).dt.total_microseconds())"
    )


#: InnoDB's largest index (DYNAMIC rows, MySQL 8 and MariaDB 10.11), in bytes; utf8mb4 takes 4 a character
KEY_BYTES = 3072


_KEY_BYTES = {"tinyint": 1, "smallint": 2, "int": 4, "bigint": 8, "float": 4, "double": 8, "date": 3, "time": 6,
              "datetime": 8}


def key_chars(schema: pa.Schema, primary_key: list[str] | tuple[str, ...]) -> int:
    """Characters of each text or bytes key column (at most ``KEY_CHARS``) so that the whole key fits
    an InnoDB index: four varchar(255) key columns (4080 bytes) made CREATE TABLE fail with 'Specified
    key was too long; max key length is 3072 bytes'. A longer value is refused per row, as one over 255.

    >>> key_chars(pa.schema([("a", pa.string()), ("b", pa.int64())]), ["a", "b"])
    255
    """
    per_char, fixed = 0, 0
    for name in primary_key:
        t = schema.field(name).type
        t = t.value_type if pa.types.is_dictionary(t) else t
        text = arrow_to_mysql(t, key=True)
        if text.startswith("varchar"):
            per_char += 4
        elif text.startswith("varbinary"):
            per_char += 1
        else:  # a number, date or time: its bytes in an index (a decimal at most 30)
            fixed += 30 if pa.types.is_decimal(t) else _KEY_BYTES.get(text.split(" ")[0].split("(")[0], 8)
    return KEY_CHARS if not per_char else max(1, min(KEY_CHARS, (KEY_BYTES - fixed) // per_char))


def mysql_to_arrow(declared: str) -> pa.DataType | str | None:
    """The Arrow type a column of this declared MySQL type holds exactly (None: dfsync cannot tell).

    >>> mysql_to_arrow("datetime(3)")[0], mysql_to_arrow(UTC_TYPE)
    (TimestampType(timestamp[ms]), TimestampType(timestamp[ns, tz=UTC]))
    """
    if declared == UTC_TYPE:
        return pa.timestamp("ns", "UTC")
    if declared == JSON_TYPE or declared == "json":
        return JSON
    if declared == "tinyint(1)":
        return pa.bool_()
    m = re.fullmatch(r"(tinyint|smallint|mediumint|int|bigint)( unsigned)?( zerofill)?", declared)
    if m:
        bits = {"tinyint": 8, "smallint": 16, "mediumint": 32, "int": 32, "bigint": 64}[m.group(1)]
        if m.group(1) == "mediumint":  # 24 bits: a value out of range is refused per row
            bits = 32
        return getattr(pa, ("uint" if m.group(2) else "int") + str(bits))()
    if declared in ("float", "double", "real") or declared.startswith(("float", "double")):
        return pa.float32() if declared.startswith("float") else pa.float64()
    m = re.fullmatch(r"decimal\((\d+),(\d+)\)( unsigned)?", declared)
    if m:
        p, sc = int(m.group(1)), int(m.group(2))
        return pa.decimal128(p, sc) if p <= 38 else pa.decimal256(p, sc)
    m = re.fullmatch(r"(datetime|timestamp|time)(?:\((\d)\))?", declared)
    if m:
        # fsp 0-2: whole seconds, 3-5: ms (a finer value would be rounded), 6: us (finer source
        # values are checked before sending, so a nanosecond type whose values are whole
        # microseconds fits)
        unit = fraction_unit(int(m.group(2) or 0))
        if m.group(1) == "time":
            return pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
        if m.group(1) == "timestamp":  # an instant (sessions run in UTC)
            return pa.timestamp(unit, "UTC")
        # a wall clock: naive values, or tz-aware ones as their UTC wall clock
        return [pa.timestamp(unit), pa.timestamp(unit, "UTC")]  # type: ignore[return-value]
    if declared == "date":
        return pa.date32()
    if re.fullmatch(r"(var)?char\(\d+\)|(tiny|medium|long)?text", declared):
        return pa.large_string()
    if re.fullmatch(r"(var)?binary\(\d+\)|(tiny|medium|long)?blob", declared):
        return pa.large_binary()
    return None


_TO_DUCK = {"tinyint": "TINYINT", "smallint": "SMALLINT", "mediumint": "INTEGER", "int": "INTEGER",
            "integer": "INTEGER", "bigint": "BIGINT", "float": "FLOAT", "double": "DOUBLE", "real": "DOUBLE",
            "decimal": "DECIMAL", "numeric": "DECIMAL", "date": "DATE", "datetime": "TIMESTAMP",
            "timestamp": "TIMESTAMP", "time": "TIME", "json": "JSON", "year": "SMALLINT"}


def mysql_to_duck(t: str) -> str:
    """A MySQL column type in the DuckDB names ``_sql.check_compatible`` speaks."""
    if t == "tinyint(1)":
        return "BOOLEAN"
    base = re.sub(r"\(.*?\)", "", t).strip()
    unsigned = base.endswith(" unsigned")
    base = base.replace(" unsigned", "").replace(" zerofill", "").strip()
    if base in _TO_DUCK:
        name = _TO_DUCK[base]
        return f"U{name}" if unsigned and name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT") else name
    if base.endswith(("char", "text")) or base in ("enum", "set"):
        return "VARCHAR"
    if base.endswith(("binary", "blob")) or base == "bit":
        return "BLOB"
    return base.upper()


def normal_type(t: str, comment: str = "") -> str:
    """MariaDB shows ``bigint(20) unsigned``, MySQL 8 ``bigint unsigned``: one spelling.

    A column dfsync made for UTC timestamps or JSON is named by its type and comment.
    """
    t = t.lower().strip()
    if comment == "dfsync: UTC" and t == "datetime(6)":
        return UTC_TYPE
    if comment == "dfsync: JSON" and t in ("json", "longtext"):  # MariaDB's JSON is a checked longtext
        return JSON_TYPE
    if t.startswith("tinyint(1)"):
        return t
    return re.sub(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", t)


def mysql_connect(uri: str, secret: str | None, *, connect_timeout: int = 10, local_infile: bool = False) -> Any:
    """A PyMySQL connection for ``mysql://user@host:port/database`` (utf8mb4, UTC, no autocommit)."""
    try:
        import pymysql
    except ImportError:
        raise MissingDependencyError("pymysql", "mysql", "the MySQL/MariaDB connector") from None
    parts = urlsplit(uri)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=unquote(parts.username or ""),
        password=secret or "", database=unquote(parts.path.lstrip("/")) or None, charset="utf8mb4",
        autocommit=False, local_infile=local_infile, connect_timeout=connect_timeout,
        init_command=f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}'")


def conform(data: pa.Table) -> pa.Table:
    """Arrow values as the server reads them from CSV (same values, other spellings)."""
    data = nested_to_json(data, [f.name for f in data.schema if is_nested(f.type)])
    cols = []
    for f in data.schema:
        col = data.column(f.name)
        t = f.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_boolean(t):
            col = col.cast(pa.int8())
        elif pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp(t.unit))  # zoned: the UTC wall clock
        elif t == pa.date64():
            col = col.cast(pa.date32())
        elif t in (pa.float16(), pa.float32()):
            # the exact double: float32's shortest text (3.4028235e38) reads back as a double
            # beyond the float range, which the server refuses
            col = col.cast(pa.float64())
        elif pa.types.is_string_view(t) or pa.types.is_null(t):
            col = col.cast(pa.large_string())
        elif pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
            col = col.cast(pa.large_binary())
        cols.append(col)
    return pa.table(cols, names=data.column_names)


def fixed_width(declared: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The CHAR(n) and BINARY(n) columns of a table (made by hand): column -> (kind, n).

    >>> fixed_width({"c": "char(3)", "v": "varchar(3)", "b": "binary(16)"})
    {'c': ('char', 3), 'b': ('binary', 16)}
    """
    found = {c: re.fullmatch(r"(char|binary)\((\d+)\)", t) for c, t in declared.items()}
    return {c: (m.group(1), int(m.group(2))) for c, m in found.items() if m}


def unstorable(data: pa.Table, columns: list[str], fixed: dict[str, tuple[str, int]] | None = None) -> dict[int, str]:
    """Rows whose values MySQL cannot keep exactly (checked in Arrow, before sending). ``fixed``: the
    table's CHAR(n) columns, which drop a value's trailing spaces when read ('a ' reads back 'a'),
    and BINARY(n) ones, which pad a shorter value with zero bytes (b'a' reads back b'a\\x00\\x00')."""
    bad: dict[int, str] = {}
    for name in columns:
        col = data.column(name)
        t = col.type
        if name in (fixed or {}):
            bad.update(_padded(col, name, *(fixed or {})[name]))
        mask = None
        if (pa.types.is_timestamp(t) or pa.types.is_time(t)) and t.unit == "ns":
            ints = pc.fill_null(col.cast(pa.int64()), 0).to_numpy()
            mask = pa.array(ints % 1000 != 0)
            why = f"column {name!r}: MySQL keeps microseconds; this value has nanoseconds"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            bad.update({i: f"column {name!r}: the value is not valid UTF-8" for i in _invalid_utf8(col)})
        elif pa.types.is_floating(t):
            mask = pc.or_(pc.is_nan(col), pc.is_inf(col))
            why = f"column {name!r}: MySQL cannot store NaN or infinity"
        if mask is not None:
            for i in np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False)):
                bad[int(i)] = why
    return bad


def _padded(col: pa.ChunkedArray, name: str, kind: str, n: int) -> dict[int, str]:
    """Rows a CHAR(n) column would read back without their trailing spaces, or a BINARY(n) one
    with zero bytes after them."""
    t = col.type
    if kind == "char" and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        mask = pc.ends_with(col, " ")
        why = (f"column {name!r} is CHAR({n}) in the table, which drops trailing spaces: the value would read "
               f"back without them (make the column VARCHAR({n}), or strip them in the sync's mapping)")
    elif kind == "binary" and (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        mask = pc.less(pc.binary_length(col), n)
        why = (f"column {name!r} is BINARY({n}) in the table, which pads a shorter value with zero bytes: it "
               f"would read back longer than sent (make the column VARBINARY({n}))")
    else:
        return {}
    return {int(i): why for i in np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False))}


_LOCAL_REFUSED = {1148, 3948, 2068, 1235, 4166}


def _invalid_utf8(col: pa.ChunkedArray) -> list[int]:
    """Rows of a string column whose bytes are not UTF-8 (Arrow checks this only when asked)."""
    try:
        for chunk in col.chunks:
            chunk.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    raw = col.cast(pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()).to_pylist()
    out = []
    for i, b in enumerate(raw):
        try:
            if b is not None:
                b.decode("utf-8")
        except UnicodeDecodeError:
            out.append(i)
    return out


class RowWarnings(Exception):
    """A LOAD DATA produced warnings (values not stored exactly as sent)."""


class Loader:
    """Loads Arrow rows into a table: ``LOAD DATA LOCAL INFILE`` of a CSV file, or prepared INSERTs.

    ``classify(exc)`` is the session's error classifier ("data" errors are row-level).
    """

    def __init__(self, classify: Callable[[BaseException], str], where: str) -> None:
        self.local_infile = True
        self.classify = classify
        self.where = where

    def csv_columns(self, data: pa.Table) -> tuple[pa.Table, list[str], list[str]]:
        """The table as CSV-writable columns, the LOAD DATA column list and its SET clauses."""
        import polars as pl

        cols, targets, sets = [], [], []
        for i, name in enumerate(data.column_names):
            col = data.column(name)
            if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                hexed = pl.from_arrow(col).bin.encode("hex").to_arrow().cast(pa.large_string())  # type: ignore[union-attr]
                cols.append(hexed)
                targets.append(f"@v{i}")
                sets.append(f"{q(name)} = UNHEX(@v{i})")
            elif pa.types.is_timestamp(col.type) and col.type.unit == "ns":
                cols.append(col.cast(pa.timestamp("us"), safe=False))
                targets.append(q(name))
            elif pa.types.is_time(col.type):
                cols.append(col.cast(pa.time64("us"), safe=False))
                targets.append(q(name))
            else:
                cols.append(col)
                targets.append(q(name))
        return pa.table(cols, names=data.column_names), targets, sets

    def load(self, cur: Any, table: str, data: pa.Table) -> dict[int, str]:
        """Load ``data`` into ``table``; return {row position: warning} for values not kept exactly."""
        if not data.num_rows:
            return {}
        if not self.local_infile:
            return self.insert_rows(cur, table, data)
        import pyarrow.csv as pcsv

        body, targets, sets = self.csv_columns(data)
        fd, path = tempfile.mkstemp(prefix="dfsync-mysql-", suffix=".csv")
        try:
            with os.fdopen(fd, "wb") as fh:
                pcsv.write_csv(body, fh, pcsv.WriteOptions(include_header=False, quoting_style="all_valid",
                                                            null_string="NULL"))
            name = table
            sql = (f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {name} CHARACTER SET utf8mb4 "
                   f"FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
                   f"LINES TERMINATED BY '\\n' ({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else ""))
            try:
                loaded = cur.execute(sql)
            except Exception as exc:
                if exc.args and exc.args[0] in _LOCAL_REFUSED:
                    self.local_infile = False  # the server refuses LOCAL: prepared INSERTs from now on
                    return self.insert_rows(cur, table, data)
                raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return self.warnings(cur, loaded, data.num_rows)

    def warnings(self, cur: Any, loaded: int, expected: int) -> dict[int, str]:
        count = _fetch(cur, "SHOW COUNT(*) WARNINGS")[0][0]
        if not count and loaded == expected:
            return {}
        rows = _fetch(cur, f"SHOW WARNINGS LIMIT {int(count)}")
        placed: dict[int, str] = {}
        unplaced = []
        for _level, _code, message in rows:
            m = re.search(r" at row (\d+)$", str(message))
            if m:
                placed.setdefault(int(m.group(1)) - 1, str(message)[: m.start()])
            else:
                unplaced.append(str(message))
        if unplaced or count > len(rows) or (not placed and loaded != expected):
            raise DestinationError(
                f"MySQL destination {self.where}: LOAD DATA kept {loaded} of {expected} rows with warnings "
                f"dfsync cannot tie to rows ({'; '.join(unplaced[:3]) or f'{count} warnings'}); nothing of "
                f"this batch was committed")
        return placed

    def insert_rows(self, cur: Any, table: str, data: pa.Table) -> dict[int, str]:
        """Multi-row prepared INSERTs (strict: a bad value raises instead of warning)."""
        name = table
        places = ", ".join(["%s"] * data.num_columns)
        sql = f"INSERT INTO {name} ({', '.join(q(c) for c in data.column_names)}) VALUES ({places})"
        sql = sql.replace("%", "%%").replace("%%s", "%s")
        rows = list(zip(*(data.column(c).to_pylist() for c in data.column_names), strict=True))
        bad: dict[int, str] = {}
        for start in range(0, len(rows), 5000):
            chunk = rows[start:start + 5000]
            try:
                cur.cur.executemany(sql, chunk)
            except Exception as exc:
                if self.classify(exc) != "data":
                    raise
                for i, row in enumerate(chunk):  # the statement failed alone: find its bad rows
                    try:
                        cur.cur.execute(sql, row)
                    except Exception as one:
                        if self.classify(one) != "data":
                            raise
                        bad[start + i] = row_message(one)
        return bad


def row_message(exc: BaseException) -> str:
    """The server's message for one row, without its "at row N" (N counts rows of one statement)."""
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    return re.sub(r" at row \d+$", "", text)


def _fetch(cur: Any, sql: str) -> list[tuple]:
    cur.execute(sql)
    return cur.fetchall()

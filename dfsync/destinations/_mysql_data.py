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

from ..errors import DestinationError, MissingDependencyError, SchemaMismatchError
from ._sql import q

__all__ = ["KEY_CHARS", "SQL_MODE", "Loader", "RowWarnings", "arrow_to_mysql", "conform", "mysql_connect",
           "mysql_to_duck", "normal_type", "row_message", "unstorable"]

SQL_MODE = ("STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
            "NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,ANSI_QUOTES")
KEY_CHARS = 255

_INTS = {pa.int8(): "tinyint", pa.int16(): "smallint", pa.int32(): "int", pa.int64(): "bigint",
         pa.uint8(): "tinyint unsigned", pa.uint16(): "smallint unsigned", pa.uint32(): "int unsigned",
         pa.uint64(): "bigint unsigned"}


def arrow_to_mysql(t: pa.DataType, key: bool = False) -> str:
    """The column type dfsync creates for an Arrow type (table in :mod:`dfsync.destinations._mysql`).

    >>> arrow_to_mysql(pa.string(), key=True)
    'varchar(255)'
    """
    if pa.types.is_dictionary(t):
        return arrow_to_mysql(t.value_type, key)
    if t in _INTS:
        return _INTS[t]
    if pa.types.is_boolean(t):
        return "tinyint(1)"
    if pa.types.is_floating(t):
        return "double" if t == pa.float64() else "float"
    if pa.types.is_decimal(t) and t.precision <= 65:
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return f"varchar({KEY_CHARS})" if key else "longtext"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return f"varbinary({KEY_CHARS})" if key else "longblob"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_time(t):
        return "time(6)"
    if pa.types.is_timestamp(t):
        return "datetime(6)"
    raise SchemaMismatchError(
        f"Arrow type {t} has no MySQL column type in dfsync; convert the column in the sync's mapping "
        f"(a JSON string for lists and structs: pl.col(c).struct.json_encode(); a number of seconds "
        f"for durations)"
    )


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


def normal_type(t: str) -> str:
    """MariaDB shows ``bigint(20) unsigned``, MySQL 8 ``bigint unsigned``: one spelling."""
    t = t.lower().strip()
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


def unstorable(data: pa.Table, columns: list[str]) -> dict[int, str]:
    """Rows whose values MySQL cannot keep exactly (checked in Arrow, before sending)."""
    bad: dict[int, str] = {}
    for name in columns:
        col = data.column(name)
        t = col.type
        mask = None
        if (pa.types.is_timestamp(t) or pa.types.is_time(t)) and t.unit == "ns":
            ints = pc.fill_null(col.cast(pa.int64()), 0).to_numpy()
            mask = pa.array(ints % 1000 != 0)
            why = f"column {name!r}: MySQL keeps microseconds; this value has nanoseconds"
        elif pa.types.is_floating(t):
            mask = pc.or_(pc.is_nan(col), pc.is_inf(col))
            why = f"column {name!r}: MySQL cannot store NaN or infinity"
        if mask is not None:
            for i in np.flatnonzero(mask.fill_null(False).to_numpy(zero_copy_only=False)):
                bad[int(i)] = why
    return bad


_LOCAL_REFUSED = {1148, 3948, 2068, 1235, 4166}


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

"""A small DB-API-shaped connection over ADBC's low-level API (PostgreSQL and SQLite).

``adbc_driver_manager.dbapi`` imports ``pyarrow.dataset`` and, through it, pandas: 0.5-1.0 s
in every process that opens a PostgreSQL or SQLite connection, most of a small or repeated
sync. dfsync needs only a handful of calls (run a statement with a few parameters, fetch a
small result or an Arrow stream, bulk-ingest an Arrow table, commit, roll back), so it makes
them on ``adbc_driver_manager``'s own objects, which import in milliseconds. Errors are the
driver's own exception classes (with ``sqlstate``), exactly as through the DB-API module, and a
blocking call is still cancelled by Ctrl-C.

    >>> con = connect_sqlite(":memory:")
    >>> with con.cursor() as cur:
    ...     cur.execute("SELECT ? + 1 AS n", (41,)).fetchall()
    [(42,)]
    >>> con.close()
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ._arrow import bool_array, int_array, string_array

__all__ = ["Connection", "Cursor", "connect_postgres", "connect_sqlite"]


def _manager() -> Any:
    import adbc_driver_manager

    return adbc_driver_manager


def _blocking(fn: Callable[[], Any], cancel: Callable[[], Any]) -> Any:
    """Run a blocking driver call; Ctrl-C cancels it (as the DB-API module does)."""
    from adbc_driver_manager import _lib

    call = getattr(_lib, "_blocking_call", None)
    if call is None:  # pragma: no cover - older driver managers
        return fn()
    return call(fn, (), {}, cancel)


def _param(value: Any) -> pa.Array:
    """A one-element Arrow array for a bind parameter (pandas-free for the common types)."""
    if value is None:
        return pa.nulls(1)
    if isinstance(value, bool):
        return bool_array(np.array([value]))
    if isinstance(value, int) and -(2 ** 63) <= value < 2 ** 63:
        return int_array([value])
    if isinstance(value, str):
        return string_array([value])
    return pa.array([value])  # rarer types (a source's cursor value): pyarrow's own conversion


def _stream_handle(data: pa.Table | pa.RecordBatch | pa.RecordBatchReader) -> Any:
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        data = data.to_reader()
    handle = _manager().ArrowArrayStreamHandle()
    data._export_to_c(handle.address)
    return handle


def _import_reader(handle: Any) -> pa.RecordBatchReader:
    try:
        from adbc_driver_manager._reader import AdbcRecordBatchReader
    except ImportError:  # pragma: no cover - older driver managers
        return pa.RecordBatchReader._import_from_c(handle.address)
    return AdbcRecordBatchReader._import_from_c(handle.address)


class Cursor:
    """One ADBC statement; ``execute`` runs SQL, ``fetchall``/``fetch_record_batch`` read its result."""

    def __init__(self, con: Connection) -> None:
        self._con = con
        self._stmt = _manager().AdbcStatement(con._conn)
        self._handle: Any = None
        self._reader: pa.RecordBatchReader | None = None

    def _clear(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        elif self._handle is not None:
            handle, self._handle = self._handle, None
            handle.release()

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        """Run one statement; ``parameters`` fill ``$1``/``?`` placeholders in order."""
        self._clear()
        self._stmt.set_sql_query(sql)
        if parameters:
            columns = [_param(v) for v in parameters]
            batch = pa.RecordBatch.from_arrays(columns, names=[str(i) for i in range(len(columns))])
            self._stmt.bind_stream(_stream_handle(batch))
        self._handle, _ = _blocking(self._stmt.execute_query, self._stmt.cancel)  # (stream, row count)
        return self

    def fetch_record_batch(self) -> pa.RecordBatchReader:
        """The result as an Arrow stream (read it before the next ``execute``)."""
        if self._reader is None:
            if self._handle is None:
                raise RuntimeError("no result: call execute() first")
            handle, self._handle = self._handle, None
            self._reader = _import_reader(handle)
        return self._reader

    def fetchall(self) -> list[tuple]:
        reader = self.fetch_record_batch()
        table = pa.Table.from_batches(list(reader), reader.schema)
        return list(zip(*(c.to_pylist() for c in table.columns), strict=True)) if table.num_columns else []

    def adbc_ingest(self, table_name: str, data: pa.Table | pa.RecordBatch | pa.RecordBatchReader, mode: str,
                    *, db_schema_name: str | None = None, temporary: bool = False) -> int:
        """Bulk-load Arrow data (PostgreSQL: binary COPY) into ``table_name``; mode is
        ``append``, ``create``, ``create_append`` or ``replace``."""
        m = _manager()
        self._clear()
        options = {m.INGEST_OPTION_TARGET_TABLE: table_name,
                   m.INGEST_OPTION_MODE: f"adbc.ingest.mode.{mode}"}
        if db_schema_name is not None:
            options[m.StatementOptions.INGEST_TARGET_DB_SCHEMA.value] = db_schema_name
        self._stmt.set_options(**options)
        try:
            self._stmt.set_options(**{m.StatementOptions.INGEST_TEMPORARY.value: "true" if temporary else "false"})
        except m.NotSupportedError:
            if temporary:
                raise
        self._stmt.bind_stream(_stream_handle(data))
        return _blocking(self._stmt.execute_update, self._stmt.cancel)

    def close(self) -> None:
        if self._stmt is None:
            return
        try:
            self._clear()
        finally:
            self._stmt.close()
            self._stmt = None

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection:
    """An ADBC connection with autocommit off: ``commit()`` and ``rollback()`` end a transaction."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._cursors: weakref.WeakSet[Cursor] = weakref.WeakSet()
        try:
            self._conn = _manager().AdbcConnection(db)
        except BaseException:
            db.close()
            raise
        try:
            self._conn.set_autocommit(False)
        except BaseException:
            self._conn.close()
            db.close()
            raise

    def cursor(self) -> Cursor:
        cur = Cursor(self)
        self._cursors.add(cur)
        return cur

    def commit(self) -> None:
        _blocking(self._conn.commit, self._conn.cancel)

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        if self._conn is None:
            return
        for cur in list(self._cursors):  # ADBC refuses to close a connection with open statements
            cur.close()
        try:
            self._conn.close()
        finally:
            self._conn = None
            self._db.close()


def connect_postgres(uri: str) -> Connection:
    """Open a PostgreSQL connection (libpq URI) through ADBC."""
    import adbc_driver_postgresql

    return Connection(adbc_driver_postgresql.connect(uri))


def connect_sqlite(path: str) -> Connection:
    """Open (or create) a SQLite database file through ADBC; ``:memory:`` for a private one."""
    import adbc_driver_sqlite

    return Connection(adbc_driver_sqlite.connect(path))

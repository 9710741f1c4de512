"""Connections of the PostgreSQL workspace store: the target URI, one ADBC connection per thread.

The store's SQL is written once, for DuckDB and PostgreSQL alike, with ``?`` placeholders;
:class:`PgCon` numbers them (``$1``, ``$2``, ...) and gives the few calls the store makes on a
DuckDB connection (``execute(...).fetchall()``, ``description``, ``sql(...).to_arrow_table()``,
``register`` of an Arrow table) over :mod:`dfsync._adbc`. Statements that are DuckDB-only are
overridden in :mod:`dfsync.store._postgres`, never rewritten here.

Fingerprints: DuckDB keeps a row's 64-bit fingerprint as ``UBIGINT``; PostgreSQL has no unsigned
type, so a ``_fp`` (or records' ``_fingerprint``) column is a ``bigint`` holding the same 64 bits (Arrow ``view``, no copy, no
loss) and reads back as ``uint64``. Fingerprints are only ever compared for equality.

The password: ``postgresql://user:env:NAME@host/db`` (or ``PGPASSWORD`` / ``~/.pgpass``, left to
libpq). It is resolved each time a connection opens and never kept in :attr:`PgTarget.display`,
in the workspace, in a repr or an error.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from .._arrow import is_nested, nested_to_json, to_polars
from .._secrets import resolve_secret, take_password, uri_with_password
from ..errors import ConfigError, MissingDependencyError, WorkspaceBusy, WorkspaceError, redact

__all__ = ["PgCon", "PgTarget", "is_postgres_target", "open_connection", "to_dollar"]

#: SQLSTATE classes and codes that mean "the server is not there (now)", not "your SQL is wrong"
_UNREACHABLE_STATES = ("57P01", "57P02", "57P03", "53300")
_UNREACHABLE_TEXT = ("connection refused", "could not connect", "server closed the connection",
                     "no connection to the server", "terminating connection", "timeout expired",
                     "the database system is", "could not receive data", "could not send data",
                     "connection reset", "broken pipe", "connection timed out", "eof detected",
                     "could not translate host name", "name or service not known")


def is_postgres_target(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class PgTarget:
    """A parsed workspace URI: where to connect, and which schema holds the workspace."""

    display: str  # the URI as shown and passed on (an ``env:NAME`` reference, never a literal password)
    base: str  # the libpq URI without password and without ``schema=``
    password_ref: str | None  # ``env:NAME``
    literal: str | None  # a literal password given in the URI: usable in this process only
    schema: str
    host: str
    port: int
    dbname: str

    @classmethod
    def parse(cls, target: str) -> PgTarget:
        base, ref, literal = take_password(target, None)
        parts = urlsplit(base)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [v for k, v in query if k == "schema"]
        schema = schemas[-1] if schemas else "dfsync"
        if not schema or len(schema.encode()) > 63:
            raise ConfigError(f"the workspace schema {schema!r} must be 1 to 63 bytes long "
                              f"(postgresql://user@host/db?schema=NAME)")
        rest = [(k, v) for k, v in query if k != "schema"]
        base = urlunsplit(parts._replace(query=urlencode(rest)))
        dbname = parts.path.lstrip("/") or (parts.username or "")
        user = parts.username or ""
        shown_user = user + (f":{ref}" if ref else "")
        netloc = (f"{shown_user}@" if shown_user else "") + (parts.hostname or "") + \
            (f":{parts.port}" if parts.port else "")
        display = urlunsplit(parts._replace(netloc=netloc, query=urlencode([*rest, ("schema", schema)])))
        return cls(display, base, ref, literal, schema, parts.hostname or "localhost", parts.port or 5432, dbname)

    @property
    def key(self) -> str:
        """Keys this workspace in the per-process registries (no credentials)."""
        return f"pg:{self.host}:{self.port}/{self.dbname}/{self.schema}"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname} (schema {self.schema})"

    def connection_uri(self, connect_timeout: int) -> str:
        """The libpq URI with the password filled in (resolved now; never stored or shown)."""
        secret = resolve_secret(self.password_ref, "workspace password") or self.literal
        return uri_with_password(self.base, secret, max(1, connect_timeout))


def unreachable(exc: BaseException) -> bool:
    """Did this error come from the server being away (refused, restarted, shut down)?"""
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("08") or state in _UNREACHABLE_STATES:
        return True
    text = str(exc).lower()
    if "password authentication failed" in text or "no pg_hba.conf entry" in text:
        return False
    return any(t in text for t in _UNREACHABLE_TEXT)


def busy_error(target: PgTarget, exc: BaseException, waited: float | None) -> WorkspaceBusy:
    """``waited``: seconds spent trying to connect; None: the connection broke during a call."""
    first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    what = f"did not answer for {waited:.0f} s" if waited is not None else "closed the connection during this call"
    err = WorkspaceBusy(
        f"workspace server unreachable: the PostgreSQL workspace {target.where} {what} ({first}). "
        f"Start the server or check the network, then try again; this call's changes were not committed.")
    err.outage = True  # type: ignore[attr-defined]  # a run under way pauses (dfsync.runner)
    return err


def open_connection(target: PgTarget, busy_timeout: float) -> Any:
    """A new ADBC connection with the workspace schema first on the search path.

    An unreachable server is retried for ``busy_timeout`` seconds, then ``WorkspaceBusy``; a
    refused login or a missing database is a ``WorkspaceError`` at once (retrying cannot help).
    """
    try:
        import adbc_driver_postgresql  # noqa: F401
    except ImportError:
        raise MissingDependencyError("adbc-driver-postgresql", "postgres", "a PostgreSQL workspace") from None
    from .._adbc import connect_postgres

    start = time.monotonic()
    delay = 0.05
    while True:
        uri = target.connection_uri(int(min(max(busy_timeout, 1), 10)))
        try:
            con = connect_postgres(uri)
            break
        except Exception as exc:
            waited = time.monotonic() - start
            if not unreachable(exc):
                raise WorkspaceError(
                    f"cannot open the PostgreSQL workspace {target.where}: {redact(str(exc).strip())}. Check the "
                    f"user, the password (postgresql://user:env:NAME@host/db), the database name and "
                    f"pg_hba.conf; nothing was changed.") from None
            if waited >= busy_timeout:
                raise busy_error(target, exc, waited) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        with con.cursor() as cur:
            cur.execute(f"SET search_path TO {_ident(target.schema)}, public")
            cur.execute("SET TIME ZONE 'UTC'")
            # a row lock held by another process is waited for this long, then WorkspaceBusy
            cur.execute(f"SET lock_timeout = '{int(max(busy_timeout, 0.1) * 1000)}ms'")
            # a transaction left open by a stopped process (SIGSTOP, a partition) would hold the rows
            # it locked: the server ends such a session (see dfsync/store/_pgfence.py)
            cur.execute(f"SET idle_in_transaction_session_timeout = '{int(_idle_bound() * 1000)}ms'")
        con.commit()
    except BaseException:
        con.close()
        raise
    return con


def _idle_bound() -> float:
    from .._settings import setting

    return max(10.0, float(setting("heartbeat_ttl")))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|[^'\"?]+", re.S)


def to_dollar(sql: str) -> str:
    """``?`` placeholders -> ``$1, $2, ...`` (quoted strings and identifiers are left alone).

    >>> to_dollar("SELECT '?', x FROM t WHERE a = ? AND b = ?")
    "SELECT '?', x FROM t WHERE a = $1 AND b = $2"
    """
    n = 0
    out = []
    for tok in _TOKEN.findall(sql):
        if tok == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(tok)
    return "".join(out)


#: columns holding a row's 64-bit fingerprint (state ``_fp``, records ``_fingerprint``)
_FP_COLUMNS = ("_fp", "_fingerprint")


def to_pg_arrow(table: pa.Table) -> pa.Table:
    """An Arrow table the PostgreSQL COPY takes without loss: ``_fp`` as the same 64 bits in
    int64; other unsigned integers widened (uint64 as numeric(20,0)); views and dictionaries
    decoded; structs, maps and lists of them as JSON text."""
    nested = [f.name for f in table.schema if is_nested(f.type) and not (
        (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)) and not is_nested(f.type.value_type))]
    if nested:
        table = nested_to_json(table, nested)
    cols, fields, changed = [], [], False
    for f, col in zip(table.schema, table.columns, strict=True):
        t = f.type
        if pa.types.is_dictionary(t):
            col, t, changed = col.cast(t.value_type), t.value_type, True
        if f.name in _FP_COLUMNS and t == pa.uint64():
            col = pa.chunked_array([c.view(pa.int64()) for c in col.chunks], pa.int64())
            t, changed = pa.int64(), True
        else:
            new = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(),
                   pa.uint64(): pa.decimal128(20, 0), pa.string_view(): pa.large_string(),
                   pa.null(): pa.string(), pa.date64(): pa.date32()}.get(t)
            if new is not None:
                col, t, changed = col.cast(new), new, True
        cols.append(col)
        fields.append(pa.field(f.name, t))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields)) if changed else table


def from_pg_arrow(table: pa.Table) -> pa.Table:
    """A result as the store's callers expect it: fingerprints back to uint64 (same bits); a type
    the driver hands over as an opaque extension (``numeric``) as its text."""
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if isinstance(f.type, pa.BaseExtensionType):
            col = pa.chunked_array([c.storage for c in col.chunks], f.type.storage_type)
            if "numeric" in str(f.type):
                col = _numeric(col)
            table = table.set_column(i, pa.field(f.name, col.type), col)
        if f.name in _FP_COLUMNS and col.type == pa.int64():
            table = table.set_column(i, pa.field(f.name, pa.uint64()),
                                     pa.chunked_array([c.view(pa.uint64()) for c in col.chunks], pa.uint64()))
    return table


def _numeric(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """``numeric`` values (text from the driver) as decimals with the column's scale (PostgreSQL
    prints every value of a ``numeric(p,s)`` column with s digits), else as they came."""
    import pyarrow.compute as pc

    texts = [v for v in col.to_pylist() if v is not None]
    if not texts or any(not re.fullmatch(r"-?\d+(\.\d+)?", v) for v in texts):
        return col
    scales = {len(v.split(".")[1]) if "." in v else 0 for v in texts}
    digits = max(len(v.lstrip("-").replace(".", "")) for v in texts)
    if len(scales) != 1 or digits > 38:
        return col
    scale = scales.pop()
    return pc.cast(col, pa.decimal128(38, scale))


class _Result:
    """A statement's result, read whole (the store's results are small, or wanted whole)."""

    def __init__(self, table: pa.Table | None) -> None:
        self._table = table
        self.description = [(n, None) for n in table.column_names] if table is not None else None

    def fetchall(self) -> list[tuple]:
        t = self._table
        if t is None or t.num_columns == 0:
            return []
        return list(zip(*(c.to_pylist() for c in t.columns), strict=True))

    def fetchone(self) -> tuple | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def to_arrow_table(self) -> pa.Table:
        assert self._table is not None
        return self._table

    def arrow(self) -> pa.Table:
        return self.to_arrow_table()

    def pl(self) -> Any:
        return to_polars(self.to_arrow_table())


class PgCon:
    """The thread's connection, shaped like the DuckDB connection the store's SQL runs on."""

    def __init__(self, con: Any, reopen: Any = None) -> None:
        self.raw = con
        self._cur = con.cursor()
        self._registered: set[str] = set()
        #: a new connection to the same workspace (None: a connection that is never replaced)
        self._reopen = reopen
        #: no statement ran yet in this transaction: a connection found dead now is replaced and the
        #: statement sent again (nothing of the transaction can have reached the server)
        self.fresh = False

    def _first(self, call: Any) -> Any:
        """Run ``call()``; the transaction's first statement is retried once on a new connection
        when the server dropped this one since its last use (a restart between two calls)."""
        try:
            out = call()
        except Exception as exc:
            if not (self.fresh and self._reopen is not None and unreachable(exc)):
                raise
            self.fresh = False
            old, self.raw = self.raw, self._reopen()
            with contextlib.suppress(Exception):
                old.close()
            self._cur = self.raw.cursor()
            self._registered.clear()  # temporary tables went with the old session
            out = call()
        self.fresh = False
        return out

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _Result:
        def run() -> pa.Table:
            self._cur.execute(to_dollar(sql), list(params) if params else None)
            return self._cur.fetch_record_batch().read_all()

        table = self._first(run)
        return _Result(from_pg_arrow(table) if table.num_columns else None)

    def sql(self, query: str, params: Sequence[Any] | None = None) -> _Result:
        return self.execute(query, params)

    def register(self, name: str, data: Any) -> None:
        """An Arrow table as a temporary table ``name`` (binary COPY), for the session."""
        if isinstance(data, pa.RecordBatchReader):
            data = data.read_all()
        elif isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):  # a polars frame
            data = data.to_arrow()
        data = to_pg_arrow(data)
        self._first(lambda: self._cur.adbc_ingest(name, data, "replace", temporary=True))
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        if name in self._registered:
            self._registered.discard(name)
            self.execute(f"DROP TABLE IF EXISTS pg_temp.{_ident(name)}")

    def ingest(self, table: str, data: pa.Table) -> int:
        """Append Arrow rows to a workspace table (binary COPY)."""
        data = to_pg_arrow(data)
        return self._first(lambda: self._cur.adbc_ingest(table, data, "append"))

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def close(self) -> None:
        try:
            self._cur.close()
        finally:
            self.raw.close()

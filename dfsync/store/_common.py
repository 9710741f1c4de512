"""What every workspace store shares: the run counters, the owner token."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import duckdb
import polars as pl

from .._arrow import to_polars
from ..errors import WorkspaceQueryError, redact
from ..states import ACTIVE_RUNS, UNFINISHED_RUNS

#: the active run statuses (runs a process works on) and, with paused, the unfinished ones, for SQL
ACTIVE_SQL = "(" + ",".join(f"'{s}'" for s in ACTIVE_RUNS) + ")"
UNFINISHED_SQL = "(" + ",".join(f"'{s}'" for s in UNFINISHED_RUNS) + ")"

COUNTERS = (
    "queried",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "invalid",
    "sent",
    "succeeded",
    "failed",
    "retried",
    "skipped",
)


def hostname() -> str:
    """This host's name as run rows record it: ``DFSYNC_HOSTNAME`` when set (containers whose
    host name changes on restart; tests playing two hosts on one machine), else the OS's."""
    return os.environ.get("DFSYNC_HOSTNAME") or socket.gethostname()


_OWNER_TOKEN = f"{hostname()}:{os.getpid()}:{time.time_ns()}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def owner_token() -> str:
    return _OWNER_TOKEN


def first(cur: Any) -> Any:
    """The first row of a result, draining it (DuckDB 2 refuses new work on an undrained result)."""
    rows = cur.fetchall()
    return rows[0] if rows else None


def one_row(cur: Any) -> dict[str, Any] | None:
    row = first(cur)
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def decode_sync(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for k in ("definition", "cursor_value", "key_types", "dest_schema"):
        if isinstance(row.get(k), str):
            row[k] = json.loads(row[k])
    return row


def frame(con: Any, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
    """Run a query and return a polars DataFrame (through Arrow, without the DB-API copy)."""
    return to_polars(con.sql(query, params=list(params) if params else None).to_arrow_table())  # intervals too


class StoreKey:
    """``key``: what identifies a workspace within this process (a file's absolute path, a PostgreSQL
    schema's address), for the per-process registries (live staging, sync locks, active runs)."""

    _key: str

    @property
    def key(self) -> str:
        return self._key


#: the statements ``Workspace.sql`` runs: queries (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW,
#: SUMMARIZE parse as SELECT) and EXPLAIN
_READING = ("SELECT", "EXPLAIN")


def read_only_statement(query: str, *, strict: bool) -> None:
    """Refuse what ``Workspace.sql`` must not run: more than one statement, or one that writes
    (INSERT, UPDATE, DELETE, CREATE, DROP, ATTACH, COPY, SET, a transaction, ...); the workspace
    tables change only through dfsync. ``strict``: a query DuckDB cannot parse is refused with
    DuckDB's message (a DuckDB workspace); otherwise it is left to the server, whose read-only
    transaction refuses a write anyway (PostgreSQL's dialect is not DuckDB's)."""
    if not isinstance(query, str) or not query.strip():
        raise WorkspaceQueryError("ws.sql() takes one SQL query as a string, e.g. "
                                  "ws.sql(\"SELECT status, count(*) FROM runs GROUP BY ALL\")")
    try:
        kinds = [s.type.name for s in duckdb.extract_statements(query)]
    except duckdb.Error as exc:
        if strict:
            raise query_error(exc) from None
        return
    if len(kinds) != 1 or kinds[0] not in _READING:
        what = f"{len(kinds)} statements ({', '.join(kinds)})" if len(kinds) != 1 else f"a statement that is not a query ({kinds[0]})"
        raise WorkspaceQueryError(
            f"ws.sql() only reads the workspace tables (one SELECT, WITH, DESCRIBE, SHOW or EXPLAIN); it was "
            f"given {what}. The workspace changes only through dfsync (sync.reset(), sync.forget(keys), "
            f"ws.delete_sync(name), ws.purge(), ...); nothing was changed.")


def query_error(exc: Exception) -> Exception:
    """A failed ``Workspace.sql`` query as ``WorkspaceQueryError``, with the database's message."""
    text = redact(str(exc).strip())
    return WorkspaceQueryError(f"ws.sql() could not run the query: {text}\n(ws.sql('SHOW TABLES') lists the "
                               f"workspace tables; nothing was changed)")

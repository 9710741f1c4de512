"""What every workspace store shares: the run counters, the owner token."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import polars as pl

from .._arrow import to_polars
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

"""Connections and schema of the PostgreSQL workspace store (the SQL is in ``_postgres.py``).

Each thread has one connection; the outermost ``connect()``/``transaction()`` block of a thread is
one transaction, committed at its end (inner blocks join it). PostgreSQL has many writers, so
there is no lease: ``lease``/``released``/``release_if_stale`` do nothing. A server that does not
answer is retried for ``busy_timeout`` seconds, then ``WorkspaceBusy``; so is a row lock another
session holds longer than that (``lock_timeout``). A connection lost mid-call is dropped and the
call raises ``WorkspaceBusy``; the next call connects again.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import WorkspaceBusy, WorkspaceError
from ._common import now
from ._migrations import MIGRATIONS, SCHEMA_VERSION
from ._pgcon import PgCon, PgTarget, busy_error, open_connection, unreachable
from ._pgstatecache import GEN_MIGRATION
from ._privileges import denied

__all__ = ["MIGRATIONS_PG", "PgConnections", "pg_ddl"]

# Add-only, like MIGRATIONS: PostgreSQL-only objects, versioned in dfsync_schema_pg.
MIGRATIONS_PG: dict[int, list[str]] = {
    1: [
        # one run per sync, whatever a process does: the backstop of the advisory lock
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_sync ON runs (sync_id) "
        "WHERE status IN ('started','querying','queued','in_progress')",
        "CREATE UNIQUE INDEX IF NOT EXISTS syncs_id ON syncs (id)",
        "CREATE UNIQUE INDEX IF NOT EXISTS runs_id ON runs (id)",
        "CREATE INDEX IF NOT EXISTS events_run ON events (run_id)",
        "CREATE INDEX IF NOT EXISTS events_sync ON events (sync_id)",
        "CREATE INDEX IF NOT EXISTS batches_run ON batches (run_id, batch_no)",
        # DuckDB orders check results by rowid; here an insertion number does
        "ALTER TABLE checks ADD COLUMN IF NOT EXISTS rowid bigserial",
        # DuckDB functions the shared SQL uses, so it (and ws.sql()) reads the same on both
        "CREATE OR REPLACE FUNCTION epoch_ms(t timestamptz) RETURNS bigint LANGUAGE sql IMMUTABLE "
        "AS $$ SELECT (extract(epoch FROM t) * 1000)::bigint $$",
    ],
    2: [
        "CREATE OR REPLACE FUNCTION list_contains(l anyarray, x anyelement) RETURNS boolean LANGUAGE sql "
        "IMMUTABLE AS $$ SELECT x = ANY(l) $$",
    ],
    # fencing and heartbeats (dfsync/store/_pgfence.py): each claim of a run raises its epoch
    3: [
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS owner_epoch BIGINT DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMPTZ",
    ],
    4: ["CREATE UNIQUE INDEX IF NOT EXISTS buckets_run ON buckets (run_id, bucket)"],
    # the delivered state's generation, for this host's local copy of it (dfsync/store/_pgstatecache.py)
    5: GEN_MIGRATION,
}

_TYPES = [(re.compile(r"\bDOUBLE\b"), "DOUBLE PRECISION"), (re.compile(r"\bJSON\b"), "TEXT")]


def pg_ddl(stmt: str) -> str:
    """A DuckDB migration statement as PostgreSQL runs it (types only; the rest is shared SQL)."""
    for pattern, repl in _TYPES:
        stmt = pattern.sub(repl, stmt)
    return stmt


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgConnections:
    """Connections, transactions and migrations of a workspace schema (mixed in before the SQL)."""

    def __init__(self, target: str, *, busy_timeout: float = 30.0, create: bool = True) -> None:
        self.target = PgTarget.parse(target)
        self.path = self.target.display
        self.busy_timeout = busy_timeout
        self.memory = False
        self._key = self.target.key
        self._ledger: tuple[str, int, list[tuple[int, str]]] | None = None
        self._local = threading.local()
        self._owners: dict[int, tuple[Any, int]] = {}  # run id -> (owner connection, sync id)
        self._owners_lock = threading.Lock()
        with self.connect() as con:
            self._migrate(con, create)

    def __repr__(self) -> str:
        return f"<PostgresStore {self.path}>"

    @property
    def staging_root(self) -> str:
        """Where runs of this workspace stage their rows on this host."""
        return os.path.join(os.path.expanduser("~"), ".cache", "dfsync", "staging")

    # ------------------------------------------------------------------ connections
    def _thread_con(self) -> PgCon:
        con = getattr(self._local, "con", None)
        if con is None:
            con = PgCon(open_connection(self.target, self.busy_timeout),
                        reopen=lambda: open_connection(self.target, self.busy_timeout))
            self._local.con = con
            self._local.depth = 0
            self._local.after: list[Callable[[], None]] = []
        if self._local.depth == 0:
            # a connection the server dropped since its last use (a restart) is replaced when the
            # block's first statement finds it dead (no round trip to check it before each block)
            con.fresh = True
        return con

    def _drop_thread_con(self) -> None:
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[PgCon]:
        """The thread's connection; the outermost block is one transaction (commit at its end)."""
        con = self._thread_con()
        self._local.depth += 1
        outer = self._local.depth == 1
        try:
            yield con
            if outer:
                con.commit()
        except BaseException as exc:
            if outer:
                self._local.after.clear()
                if isinstance(exc, WorkspaceBusy) and getattr(exc, "outage", False):
                    self._drop_thread_con()  # a new connection did not come up: said as it is
                    raise
                if unreachable(exc):
                    self._drop_thread_con()
                    raise busy_error(self.target, exc, None) from None
                try:
                    con.rollback()
                except Exception:
                    self._drop_thread_con()
                if getattr(exc, "sqlstate", None) == "42501":  # a privilege no check foresaw
                    raise denied(self.target.where, exc) from None
                if getattr(exc, "sqlstate", None) == "55P03":  # lock_timeout: a row held too long
                    raise WorkspaceBusy(
                        f"workspace busy: a row of the PostgreSQL workspace {self.target.where} stayed locked "
                        f"by another session for {self.busy_timeout:.0f} s; try again") from None
            raise
        finally:
            self._local.depth -= 1
        if outer:
            after, self._local.after = self._local.after, []
            for fn in after:
                fn()

    # the DuckDB store's names for them (its SQL runs on these), old and new
    transaction = _connect = _transaction = connect

    def _after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the current outermost block has committed (now, outside any)."""
        if getattr(self._local, "con", None) is not None and self._local.depth > 0:
            self._local.after.append(fn)
        else:
            fn()

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        yield  # many writers: nothing to hold between operations

    def release_if_stale(self) -> None:
        return None

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        yield

    def checkpoint(self) -> None:
        return None  # each operation committed on the server: nothing left for a close to write

    def compact(self) -> str | None:
        return None  # a pg_dump holds no deleted row; VACUUM FULL is the operator's for the data directory

    def close(self) -> None:
        """Close this thread's connection (runs under way keep theirs)."""
        self._drop_thread_con()

    # ------------------------------------------------------------------ schema
    def _up_to_date(self, con: Any) -> bool:
        schema = _q(self.target.schema)
        if not con.execute("SELECT to_regclass(CAST(? AS text)) IS NOT NULL AND to_regclass(CAST(? AS text)) IS NOT NULL",
                           [f"{schema}.dfsync_schema", f"{schema}.dfsync_schema_pg"]).fetchall()[0][0]:
            return False
        have = con.execute("SELECT (SELECT coalesce(max(version), 0) FROM dfsync_schema), "
                           "(SELECT coalesce(max(version), 0) FROM dfsync_schema_pg)").fetchall()[0]
        return tuple(have) == (SCHEMA_VERSION, max(MIGRATIONS_PG))

    def _migrate(self, con: Any, create: bool = True) -> None:
        if self._up_to_date(con):  # nothing to do: no DDL, no lock (a role that may only read opens it too)
            return
        schema = _q(self.target.schema)
        tables = [r[0] for r in con.execute(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = ? ORDER BY 1",
            [self.target.schema]).fetchall()]
        if "dfsync_schema" not in tables:
            if tables:
                shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
                raise WorkspaceError(
                    f"the schema {self.target.schema!r} of {self.target.where} holds other tables ({shown}), "
                    f"not a dfsync workspace; dfsync did not change it. Give the workspace a schema of its own "
                    f"(postgresql://user@host/db?schema=NAME)")
            if not create:
                raise WorkspaceError(
                    f"no dfsync workspace in {self.target.where}; nothing was created. Pass the workspace "
                    f"your notebook uses: dfsync.Workspace(URI), on the command line --workspace URI")
        # one process migrates at a time (two first opens must not both create the tables)
        con.execute("SELECT pg_advisory_xact_lock(hashtext(?), 0)", [self.target.schema])
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute("CREATE TABLE IF NOT EXISTS dfsync_schema (version INTEGER, applied_at TIMESTAMPTZ)")
        con.execute("CREATE TABLE IF NOT EXISTS dfsync_schema_pg (version INTEGER, applied_at TIMESTAMPTZ)")
        have = con.execute("SELECT coalesce(max(version), 0) FROM dfsync_schema").fetchall()[0][0]
        if have > SCHEMA_VERSION:
            raise WorkspaceError(f"the workspace {self.target.where} was written by a newer dfsync (schema "
                                 f"{have} > {SCHEMA_VERSION}); upgrade dfsync to open it")
        for version in range(have + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                con.execute(pg_ddl(stmt))
            con.execute("INSERT INTO dfsync_schema VALUES (?, ?)", [version, now()])
        have_pg = con.execute("SELECT coalesce(max(version), 0) FROM dfsync_schema_pg").fetchall()[0][0]
        for version in range(have_pg + 1, max(MIGRATIONS_PG) + 1):
            for stmt in MIGRATIONS_PG[version]:
                con.execute(stmt)
            con.execute("INSERT INTO dfsync_schema_pg VALUES (?, ?)", [version, now()])

    def has_table(self, con: Any, name: str) -> bool:
        return bool(con.execute("SELECT to_regclass(?) IS NOT NULL",
                                [f"{_q(self.target.schema)}.{_q(name)}"]).fetchall()[0][0])

    _has_table = has_table


"""The workspace in a PostgreSQL schema: many processes on many hosts share it.

    >>> ws = dfsync.Workspace("postgresql://app:env:PGPASSWORD@db:5432/ops?schema=dfsync")  # doctest: +SKIP

Same tables, states, counters and events as the DuckDB file (:mod:`dfsync.store._duckdb`): this
store inherits its operations and their SQL, run over one ADBC connection per thread
(:mod:`dfsync.store._pgcon` numbers the ``?`` placeholders), and overrides only what differs:

* **No file lock, no lease.** PostgreSQL has many writers (MVCC); each store call is one
  transaction on the thread's connection, so a store call never waits on another sync's run.
  ``lease``/``released``/``release_if_stale`` do nothing. An unreachable server is retried for
  ``busy_timeout`` seconds, then ``WorkspaceBusy``; so is a row lock held longer than that.
* **One run per sync, across hosts.** ``create_run``/``claim_run`` take the session advisory lock
  ``(hashtext(schema), sync_id)`` on a connection of their own, held until the run ends or
  pauses; another process gets ``SyncAlreadyRunning`` naming the run, its process and host, and
  writes nothing. A partial unique index on ``runs(sync_id)`` over the active statuses backs it.
* **Dead owners on any host.** The server drops a session's advisory locks when the session
  ends (process killed, host gone once TCP keepalive gives up), so a run whose sync lock is free
  has no owner: :meth:`recover_orphans` moves it per STATES.md (``in_progress`` -> ``paused``,
  earlier -> ``failed``), from whichever host opens the workspace next. So is a run whose owner's
  heartbeat is older than ``DFSYNC_HEARTBEAT_TTL`` although its session still holds the lock (a
  stopped process): that session is ended first.
* **Fencing.** Each claim of a run raises its ``owner_epoch``; every write of the run checks it
  in its own transaction, so an owner that comes back after a takeover writes nothing
  (:mod:`dfsync.store._pgfence`), and SQL destinations refuse its batches by the same epoch.
* **Schedules claimed once.** ``claim_next_run`` is one compare-and-set ``UPDATE``.
* **Roles.** What the connecting role may do is checked before each action (``_privileges.py``,
  ``require``/``capabilities``); a role that may not write opens the workspace read-only.
* **Migrations** are the DuckDB file's (same versions; ``JSON`` kept as ``text``, ``DOUBLE`` as
  ``double precision``), plus PostgreSQL-only ones in ``dfsync_schema_pg``: both add-only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl

from ..errors import SyncAlreadyRunning
from ..states import RunStatus
from ._common import (
    UNFINISHED_SQL,
    first,
    frame,
    hostname,
    owner_token,
    query_error,
    read_only_statement,
)
from ._duckdb import Store
from ._pgcon import open_connection, unreachable
from ._pgconnections import PgConnections
from ._pgdelivery import PgDeliveryOps
from ._pgfence import PgFencing
from ._pgkeyindex import PgKeyIndex
from ._privileges import PgPrivileges

__all__ = ["PostgresStore"]

class PostgresStore(PgPrivileges, PgKeyIndex, PgFencing, PgConnections, PgDeliveryOps, Store):
    """All reads and writes of one workspace schema in a PostgreSQL database."""

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """``Workspace.sql`` in PostgreSQL's dialect: one statement that only reads, run in a
        read-only transaction (the server refuses any write in it, sqlstate 25006)."""
        read_only_statement(query, strict=False)
        with self._connect() as con:
            con.execute("SET TRANSACTION READ ONLY")
            try:
                return frame(con, query, params)
            except Exception as exc:
                if getattr(exc, "sqlstate", None) in (None, "42501", "55P03") or unreachable(exc):
                    raise  # not the query's fault: said by the connection (PermissionDenied, WorkspaceBusy)
                raise query_error(exc) from None

    # ------------------------------------------------------------------ syncs
    def claim_next_run(self, sync_id: int, expected: datetime | None, new: datetime) -> bool:
        """Compare-and-set ``next_run_at`` in one statement: two schedulers never both win a slot."""
        with self.transaction() as con:
            won = con.execute("UPDATE syncs SET next_run_at = ? WHERE id = ? AND next_run_at IS NOT DISTINCT FROM "
                              "CAST(? AS timestamptz) RETURNING id", [new, sync_id, expected]).fetchall()
        return bool(won)

    def syncs_frame(self) -> pl.DataFrame:
        with self.connect() as con:
            return frame(con,
                """SELECT s.name, s.status, s.definition::jsonb #>> '{source,kind}' AS source,
                          s.definition::jsonb #>> '{destination,kind}' AS destination,
                          s.definition::jsonb #>> '{destination_mode}' AS destination_mode,
                          s.schedule, s.next_run_at, r.id AS last_run_id, r.status AS last_run_status,
                          r.started_at AS last_run_started_at, r.finished_at AS last_run_finished_at,
                          s.definition_version, s.session_only, s.id AS sync_id
                   FROM syncs s LEFT JOIN (
                       SELECT DISTINCT ON (sync_id) * FROM runs ORDER BY sync_id, id DESC
                   ) r ON r.sync_id = s.id ORDER BY s.name""")

    # ------------------------------------------------------------------ one run per sync
    def _sync_lock(self, sync_id: int) -> Any:
        """A connection holding this sync's advisory lock, or None if another session holds it."""
        raw = open_connection(self.target, self.busy_timeout)
        try:
            with raw.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(hashtext($1), CAST($2 AS integer))", [self.target.schema, int(sync_id)])
                got = cur.fetchall()[0][0]
            raw.commit()
        except BaseException:
            raw.close()
            raise
        if not got:
            raw.close()
            return None
        return raw

    def _holder(self, sync_id: int) -> SyncAlreadyRunning:
        """The error for a sync whose lock another session holds, naming its run when it shows."""
        deadline = time.monotonic() + 2.0
        while True:
            with self.connect() as con:
                row = first(con.execute(
                    "SELECT id, status, owner_pid, owner_host FROM runs WHERE sync_id = ? AND status IN "
                    f"{UNFINISHED_SQL} ORDER BY id DESC LIMIT 1", [sync_id]))
            if row is not None and row[1] != "paused":
                return SyncAlreadyRunning(
                    f"run {row[0]} of this sync is {row[1]} in process {row[2]} on {row[3]}; wait for it "
                    f"(run.wait()) or abort it (run.abort()) before starting another")
            if time.monotonic() >= deadline:
                if row is not None:
                    return SyncAlreadyRunning(
                        f"run {row[0]} of this sync is being resumed by process {row[2]} on {row[3]}; wait for "
                        f"it (run.wait()) or abort it (run.abort()) before starting another")
                return SyncAlreadyRunning("another process is starting a run of this sync; wait for it, "
                                          "or abort it, before starting another")
            time.sleep(0.05)

    def _own(self, run_id: int, sync_id: int, owner: Any, epoch: int) -> None:
        with self._owners_lock:
            self._owners[run_id] = (owner, sync_id)
        self._claimed(run_id, sync_id, epoch)
        self._start_heartbeat(run_id)

    def _release(self, run_id: int) -> None:
        self._forget_claim(run_id)
        self._close_owner(run_id)  # ending the session frees its advisory lock

    def create_run(self, sync_id: int, definition_version: int, trigger: str) -> int:
        owner = self._sync_lock(sync_id)
        if owner is None:
            raise self._holder(sync_id)
        try:
            with self.transaction() as con:
                rid = super().create_run(sync_id, definition_version, trigger)
                con.execute("UPDATE runs SET owner_epoch = 1, heartbeat_at = now() WHERE id = ?", [rid])
        except Exception as exc:
            owner.close()
            if getattr(exc, "sqlstate", None) == "23505":  # the unique index: someone else's run is active
                raise self._holder(sync_id) from None
            raise
        self._own(rid, sync_id, owner, 1)
        return rid

    def claim_run(self, run_id: int, sync_id: int) -> None:
        """Own a paused run about to be resumed: the sync's lock, then a compare-and-set on its status."""
        owner = self._sync_lock(sync_id)
        if owner is None:
            raise self._holder(sync_id)
        try:
            with self.transaction() as con:
                self._refuse_if_running(con, sync_id)
                won = con.execute(  # a new epoch: whoever owned it before is fenced out
                    "UPDATE runs SET owner_pid = ?, owner_host = ?, owner_token = ?, request = NULL, "
                    "owner_epoch = coalesce(owner_epoch, 0) + 1, heartbeat_at = now() "
                    "WHERE id = ? AND status = 'paused' RETURNING owner_epoch",
                    [os.getpid(), hostname(), owner_token(), run_id]).fetchall()
            if not won:
                raise SyncAlreadyRunning(f"run {run_id} of this sync is no longer paused: another process "
                                         f"resumed it meanwhile; see sync.runs()")
        except BaseException:
            owner.close()
            raise
        self._own(run_id, sync_id, owner, int(won[0][0]))

    def transition_run(self, run_id: int, target: RunStatus, detail: str = "", *, error: str | None = None,
                       error_kind: str | None = None, con: Any = None) -> RunStatus:
        out = super().transition_run(run_id, target, detail, error=error, error_kind=error_kind, con=con)
        if target.terminal or target == RunStatus.PAUSED:  # any host may resume or start the next run
            self._after_commit(lambda: self._release(run_id))
        return out

    def recover_orphans(self, is_alive: Any) -> list[tuple[int, str, str]]:
        """Runs without an owner: this process's runs by ``is_alive``; others' when their sync lock is
        free, or when their owner's heartbeat is older than the bound (its session is ended then)."""
        me = owner_token()

        def alive(run_id: int, pid: int, host: str, token: str) -> bool:
            if token == me:
                return bool(is_alive(run_id, pid, host, token))
            with self.connect() as con:
                sync_id = con.execute("SELECT sync_id FROM runs WHERE id = ?", [run_id]).fetchall()[0][0]
            probe = self._sync_lock(sync_id)
            if probe is not None:
                probe.close()
                return False  # the owner's session is gone
            if not self._heartbeat_stale(run_id):
                return True  # the owner's session holds the lock and its heart beats
            return not self._end_lock_holder(sync_id)  # stopped or cut off: its session is ended

        moved = super().recover_orphans(alive)
        for rid, _, _ in moved:
            self._release(rid)
        self.prune_local_copies()  # at every open and a scheduler's periodic check
        return moved

    def close(self) -> None:
        self.release_local_copies()
        super().close()

"""Owner epochs, fencing and heartbeats of runs in a PostgreSQL workspace.

Each claim of a run (``create_run``: 1; ``claim_run`` of a paused run: +1) and each move of it
by a process that does not own it (a dead owner's run paused or failed by ``recover_orphans``,
a paused run aborted elsewhere: +1) raises ``runs.owner_epoch``. The owning store remembers the
epoch it claimed, and every write of the run (write-ahead, batch confirmation, settling, counters,
records, checks, events, transitions, the run's end) begins in its transaction with

    UPDATE runs SET heartbeat_at = now() WHERE id = $run AND owner_epoch = $mine

which both beats the heart and fences: when another process took the run over meanwhile, no row
matches, :class:`~dfsync.errors.RunTakenOver` is raised and the transaction is rolled back, so an
owner that was only stopped (SIGSTOP, a network partition) and comes back writes nothing. The
``UPDATE`` locks the run's row until the write commits, so a takeover (which updates that row)
either waits for a write under way or fences it.

A thread per owned run beats the heart every ``heartbeat_ttl / 4`` seconds (``DFSYNC_HEARTBEAT_TTL``,
60 s) on the run's lock connection, re-taking the sync's advisory lock when the server dropped it
(a restart). A run whose heartbeat is older than ``heartbeat_ttl`` counts as dead even when a
session still holds its sync lock (a stopped process, a partitioned host): ``recover_orphans``
ends that session (``pg_terminate_backend``) and moves the run per STATES.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from .._settings import setting
from ..errors import RunTakenOver
from ..states import RunStatus
from ._pgcon import unreachable

__all__ = ["PgFencing", "heartbeat_ttl"]

log = logging.getLogger("dfsync.store")


def heartbeat_ttl() -> float:
    return max(0.5, float(setting("heartbeat_ttl")))


def _run_arg(position: int, name: str):  # type: ignore[no-untyped-def]
    """A store write of one run, fenced by this store's epoch of that run (see the module docstring)."""

    def method(self, *args: Any, **kw: Any) -> Any:  # type: ignore[no-untyped-def]
        run_id = args[position] if len(args) > position else kw.get("run_id")
        with self.transaction() as con:
            if run_id is not None:
                self._fence(con, int(run_id))
            return getattr(super(PgFencing, self), name)(*args, **kw)

    method.__name__ = name
    return method


class PgFencing:
    """Mixed in before :class:`~dfsync.store._pgconnections.PgConnections` in ``PostgresStore``."""

    _owners: dict[int, tuple[Any, int]]
    _owners_lock: threading.Lock
    target: Any
    busy_timeout: float

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._epochs: dict[int, int] = {}  # run id -> the epoch this store claimed it with
        self._run_syncs: dict[int, int] = {}  # run id -> its sync id, for the runs in _epochs
        self._beats: dict[int, threading.Event] = {}  # run id -> stops its heartbeat thread
        self._beat_locks: dict[int, threading.Lock] = {}  # run id -> held while its lock connection is used
        super().__init__(*args, **kw)

    # ------------------------------------------------------------------ the fence
    def _fence(self, con: Any, run_id: int) -> None:
        epoch = self._epochs.get(run_id)
        if epoch is None:
            return  # not a run of this store: a recovery, a request, a reader
        if not con.execute("UPDATE runs SET heartbeat_at = now() WHERE id = ? AND owner_epoch = ? RETURNING id",
                           [run_id, epoch]).fetchall():
            self._lost(run_id)
            raise RunTakenOver(
                f"run {run_id} was taken over by another process while this one was stopped or cut off from "
                f"the workspace for longer than the heartbeat bound (DFSYNC_HEARTBEAT_TTL, {heartbeat_ttl():g} s); "
                f"this process stopped working on it and changed nothing. See sync.runs() for how it went on")

    def owner_epoch(self, run_id: int) -> int | None:
        """The epoch a destination fences this run's batches with: this store's claim, else the row's."""
        if run_id in self._epochs:
            return self._epochs[run_id]
        with self.transaction() as con:
            row = con.execute("SELECT owner_epoch FROM runs WHERE id = ?", [run_id]).fetchall()
        return int(row[0][0]) if row and row[0][0] else None

    def _claimed(self, run_id: int, sync_id: int, epoch: int) -> None:
        # a run of the sync this store lost earlier: its runner has stopped (one run per sync and
        # process, dfsync._registry), so its stale epoch fences nothing any more
        for lost in [r for r, s in list(self._run_syncs.items()) if s == sync_id and r != run_id]:
            self._forget_claim(lost)
        self._epochs[run_id] = epoch
        self._run_syncs[run_id] = sync_id

    def _lost(self, run_id: int) -> None:
        """Taken over: no more heartbeats, the lock connection closed; the stale epoch is kept, so every
        later write of the run by this store is refused too."""
        stop = self._beats.pop(run_id, None)
        if stop is not None:
            stop.set()
        self._close_owner(run_id)

    def _close_owner(self, run_id: int) -> None:
        """Close the run's lock connection (ending its session frees the sync's advisory lock), never
        while its heartbeat thread uses it."""
        with self._beat_locks.pop(run_id, None) or contextlib.nullcontext():
            with self._owners_lock:
                entry = self._owners.pop(run_id, None)
            if entry is not None:
                with contextlib.suppress(Exception):
                    entry[0].close()

    def _forget_claim(self, run_id: int) -> None:
        self._epochs.pop(run_id, None)
        self._run_syncs.pop(run_id, None)
        stop = self._beats.pop(run_id, None)
        if stop is not None:
            stop.set()

    # fenced writes (argument position of the run id)
    write_ahead = _run_arg(1, "write_ahead")
    confirm_batch = _run_arg(1, "confirm_batch")
    settle_inflight = _run_arg(1, "settle_inflight")
    discard = _run_arg(1, "discard")
    keep_applied_run = _run_arg(1, "keep_applied_run")
    store_records = _run_arg(1, "store_records")
    finish_run = _run_arg(1, "finish_run")
    fail_run = _run_arg(1, "fail_run")
    note = _run_arg(1, "note")
    begin_buckets = _run_arg(1, "begin_buckets")
    set_bucket = _run_arg(1, "set_bucket")
    add_counters = _run_arg(0, "add_counters")
    set_counters = _run_arg(0, "set_counters")
    set_run_fields = _run_arg(0, "set_run_fields")
    store_checks = _run_arg(0, "store_checks")
    copy_checks = _run_arg(0, "copy_checks")

    def set_sync_fields(self, sync_id: int, **fields: Any) -> None:
        """Fenced by every run of the sync this store owns (what a run learns: key types, schema,
        snapshot, cursor), but a scheduler's ``next_run_at``."""
        with self.transaction() as con:
            runs = [r for r, s in list(self._run_syncs.items()) if s == sync_id]
            for run_id in runs if set(fields) - {"next_run_at"} else []:
                self._fence(con, run_id)
            super().set_sync_fields(sync_id, **fields)  # type: ignore[misc]

    def transition_run(self, run_id: int, target: RunStatus, detail: str = "", *, error: str | None = None,
                       error_kind: str | None = None, con: Any = None) -> RunStatus:
        with self.transaction() as c:
            if run_id in self._epochs:
                self._fence(c, run_id)
            elif target == RunStatus.PAUSED or target.terminal:
                # moved by a process that does not own it (a dead owner's run recovered, a paused run
                # aborted): whoever owned it before is fenced out from now on
                c.execute("UPDATE runs SET owner_epoch = owner_epoch + 1 WHERE id = ?", [run_id])
            return super().transition_run(run_id, target, detail, error=error,  # type: ignore[misc]
                                          error_kind=error_kind, con=c)

    # ------------------------------------------------------------------ the heartbeat
    def _start_heartbeat(self, run_id: int) -> None:
        stop = threading.Event()
        self._beats[run_id] = stop
        self._beat_locks[run_id] = threading.Lock()
        threading.Thread(target=self._beat, args=(run_id, stop), name=f"dfsync-heartbeat-{run_id}",
                         daemon=True).start()

    def _beat(self, run_id: int, stop: threading.Event) -> None:
        interval = heartbeat_ttl() / 4
        while not stop.wait(interval):
            try:
                if not self._beat_once(run_id, stop):
                    if not stop.is_set():
                        self._lost(run_id)  # taken over: the run's next write raises RunTakenOver
                    return
            except Exception as exc:  # the server away: the next beat tries again
                log.debug("heartbeat of run %s: %s", run_id, exc)

    def _beat_once(self, run_id: int, stop: threading.Event) -> bool:
        lock = self._beat_locks.get(run_id)
        if lock is None:
            return False
        with lock:
            entry = self._owners.get(run_id)
            epoch = self._epochs.get(run_id)
            if entry is None or epoch is None or stop.is_set():
                return False
            owner, sync_id = entry
            try:
                return self._beat_on(owner, run_id, epoch)
            except Exception as exc:
                if not unreachable(exc):  # the connection (and the lock it holds) is fine: next beat
                    with contextlib.suppress(Exception):
                        owner.rollback()
                    raise
                with contextlib.suppress(Exception):
                    owner.close()
        # the lock connection broke (a server restart ends every session): a new one, and the
        # sync's lock again (unless someone else holds it by now), waiting for the server unlocked
        fresh = self._sync_lock(sync_id)  # type: ignore[attr-defined]
        if fresh is None:
            raise RuntimeError("the sync's lock is held by another session")
        with lock:
            if stop.is_set() or self._owners.get(run_id, (None,))[0] is not owner:
                fresh.close()
                return False
            self._owners[run_id] = (fresh, sync_id)
            return self._beat_on(fresh, run_id, epoch)

    @staticmethod
    def _beat_on(raw: Any, run_id: int, epoch: int) -> bool:
        """One beat; False once the run was taken over. A run row locked by a write of the run
        itself (which beats too) is not waited for."""
        with raw.cursor() as cur:
            cur.execute("UPDATE runs SET heartbeat_at = now() WHERE id = (SELECT id FROM runs WHERE id = $1 "
                        "AND owner_epoch = $2 FOR UPDATE SKIP LOCKED) RETURNING id", [run_id, epoch])
            alive = bool(cur.fetchall())
            if not alive:  # busy, or taken over: the committed epoch tells
                cur.execute("SELECT owner_epoch = $2 FROM runs WHERE id = $1", [run_id, epoch])
                row = cur.fetchall()
                alive = bool(row and row[0][0])
        raw.commit()
        return alive

    # ------------------------------------------------------------------ dead owners
    def _heartbeat_stale(self, run_id: int) -> bool:
        """Has the run's owner not beaten its heart for longer than the bound (server clock)?"""
        with self.transaction() as con:
            row = con.execute("SELECT heartbeat_at < now() - make_interval(secs => ?) FROM runs WHERE id = ?",
                              [heartbeat_ttl(), run_id]).fetchall()
        return bool(row and row[0][0])

    def _end_lock_holder(self, sync_id: int) -> bool:
        """End the session holding the sync's lock (a stopped owner's); True once the lock is free."""
        try:
            with self.transaction() as con:
                con.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = (hashtext(?)::bigint & 4294967295)::oid AND objid = CAST(? AS bigint)::oid "
                    "AND objsubid = 2 AND pid <> pg_backend_pid()", [self.target.schema, int(sync_id)]).fetchall()
        except Exception as exc:  # another role's session (no right to end it): the run is left alone
            log.warning("cannot end the session holding the lock of sync %s (its run's heartbeat is stale): %s",
                        sync_id, exc)
            return False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self._sync_lock(sync_id)  # type: ignore[attr-defined]
            if probe is not None:
                probe.close()
                return True
            time.sleep(0.05)
        return False

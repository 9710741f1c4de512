"""The DuckDB workspace file: the SQL of every workspace table.

Tables (schema version in ``dfsync_schema``; migrations only ever add):

    syncs      one row per sync: name, status, definition (JSON), cursor, schedule
    runs       one row per run: status, owner process, error, counters
    events     every transition of a sync or a run, with time and detail
    batches    the transfer ledger on our side: in-flight / committed per (run, batch)
    checks     per-run validation results
    buckets    per (run, bucket) of a partitioned run: state, attempts, counters, last error
    state_<id> per sync: key columns + fingerprint of every row sent, with its run and batch;
               _ok marks rows the destination confirmed (the delivered state), the rest are in flight
    rec_<id>   per sync: records kept after a run (failed, invalid, skipped; small runs: all)

Connections, leases and the hand-over between processes: :mod:`dfsync.store._filelock`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from .._ident import quote
from ..errors import InvalidTransition, RunNotFoundError, SyncNotFoundError
from ..states import DestinationMode, RunStatus, SyncStatus, check_transition, sync_target
from ._buckets import BucketOps
from ._common import (
    ACTIVE_SQL,
    COUNTERS,
    UNFINISHED_SQL,
    decode_sync,
    first,
    frame,
    hostname,
    now,
    one_row,
    owner_token,
    query_error,
    read_only_statement,
)
from ._delivery import DeliveryOps
from ._erasure import ErasureOps
from ._filelock import FileConnections
from ._privileges import ALL_ACTIONS


class Store(DeliveryOps, BucketOps, ErasureOps, FileConnections):
    """All reads and writes of one workspace file."""

    def ledger_id(self, run_id: int) -> str:
        """The id a run's destination ledger key carries: the workspace's id, or the one it moved to
        for runs from some id on (:meth:`move_ledger`); "" for runs begun before it had one."""
        wid, first, moves = self._ledger_ids()
        for start, moved in moves:
            if run_id >= start:
                return moved
        return wid if run_id >= first else ""

    def workspace_id(self) -> str:
        """The workspace's own id (keys the hashes of sensitive values); never moves."""
        return self._ledger_ids()[0]

    def _ledger_ids(self) -> tuple[str, int, list[tuple[int, str]]]:
        if self._ledger is None:
            with self._connect() as con:
                meta = dict(con.execute("SELECT key, value FROM workspace_meta").fetchall())
            moves = sorted(((int(k.split(":", 1)[1]), v) for k, v in meta.items()
                            if k.startswith("ledger_id_from_run:")), reverse=True)
            self._ledger = (meta["id"], int(meta["ledger_id_from_run"]), moves)
        return self._ledger

    def move_ledger(self, from_run: int) -> None:
        """Runs from ``from_run`` on carry a new id in destination ledgers: a destination already
        holds batches under a key this workspace would use again (the file was restored from an
        older copy, so its run ids repeat). Stored as a key of its own: older dfsyncs ignore it."""
        import uuid

        with self._transaction() as con:
            con.execute("INSERT INTO workspace_meta VALUES (?, ?)",
                        [f"ledger_id_from_run:{int(from_run)}", uuid.uuid4().hex])
        self._ledger = None

    def owner_epoch(self, run_id: int) -> int | None:
        """None: the file's one-writer lease serializes owners, a destination needs no fence."""
        return None

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """A query over the workspace tables, for the user (``Workspace.sql``): one statement that
        only reads (:func:`read_only_statement`), run in a read-only transaction."""
        read_only_statement(query, strict=True)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION READ ONLY")
            try:
                return frame(con, query, params)
            except duckdb.Error as exc:
                raise query_error(exc) from None
            finally:
                con.execute("ROLLBACK")

    def capabilities(self, sync_id: int | None = None) -> frozenset[str]:
        """The actions this workspace's user may take: a file's owner may take them all."""
        return ALL_ACTIONS

    def require(self, action: str, sync_id: int | None = None) -> None:
        """Raise ``PermissionDenied`` unless the user may take ``action``: a file's owner always may."""

    def schema_version(self) -> int:
        with self._connect() as con:
            return con.execute("SELECT max(version) FROM dfsync_schema").fetchall()[0][0]

    # ------------------------------------------------------------------ syncs
    def sync_row(self, name: str | None = None, *, sync_id: int | None = None) -> dict[str, Any]:
        with self._connect() as con:
            if sync_id is not None:
                cur = con.execute("SELECT * FROM syncs WHERE id = ?", [sync_id])
            else:
                cur = con.execute("SELECT * FROM syncs WHERE name = ?", [name])
            row = one_row(cur)
            if row is None and sync_id is None:
                names = [r[0] for r in con.execute("SELECT name FROM syncs ORDER BY name").fetchall()]
        if row is None:
            if sync_id is not None:
                raise SyncNotFoundError(f"no sync with id {sync_id}")
            hint = f"; syncs in this workspace: {', '.join(names)}" if names else "; this workspace has no syncs yet (create one with ws.create_sync(...))"
            raise SyncNotFoundError(f"no sync named {name!r}{hint}")
        return decode_sync(row)

    def sync_exists(self, name: str) -> bool:
        with self._connect() as con:
            return con.execute("SELECT count(*) FROM syncs WHERE name = ?", [name]).fetchall()[0][0] > 0

    def create_sync(self, name: str, definition: dict, state_key: str, schedule: str | None,
                    next_run_at: datetime | None, session_only: bool) -> int:
        with self._transaction() as con:
            sid = con.execute("SELECT nextval('dfsync_sync_ids')").fetchall()[0][0]
            t = now()
            target = sync_target(None, "create")
            con.execute(
                "INSERT INTO syncs (id, name, status, definition, definition_version, state_key, "
                "schedule, next_run_at, session_only, created_at, updated_at) VALUES (?,?,?,?,1,?,?,?,?,?,?)",
                [sid, name, target.value, json.dumps(definition), state_key, schedule, next_run_at,
                 session_only, t, t],
            )
            self._event(con, sid, None, "sync", None, target.value, "created")
        return sid

    def update_definition(self, sync_id: int, definition: dict, state_key: str, schedule: str | None,
                          next_run_at: datetime | None, session_only: bool, *,
                          forget_cursor: bool = False) -> tuple[int, bool]:
        """Store a changed definition as a new version; returns (version, state reset).
        ``forget_cursor``: the cursor is another column now (the stored cursor is not a value of it)."""
        with self._transaction() as con:
            old = decode_sync(one_row(con.execute("SELECT * FROM syncs WHERE id = ?", [sync_id])))
            if old["definition"] == definition and old["schedule"] == schedule:
                return old["definition_version"], False
            version = old["definition_version"] + 1
            reset = old["state_key"] != state_key
            if reset:  # the delivered state goes: refused as sync.reset() is while a run owns batches
                self._refuse_reset_while_unfinished(con, sync_id, "change its destination or primary key",
                                                    "create_sync again")
            forget = forget_cursor and not reset and old["cursor_value"] is not None
            if forget:  # a paused run would bring the old one back
                self._refuse_reset_while_unfinished(con, sync_id, "change its cursor field", "create_sync again")
            was = old["definition"].get("destination_mode")
            if was == DestinationMode.REPLACE.value and definition.get("destination_mode") != was:
                # a replace run's batches are held aside for its rewrite: resumed batch by batch over
                # them, the delivered state would hold two versions of each key they sent
                self._refuse_reset_while_unfinished(
                    con, sync_id, f"change destination_mode from 'replace' to {definition.get('destination_mode')!r}",
                    "create_sync again")
            con.execute(
                "UPDATE syncs SET definition = ?, definition_version = ?, state_key = ?, schedule = ?, "
                "next_run_at = ?, session_only = ?, updated_at = ? WHERE id = ?",
                [json.dumps(definition), version, state_key, schedule, next_run_at, session_only, now(), sync_id],
            )
            detail = f"definition version {version}"
            if reset:
                for t in ("state", "ahead", "log"):
                    con.execute(f"DROP TABLE IF EXISTS {t}_{sync_id}")
                con.execute("UPDATE syncs SET cursor_value = NULL, fp_algo = NULL, key_types = NULL, "
                            "source_snapshot = NULL, dest_schema = NULL WHERE id = ?", [sync_id])
                detail += "; destination or primary key changed: delivered state reset, every row is sent again"
            elif forget:
                con.execute("UPDATE syncs SET cursor_value = NULL WHERE id = ?", [sync_id])
                detail += "; cursor field changed: the last cursor is forgotten, the next run reads the whole source"
            self._event(con, sync_id, None, "definition", None, None, detail)
        return version, reset

    def set_sync_status(self, sync_id: int, event: str, detail: str = "", con: Any = None) -> SyncStatus:
        if con is None:
            with self._transaction() as c:
                return self.set_sync_status(sync_id, event, detail, con=c)
        current = SyncStatus(con.execute("SELECT status FROM syncs WHERE id = ?", [sync_id]).fetchall()[0][0])
        if event == "enable":
            last = first(con.execute(
                "SELECT status FROM runs WHERE sync_id = ? AND status IN ('success','failed') "
                "ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1", [sync_id]))
            event = {None: "enable", "success": "enable_healthy", "failed": "enable_failed"}[last[0] if last else None]
        target = sync_target(current, event)
        con.execute("UPDATE syncs SET status = ?, updated_at = ? WHERE id = ?", [target.value, now(), sync_id])
        self._event(con, sync_id, None, "sync", current.value, target.value, detail or event)
        return target

    def reset_delivered(self, sync_id: int, detail: str, run_id: int | None = None) -> None:
        """Forget a sync's delivered state and cursor (its next run is a first load).

        Refused while a run of it is going on or paused: that run owns batches in flight.
        ``run_id``: the run that forgets them itself, before it reads its source (its destination
        lost every row, ``dfsync._settle.notice_lost_rows``); its event is that run's.
        """
        with self._transaction() as con:
            if run_id is None:
                self._refuse_reset_while_unfinished(con, sync_id, "reset", "reset")
            con.execute(f"DROP TABLE IF EXISTS state_{int(sync_id)}")
            con.execute(f"DROP TABLE IF EXISTS ahead_{int(sync_id)}")
            con.execute("UPDATE syncs SET cursor_value = NULL, fp_algo = NULL, key_types = NULL, "
                        "source_snapshot = NULL, updated_at = ? WHERE id = ?", [now(), sync_id])
            self._event(con, sync_id, run_id, "reset", None, None, detail)

    @staticmethod
    def _refuse_reset_while_unfinished(con: Any, sync_id: int, action: str, then: str) -> None:
        """SyncAlreadyRunning if a run of the sync is going on or paused (it owns batches in flight)."""
        from ..errors import SyncAlreadyRunning

        row = first(con.execute(
            f"SELECT id, status FROM runs WHERE sync_id = ? AND status IN {UNFINISHED_SQL} "
            "ORDER BY id DESC LIMIT 1", [sync_id]))
        if row is not None:
            what = "wait for it (run.wait())" if row[1] != "paused" else "finish it (sync.run() resumes it)"
            raise SyncAlreadyRunning(f"cannot {action} while run {row[0]} of this sync is {row[1]}: {what} or "
                                     f"abort it (run.abort()), then {then}")

    def set_sync_fields(self, sync_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        vals = [json.dumps(v) if k in ("cursor_value", "key_types", "dest_schema") and v is not None else v
                for k, v in fields.items()]
        with self._connect() as con:
            con.execute(f"UPDATE syncs SET {cols} WHERE id = ?", [*vals, sync_id])

    def claim_next_run(self, sync_id: int, expected: datetime | None, new: datetime) -> bool:
        """Compare-and-set ``next_run_at``: True if it was still ``expected`` (this caller won the slot).
        Another thread of this process (a second ``ws.scheduler()``) changing the row meanwhile
        makes DuckDB refuse the update (a write conflict): that caller took the slot."""
        try:
            with self._transaction() as con:
                row = first(con.execute("SELECT next_run_at FROM syncs WHERE id = ?", [sync_id]))
                if row is None or row[0] != expected:
                    return False
                con.execute("UPDATE syncs SET next_run_at = ? WHERE id = ?", [new, sync_id])
        except duckdb.TransactionException:
            return False
        return True

    def syncs_frame(self) -> pl.DataFrame:
        with self._connect() as con:
            return frame(con, 
                """SELECT s.name, s.status, s.definition->>'$.source.kind' AS source,
                          s.definition->>'$.destination.kind' AS destination,
                          s.definition->>'$.destination_mode' AS destination_mode,
                          s.schedule, s.next_run_at, r.id AS last_run_id, r.status AS last_run_status,
                          r.started_at AS last_run_started_at, r.finished_at AS last_run_finished_at,
                          s.definition_version, s.session_only, s.id AS sync_id
                   FROM syncs s LEFT JOIN (
                       SELECT * FROM runs QUALIFY row_number() OVER (PARTITION BY sync_id ORDER BY id DESC) = 1
                   ) r ON r.sync_id = s.id ORDER BY s.name""")

    def all_syncs(self) -> list[dict[str, Any]]:
        with self._connect() as con:
            cur = con.execute("SELECT * FROM syncs ORDER BY name")
            cols = [d[0] for d in cur.description]
            return [decode_sync(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]

    def delete_sync(self, sync_id: int) -> None:
        with self._transaction() as con:
            for t in ("state", "ahead", "log", "rec"):
                con.execute(f"DROP TABLE IF EXISTS {t}_{sync_id}")
            run_ids = "SELECT id FROM runs WHERE sync_id = ?"
            con.execute(f"DELETE FROM batches WHERE run_id IN ({run_ids})", [sync_id])
            con.execute(f"DELETE FROM checks WHERE run_id IN ({run_ids})", [sync_id])
            con.execute(f"DELETE FROM buckets WHERE run_id IN ({run_ids})", [sync_id])
            con.execute("DELETE FROM events WHERE sync_id = ?", [sync_id])
            con.execute("DELETE FROM runs WHERE sync_id = ?", [sync_id])
            con.execute("DELETE FROM syncs WHERE id = ?", [sync_id])

    # ------------------------------------------------------------------ runs
    def create_run(self, sync_id: int, definition_version: int, trigger: str) -> int:
        with self._transaction() as con:
            self._refuse_if_running(con, sync_id)
            rid = con.execute("SELECT nextval('dfsync_run_ids')").fetchall()[0][0]
            t = now()
            check_transition(None, RunStatus.STARTED, what="run")
            host, pid = hostname(), os.getpid()
            con.execute(
                "INSERT INTO runs (id, sync_id, status, definition_version, trigger, started_at, updated_at, "
                "owner_pid, owner_host, owner_token) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [rid, sync_id, RunStatus.STARTED.value, definition_version, trigger, t, t, pid, host, owner_token()],
            )
            self._event(con, sync_id, rid, "run", None, RunStatus.STARTED.value, f"run created ({trigger})")
        return rid

    def _refuse_if_running(self, con: Any, sync_id: int) -> None:
        from ..errors import SyncAlreadyRunning

        row = first(con.execute(
            "SELECT id, status, owner_pid, owner_host, owner_token FROM runs WHERE sync_id = ? AND status IN "
            f"{ACTIVE_SQL} ORDER BY id DESC LIMIT 1", [sync_id]))
        if row is not None:
            raise SyncAlreadyRunning(
                f"run {row[0]} of this sync is {row[1]} in process {row[2]} on {row[3]}; wait for it "
                f"(run.wait()) or abort it (run.abort()) before starting another"
            )

    def claim_run(self, run_id: int, sync_id: int) -> None:
        """Make this process the owner of a paused run it is about to resume."""
        with self._transaction() as con:
            self._refuse_if_running(con, sync_id)
            con.execute("UPDATE runs SET owner_pid = ?, owner_host = ?, owner_token = ?, request = NULL WHERE id = ?",
                        [os.getpid(), hostname(), owner_token(), run_id])

    def transition_run(self, run_id: int, target: RunStatus, detail: str = "", *, error: str | None = None,
                       error_kind: str | None = None, con: Any = None) -> RunStatus:
        """The one place a run's status changes; appends the event in the same transaction."""
        if con is None:
            with self._transaction() as c:
                return self.transition_run(run_id, target, detail, error=error, error_kind=error_kind, con=c)
        sync_id, cur = first(con.execute("SELECT sync_id, status FROM runs WHERE id = ?", [run_id]))
        current = RunStatus(cur)
        check_transition(current, target, what="run")
        if target == RunStatus.PAUSED and current != RunStatus.IN_PROGRESS and not self._resumed(con, run_id):
            raise InvalidTransition(f"a run cannot go from {current} to paused unless it was resumed from paused "
                                    f"(nothing was sent yet: it fails instead)")
        t = now()
        fields = "status = ?, updated_at = ?"
        vals: list[Any] = [target.value, t]
        if target.terminal:
            fields += ", finished_at = ?, request = NULL"
            vals.append(t)
        if error is not None:
            fields += ", error = ?, error_kind = ?"
            vals += [error, error_kind]
        elif current == RunStatus.PAUSED and not target.terminal:  # resumed: why it paused is history
            fields += ", error = NULL, error_kind = NULL"
        con.execute(f"UPDATE runs SET {fields} WHERE id = ?", [*vals, run_id])
        self._event(con, sync_id, run_id, "run", current.value, target.value, detail)
        if target.terminal:
            status = SyncStatus(con.execute("SELECT status FROM syncs WHERE id = ?", [sync_id]).fetchall()[0][0])
            if status != SyncStatus.DISABLED:
                event = "run_succeeded" if target == RunStatus.SUCCESS else "run_failed"
                self.set_sync_status(sync_id, event, f"run {run_id} {target.value}", con=con)
        return target

    @staticmethod
    def _resumed(con: Any, run_id: int) -> bool:
        """Was this run resumed from ``paused`` (so it may own batches it already applied)?"""
        return con.execute("SELECT count(*) > 0 FROM events WHERE run_id = ? AND kind = 'run' "
                           "AND from_status = 'paused'", [run_id]).fetchall()[0][0]

    def run_row(self, run_id: int) -> dict[str, Any]:
        with self._connect() as con:
            row = one_row(con.execute("SELECT * FROM runs WHERE id = ?", [run_id]))
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id} in this workspace (sync.runs() lists a sync's runs)")
        return row

    def runs_frame(self, sync_id: int | None = None, limit: int | None = None) -> pl.DataFrame:
        where = "WHERE r.sync_id = ?" if sync_id is not None else ""
        lim = f"LIMIT {int(limit)}" if limit else ""
        with self._connect() as con:
            runs = frame(con,
                f"""SELECT r.id AS run_id, s.name AS sync, r.status, r.trigger, r.definition_version,
                       r.started_at, r.finished_at,
                       round((epoch_ms(coalesce(r.finished_at, r.updated_at)) - epoch_ms(r.started_at)) / 1000.0, 3)
                           AS duration_s,
                       {", ".join(f"r.{c}" for c in COUNTERS)}, r.batches, r.error
                    FROM runs r JOIN syncs s ON s.id = r.sync_id {where}
                    ORDER BY r.id DESC {lim}""", [sync_id] if sync_id is not None else [])
        # PostgreSQL computes it as numeric (a polars Decimal): seconds are a float on every store
        return runs.with_columns(pl.col("duration_s").cast(pl.Float64))

    def run_count(self, sync_id: int) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT count(*) FROM runs WHERE sync_id = ?", [sync_id]).fetchall()[0][0])

    def latest_run_id(self, sync_id: int, status: Sequence[str] | None = None) -> int | None:
        q = "SELECT max(id) FROM runs WHERE sync_id = ?"
        args: list[Any] = [sync_id]
        if status:
            q += f" AND status IN ({','.join('?' * len(status))})"
            args += list(status)
        with self._connect() as con:
            return con.execute(q, args).fetchall()[0][0]

    def add_counters(self, run_id: int, **deltas: int) -> None:
        with self._connect() as con:
            self._add_counters(con, run_id, deltas)

    @staticmethod
    def _add_counters(con: Any, run_id: int, deltas: dict[str, int]) -> None:
        deltas = {k: v for k, v in deltas.items() if v}
        if not deltas:
            return
        sets = ", ".join(f"{k} = {k} + ?" for k in deltas)
        con.execute(f"UPDATE runs SET {sets}, updated_at = ? WHERE id = ?", [*deltas.values(), now(), run_id])

    def set_counters(self, run_id: int, **values: int) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._connect() as con:
            con.execute(f"UPDATE runs SET {sets}, updated_at = ? WHERE id = ?", [*values.values(), now(), run_id])

    def set_run_fields(self, run_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as con:
            con.execute(f"UPDATE runs SET {cols} WHERE id = ?", [*fields.values(), run_id])

    def request(self, run_id: int, what: str | None) -> None:
        with self._connect() as con:
            con.execute("UPDATE runs SET request = ? WHERE id = ?", [what, run_id])

    def pending_request(self, run_id: int) -> str | None:
        with self._connect() as con:
            row = first(con.execute(
                "SELECT r.request, s.status FROM runs r JOIN syncs s ON s.id = r.sync_id WHERE r.id = ?",
                [run_id]))
        if row[0]:
            return row[0]
        return "pause" if row[1] == SyncStatus.DISABLED.value else None

    def events_frame(self, run_id: int | None = None, sync_id: int | None = None) -> pl.DataFrame:
        if run_id is not None:
            where, arg = "run_id = ?", run_id
        else:
            where, arg = "sync_id = ?", sync_id
        with self._connect() as con:
            return frame(con, 
                f"SELECT ts, kind, from_status, to_status, detail, run_id FROM events WHERE {where} ORDER BY id",
                [arg])

    def note(self, sync_id: int, run_id: int | None, detail: str, kind: str = "note") -> None:
        with self._connect() as con:
            self._event(con, sync_id, run_id, kind, None, None, detail)

    def _event(self, con: Any, sync_id: int, run_id: int | None, kind: str,
               from_status: str | None, to_status: str | None, detail: str) -> None:
        from ..errors import redact

        con.execute(
            "INSERT INTO events VALUES (nextval('dfsync_event_ids'), ?, ?, ?, ?, ?, ?, ?)",
            [now(), sync_id, run_id, kind, from_status, to_status, redact(detail)],
        )

    # ------------------------------------------------------------------ orphans
    def recover_orphans(self, is_alive: Any) -> list[tuple[int, str, str]]:
        """Runs whose owner process is gone: in_progress -> paused, earlier -> failed.

        A run resumed from ``paused`` goes back to ``paused`` from ``querying``/``queued`` too:
        the batches it applied before stay its own, and the next run resumes it again.
        """
        with self._connect() as con:
            rows = con.execute(
                "SELECT id, status, owner_pid, owner_host, owner_token FROM runs "
                f"WHERE status IN {ACTIVE_SQL}").fetchall()
        moved = []
        for rid, status, pid, host, token in rows:
            if is_alive(rid, pid, host, token):
                continue
            with self._transaction() as con:
                cur = first(con.execute("SELECT status, owner_token FROM runs WHERE id = ?", [rid]))
                if cur[0] != status or cur[1] != token:
                    continue
                if status == RunStatus.IN_PROGRESS.value or (
                        status in (RunStatus.QUERYING.value, RunStatus.QUEUED.value) and self._resumed(con, rid)):
                    self.transition_run(rid, RunStatus.PAUSED, "owner process gone", con=con,
                                        error="paused: the process running it died; the next run resumes it",
                                        error_kind="owner_gone")
                    moved.append((rid, status, "paused"))
                else:
                    self.transition_run(rid, RunStatus.FAILED, "owner process gone", con=con,
                                        error="interrupted: the process running it died before anything was sent",
                                        error_kind="interrupted")
                    moved.append((rid, status, "failed"))
        return moved

    # ------------------------------------------------------------------ delivered state
    def _has_table(self, con: Any, name: str) -> bool:
        return con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
            [name]).fetchall()[0][0] > 0

    def batch_rows(self, run_id: int, status: str | None = None) -> list[tuple[int, str, int]]:
        q = "SELECT batch_no, status, rows FROM batches WHERE run_id = ?"
        args: list[Any] = [run_id]
        if status:
            q += " AND status = ?"
            args.append(status)
        with self._connect() as con:
            return con.execute(q + " ORDER BY batch_no", args).fetchall()

    def inflight_batches(self, sync_id: int) -> list[tuple[int, int]]:
        with self._connect() as con:
            return con.execute(
                "SELECT b.run_id, b.batch_no FROM batches b JOIN runs r ON r.id = b.run_id "
                "WHERE r.sync_id = ? AND b.status = 'inflight' ORDER BY b.run_id, b.batch_no", [sync_id]).fetchall()

    def checks_frame(self, run_id: int) -> pl.DataFrame:
        with self._connect() as con:
            return frame(con, 
                "SELECT check_name, kind, column_name, level, scope, success, element_count, unexpected_count, "
                f"unexpected_percent, {self._check_examples()} FROM checks WHERE run_id = ? ORDER BY rowid",
                [run_id])

    def _check_examples(self) -> str:
        """The columns of a check result holding example failing values (record values)."""
        return "partial_unexpected_list, result"

    # ------------------------------------------------------------------ what the panels explain
    def run_timeline(self, run_id: int) -> list[tuple[str, datetime]]:
        """(state entered, when) for every state change of a run, oldest first."""
        with self._connect() as con:
            return con.execute("SELECT to_status, ts FROM events WHERE run_id = ? AND kind = 'run' ORDER BY id",
                               [run_id]).fetchall()

    def failed_checks(self, run_id: int) -> list[dict[str, Any]]:
        """The checks of a run that failed, most rows first: name, kind, column, level, scope, rows."""
        with self._connect() as con:
            rows = frame(con, "SELECT check_name, kind, column_name, level, scope, unexpected_count FROM checks "
                               "WHERE run_id = ? AND NOT coalesce(success, true) "
                               "ORDER BY unexpected_count DESC NULLS LAST, rowid", [run_id]).to_dicts()
        return [{"check": r["check_name"], "kind": r["kind"], "column": r["column_name"], "level": r["level"],
                 "scope": r.get("scope"), "rows": int(r["unexpected_count"] or 0)} for r in rows]

    def failed_errors(self, sync_id: int, run_id: int, limit: int = 10) -> list[tuple[str, int]]:
        """(destination error, rows) of a run's failed records, most rows first."""
        rt = f"rec_{int(sync_id)}"
        with self._connect() as con:
            if not self._has_table(con, rt):
                return []
            return con.execute(
                f"SELECT coalesce(_error, '(no message)'), count(*) FROM {rt} WHERE _run_id = ? AND _status = 'failed' "
                f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {int(limit)}", [run_id]).fetchall()

    def last_sent_values(self, sync_id: int, key: list[str], keys: Any) -> pl.DataFrame:
        """The values last delivered for ``keys`` (an Arrow table of key columns), from stored records.

        Records of small runs are kept whole, so this knows the previous values of rows sent by
        them; keys without a kept record are absent from the result.
        """
        rt = f"rec_{int(sync_id)}"
        on = " AND ".join(f"r.{quote(k)} IS NOT DISTINCT FROM k.{quote(k)}" for k in key)
        with self._connect() as con:
            if not self._has_table(con, rt):
                return pl.DataFrame()
            con.register("_dfsync_keys", keys)
            try:
                part = ", ".join(f"r.{quote(k)}" for k in key)
                return frame(con, f"SELECT DISTINCT ON ({part}) {self._all_but(con, rt, ['_run_id'], 'r')} FROM {rt} r "
                                  f"JOIN _dfsync_keys k ON {on} WHERE r._status = 'succeeded' "
                                  f"AND r._action IN ('insert', 'update') ORDER BY {part}, r._run_id DESC")
            finally:
                con.unregister("_dfsync_keys")

    def record_sample(self, sync_id: int, run_id: int, status: str, *, check: str | None = None,
                      error: str | None = None, limit: int = 5) -> pl.DataFrame:
        """The first stored records of a run with ``status`` (and failing ``check`` / with ``error``)."""
        rt = f"rec_{int(sync_id)}"
        where, args = ["_run_id = ?", "_status = ?"], [run_id, status]
        if check is not None:
            where.append("list_contains(_checks, ?)")
            args.append(check)
        if error is not None:
            where.append("coalesce(_error, '(no message)') = ?")
            args.append(error)
        with self._connect() as con:
            if not self._has_table(con, rt):
                return pl.DataFrame()
            return frame(con, f"SELECT {self._all_but(con, rt, ['_run_id'])} FROM {rt} WHERE {' AND '.join(where)} "
                              f"ORDER BY rowid LIMIT {int(limit)}", args)


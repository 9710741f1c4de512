"""The operations a workspace store offers (what runner, workspace, run and the widgets may call).

Nothing outside ``dfsync/store/`` gets a raw connection to the workspace: every read and write
of its tables is one of these operations, so a second store (PostgreSQL) implements this list
and nothing else. Each operation is its own transaction unless it says otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from ..states import RunStatus, SyncStatus


class WorkspaceStore(Protocol):
    path: str
    memory: bool

    @property
    def key(self) -> str:
        """What identifies this workspace within the process (keys the per-process registries)."""
        ...

    # ------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Keep the workspace open across many operations of this thread (a run)."""
        ...

    def release_if_stale(self) -> None:
        """At a batch boundary: let other processes in if the lease is old or someone waits."""
        ...

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let go of this thread's lease during long work that does not touch the workspace."""
        ...

    def checkpoint(self) -> None:
        """At a run's end, while its destination closes: write this thread's lease's changes into
        the workspace file now, so the lease's close has little left to write (nothing on a server;
        a checkpoint refused leaves the work to the close, as before)."""
        ...

    def compact(self) -> str | None:
        """After an erasure: rewrite a workspace file so the erased values leave its bytes
        (None: done or nothing to do; else why not, the file unchanged)."""
        ...

    def close(self) -> None: ...

    def ledger_id(self, run_id: int) -> str:
        """The id a run's destination ledger key carries ("" for runs begun before it had one)."""
        ...

    def workspace_id(self) -> str:
        """The workspace's own id (keys the hashes of sensitive values)."""
        ...

    def move_ledger(self, from_run: int) -> None:
        """Runs from ``from_run`` on carry a new id in destination ledgers."""
        ...

    def schema_version(self) -> int: ...

    def owner_epoch(self, run_id: int) -> int | None:
        """The epoch of the run's current claim, which its SQL destinations fence batches with
        (None: the store needs no fence; see dfsync/store/_pgfence.py)."""
        ...

    def capabilities(self, sync_id: int | None = None) -> frozenset[str]:
        """The actions (``_privileges.ACTIONS``: "run", "pause", "delete", ...) the connecting role may take
        (on ``sync_id``; None: on every sync). A DuckDB file's owner may take them all."""
        ...

    def require(self, action: str, sync_id: int | None = None) -> None:
        """Raise ``PermissionDenied`` naming ``action`` and the privileges it lacks, before anything changes."""
        ...

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Any query over the workspace tables, for the user (``Workspace.sql``)."""
        ...

    # ------------------------------------------------------------------ syncs
    def sync_row(self, name: str | None = None, *, sync_id: int | None = None) -> dict[str, Any]: ...

    def sync_exists(self, name: str) -> bool: ...

    def create_sync(self, name: str, definition: dict, state_key: str, schedule: str | None,
                    next_run_at: datetime | None, session_only: bool) -> int: ...

    def update_definition(self, sync_id: int, definition: dict, state_key: str, schedule: str | None,
                          next_run_at: datetime | None, session_only: bool, *,
                          forget_cursor: bool = False) -> tuple[int, bool]:
        """Store a changed definition as a new version; returns (version, state reset)."""
        ...

    def set_sync_status(self, sync_id: int, event: str, detail: str = "") -> SyncStatus: ...

    def reset_delivered(self, sync_id: int, detail: str, run_id: int | None = None) -> None:
        """Forget a sync's delivered state and cursor (its next run is a first load)."""
        ...

    def set_sync_fields(self, sync_id: int, **fields: Any) -> None: ...

    def claim_next_run(self, sync_id: int, expected: datetime | None, new: datetime) -> bool:
        """Compare-and-set ``next_run_at``: True if it was still ``expected`` (this caller won the slot)."""
        ...

    def syncs_frame(self) -> pl.DataFrame: ...

    def all_syncs(self) -> list[dict[str, Any]]: ...

    def delete_sync(self, sync_id: int) -> None: ...

    # ------------------------------------------------------------------ runs
    def create_run(self, sync_id: int, definition_version: int, trigger: str) -> int: ...

    def claim_run(self, run_id: int, sync_id: int) -> None:
        """Make this process the owner of a paused run it is about to resume."""
        ...

    def transition_run(self, run_id: int, target: RunStatus, detail: str = "", *, error: str | None = None,
                       error_kind: str | None = None) -> RunStatus:
        """The one place a run's status changes; appends the event in the same transaction."""
        ...

    def run_row(self, run_id: int) -> dict[str, Any]: ...

    def runs_frame(self, sync_id: int | None = None, limit: int | None = None) -> pl.DataFrame: ...

    def run_count(self, sync_id: int) -> int: ...

    def latest_run_id(self, sync_id: int, status: Sequence[str] | None = None) -> int | None: ...

    def add_counters(self, run_id: int, **deltas: int) -> None: ...

    def set_counters(self, run_id: int, **values: int) -> None: ...

    def set_run_fields(self, run_id: int, **fields: Any) -> None: ...

    def request(self, run_id: int, what: str | None) -> None: ...

    def pending_request(self, run_id: int) -> str | None: ...

    def events_frame(self, run_id: int | None = None, sync_id: int | None = None) -> pl.DataFrame: ...

    def note(self, sync_id: int, run_id: int | None, detail: str, kind: str = "note") -> None: ...

    def recover_orphans(self, is_alive: Any) -> list[tuple[int, str, str]]:
        """Runs whose owner process is gone: in_progress -> paused, earlier -> failed."""
        ...

    # ------------------------------------------------------------------ a partitioned run's buckets
    def begin_buckets(self, sync_id: int, run_id: int, n: int, detail: str) -> None:
        """The transfer starts or resumes over ``n`` buckets: every bucket not done waits (with an event)."""
        ...

    def set_bucket(self, sync_id: int, run_id: int, bucket: int, state: str, counts: dict[str, int] | None = None,
                   error: str | None = None) -> dict[str, int]:
        """A bucket's new state (``running``: one attempt more), ``counts`` added, ``error`` its last;
        returns how many of the run's buckets are in each state."""
        ...

    def buckets(self, run_id: int) -> pl.DataFrame:
        """bucket, state, attempts, sent, succeeded, failed, skipped, batches, error of each bucket of a run."""
        ...

    def bucket_states(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Run -> buckets per state (done, running, waiting, failed), for the runs that have buckets."""
        ...

    # ------------------------------------------------------------------ batches, checks, records
    def batch_rows(self, run_id: int, status: str | None = None) -> list[tuple[int, str, int]]: ...

    def inflight_batches(self, sync_id: int) -> list[tuple[int, int]]: ...

    def checks_frame(self, run_id: int) -> pl.DataFrame: ...

    def run_timeline(self, run_id: int) -> list[tuple[str, datetime]]:
        """(state entered, when) for every state change of a run, oldest first."""
        ...

    def failed_checks(self, run_id: int) -> list[dict[str, Any]]:
        """The checks of a run that failed, most rows first: name, kind, column, level, scope, rows."""
        ...

    def failed_errors(self, sync_id: int, run_id: int, limit: int = 10) -> list[tuple[str, int]]:
        """(destination error, rows) of a run's failed records, most rows first."""
        ...

    def last_sent_values(self, sync_id: int, key: list[str], keys: Any) -> pl.DataFrame:
        """The values last delivered for ``keys`` (an Arrow table of key columns), from stored records."""
        ...

    def record_sample(self, sync_id: int, run_id: int, status: str, *, check: str | None = None,
                      error: str | None = None, limit: int = 5) -> pl.DataFrame:
        """The first stored records of a run with ``status`` (and failing ``check`` / with ``error``)."""
        ...

    # ------------------------------------------------------------------ the delivered state
    def delivered(self, sync_id: int, key: Sequence[str]) -> pa.RecordBatchReader | None:
        """Key columns and ``_fp`` (uint64) of every row the destination confirmed, as a stream of
        Arrow batches; None when the sync delivered nothing yet (no state table)."""
        ...

    def delivered_count(self, sync_id: int) -> int: ...

    def has_delivered(self, sync_id: int) -> bool:
        """Has the destination confirmed any row of this sync (cheaper than counting them)?"""
        ...

    def run_delivered(self, sync_id: int, run_id: int, key: Sequence[str],
                      except_batches: Sequence[int] = ()) -> pa.Table | None:
        """Key, ``_fp``, ``_action``, ``_batch`` of the confirmed rows of one run, but ``except_batches``."""
        ...

    def ensure_state_table(self, sync_id: int, key_types: dict[str, str]) -> None:
        """Create the sync's delivered state (key columns of these DuckDB types) if it has none."""
        ...

    # ------------------------------------------------------------------ the batch ledger
    def next_batch_no(self, run_id: int) -> int: ...

    def write_ahead(self, sync_id: int, run_id: int, batch_no: int, rows: pa.Table, key: Sequence[str],
                    action_column: str, alone: bool = False) -> None:
        """Before a batch is sent (one transaction): its keys, ``_fp`` and actions unconfirmed, the batch in
        flight. ``alone``: the run's only batch (a fused first load); a store may keep it apart until confirmed."""
        ...

    def confirm_batch(self, sync_id: int, run_id: int, batch_no: int, key: Sequence[str],
                      not_delivered: list[list[Any]], keep_superseded: bool, counters: dict[str, int],
                      cursor_max: Any = None, records: pa.Table | None = None) -> None:
        """The destination applied a batch. ONE transaction: the state (rows not delivered dropped; what
        the batch's updates and deletes superseded deleted, or set aside with ``keep_superseded``), the
        batch committed, the run's counters, its ``cursor_max`` (JSON; None: unchanged) and its records."""
        ...

    def settle_inflight(self, sync_id: int, run_id: int, batches: Sequence[int],
                        committed: dict[int, list[list[Any]]], key: Sequence[str], keep_superseded: bool) -> None:
        """One transaction: in-flight batches the destination's ledger has (``committed``: batch -> keys not
        delivered) are confirmed and counted, the others discarded."""
        ...

    def discard(self, sync_id: int, run_id: int, batch_no: int | None = None) -> None:
        """Forget one batch, or every batch of the run (then what it superseded is current again, and the
        run's rows count as not succeeded: its ``sent`` keeps only the rows rejected or skipped)."""
        ...

    def restart_transfer(self, sync_id: int, run_id: int) -> None:
        """A run's transfer starts over (its batches abandoned): its transfer counters are zeroed, its records removed."""
        ...

    def failed_unapplied_runs(self, sync_id: int) -> list[int]:
        """Failed runs with batches not discarded, unless known applied or failed for too many rejected rows."""
        ...

    def keep_applied_run(self, sync_id: int, run_id: int, replace: bool) -> None:
        """A failed run the destination had applied: its rows stay delivered, it is marked ``applied``."""
        ...

    # ------------------------------------------------------------------ records and check results
    def store_records(self, sync_id: int, run_id: int, records: pa.Table) -> None: ...

    def records(self, sync_id: int, run_id: int, status: str | None = None,
                limit: int | None = None) -> pa.Table | None:
        """A run's kept records, oldest batch first (None: the sync kept none)."""
        ...

    def retry_rows(self, sync_id: int, key: Sequence[str],
                   meta_columns: Sequence[str]) -> tuple[pa.Table | None, pa.Table | None]:
        """(rows to send again, keys that failed) from the kept records; (None, None) if there are none."""
        ...

    def skipped_versions(self, sync_id: int, key: Sequence[str], definition_version: int) -> pa.Table | None:
        """Key and ``_fp`` of rows whose latest record says the destination mode skipped them
        (dfsync._retry.state_for_diff); None if there are no records."""
        ...

    def store_checks(self, run_id: int, results: list[dict[str, Any]],
                     proofs: dict[str, dict[str, Any]] | None = None) -> None: ...

    def check_proofs(self, sync_id: int) -> dict[str, dict[str, Any]]:
        """By check name, the last digest of hashes a uniqueness check of the sync's current
        definition proved distinct."""
        ...

    def copy_checks(self, run_id: int, from_run: int) -> None:
        """A run reuses another run's check results (same files, same checks)."""
        ...

    def last_checked_run(self, sync_id: int, run_id: int, definition_version: int) -> int | None: ...

    def requeried(self, run_id: int) -> bool:
        """Did this run go through ``querying`` more than once (in any process)?"""
        ...

    # ------------------------------------------------------------------ the end of a run
    def transfer_done(self, sync_id: int, key: Sequence[str]) -> None:
        """Every batch of the run is confirmed; the destination finishes now, then :meth:`finish_run`
        (a store may prepare the state meanwhile)."""
        ...

    def finish_run(self, sync_id: int, run_id: int, key: Sequence[str], *, replace: bool, fp_algo: str,
                   source_snapshot: str | None, merge_cursor: Callable[[Any, Any], Any] | None,
                   problem: str | None) -> None:
        """One transaction: superseded state gone, records delivered again forgotten, cursor advanced
        (``merge_cursor(sync's, run's)`` on JSON values), then success (or failed with ``problem``)."""
        ...

    def fail_run(self, sync_id: int, run_id: int, error: str, kind: str, detail: str,
                 merge_cursor: Callable[[Any, Any], Any] | None) -> None:
        """One transaction: the cursor its confirmed batches reached (incremental), then failed."""
        ...

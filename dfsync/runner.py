"""One run of a sync, start to end: query -> stage -> check -> push.

Every status change goes through ``Store.transition_run``. The transfer keeps the
workspace exact batch by batch:

1. *before* a batch is sent, its keys and fingerprints go into ``state_<sync>`` marked
   not-yet-confirmed, and the batch is ``inflight`` in ``batches``;
2. the destination applies the batch atomically with its own ledger entry;
3. one workspace transaction then confirms the batch: drops the keys the destination did
   not take, removes the previous versions of updated/deleted keys, marks the rest
   confirmed, stores failed/skipped records and adds the counters.

A crash between 2 and 3 is settled by :func:`dfsync._settle.reconcile` on the next run,
which asks the destination's ledger whether the batch landed. So delivered state never
claims a row the destination lacks, nor forgets one it has.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import traceback
import warnings
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa

from . import _interrupt, _partition, _reads, _registry, _retry, _sensitive, _settle, _words
from ._arrow import bool_array, int_array, string_array
from ._cursor import cursor_from_json, cursor_merge, cursor_to_json, refuse_stuck_values, top_cursor
from ._dryrun import DryRunStore
from ._fused import first_load as fused_first_load
from ._fused_delta import load as load_aside
from ._fused_delta import takes as takes_aside
from ._keyfail import RECORD_RETENTION, keep_invalid_records, keys_and_checks, refuse_emptied_table
from ._writer import DestinationWriter, landed, rebatch
from .destinations.base import (
    ACTION_COLUMN,
    BatchResult,
    DestinationContext,
    DestinationSession,
    WriteBatch,
)
from .errors import (
    DfsyncError,
    EmptySourceError,
    InvalidRecordsError,
    RunTakenOver,
    TransientDestinationError,
    ValidationFailed,
    WorkspaceBusy,
    redact,
)
from .staging import FP_ALGO, Staging
from .states import (
    DestinationMode,
    RecordStatus,
    RunStatus,
    SyncMode,
    checks_outcome,
    every_row_may_fail,
    failed_rows_allowed,
)
from .store import Store

if TYPE_CHECKING:
    from .definition import SyncDefinition


class StopRequested(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


def _dataset_keep(checks: list[Any]) -> list[str] | None:
    """Columns staging keeps for unchanged rows so dataset-level checks see every row read
    (None: all of them); [] without dataset-level checks."""
    if not checks:
        return []
    from .checks import dataset_columns

    return dataset_columns(checks, None)


class DryRun(NamedTuple):
    """What :meth:`Runner.dry_run` found: the staged rows (actions and invalid rows marked), the
    counters the run would set, the check results and the problems of its keys."""

    staging: Staging
    counts: dict[str, int]
    check_results: list[dict[str, Any]]
    problems: list[str]


# ---------------------------------------------------------------------- the run
class Runner:
    """Executes one run. It receives plain data: the sync's definition, its id and name, the
    workspace store and where to stage; it never sees the user-facing handles (the callbacks
    fire on the handle's side once :meth:`execute` returned)."""

    def __init__(self, defn: SyncDefinition, run_id: int, *, sync_id: int, sync_name: str, store: Store,
                 staging_dir: str, resume: bool, dry_run: bool = False) -> None:
        """``dry_run``: for :meth:`dry_run` only (``sync.preview()``: ``run_id`` 0, no run row)."""
        self.defn, self.sync_id, self.sync_name = defn, sync_id, sync_name
        self.dry = dry_run
        self.store: Any = DryRunStore(store) if dry_run else store
        self.staging_dir = staging_dir
        self.run_id = run_id
        self.resume = resume
        #: stop requests, progress hooks and the staged rows shared with callers (dfsync._registry)
        self._control = _registry.run_control(self.store.key, run_id)
        self.staging = None if dry_run else _registry.live_staging(self.store.key, run_id)
        self.session: DestinationSession | None = None
        row = None if dry_run else self.store.run_row(run_id)
        self.status = RunStatus.QUERYING if dry_run else RunStatus(row["status"])
        self.cursor_max: Any = cursor_from_json(row and row["cursor_max"])  # a resumed run's earlier batches'
        self.source_token: str | None = None  # set when this run read (or skipped) an unchanged-files source
        self.reused_checks: int | None = None  # the run whose check results a skipped read reuses
        self.engine: Any = None  # where a partitioned run's buckets run (dfsync.engines; None: here)

    @property
    def staging(self) -> Staging | None:
        return self._control.staging

    @staging.setter
    def staging(self, staging: Staging | None) -> None:
        self._control.staging = staging  # run.records() reads it while the run goes on

    # .............................................................. helpers
    def _context(self, run_id: int, requeried: bool = False) -> DestinationContext:
        return _settle.destination_context(self.store, self.sync_id, self.sync_name, self.defn, run_id, requeried)

    def move_to(self, target: RunStatus, detail: str = "", **kw: Any) -> None:
        self.store.transition_run(self.run_id, target, detail, **kw)
        self.status = target
        self.report()

    def report(self, extra: dict | None = None) -> None:  # progress hooks: the run row (+ extra)
        self._control.report(self.status.value, lambda: {**self.store.run_row(self.run_id), **(extra or {})})

    def check_requests(self) -> None:
        asked = self._control.stop_requested()  # by this process: run.pause()/abort(), sync.disable()
        what = self.store.pending_request(self.run_id) or asked
        if asked == "abort":
            what = "abort"
        if what:
            raise StopRequested(what)

    # .............................................................. main
    def execute(self) -> None:
        try:
            with _interrupt.interruptible(lambda: (self.staging, self.session)):  # Ctrl-C stops a DuckDB statement too
                self._execute()
        except KeyboardInterrupt:
            self._interrupted("interrupted (KeyboardInterrupt)")
            raise
        except StopRequested as stop:
            if stop.what == "abort":
                self._fail("aborted by the user", "aborted")
            else:
                disabled = self.store.sync_row(sync_id=self.sync_id)["status"] == "disabled"
                why = "paused: the sync was disabled" if disabled else "paused on request (run.pause())"
                if disabled and self._pausable():  # the next sync.run() is refused until the sync is enabled
                    why += "; enable it (sync.enable()) and the next sync.run() resumes it"
                self._interrupted(why)
        except RunTakenOver:  # another process took the run over (this one was stopped): write nothing more
            pass
        except (TransientDestinationError, WorkspaceBusy) as exc:  # a destination or workspace server away
            dest = isinstance(exc, TransientDestinationError)
            if (dest or getattr(exc, "outage", False)) and self._pausable():
                self._pause(f"{'destination' if dest else 'workspace'} unavailable: {exc}")
            else:
                self._fail(str(exc), "transient" if dest else type(exc).__name__)
        except DfsyncError as exc:  # the row values it quotes of sensitive columns hashed
            self._fail(_sensitive.scrub_quoted(self.defn, self.store, exc), type(exc).__name__)
        except Exception as exc:  # an unexpected error still leaves a consistent workspace
            tb = traceback.format_exc(limit=5)
            self._fail(f"{type(exc).__name__}: {exc}", "internal", detail=tb)
        finally:
            if self.session is not None:  # beside the workspace's checkpoint
                _settle.close_session(self.store, self.session)
            if (self.status != RunStatus.PAUSED or self.staging is None or not self.staging.loaded
                    or _registry.live_staging(self.store.key, self.run_id) is not self.staging):
                self.drop_staging()

    def dry_run(self) -> DryRun:
        """Query, diff and check exactly as this run would, but send nothing and write nothing to
        the workspace (its store is a :class:`DryRunStore`). What a person previewing needs
        differs only here: null or repeated keys are quarantined (and listed) even under
        on_invalid='fail', failing checks quarantine rows instead of failing the run, an empty
        full refresh is a problem listed rather than an error, the source is read even when its
        files did not change, and GX checkpoint actions do not run (they act on a run's results).
        The caller drops the staged rows (``drop_staging``)."""
        assert self.dry, "Runner(dry_run=True) only"
        self.problems: list[str] = []
        self._query()
        with contextlib.suppress(ValidationFailed):  # a run would fail here; the counts say what it quarantines
            self._validate()
        assert self.staging is not None
        return DryRun(self.staging, dict(self.store.counters), self.store.check_results, self.problems)

    def _execute(self) -> None:
        defn = self.defn
        if (problem := defn.mapping.reorder_error()) is not None:  # stored before create_sync refused it
            raise problem
        _settle.reconcile(self.store, self.sync_id, self.sync_name, self.defn)
        if self.status == RunStatus.PAUSED:
            if self.staging is not None and self.staging.loaded:
                _settle.adopt_confirmed_batches(self.store, self.staging, self.sync_id, self.run_id, self.defn.primary_key,
                                                self.defn.destination_mode.rewrites)
                self.move_to(RunStatus.IN_PROGRESS, "resumed")
                self._transfer()
                return
            self.move_to(RunStatus.QUERYING, "resumed; staged rows gone (their process ended, or a new source= or definition), querying again")
            if defn.destination_mode.rewrites:
                # a replace run whose staging died restarts its rewrite from scratch: what its abandoned
                # batches sent is neither counted nor recorded (the rows are sent again)
                _settle.abandon_run(self.store, self.sync_id, self.sync_name, self.defn, self.run_id)
                self.store.restart_transfer(self.sync_id, self.run_id)
        else:
            self.move_to(RunStatus.QUERYING, "query begins")
            _settle.notice_lost_rows(self.store, self.sync_id, self.sync_name, defn, self.run_id)  # a first load then
            if fused_first_load(self):  # a first load into a DuckDB table the run creates: in place
                return
        self._query()
        self.move_to(RunStatus.QUEUED, "all rows staged")
        self.move_to(RunStatus.IN_PROGRESS, self._validate())
        self._transfer()

    # .............................................................. querying
    def _query(self) -> None:
        defn, store = self.defn, self.store
        row = store.sync_row(sync_id=self.sync_id)
        force = False
        if row["fp_algo"] and row["fp_algo"] != FP_ALGO:
            force = True
            msg = (f"the fingerprint algorithm changed ({row['fp_algo']} -> {FP_ALGO}); this run sends every "
                   f"row once so no update is skipped")
            warnings.warn(msg, stacklevel=2)
            store.note(self.sync_id, self.run_id, msg)
        from ._window import new_fields_window, read_from

        cursor = read_from(defn, cursor_from_json(row["cursor_value"]))
        if cursor is not None and (found := new_fields_window(defn, cursor, row.get("dest_schema")))[1]:
            cursor = found[0]
            store.note(self.sync_id, self.run_id, found[1], kind="schema")
        retry, retry_keys = _retry.retry_rows(store, defn, self.sync_id, self.run_id)
        if self.staging is None:
            self.staging = Staging() if self.dry else Staging(temp_dir=self.staging_dir)
        # a dry run reads the source even when its files did not change: it shows the rows
        token = None if force or self.dry or (retry is not None and retry.num_rows) else self.snapshot_token(row)
        if token is not None and token == row.get("source_snapshot") and row.get("key_types"):
            # the rows the files held when the last good run read them (not the delivered keys: upsert keeps gone rows')
            delivered = store.run_row(last)["queried"] if (last := store.latest_run_id(self.sync_id, ["success"])) else 0
            self.reused_checks = store.last_checked_run(self.sync_id, self.run_id, row["definition_version"]) \
                if defn.checks else None
            if delivered and (not defn.checks or self.reused_checks is not None):
                self.staging.load_nothing(defn.primary_key, row["key_types"])
                self.source_token = token
                store.note(self.sync_id, self.run_id, "the source files have the same paths, sizes and modification times as when everything was last delivered: not read again")
                store.set_counters(self.run_id, queried=delivered, unchanged=delivered)
                return
        if row.get("source_snapshot"):
            store.set_sync_fields(self.sync_id, source_snapshot=None)
        state = _retry.state_for_diff(store, defn, self.sync_id, row["definition_version"])
        keep = _dataset_keep(defn.checks)
        try:
            with store.released():  # reading the source can take long: let other processes in
                result = self.staging.load(
                    _reads.source_for(self, cursor), defn.mapping, defn.primary_key, cursor=cursor,
                    detect_deletes=defn.sync_mode == SyncMode.FULL_REFRESH,
                    state=state, force=force,
                    retry=retry if defn.sync_mode == SyncMode.INCREMENTAL else None, retry_keys=retry_keys,
                    quarantine_keys=defn.on_invalid == "skip" or self.dry,
                    keep_unchanged=defn.destination_mode.sends_unchanged or keep is None or self.dry,
                    keep_columns=keep or (),
                )
        except InvalidRecordsError as exc:
            failed = getattr(exc, "stage_result", None)
            if failed is not None:  # null or repeated keys under on_invalid='fail': say what was found
                store.set_counters(self.run_id, queried=failed.queried)
                raise keys_and_checks(exc, self._set_valid_counters, self._validate, lambda: keep_invalid_records(self)) from None
            raise
        if self.resume:  # read again after a pause: the rows it had seen rejected stay rejected in this run
            _settle.keep_own_rejections(store, self.staging, self.sync_id, self.run_id, defn.primary_key)
        for p in result.key_problems:
            store.note(self.sync_id, self.run_id, f"quarantined: {p}")
        if self.dry:
            self.problems.extend(result.key_problems)
        if defn.sync_mode == SyncMode.FULL_REFRESH and result.queried == 0 and not defn.allow_empty:
            empty = EmptySourceError(
                f"the source {defn.source.describe()} returned no rows. A full refresh of an empty source "
                f"would {'delete every row at' if defn.destination_mode.removes_missing else 'send nothing to'} "
                f"the destination, so nothing was sent. If the source is really empty, create the sync "
                f"with allow_empty=True."
            )
            if not self.dry:
                raise empty
            self.problems.append(f"a run would fail: {empty}")
        store.set_counters(self.run_id, queried=result.queried)
        self._set_valid_counters()
        store.set_sync_fields(self.sync_id, key_types=self.staging.types)
        if token is not None and self.snapshot_token(row) == token:  # the files did not change while read
            self.source_token = token

    def _set_valid_counters(self) -> None:
        """inserted / updated / unchanged / invalid / retried as staged now: quarantined rows count only as
        invalid, so ``queried = inserted + updated + unchanged + invalid`` on every run."""
        assert self.staging is not None
        c, mode = self.staging.valid_counts(), self.defn.destination_mode
        if self.resume:  # read again after a pause: what its earlier batches sent counts as sent, not unchanged
            c = _settle.with_earlier_batches(self.store, self.staging, self.sync_id, self.run_id, self.defn, c)
        retried = self.staging.retried_count(mode)  # never a quarantined row
        self.store.set_counters(self.run_id, inserted=c["insert"], updated=c["update"], unchanged=c["unchanged"],
                                deleted=c["delete"] if mode.removes_missing else 0, invalid=c["invalid"], retried=retried)

    def snapshot_token(self, row: dict[str, Any]) -> str | None:
        """What the source looks like now, for a full refresh that may skip an unchanged source."""
        defn = self.defn
        if (defn.sync_mode != SyncMode.FULL_REFRESH
                or defn.destination_mode.sends_unchanged  # every row is sent: the source is always read
                or not getattr(defn.source, "skip_unchanged", False)):
            return None
        snap = defn.source.snapshot()
        return f"{snap}|v{row['definition_version']}|{FP_ALGO}" if snap else None

    # .............................................................. validation
    def _validate(self) -> str:
        """Run the checks on the staged rows; the detail of the run's queued -> in_progress event."""
        defn = self.defn
        assert self.staging is not None
        summary = ""  # the checks that failed, if any
        if defn.checks and self.reused_checks is not None and self.source_token is not None:
            self.store.copy_checks(self.run_id, self.reused_checks)  # the files were not read again
            self.store.note(self.sync_id, self.run_id, f"the checks were not run again: the files are the ones run "
                            f"{self.reused_checks} checked with the same checks; its results are reused")
        elif defn.checks:
            from . import checks as checks_mod
            from . import gx

            ev = checks_mod.evaluate_staged(self.staging, defn.checks, self.store.check_proofs(self.sync_id),
                                            _sensitive.scrubber(defn.sensitive, self.store))
            self.store.store_checks(self.run_id, _sensitive.protect_evaluation(ev, defn.sensitive, self.store), ev.proofs)
            if not self.dry:  # GX actions act on a run's results: a preview notifies nobody
                gx.run_checkpoint_actions(defn.checks, ev.results, sync_name=self.sync_name, run_id=self.run_id,
                                          note=lambda msg: self.store.note(self.sync_id, self.run_id, msg))
            failed = ev.failed
            summary = ev.summary() if failed else ""
            if failed and defn.on_invalid == "fail":
                self.staging.add_invalid(ev.failures_table, ev.dataset_failures)
                self._set_valid_counters()
                keep_invalid_records(self)
                raise ValidationFailed(summary + ". Nothing was sent; fix the data, or use on_invalid='skip' to quarantine "
                                       "failing rows and send the rest (the failing rows: run.records(status='invalid')).")
            if failed:
                # dataset-level checks with no failing rows to quarantine (a mean, a row count, ...)
                table_failures = [r for r in failed if r.get("scope") == "dataset" and r.get("unexpected_count") is None]
                if defn.on_invalid == "skip":
                    self.staging.add_invalid(ev.failures_table, ev.dataset_failures)
                self.store.note(self.sync_id, self.run_id, f"{defn.on_invalid}: {summary}")
                if table_failures and defn.on_invalid == "skip":
                    self.store.note(self.sync_id, self.run_id, "dataset-level checks failed (recorded; no rows to "
                                    "quarantine): " + ", ".join(r["check_name"] for r in table_failures))
                self._set_valid_counters()
        refuse_emptied_table(self)
        return checks_outcome(self.staging.invalid_count(), defn.on_invalid, summary, defn.destination_mode.rewrites)

    # .............................................................. transfer
    def _transfer(self) -> None:
        defn, store, staging = self.defn, self.store, self.staging
        assert staging is not None
        self.check_requests()
        key = list(defn.primary_key)
        mode = defn.destination_mode
        self._store_invalid_records()
        plan = self.decide_schema(staging)  # a refused change fails the run before any row is counted sent
        skipped = staging.mark_skipped(mode)
        if skipped is not None and skipped.num_rows:
            self._store_records(skipped)
            # handed to the transfer and skipped by the mode: sent = succeeded + failed + skipped
            store.add_counters(self.run_id, sent=skipped.num_rows, skipped=skipped.num_rows)
        total = staging.pending_count(mode)
        keep_all = total <= RECORD_RETENTION
        next_batch = store.next_batch_no(self.run_id)
        if total == 0 and next_batch == 1 and not mode.rewrites and store.has_delivered(self.sync_id):
            # nothing to send and nothing to finish: the destination is not even opened
            self.report()
            self.finish()
            return
        staging.for_transfer()
        self.session = _settle.open_for_transfer(store, self.sync_id, self.sync_name, defn, self._context(
            self.run_id, store.requeried(self.run_id)), first=next_batch == 1)  # WorkspaceOutOfDate
        self.session.widen_columns = {c.column for c in plan.changes if c.kind in ("widened", "typed")}
        self.session.typed_columns = {c.column for c in plan.changes if c.kind == "typed"}
        self.session.prepare(staging.arrow_schema())
        self.record_schema(plan, total)
        self.report()
        if defn.partitions:  # bucket by bucket, on the run's engine
            _partition.send_buckets(self, keep_all, next_batch)
            return self.finish()
        if takes_aside(self, total, next_batch):  # a Delta table the run creates: one commit (_fused_delta)
            load_aside(self, total, keep_all, next_batch)
            return self.finish()
        with store.lease():
            store.ensure_state_table(self.sync_id, {k: staging.types[k] for k in key})
            size = defn.batch_size or defn.destination.default_batch_size  # None: the destination's choice
            reader = staging.batches(mode, size)
            pool = pa.default_memory_pool()
            # A transactional destination writes batch n on a writer thread while this thread
            # reads batch n+1 from staging and writes it ahead to the workspace (PostgreSQL
            # writes two batches at once, on two connections); batches are confirmed in order.
            writer = DestinationWriter(self.session, inline=not getattr(defn.destination, "transactional", True))
            sent: collections.deque[tuple[pa.Table, int, Future[BatchResult]]] = collections.deque()
            try:
                for tbl in rebatch(reader, writer.batch_rows(size, total)):
                    store.write_ahead(self.sync_id, self.run_id, next_batch, tbl, key, ACTION_COLUMN)
                    sent.append((tbl, next_batch, writer.submit(WriteBatch(next_batch, tbl.drop_columns(["_fp", "_rid"])))))
                    next_batch += 1
                    del tbl
                    while len(sent) > writer.depth:
                        self.confirm(*sent.popleft(), key, keep_all)
                    pool.release_unused()  # hand the batch's buffers back to the OS, not to a cache
                    store.release_if_stale()
                    self.check_requests()
                while sent:
                    self.confirm(*sent.popleft(), key, keep_all)
            except StopRequested:
                # a pause or abort between batches: settle what the destination already has
                writer.close()
                while sent and landed(sent[0][2]):
                    self.confirm(*sent.popleft(), key, keep_all)
                raise
            finally:
                # never leave a write running under a session about to be closed; a batch it
                # committed but this thread did not confirm stays in flight for _settle.reconcile()
                writer.close()
        self.finish()

    def decide_schema(self, staging: Staging) -> Any:
        """Compare the records about to be sent with the fields delivered before (nothing sent yet).

        Raises SchemaMismatchError under schema='freeze' for any change, and under both policies for
        a change that could lose or alter a value (dfsync._schema); CursorValueError (dfsync._cursor)."""
        from . import _schema, _schema_values

        defn = self.defn
        records = pa.schema([f for f in staging.arrow_schema() if f.name != ACTION_COLUMN])
        sync_row = self.store.sync_row(sync_id=self.sync_id)
        recorded = _schema.load(sync_row.get("dest_schema"))
        where = defn.destination.describe()
        plan = _schema.plan(recorded, staging.as_read(records), defn.primary_key, defn.schema, where,
                            replace=defn.destination_mode.rewrites,
                            replace_ok=DestinationMode.REPLACE in defn.destination.modes)
        defn.destination.check_schema(records)
        _schema_values.check_values(staging.con, "stg", records, defn.destination, where)
        refuse_stuck_values(staging, defn, cursor_from_json(sync_row.get("cursor_value")))
        return plan

    def record_schema(self, plan: Any, total: int) -> None:
        """The destination took the records' fields: one event per change, and remember them."""
        from . import _schema

        noted = {c.column for c in plan.changes}
        for c in plan.changes:
            self.store.note(self.sync_id, self.run_id, c.describe(total if c.kind == "added" else None), kind="schema")
        assert self.session is not None
        for column, text in self.session.schema_changes:
            if column not in noted:
                self.store.note(self.sync_id, self.run_id, f"schema: {text}", kind="schema")
        self.store.set_sync_fields(self.sync_id, dest_schema=_schema.dump(plan.fields))

    def confirm(self, tbl: pa.Table, batch_no: int, written: Future[BatchResult], key: list[str],
                 keep_all: bool) -> None:
        """After the destination applied a batch (with its ledger entry): record the outcome."""
        store, defn = self.store, self.defn
        n = tbl.num_rows
        result = written.result()
        # vectorised: only rejected rows are looked at one by one
        bad: dict[int, tuple[str, str]] = {i: (RecordStatus.SKIPPED.value, redact(e)) for i, e in result.skipped.items()}
        bad.update({i: (RecordStatus.FAILED.value, redact(e)) for i, e in result.failed.items()})  # cut once stored
        delivered: pa.Array | None = None  # None: every row
        if bad:
            good_mask = np.ones(n, dtype=bool)
            good_mask[list(bad)] = False
            delivered = bool_array(good_mask)
        not_delivered = [[tbl.column(k)[i].as_py() for k in key] for i in sorted(bad)]
        if defn.sync_mode == SyncMode.INCREMENTAL and defn.cursor_field in tbl.column_names:
            cursor_col = tbl.column(defn.cursor_field)
            self.cursor_max = top_cursor(self.cursor_max, cursor_col if delivered is None else cursor_col.filter(delivered))
        keep = list(range(n)) if keep_all else sorted(bad)
        recs = None
        if keep:
            status = [bad[i][0] if i in bad else RecordStatus.SUCCEEDED.value for i in keep]
            errors = [bad[i][1] if i in bad else None for i in keep]
            picked = tbl if keep_all else tbl.take(int_array(keep))
            recs = picked.drop_columns(["_rid", "_fp"])
            recs = recs.append_column("_status", string_array(status)) \
                .append_column("_batch", int_array(np.full(len(keep), batch_no), pa.int32())) \
                .append_column("_error", string_array(errors)) \
                .append_column("_checks", pa.nulls(len(keep), pa.list_(pa.string()))) \
                .append_column("_fingerprint", picked.column("_fp"))
        # one transaction: the state, the batch, the counters, the cursor and the records
        store.confirm_batch(self.sync_id, self.run_id, batch_no, key, not_delivered, not _settle.applies_per_batch(defn),
                            dict(sent=n, succeeded=n - len(bad), failed=len(result.failed),
                                 skipped=len(result.skipped), batches=1),
                            cursor_max=cursor_to_json(self.cursor_max) if self.cursor_max is not None else None,
                            records=_sensitive.protect(recs, defn.sensitive, store))
        assert self.staging is not None
        rids = tbl.column("_rid")
        self.staging.record_outcomes(rids if delivered is None else rids.filter(delivered),
                                     RecordStatus.SUCCEEDED.value, batch_no)
        for i, (st_, err) in bad.items():
            self.staging.record_outcomes(rids.take(int_array([i])), st_, batch_no, _sensitive.cap_error(err))
        self.report()

    def _store_invalid_records(self) -> None:
        assert self.staging is not None
        if (self.store.run_row(self.run_id)["batches"] or 0) > 0:  # stored before its first batch
            return
        inv = self.staging.invalid_records(mode=self.defn.destination_mode)
        if inv.num_rows:
            self._store_records(inv)

    def _store_records(self, recs: pa.Table) -> None:
        self.store.store_records(self.sync_id, self.run_id, _sensitive.protect(recs, self.defn.sensitive, self.store))

    # .............................................................. the end
    def finish(self) -> None:
        defn, store = self.defn, self.store
        store.transfer_done(self.sync_id, list(defn.primary_key))  # runs beside the destination's finish
        if self.session is not None:
            self.session.finish()
        run = store.run_row(self.run_id)
        sent, succeeded, failed = run["sent"], run["succeeded"], run["failed"]
        limit = defn.max_failed_rows
        allowed = failed_rows_allowed(limit, sent)
        problem = None
        # rows sent again after an earlier run's rejection only (an unchanged source) are no sign of a
        # wrong endpoint: that run delivered others; they count against max_failed_rows as before
        if failed and succeeded == 0 and not every_row_may_fail(limit) and run["retried"] < sent:
            others = f"; {run['skipped']} more skipped" if run["skipped"] else ""
            problem = (f"every row sent was rejected by the destination ({_words.plural(failed, 'row')}{others}); "
                       f"see run.records(status='failed') for the errors")
        elif failed > allowed:
            problem = (f"{_words.plural(failed, 'row')} {'was' if failed == 1 else 'were'} rejected by the destination, "
                       f"more than max_failed_rows={limit}; see run.records(status='failed') for the errors")
        store.finish_run(self.sync_id, self.run_id, list(defn.primary_key),
                         replace=defn.destination_mode.rewrites, fp_algo=FP_ALGO,
                         source_snapshot=None if problem or run["failed"] or run["invalid"] else self.source_token,
                         merge_cursor=cursor_merge(self.defn.sync_mode), problem=problem)
        self.status = RunStatus.FAILED if problem else RunStatus.SUCCESS
        self.report()

    def _pausable(self) -> bool:
        """An interruption pauses the run (rather than failing it): while it transfers, and
        while a run resumed from ``paused`` reads or checks again (STATES.md: the batches it
        applied before stay its own, so it must not fail and discard them)."""
        return self.status in (RunStatus.IN_PROGRESS, RunStatus.PAUSED) or (
            self.resume and self.status in (RunStatus.QUERYING, RunStatus.QUEUED))

    def _interrupted(self, why: str) -> None:
        if self._pausable():
            self._pause(why)
        elif not self.status.terminal:
            self._fail(f"interrupted before anything was sent ({why})", "interrupted")

    def _pause(self, why: str) -> None:
        transferring = self.status == RunStatus.IN_PROGRESS
        why, error = _sensitive.scrub_run_texts(self, why, why if "resume" in why else f"{why}; the next sync.run() resumes it")
        with contextlib.suppress(Exception):
            if self.status != RunStatus.PAUSED:
                self.move_to(RunStatus.PAUSED, redact(why), error=redact(error), error_kind="paused")
            else:  # it never left paused (e.g. the destination was down while it resumed): the new reason
                self.store.set_run_fields(self.run_id, error=redact(error), error_kind="paused")
                self.store.note(self.sync_id, self.run_id, f"still paused: {redact(why)}")
        # staged rows are resumed only once checked and transferring; otherwise the resume reads again
        if transferring and self.staging is not None and self.staging.loaded:
            _registry.keep_live_staging(self.store.key, self.run_id, self.staging)

    def _fail(self, error: str, kind: str, detail: str | None = None) -> None:
        error, detail = _sensitive.scrub_run_texts(self, redact(error), redact(detail or error))
        if self.status.terminal:
            return
        error, detail = _settle.settle_failure(self.store, self.sync_id, self.sync_name, self.defn, self.run_id,
                                               self.session, self.resume, error, detail)
        with contextlib.suppress(Exception):
            self.store.fail_run(self.sync_id, self.run_id, error, kind, detail, cursor_merge(self.defn.sync_mode))
            self.status = RunStatus.FAILED
        self.report()

    def drop_staging(self) -> None:
        _registry.take_live_staging(self.store.key, self.run_id)
        if self.staging is not None:
            self.staging.close()
            shutil.rmtree(self.staging.temp_dir, ignore_errors=True)
            self.staging = None


"""The :class:`Sync` handle: a saved sync, run, previewed, validated and controlled by name.

Like every handle it reads the workspace on each access, so it never goes stale. A run is
executed by :class:`dfsync.runner.Runner`, which receives the definition as data
(:class:`dfsync.definition.SyncDefinition`); the callbacks fire here once it returned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from . import _html_history, _interrupt, _registry, _sensitive
from ._args import checked, row_limit
from ._arrow import to_polars
from ._callbacks import LazyCallback, notify
from ._check import results_frame
from ._cursor import cursor_from_json
from ._dryrun import refusals
from ._partition import check_engine
from ._registry import LIVE
from ._retention import forget, purge
from ._schema import fields_now, schema_frame
from ._settings import use as use_settings
from .definition import CALLBACKS, SyncDefinition, record_schema
from .destinations.base import Destination
from .errors import (
    ConfigError,
    DfsyncError,
    SessionOnlyError,
    SyncAlreadyRunning,
    SyncDisabledError,
)
from .mapping import Mapping
from .run import Preview, SyncRun
from .runner import Runner
from .sources.base import Source
from .states import UNFINISHED_RUNS, DestinationMode, RunStatus, SyncMode, SyncStatus

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("dfsync")


class Sync:
    """A saved sync definition; run it with :meth:`run`."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._one_run_source: Source | None = None  # source= of one run or preview
        self._load()

    def _load(self) -> None:
        row = self.workspace.store.sync_row(self.name)
        self.id: int = row["id"]
        self.definition: dict[str, Any] = row["definition"]  # as stored (JSON)
        #: the definition as data (:class:`~dfsync.definition.SyncDefinition`), what a run receives
        self.definition_version: int = row["definition_version"]
        self._live = LIVE.get((self.workspace.store.key, self.name), {})
        spec = self.spec = SyncDefinition.from_json(self.definition, self._live)
        self.primary_key: list[str] = spec.primary_key
        self.sync_mode: SyncMode = spec.sync_mode
        self.cursor_field: str | None = spec.cursor_field
        self.destination_mode: DestinationMode = spec.destination_mode
        self.on_invalid: str = spec.on_invalid
        self.max_failed_rows = spec.max_failed_rows
        self.batch_size: int | None = spec.batch_size
        self.schedule: str | None = spec.schedule
        self.failed_rows_alert = spec.failed_rows_alert
        self.allow_empty: bool = spec.allow_empty
        self.schema_policy: str = spec.schema
        for cb_name in CALLBACKS:
            cb = getattr(spec, cb_name)
            setattr(self, cb_name, LazyCallback(cb, cb_name) if isinstance(cb, str) else cb)

    @property
    def source(self) -> Source:
        if self._one_run_source is not None:
            return self._one_run_source
        return self.spec.source  # this session's object, or built again from its config on each use

    @property
    def destination(self) -> Destination:
        return self.spec.destination

    @property
    def mapping(self) -> Mapping:
        return self.spec.mapping

    @property
    def checks(self) -> list[Any]:
        return self.spec.checks

    @property
    def status(self) -> SyncStatus:
        return SyncStatus(self.workspace.store.sync_row(self.name)["status"])

    @property
    def session_only(self) -> bool:
        return bool(self.workspace.store.sync_row(self.name)["session_only"])

    @property
    def next_run_at(self) -> datetime | None:
        """When the scheduler runs it next; None without a schedule, and while disabled."""
        row = self.workspace.store.sync_row(self.name)
        return row["next_run_at"] if SyncStatus(row["status"]).scheduled else None

    # .............................................................. running
    @checked("Sync.run")
    def run(self, *, progress: bool | Callable[[str, dict[str, Any]], Any] = True, background: bool = False,
            trigger: str = "manual", source: Any = None, raise_on_failure: bool = False,
            engine: Any = None) -> SyncRun:
        """Run the sync (or resume its paused run) and return the run.

        Blocking by default; ``background=True`` returns at once and the run goes on in a
        thread (``run.wait()``). ``progress`` shows a live panel in a notebook and a progress
        bar in a terminal; ``progress=False`` is silent; a callable ``(status, run_row)`` is called
        at every state change and batch instead.

        ``source=`` (a frame or a dfsync source) is read by this run instead of the sync's own
        source; the saved definition is unchanged and its mapping, keys and checks still apply.
        ``raise_on_failure=True`` raises :class:`dfsync.SyncRunFailed` when the run ends
        ``failed`` (a ``paused`` run is not a failure: the next run resumes it). ``engine=``
        (``dfsync.engines.local(processes=4)``, ``dfsync.engines.ray(...)``) runs the buckets of a
        sync created with ``partitions=N`` there (docs/PARTITIONS.md).
        """
        if not (isinstance(progress, bool) or progress is None or callable(progress)):
            raise ConfigError(f"sync.run(progress={progress!r}): give True (a live panel in a notebook, a bar in a "
                              f"terminal), False (silent) or a callable(status, run_row)")
        with self.workspace.store.lease():  # one workspace connection from here to the run's end
            one_run = self._source_for_run(source)
            self._load()
            check_engine(self.spec, self.name, engine, one_run)
            run = self._run(progress=progress, background=background, trigger=trigger, source=one_run,
                            engine=engine)
        if raise_on_failure:
            if background:
                run.wait()
            if run.status == RunStatus.FAILED:
                run.raise_for_status()
        return run

    def _source_for_run(self, source: Any) -> Source | None:
        """``source=`` of run/preview as a checked Source (a frame is wrapped), or None."""
        if source is None:
            return None
        if not isinstance(source, Source):
            from .sources import frame

            source = frame(source)
        self._load()
        record_schema(source, self.mapping, self.primary_key, self.cursor_field,
                      what=f" read from {source.describe()} (source= of this run)")
        return source

    def _with_source(self, source: Source | None) -> Sync:
        """This sync reading ``source`` for one run (or preview): a handle of its own."""
        if source is None:
            return self
        other = Sync(self.workspace, self.name)
        other._one_run_source = source
        return other

    def _run(self, *, progress: Any, background: bool, trigger: str, source: Source | None = None,
             engine: Any = None) -> SyncRun:
        ws, store = self.workspace, self.workspace.store
        self._load()
        store.require("run", self.id)
        if self.status == SyncStatus.DISABLED:
            raise SyncDisabledError(f"sync {self.name!r} is disabled; call sync.enable() to run it again")
        if self.session_only and "source" not in self._live and source is None:
            raise SessionOnlyError(
                f"sync {self.name!r} can only run in the Python session that created it: it reads an in-memory "
                f"frame, its source or destination holds a literal secret (or the destination a function), a GX "
                f"checkpoint action does, or a check or mapping runs a Python function (map_elements, map_batches, "
                f"fold: never stored). "
                f"Run it there, or recreate it with a files, duckdb_query or database source, secrets written "
                f"as 'env:NAME' (GX actions: '${{NAME}}') and GX action classes in an importable module")
        run_source = source if source is not None else self.source  # fail now if it cannot be rebuilt
        lock = _registry.sync_lock(store.key, self.id)
        if not lock.acquire(blocking=False):
            raise SyncAlreadyRunning(f"sync {self.name!r} is already running in this process; wait for it (run.wait())")
        announced = False
        try:
            ws.recover()
            _registry.begin_start(store.key)  # another thread's recover() leaves the run alone until registered
            announced = True
            paused = store.latest_run_id(self.id, ["paused"])
            if paused is not None:
                store.claim_run(paused, self.id)
                run_id = paused
            else:
                run_id = store.create_run(self.id, self.definition_version, trigger)
                if trigger != "schedule" and self.schedule and store.run_count(self.id) == 1:
                    # run by hand before the scheduler's first pass: that pass need not run it again at once
                    store.set_sync_fields(self.id, next_run_at=self.spec.next_run_after(datetime.now().astimezone()))
            same = _registry.read_for(store.key, run_id, self.definition_version, self._live.get("source"))
            if paused is not None and (source is not None or not same):
                # staged from another source or definition: this run reads what it is given now (diffed
                # against what was delivered), as when the staged rows ended with their process
                _registry.drop_live_staging(store.key, paused)
        except BaseException:
            if announced:
                _registry.abandon_start(store.key)
            lock.release()
            raise
        reporter = None
        try:
            if callable(progress):
                reporter = progress  # a callable(status, run_row) of the caller's own
            elif progress:
                from ._progress import make_reporter

                reporter = make_reporter(self, run_id, background=background)
            if source is not None:
                store.note(self.id, run_id, f"this run reads {source.describe()} (sync.run(source=...)); "
                           f"the saved definition is unchanged")
        except BaseException:  # the run never starts: the next recover() settles it
            _registry.abandon_start(store.key)
            lock.release()
            raise

        def work() -> None:
            try:
                with use_settings(ws.settings), store.lease():
                    try:
                        try:  # records past their retention go before the run adds its own
                            purge(self, run_id=run_id)
                        except Exception as exc:  # never costs the run
                            store.note(self.id, run_id, f"purging old records failed: {type(exc).__name__}: {exc}")
                        runner.execute()
                        if self.on_invalid == "warn":
                            _warn_failed_checks(SyncRun(ws, run_id, self.name))
                    finally:  # the run's outcome is settled: its callback now (never changing it)
                        notify(self, run_id, runner.status)
            finally:
                _registry.end_run(store.key, run_id)
                lock.release()
                if reporter is not None and hasattr(reporter, "close"):
                    reporter.close()

        thread = threading.Thread(target=work, name=f"dfsync-run-{run_id}", daemon=True) if background else None
        # before the runner reads it; a reporter that is not callable only speaks when the run ends
        _registry.start_run(store.key, run_id, thread=thread, progress=reporter if callable(reporter) else None)
        try:
            runner = Runner(self.spec.with_source(run_source), run_id,
                            sync_id=self.id, sync_name=self.name, store=store, staging_dir=ws.staging_dir(run_id),
                            resume=paused is not None)
            runner.engine = engine
        except BaseException:
            _registry.end_run(store.key, run_id)
            lock.release()
            raise
        if thread is not None:
            thread.start()
        else:
            work()
        return SyncRun(ws, run_id, self.name)

    @checked("Sync.preview")
    def preview(self, *, source: Any = None) -> Preview:
        """Query, diff and check like a run, but send nothing and change no state.

        ``source=`` previews another frame or source against this sync (as ``run(source=)``).
        """
        one_run = self._source_for_run(source)
        if one_run is not None:
            return self._with_source(one_run).preview()
        self._load()
        self.workspace.store.require("preview", self.id)
        # the run's own query and checks, writing nothing (no run row: run id 0)
        dry = Runner(self.spec.with_source(self.source), 0, sync_id=self.id, sync_name=self.name,
                     store=self.workspace.store, staging_dir="", resume=False, dry_run=True)
        try:
            with (use_settings(self.workspace.settings), _interrupt.interruptible(lambda: (dry.staging,)),
                  _sensitive.quoted_hashed(self.spec, self.workspace.store)):
                found = dry.dry_run()
            staging, c = found.staging, found.counts
            counts = {"insert": c["inserted"], "update": c["updated"], "delete": c["deleted"],
                      "unchanged": c["unchanged"], "invalid": c["invalid"]}
            records = to_polars(staging.records(include_unchanged=True))
            if not self.destination_mode.removes_missing:
                records = records.filter(pl.col("_action") != "delete")
            sends_unchanged = self.destination_mode.sends_unchanged
            skips_updates = not self.destination_mode.sends_updates
            records = records.drop("_batch", "_error").with_columns(
                pl.when(pl.col("_status") == "invalid").then(pl.lit("invalid"))
                .when((pl.col("_action") == "unchanged") & (not sends_unchanged)).then(pl.lit("unchanged"))
                .when((pl.col("_action") == "update") & skips_updates).then(pl.lit("skipped"))
                .otherwise(pl.lit("pending")).alias("_status"))
            validation = results_frame(found.check_results) if found.check_results else None
            problems = [*found.problems, *refusals(dry)]
            preview = Preview(self.name, counts, records, validation, problems)  # type: ignore[arg-type]
            from ._changes import attach_samples

            attach_samples(preview, self)
            _sensitive.mask_preview(preview, self.spec.sensitive, self.workspace.store)
            return preview
        finally:
            dry.drop_staging()

    @checked("Sync.validate")
    def validate(self) -> Any:
        """Every check over the whole current source; nothing sent, no state changed.

        Returns a ``ValidationResult``: ``.ok``, ``.checks`` (per-check summary with its scope)
        and ``.invalid`` (the failing rows), e.g. to see which delivered rows a new check rejects.
        """
        from ._validate import validate

        self._load()
        self.workspace.store.require("preview", self.id)
        # Ctrl-C in DuckDB's read or checks is a KeyboardInterrupt; quoted sensitive values hashed
        with _interrupt.interruptible(), _sensitive.quoted_hashed(self.spec, self.workspace.store):
            return validate(self)

    def _read_from(self) -> Any:
        """The cursor condition the next incremental read uses (lookback / initial_cursor applied)."""
        from ._window import read_from

        return read_from(self.spec, self.cursor)

    @property
    def cursor(self) -> Any:
        """The last delivered cursor value (incremental syncs), or None."""
        if self.sync_mode != SyncMode.INCREMENTAL:
            return None
        return cursor_from_json(self.workspace.store.sync_row(self.name)["cursor_value"])

    # .............................................................. control
    @checked("Sync.reset")
    def reset(self) -> None:
        """Forget what was delivered and the cursor: the next run is a first load (every row is
        sent again; an incremental sync starts at ``initial_cursor``). The destination is not
        touched. An event records who reset it. Refused while a run is going on or paused."""
        import getpass

        self.workspace.store.require("reset", self.id)
        try:
            user = getpass.getuser()
        except Exception:  # no user name (some containers): the process still says who
            user = "unknown user"
        self.workspace.store.reset_delivered(
            self.id, f"delivered state and cursor forgotten by {user} on {socket.gethostname()} "
                     f"(pid {os.getpid()}): the next run is a first load; the destination was not touched")

    @checked("Sync.forget")
    def forget(self, keys: Any) -> dict[str, int]:
        """Erase every stored trace of the rows with these primary keys (an erasure request):
        their records, their delivered state, and their values in the sync's check examples,
        events and run errors (replaced by ``[forgotten key]``; docs/SECURITY.md says which). The
        next run treats them as new (sends them again if the source still has them). The
        destination is not touched. ``keys``: key values (a one-column key), tuples or dicts of
        the key columns, or a frame with them. Refused while a run is going on or paused. Returns
        how many records, delivered rows, check results and texts were removed or redacted."""
        self.workspace.store.require("forget", self.id)
        return forget(self, keys)

    @checked("Sync.purge_records")
    def purge_records(self, older_than: Any = None) -> int:
        """Remove the records of runs that finished longer ago than ``older_than`` (``"30 days"``),
        else this sync's ``record_retention``, else the workspace's; returns how many (``dfsync
        purge`` does this for every sync). A run does it for its sync before it starts."""
        self.workspace.store.require("purge", self.id)
        return purge(self, older_than)

    @checked("Sync.disable")
    def disable(self) -> None:
        """Stop the sync from running (manually or on schedule); a transferring run pauses."""
        store = self.workspace.store
        store.require("disable", self.id)
        store.set_sync_status(self.id, "disable", "disabled by the user")
        active = store.latest_run_id(self.id, ["in_progress"])
        if active is not None:
            _registry.request_stop(store.key, active, "pause")

    @checked("Sync.enable")
    def enable(self) -> None:
        """Allow the sync to run again; its status goes back to what its last finished run says."""
        self.workspace.store.require("enable", self.id)
        self.workspace.store.set_sync_status(self.id, "enable", "enabled by the user")

    @checked("Sync.runs")
    def runs(self, limit: int | None = None) -> pl.DataFrame:
        """Run history, newest first: status, times, counters, definition version, error."""
        return self.workspace.store.runs_frame(self.id, row_limit("Sync.runs", limit))

    @checked("Sync.last_run")
    def last_run(self) -> SyncRun | None:
        rid = self.workspace.store.latest_run_id(self.id)
        return SyncRun(self.workspace, rid, self.name) if rid else None

    @checked("Sync.current_run")
    def current_run(self) -> SyncRun | None:
        """The run that is going on or paused, if any."""
        rid = self.workspace.store.latest_run_id(self.id, list(UNFINISHED_RUNS))
        return SyncRun(self.workspace, rid, self.name) if rid else None

    @checked("Sync.events")
    def events(self) -> pl.DataFrame:
        return self.workspace.store.events_frame(sync_id=self.id)

    @checked("Sync.schema")
    def schema(self) -> pl.DataFrame:
        """The destination's fields as the sync knows them: field, type, nullable, key, in_source.

        Before the first delivery: the fields the source would send now (after mapping).
        ``in_source`` is False for a field the source no longer sends (the destination keeps it).
        """
        return schema_frame(self)

    @checked("Sync.delivered")
    def delivered(self) -> pl.DataFrame:
        """The delivered state: key and fingerprint of every row the destination confirmed."""
        state = self.workspace.store.delivered(self.id, self.primary_key)
        if state is None:  # nothing delivered yet: the same columns, no rows
            fields = fields_now(self)
            return pl.DataFrame(schema={**{k: fields.get(k, pl.String) for k in self.primary_key},
                                        "_fp": pl.UInt64})
        return pl.from_arrow(state.read_all())  # type: ignore[return-value]

    def describe_destination(self) -> str:
        """The destination as shown (repr, panels, ``dfsync status``). One that cannot be built in
        this process (a literal secret kept in the memory of the session that created it, an extra
        not installed here) is shown from its stored definition, whose secrets are masked."""
        try:
            return self.destination.describe()
        except DfsyncError:
            d = self.definition["destination"]
            where = ", ".join(str(d[k]) for k in ("url", "uri", "path", "directory", "table") if d.get(k))
            return f"{d['kind']}({where})"

    def __repr__(self) -> str:
        return (f"<dfsync.Sync {self.name!r} {self.status.value}: {self.source.describe() if 'source' in self._live else self.definition['source']['kind']}"
                f" -> {self.describe_destination()} [{self.destination_mode.value}]>")

    def _repr_html_(self) -> str:
        return _html_history.sync_html(self)


def _warn_failed_checks(run: SyncRun) -> None:
    """on_invalid='warn' sends the rows that fail checks: one log warning names the checks and
    their counts (no values), where a script, a notebook or the scheduler's log shows it."""
    failed = run.validation().filter(~pl.col("success"))
    if failed.height:
        what = "; ".join(r["check_name"] if (n := r["unexpected_count"]) is None
                         else f"{r['check_name']}: {n:,} row{'' if n == 1 else 's'}" for r in failed.iter_rows(named=True))
        log.warning("sync %r, run %d: %d check%s failed (on_invalid='warn': the run goes on and sends the failing "
                    "rows too): %s; run.validation() has the details", run.sync_name, run.id, failed.height,
                    "" if failed.height == 1 else "s", what)

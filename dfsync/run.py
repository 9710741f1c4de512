"""Handles on one run (:class:`SyncRun`) and on a dry run (:class:`Preview`).

Properties read the workspace on every access, so a handle is always current and a run
started in another process shows up too.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from . import _html_preview, _html_run, _registry
from ._args import checked, row_limit
from ._arrow import to_polars
from ._callbacks import notify
from ._schema import fields_now
from ._settle import abandon_run, stored_applies_per_batch
from .errors import ConfigError, DfsyncError, InvalidTransition, SyncRunFailed
from .states import RunStatus
from .store import COUNTERS

if TYPE_CHECKING:
    from .sync import Sync
    from .workspace import Workspace

__all__ = ["Preview", "SyncRun"]

#: the bookkeeping columns of ``run.records()`` after the record's fields (their types when no row is kept)
EMPTY_RECORD_META = {"_action": pl.String, "_status": pl.String, "_batch": pl.Int32, "_error": pl.String,
                     "_checks": pl.List(pl.String), "_fingerprint": pl.UInt64}


class SyncRun:
    """One execution of a sync. Properties read the workspace, so they are always current."""

    def __init__(self, workspace: Workspace, run_id: int, sync_name: str) -> None:
        self.workspace = workspace
        self.id = run_id
        self.sync_name = sync_name

    @property
    def _row(self) -> dict[str, Any]:
        return self.workspace.store.run_row(self.id)

    @property
    def sync(self) -> Sync:
        return self.workspace.sync(self.sync_name)

    @property
    def status(self) -> RunStatus:
        return RunStatus(self._row["status"])

    @property
    def counts(self) -> dict[str, int]:
        row = self._row
        return {c: int(row[c] or 0) for c in COUNTERS}

    @property
    def error(self) -> str | None:
        return self._row["error"]

    @property
    def started_at(self) -> datetime:
        return self._row["started_at"]

    @property
    def finished_at(self) -> datetime | None:
        return self._row["finished_at"]

    @property
    def definition_version(self) -> int:
        return self._row["definition_version"]

    @property
    def durations(self) -> Any:
        """Seconds spent in each state: ``run.durations()`` (a method since 0.2: it queries the event log;
        ``run.durations`` without the call still works, with a DeprecationWarning)."""
        return _MethodNow(self._durations, "run.durations")

    def _durations(self) -> dict[str, float]:
        ev = self.events()
        out: dict[str, float] = {}
        ts, states = ev["ts"].to_list(), ev["to_status"].to_list()
        kinds = ev["kind"].to_list()
        pairs = [(t, s) for t, s, k in zip(ts, states, kinds, strict=True) if k == "run"]
        end = self.finished_at or datetime.now(pairs[0][0].tzinfo if pairs else None)
        for (t0, s0), nxt in zip(pairs, [*pairs[1:], (end, None)], strict=True):
            if s0 in ("success", "failed"):
                continue
            out[s0] = out.get(s0, 0.0) + (nxt[0] - t0).total_seconds()
        return out

    @checked("SyncRun.raise_for_status")
    def raise_for_status(self) -> SyncRun:
        """Raise :class:`SyncRunFailed` unless the run ended in success; returns the run."""
        st = self.status
        if st != RunStatus.SUCCESS:
            msg = f"run {self.id} of sync {self.sync_name!r} is {st.value}"
            if self.error:
                msg += f": {self.error}"
            raise SyncRunFailed(msg, run=self)
        return self

    @checked("SyncRun.records")
    def records(self, status: str | None = None, *, limit: int | None = None) -> pl.DataFrame:
        """SyncRecord rows of this run: record fields plus _action, _status, _batch, _error, _checks.

        While a run is going on (or paused) in this process every staged row is here (a first
        load into a DuckDB table the run creates stages none: its rows are here once delivered);
        after it ends, failed, invalid and skipped rows stay (and every row of small runs).
        """
        valid = ("pending", "succeeded", "failed", "invalid", "skipped")
        if status is not None and status not in valid:
            raise ConfigError(f"unknown record status {status!r}; choose one of {', '.join(valid)}")
        limit = row_limit("SyncRun.records", limit)
        self.workspace.store.require("records", self._row["sync_id"])
        staging = _registry.staged_rows(self.workspace.store.key, self.id)
        if staging is not None and staging.loaded:
            return to_polars(staging.records(status=status, limit=limit))
        tbl = self.workspace.store.records(self._row["sync_id"], self.id, status, limit)
        if tbl is None:  # the sync kept no records yet: the same columns, no rows
            return pl.DataFrame(schema={**fields_now(self.sync), **EMPTY_RECORD_META})
        return to_polars(tbl)

    @checked("SyncRun.buckets")
    def buckets(self) -> pl.DataFrame:
        """A partitioned run's buckets (``partitions=N``): each one's state (waiting, running, done,
        failed), attempts, counters and last error. Empty for a run without buckets."""
        return self.workspace.store.buckets(self.id)

    @checked("SyncRun.events")
    def events(self) -> pl.DataFrame:
        """State transitions and notes of this run, with timestamps."""
        return self.workspace.store.events_frame(run_id=self.id)

    @property
    def validation(self) -> Any:
        """Per-check results of this run, one row per check: ``run.validation()`` (a method since 0.2:
        it queries the checks table; ``run.validation`` without the call still works, with a
        DeprecationWarning)."""
        return _MethodNow(lambda: self.workspace.store.checks_frame(self.id), "run.validation")

    @checked("SyncRun.wait")
    def wait(self, timeout: float | None = None) -> SyncRun:
        """Block until a background run stops (ended or paused), or ``timeout`` seconds passed.
        Ctrl-C (a kernel interrupt) while waiting pauses the run at its next batch boundary, as it
        does a foreground run, and raises KeyboardInterrupt once it stopped; the next sync.run()
        resumes it."""
        key = self.workspace.store.key
        thread = _registry.run_thread(key, self.id)
        if thread is not None and thread is not threading.current_thread():  # not from its own callback
            _registry.wait_for_run(key, self.id, thread, timeout)
        return self

    @checked("SyncRun.pause")
    def pause(self) -> None:
        """Ask the run to stop at the next batch boundary; it becomes paused and resumes on the next run.
        A run that already ended (success or failed) raises :class:`dfsync.InvalidTransition`, as abort()."""
        self.workspace.store.require("pause", self._row["sync_id"])
        st = self.status
        if st.terminal:  # was stored as a request no run would read, and said nothing
            raise InvalidTransition(f"run {self.id} of sync {self.sync_name!r} already ended {st.value}; only a "
                                    f"running run can be paused")
        self._request("pause")

    @checked("SyncRun.abort")
    def abort(self) -> None:
        """Move a running or paused run to failed (a running one stops at the next batch boundary).
        A run that already ended (success or failed) raises :class:`dfsync.InvalidTransition`."""
        store = self.workspace.store
        store.require("abort", self._row["sync_id"])
        st = self.status
        if st.terminal:  # success and failed are final (STATES.md): refused, not ignored
            raise InvalidTransition(f"run {self.id} of sync {self.sync_name!r} already ended {st.value}; only a "
                                    f"running or paused run can be aborted")
        if st == RunStatus.PAUSED and not _registry.is_running(store.key, self.id):
            sync = self.sync
            if not stored_applies_per_batch(sync.spec, sync.definition):
                abandon_run(store, sync.id, sync.name, sync.spec, self.id, ignore=DfsyncError)
            store.transition_run(self.id, RunStatus.FAILED, "aborted by the user", error="aborted by the user",
                                 error_kind="aborted")
            _registry.drop_live_staging(store.key, self.id)  # closed, and its directory removed
            notify(sync, self.id, RunStatus.FAILED)  # it ended failed: on_failure, as for a running run aborted
            return
        self._request("abort")

    def _request(self, what: str) -> None:
        store = self.workspace.store
        if not _registry.request_stop(store.key, self.id, what):
            store.request(self.id, what)  # a run in another process polls for it

    def __repr__(self) -> str:
        c = self.counts
        text = (f"<dfsync.SyncRun {self.id} of {self.sync_name!r}: {self.status.value} "
                f"(inserted={c['inserted']}, updated={c['updated']}, deleted={c['deleted']}, "
                f"unchanged={c['unchanged']}, invalid={c['invalid']}, failed={c['failed']})")
        if (c["invalid"] or c["failed"]) and self.status.value not in _html_run.ACTIVE:
            why = _html_run.run_text(self)
            text += f"; {why}" if why else ""
        return text + ">"

    def _repr_html_(self) -> str:
        return _html_run.run_html(self)


class _MethodNow:
    """What a former property that became a method returns (the handle convention: properties
    are a handle's own state, methods query other rows). Calling it is the new spelling; using
    it as the value itself (the old spelling) still works and warns."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Any, name: str) -> None:
        self._fn, self._name = fn, name

    def __call__(self) -> Any:
        return self._fn()

    def _old(self) -> Any:
        import warnings

        warnings.warn(f"{self._name} is a method: write {self._name}() (the spelling without the call "
                      f"goes away in the next version)", DeprecationWarning, stacklevel=3)
        return self._fn()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._old(), name)

    def __getitem__(self, key: Any) -> Any:
        return self._old()[key]

    def __iter__(self) -> Any:
        return iter(self._old())

    def __len__(self) -> int:
        return len(self._old())

    def __contains__(self, item: Any) -> bool:
        return item in self._old()

    def __eq__(self, other: object) -> Any:
        return self._old() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._old())


class Preview:
    """What a run would do now: counts per action, the staged rows, check results."""

    def __init__(self, sync_name: str, counts: dict[str, int], records: pl.DataFrame,
                 validation: pl.DataFrame | None, problems: list[str]) -> None:
        self.sync_name = sync_name
        self.counts = counts
        self.records = records
        self.validation = validation
        self.problems = problems

    @property
    def changes(self) -> pl.DataFrame:
        """Only the rows that would be sent or deleted."""
        return self.records.filter(pl.col("_action") != "unchanged")

    def __repr__(self) -> str:
        return f"<dfsync.Preview of {self.sync_name!r}: {self.counts}>"

    def _repr_html_(self) -> str:
        return _html_preview.preview_html(self)

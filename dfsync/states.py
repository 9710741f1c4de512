"""The two state machines of STATES.md, as enums and transition tables.

Every change of a sync's or a run's status goes through :func:`check_transition`
(called by the store, which also appends the event); nothing else may change a status.
"""

from __future__ import annotations

from enum import Enum

from .errors import ConfigError, InvalidTransition

__all__ = [
    "RECORD_META",
    "ACTIVE_RUNS",
    "RUN_TRANSITIONS",
    "SYNC_TRANSITIONS",
    "DestinationMode",
    "RecordStatus",
    "RunStatus",
    "SyncMode",
    "SyncStatus",
    "UNFINISHED_RUNS",
    "check_failed_rows_setting",
    "check_transition",
    "failed_rows_allowed",
]


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object, what: str) -> _StrEnum:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise ConfigError(f"unknown {what} {value!r}; choose one of {choices}") from None


class SyncStatus(_StrEnum):
    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"
    DISABLED = "disabled"

    @property
    def scheduled(self) -> bool:
        """Whether a sync in this status has a next run (the scheduler's, ``next_run_at``): a
        disabled sync has none until it is enabled. The one place that rule is decided."""
        return self is not SyncStatus.DISABLED


class RunStatus(_StrEnum):
    STARTED = "started"
    QUERYING = "querying"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    PAUSED = "paused"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCESS, RunStatus.FAILED)

    @property
    def active(self) -> bool:
        """A run that a process is working on right now."""
        return self in (
            RunStatus.STARTED,
            RunStatus.QUERYING,
            RunStatus.QUEUED,
            RunStatus.IN_PROGRESS,
        )


#: the values of the active statuses (the runs a process works on), and with ``paused`` the runs
#: that are not finished: for SQL and for code holding a status as text
ACTIVE_RUNS: tuple[str, ...] = tuple(s.value for s in RunStatus if s.active)
UNFINISHED_RUNS: tuple[str, ...] = (*ACTIVE_RUNS, RunStatus.PAUSED.value)


class SyncMode(_StrEnum):
    FULL_REFRESH = "full_refresh"
    INCREMENTAL = "incremental"


class DestinationMode(_StrEnum):
    INSERT = "insert"
    UPSERT = "upsert"
    UPDATE = "update"
    MIRROR = "mirror"
    REPLACE = "replace"

    # What each mode does, decided here once (the runner, staging, preview and destinations ask).
    @property
    def removes_missing(self) -> bool:
        """Rows gone from the source leave the destination (counted as ``deleted``), so the mode
        needs a full refresh: an incremental read cannot see them."""
        return self in (DestinationMode.MIRROR, DestinationMode.REPLACE)

    @property
    def sends_deletes(self) -> bool:
        """Delete records are sent (``replace`` drops missing rows by rewriting instead)."""
        return self == DestinationMode.MIRROR

    @property
    def sends_unchanged(self) -> bool:
        """Unchanged rows are sent too: the destination is rewritten with every row."""
        return self == DestinationMode.REPLACE

    @property
    def sends_updates(self) -> bool:
        """Changed rows are sent (``insert`` skips them: records ``skipped``)."""
        return self != DestinationMode.INSERT

    @property
    def rewrites(self) -> bool:
        """The run rewrites the destination and applies it at its end (never batch by batch): a
        failed run's batches are abandoned, the new table's schema is the records'."""
        return self == DestinationMode.REPLACE

    @property
    def refills_lost_rows(self) -> bool:
        """A destination table found without a row while the delivered state says it holds some
        (dropped or emptied by hand) is refilled: the delivered state is forgotten and every row
        sent again. Not ``replace`` (it rewrites the table anyway) and not ``insert``: an
        append-only table is often drained by whatever reads it (a queue, an outbox), and refilling
        it would hand every row ever sent to that reader again."""
        return self not in (DestinationMode.INSERT, DestinationMode.REPLACE)

    @property
    def invalid_note(self) -> str | None:
        """What a quarantined row's record says about the destination (its ``_error``): a
        ``replace`` run writes exactly the run's valid rows, so a quarantined row is not in the
        rewritten table, whatever version of it was there before."""
        if self.rewrites:
            return ("not in the destination: destination_mode='replace' rewrote the table with this run's "
                    "valid rows only (any version of this row delivered earlier is gone too)")
        return None

    @property
    def upserts(self) -> bool:
        """A sent row's key may already be at the destination: written as insert-or-update."""
        return self in (DestinationMode.UPSERT, DestinationMode.MIRROR)

    @property
    def sent_actions(self) -> tuple[str, ...]:
        """The staged actions a run sends in this mode."""
        return ("insert",) + ("update",) * self.sends_updates + ("delete",) * self.sends_deletes \
            + ("unchanged",) * self.sends_unchanged


class RecordStatus(_StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"


#: the bookkeeping columns a stored record carries besides the record's own fields
RECORD_META = ("_run_id", "_action", "_status", "_batch", "_error", "_checks", "_fingerprint")


def check_failed_rows_setting(value: object, name: str) -> None:
    """``max_failed_rows`` / ``failed_rows_alert``: a row count (int >= 0) or a fraction of the
    rows sent (a float from 0.0 to 1.0; 1.0 is every row, as the message says, not one row; a whole
    float above it, 2.0, is a count); raise ConfigError naming the setting otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or (isinstance(value, float) and value >= 1 and not value.is_integer()):
        from .errors import ConfigError

        raise ConfigError(f"{name} must be a row count (int >= 0) or a fraction of sent rows (0.0 to 1.0; "
                          f"1.0 lets every sent row fail), not {value!r}")


def failed_rows_allowed(setting: int | float, sent: int) -> float:
    """How many rejected rows ``max_failed_rows`` / ``failed_rows_alert`` lets pass for a run that
    sent ``sent`` rows: a fraction of them (a float, 0 < setting <= 1), else the row count itself."""
    return setting * sent if isinstance(setting, float) and 0 < setting <= 1 else setting


def every_row_may_fail(setting: int | float) -> bool:
    """``max_failed_rows=1.0``: every row sent may be rejected and the run still succeeds. Any other
    setting fails a run whose every row was rejected (a wrong endpoint or table, not bad rows)."""
    return isinstance(setting, float) and setting == 1.0


S, R = SyncStatus, RunStatus

# (from, event) -> to.  ``None`` as "from" is creation.
SYNC_TRANSITIONS: dict[tuple[SyncStatus | None, str], SyncStatus] = {
    (None, "create"): S.PENDING,
    **{(s, "run_succeeded"): S.HEALTHY for s in (S.PENDING, S.HEALTHY, S.FAILED)},
    **{(s, "run_failed"): S.FAILED for s in (S.PENDING, S.HEALTHY, S.FAILED)},
    **{(s, "disable"): S.DISABLED for s in (S.PENDING, S.HEALTHY, S.FAILED)},
    # enable goes back to what the last finished run says
    (S.DISABLED, "enable"): S.PENDING,
    (S.DISABLED, "enable_healthy"): S.HEALTHY,
    (S.DISABLED, "enable_failed"): S.FAILED,
}

_ACTIVE_OR_PAUSED = tuple(RunStatus(s) for s in UNFINISHED_RUNS)

RUN_TRANSITIONS: dict[tuple[RunStatus | None, RunStatus], str] = {
    (None, R.STARTED): "run created",
    (R.STARTED, R.QUERYING): "query begins",
    (R.QUERYING, R.QUEUED): "all rows staged",
    (R.QUEUED, R.IN_PROGRESS): "checks passed",
    (R.IN_PROGRESS, R.SUCCESS): "all pending rows handled",
    (R.IN_PROGRESS, R.PAUSED): "interrupted",
    (R.PAUSED, R.IN_PROGRESS): "resumed",
    (R.PAUSED, R.QUERYING): "resumed; staged rows lost, querying again",
    # only a run resumed from paused (it may own applied batches; Store.transition_run checks)
    (R.QUERYING, R.PAUSED): "a resumed run interrupted before it transferred again",
    (R.QUEUED, R.PAUSED): "a resumed run interrupted before it transferred again",
    **{(s, R.FAILED): "error or abort" for s in _ACTIVE_OR_PAUSED},
}


def checks_outcome(invalid: int, on_invalid: str, failed: str, rewrites: bool = False) -> str:
    """The detail of a run's ``queued -> in_progress`` event: "checks passed" only when they did
    and no row was quarantined. ``invalid``: rows quarantined (failing checks under
    on_invalid='skip', null or repeated keys); ``failed``: the summary of the checks that failed;
    ``rewrites``: a replace run, whose new table will not hold the quarantined rows."""
    rows = f"{invalid} invalid row{'' if invalid == 1 else 's'}"
    if on_invalid == "warn" and failed:
        return f"checks failed, the rows are sent anyway (on_invalid='warn'): {failed}"
    if invalid:
        why = f"; {failed}" if failed else ": null or repeated primary keys"
        gone = (", not in the destination (destination_mode='replace' rewrites the table with the valid rows "
                "only: any version of them delivered earlier is gone too)") if rewrites else ""
        return (f"{rows} quarantined and skipped{gone} (on_invalid={on_invalid!r}; "
                f"run.records(status='invalid')){why}")
    if failed:  # dataset-level checks only, no row to quarantine
        return f"checks failed, no row to quarantine (on_invalid={on_invalid!r}): {failed}"
    return RUN_TRANSITIONS[(RunStatus.QUEUED, RunStatus.IN_PROGRESS)]


def check_transition(
    current: RunStatus | SyncStatus | None,
    target: RunStatus | SyncStatus | str,
    *,
    what: str,
) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is allowed.

    ``what`` is ``"run"`` (target a RunStatus) or ``"sync"`` (target an event name).
    """
    if what == "run":
        if (current, target) not in RUN_TRANSITIONS:
            allowed = sorted(str(t) for (f, t) in RUN_TRANSITIONS if f == current)
            raise InvalidTransition(
                f"a run cannot go from {current or 'nothing'!s} to {target!s}; "
                f"from {current or 'nothing'!s} it may go to: {', '.join(allowed) or 'nothing (terminal)'}"
            )
    else:
        if (current, target) not in SYNC_TRANSITIONS:
            event = str(target).split("_")[0]  # enable_healthy and enable_failed are the user's enable
            if event == "disable" and current == SyncStatus.DISABLED:
                raise InvalidTransition("the sync is already disabled; sync.enable() (dfsync enable NAME) lets "
                                        "it run again")
            if event == "enable" and current != SyncStatus.DISABLED:
                raise InvalidTransition(f"the sync is not disabled (it is {current or 'nothing'!s}), so there is "
                                        f"nothing to enable; sync.disable() stops it")
            allowed = sorted({str(e).split("_")[0] if str(e).startswith("enable") else str(e)
                              for (f, e) in SYNC_TRANSITIONS if f == current})
            raise InvalidTransition(
                f"a sync in status {current or 'nothing'!s} cannot take the event {target!s}; "
                f"allowed events: {', '.join(allowed) or 'none'}"
            )


def sync_target(current: SyncStatus | None, event: str) -> SyncStatus:
    check_transition(current, event, what="sync")
    return SYNC_TRANSITIONS[(current, event)]

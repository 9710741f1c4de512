"""The two state machines of STATES.md, as enums and transition tables.

Every change of a sync's or a run's status goes through :func:`check_transition`
(called by the store, which also appends the event); nothing else may change a status.
"""

from __future__ import annotations

from enum import Enum

from .errors import InvalidTransition

__all__ = [
    "RUN_TRANSITIONS",
    "SYNC_TRANSITIONS",
    "DestinationMode",
    "RecordStatus",
    "RunStatus",
    "SyncMode",
    "SyncStatus",
    "check_transition",
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
            from .errors import ConfigError

            raise ConfigError(f"unknown {what} {value!r}; choose one of {choices}") from None


class SyncStatus(_StrEnum):
    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"
    DISABLED = "disabled"


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


class SyncMode(_StrEnum):
    FULL_REFRESH = "full_refresh"
    INCREMENTAL = "incremental"


class DestinationMode(_StrEnum):
    INSERT = "insert"
    UPSERT = "upsert"
    UPDATE = "update"
    MIRROR = "mirror"
    REPLACE = "replace"


class RecordStatus(_StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"


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

_ACTIVE_OR_PAUSED = (R.STARTED, R.QUERYING, R.QUEUED, R.IN_PROGRESS, R.PAUSED)

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
            allowed = sorted(str(e) for (f, e) in SYNC_TRANSITIONS if f == current)
            raise InvalidTransition(
                f"a sync in status {current or 'nothing'!s} cannot take the event {target!s}; "
                f"allowed events: {', '.join(allowed) or 'none'}"
            )


def sync_target(current: SyncStatus | None, event: str) -> SyncStatus:
    check_transition(current, event, what="sync")
    return SYNC_TRANSITIONS[(current, event)]

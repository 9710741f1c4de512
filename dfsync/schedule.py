"""Schedules (intervals and cron) and the scheduler loop that runs due syncs.

A schedule is text given to ``create_sync(schedule=...)``:

* ``None``: manual, the sync only runs when asked;
* an interval: ``"every minute"``, ``"every 15 minutes"``, ``"every 2 hours"``,
  ``"every day"``, ``"every 3 days"``, ``"every week"``, and the words ``"hourly"``,
  ``"daily"``, ``"weekly"``. An interval counts from the end of the previous run
  (a run that takes 10 minutes on "every hour" starts again 60 minutes after it ended);
* a cron expression with five fields, ``"*/15 * * * *"`` or ``"0 6 * * mon-fri"``
  (or ``@hourly``/``@daily``/...), read by croniter in the local time zone: it runs
  at those wall-clock times.

The :class:`Scheduler` looks at every sync each ``poll_seconds`` and runs those whose
``next_run_at`` has passed, one after another. Rules:

* a scheduled sync that never ran is due at once (its ``next_run_at`` is when it was created),
  so the first pass runs it; run by hand first, its interval counts from that run;
* missed runs (the machine slept, the scheduler was stopped) lead to **one** catch-up
  run, never a burst: after a run the next time is computed from *now*;
* disabled syncs are skipped, and so are syncs without a schedule;
* a sync already running (in this process or another) is not started again: the
  ``SyncAlreadyRunning`` is logged and the slot counts as taken;
* before a run the scheduler *claims* the slot with a compare-and-set on
  ``next_run_at``, so two schedulers on one workspace (a notebook's ``ws.scheduler()``
  and ``dfsync scheduler``) never both start the same due run.

>>> parse_schedule("every 15 minutes").next_after(datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc))
datetime.datetime(2024, 1, 1, 12, 15, tzinfo=datetime.timezone.utc)
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ._words import plural
from .errors import (
    ConfigError,
    DfsyncError,
    SessionOnlyError,
    SyncAlreadyRunning,
    SyncNotFoundError,
    WorkspaceBusy,
)
from .states import SyncStatus

if TYPE_CHECKING:
    from .workspace import SyncRun, Workspace

__all__ = ["ACCEPTED_FORMS", "Schedule", "Scheduler", "parse_schedule"]

log = logging.getLogger("dfsync.schedule")

ACCEPTED_FORMS = (
    'None (manual runs only); intervals: "every minute", "every 15 minutes", "every 2 hours", '
    '"every day", "every 3 days", "every week", "hourly", "daily", "weekly"; or a five-field cron '
    'expression such as "*/15 * * * *" or "0 6 * * mon-fri" (also "@hourly", "@daily")'
)

_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
          "week": timedelta(weeks=1)}
_WORDS = {"hourly": "every hour", "daily": "every day", "weekly": "every week"}
_INTERVAL_RE = re.compile(r"^every\s+(?:(\d+)\s+)?(minute|hour|day|week)s?$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: an interval or a cron expression.

    >>> parse_schedule("*/15 * * * *").kind
    'cron'
    """

    text: str
    kind: str  # "interval" | "cron"
    interval: timedelta | None = None
    cron: str | None = None

    def next_after(self, dt: datetime) -> datetime:
        """The first run time strictly after ``dt`` (timezone-aware in, timezone-aware out).

        >>> parse_schedule("every 2 hours").next_after(datetime(2024, 1, 1, tzinfo=timezone.utc)).hour
        2
        """
        if dt.tzinfo is None:
            raise ValueError("next_after needs a timezone-aware datetime (e.g. datetime.now().astimezone())")
        if self.interval is not None:
            return dt + self.interval
        from croniter import croniter

        # cron fields mean local wall-clock time, so evaluate in the local zone
        local = dt.astimezone()
        nxt = croniter(self.cron, local).get_next(datetime)
        return nxt if nxt.tzinfo is not None else nxt.replace(tzinfo=local.tzinfo)

    def describe(self) -> str:
        return self.text


def parse_schedule(text: str | None) -> Schedule | None:
    """Parse a schedule; ``None`` means manual. A bad one raises ConfigError listing the forms.

    >>> parse_schedule("every 15 minutes").interval
    datetime.timedelta(seconds=900)
    >>> parse_schedule(None) is None
    True
    """
    if text is None:
        return None
    if isinstance(text, Schedule):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"schedule must be text, not {text!r}; accepted: {ACCEPTED_FORMS}")
    norm = " ".join(text.strip().lower().split())
    norm = _WORDS.get(norm, norm)
    m = _INTERVAL_RE.match(norm)
    if m:
        n = int(m.group(1) or 1)
        if n < 1:
            raise ConfigError(f"schedule {text!r}: the interval must be at least 1 {m.group(2)}; accepted: {ACCEPTED_FORMS}")
        return Schedule(text=text, kind="interval", interval=n * _UNITS[m.group(2)])
    if norm.startswith("every"):
        raise ConfigError(f"cannot read the schedule {text!r}; accepted: {ACCEPTED_FORMS}")
    from croniter import CroniterBadDateError, croniter

    fields = norm.split()
    if (norm.startswith("@") or len(fields) == 5) and croniter.is_valid(norm):
        sched = Schedule(text=text, kind="cron", cron=norm)
        try:
            sched.next_after(_now())
        except CroniterBadDateError:  # valid fields that no date matches
            raise ConfigError(f"the schedule {text!r} never comes round: no date matches it (e.g. February 31st); "
                              f"accepted: {ACCEPTED_FORMS}") from None
        return sched
    raise ConfigError(f"cannot read the schedule {text!r}; accepted: {ACCEPTED_FORMS}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Scheduler:
    """Runs due syncs of one workspace: in a background thread (:meth:`start`), or one pass
    at a time (:meth:`run_pending`, which is what ``dfsync scheduler --once`` does).

    >>> sched = ws.scheduler()          # background thread of this notebook
    >>> sched.stop()

    ``clock`` (a function returning an aware datetime) exists for tests and simulations;
    ``on_run`` is called with each finished :class:`~dfsync.SyncRun`; ``engine``
    (``dfsync.engines.local(...)``/``ray(...)``) runs the buckets of partitioned syncs.
    """

    def __init__(self, ws: Workspace, *, poll_seconds: float = 5.0, clock: Callable[[], datetime] | None = None,
                 on_run: Callable[[SyncRun], Any] | None = None, engine: Any = None) -> None:
        if poll_seconds <= 0:
            raise ConfigError("poll_seconds must be a positive number of seconds")
        ws.store.require("run")  # a role that may not run syncs is told now, not at the first due one
        self.ws = ws
        self.poll_seconds = poll_seconds
        self.clock = clock or _now
        self.on_run = on_run
        self.engine = engine  # where partitioned syncs run their buckets (others run here)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # name of the sync being run now, if any
        self.runs: list[SyncRun] = []  # runs started by this scheduler, oldest first
        #: the due syncs the last pass did not start: (name, why, a problem: False when running elsewhere)
        self.not_started: list[tuple[str, str, bool]] = []

    # .............................................................. one pass
    def due(self) -> list[dict[str, Any]]:
        """Sync rows whose next run time has passed (enabled, with a schedule)."""
        now = self.clock()
        out = []
        for row in self.ws.store.all_syncs():
            if not row.get("schedule") or not SyncStatus(row["status"]).scheduled:
                continue
            nxt = row.get("next_run_at")
            if nxt is None:
                # a schedule without a stored next time (e.g. set by an older dfsync): plan it
                sched = parse_schedule(row["schedule"])
                assert sched is not None
                self.ws.store.set_sync_fields(row["id"], next_run_at=sched.next_after(now))
                continue
            if nxt <= now:
                out.append(row)
        return out

    def run_pending(self) -> list[SyncRun]:
        """Run every due sync once (one after another) and return the runs started.

        A sync that cannot start (running elsewhere, session-only, disabled meanwhile) is
        logged and its next run planned; nothing here raises for one sync's problem.
        """
        started: list[SyncRun] = []
        self.not_started = []
        # every pass, not only when a due sync starts: runs whose owner died (or, on a PostgreSQL
        # workspace, stopped beating its heart) are moved per STATES.md, on any host
        for rid, was, now in self.ws.recover():
            log.info("run %s: its owner process is gone (%s -> %s)", rid, was, now)
        for row in self.due():
            if self._stop.is_set():
                break
            run = self._run_one(row)
            if run is not None:
                started.append(run)
        return started

    def _run_one(self, row: dict[str, Any]) -> SyncRun | None:
        store, name = self.ws.store, row["name"]
        sched = parse_schedule(row["schedule"])
        assert sched is not None
        # claim the slot first, so another scheduler on this workspace does not start it too
        if not store.claim_next_run(row["id"], row["next_run_at"], sched.next_after(self.clock())):
            log.info("sync %r: another scheduler took this run", name)
            return None
        run = None
        self.current = name
        try:
            sync = self.ws.sync(name)
            log.info("sync %r: starting scheduled run", name)
            engine = self.engine if self.engine is not None and sync.spec.partitions else None
            run = sync.run(progress=False, trigger="schedule", engine=engine)
            if run.status.value in ("failed", "paused"):  # why, where a scheduler's log or a script shows it
                lines = (run.error or "").strip().splitlines()
                log.warning("sync %r: run %s %s%s %s", name, run.id, run.status.value,
                            f": {lines[0]}" if lines else "", run.counts)
            else:
                log.info("sync %r: run %s %s %s", name, run.id, run.status.value, run.counts)
        except SyncAlreadyRunning as exc:
            log.info("sync %r: not started, already running: %s", name, exc)
            self.not_started.append((name, f"already running: {exc}", False))
        except SessionOnlyError as exc:
            log.warning("sync %r: skipped: %s", name, exc)
            self.not_started.append((name, f"skipped: {exc}", True))
        except SyncNotFoundError:
            log.info("sync %r was deleted", name)
            return None
        except DfsyncError as exc:
            log.warning("sync %r: could not start: %s", name, exc)
            self.not_started.append((name, f"could not start: {exc}", True))
        except Exception as exc:  # one sync's bug must not stop the others
            log.exception("sync %r: unexpected error", name)
            self.not_started.append((name, f"unexpected error: {type(exc).__name__}: {exc}", True))
        finally:
            self.current = None
        # the next run counts from now, so a long or late run leads to one catch-up at most
        with contextlib.suppress(DfsyncError):
            store.set_sync_fields(row["id"], next_run_at=sched.next_after(self.clock()))
        if run is not None:
            self.runs.append(run)
            if self.on_run is not None:
                try:
                    self.on_run(run)
                except Exception:
                    log.exception("on_run callback failed")
        return run

    # .............................................................. loop
    def run_forever(self) -> None:
        """Poll until :meth:`stop` (or Ctrl-C in the foreground)."""
        while not self._stop.is_set():
            try:
                self.run_pending()
            except WorkspaceBusy as exc:  # another process held the file too long: try next poll
                log.warning("%s", exc)
            except Exception:
                log.exception("scheduler pass failed")
            self._stop.wait(self.poll_seconds)

    def start(self) -> Scheduler:
        """Run in a daemon thread of this process; returns self."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self.run_forever, name="dfsync-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling; a run already going on finishes first (pause it with ``run.pause()``)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<dfsync.Scheduler {state}, poll every {self.poll_seconds}s, {plural(len(self.runs), 'run')} started>"

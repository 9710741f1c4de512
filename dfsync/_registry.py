"""Per-process state, in one place, behind a small API.

What lives only as long as this Python process and is shared between the workspace handles,
the runner and the widgets:

- live objects of a sync that cannot be stored (frames, callbacks, functions): :data:`LIVE`;
- runs executing in this process (:func:`start_run` / :func:`end_run`), with their stop
  requests (:func:`request_stop`), progress hooks (:func:`add_progress_hook`) and staged rows
  (:func:`staged_rows`); the runner reads them through :func:`run_control`, and nothing else
  reaches into a live Runner;
- staged rows of paused runs, kept for the resume (:func:`keep_live_staging`, :func:`read_for`,
  :func:`live_staging`, :func:`drop_live_staging`), removed at exit;
- one lock per sync held while this process runs it (:func:`sync_lock`).

Every entry is keyed by the workspace store's key, so two workspaces never share one.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .staging import Staging

__all__ = [
    "LIVE",
    "RunControl",
    "abandon_start",
    "add_progress_hook",
    "begin_start",
    "drop_live_staging",
    "end_run",
    "is_running",
    "keep_live_staging",
    "live_staging",
    "owned_run_alive",
    "read_for",
    "request_stop",
    "run_control",
    "run_thread",
    "staged_rows",
    "start_run",
    "sync_lock",
    "take_live_staging",
    "wait_for_run",
]

Key = tuple[str, int]  # (store key, run id)
ProgressHook = Callable[[str, dict[str, Any]], Any]

#: (store key, sync name) -> live objects that cannot be stored (frames, callbacks, functions)
LIVE: dict[tuple[str, str], dict[str, Any]] = {}


# ---------------------------------------------------------------------- runs in this process
class RunControl:
    """What a run executing in this process shares with its callers. Only the runner reads it;
    callers go through the functions of this module."""

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.thread = thread
        self.hooks: list[ProgressHook] = []
        self.staging: Staging | None = None  # the run's staged rows while it runs (run.records())
        self._stop = threading.Event()
        self._what = "pause"

    def request_stop(self, what: str) -> None:
        if self._what != "abort":  # a pause asked after an abort does not undo it
            self._what = what
        self._stop.set()

    def stop_requested(self) -> str | None:
        """``"pause"`` or ``"abort"`` once a caller asked the run to stop, else None."""
        return self._what if self._stop.is_set() else None

    def report(self, status: str, row: Callable[[], dict[str, Any]]) -> None:
        """Call every progress hook with the run's status and row (read once, only if hooked)."""
        hooks = list(self.hooks)
        if not hooks:
            return
        try:
            current = row()
        except Exception:  # a display problem never breaks a run
            return
        for hook in hooks:
            with contextlib.suppress(Exception):  # nor does one display hide the others
                hook(status, current)


_RUNS: dict[Key, RunControl] = {}
_RUNS_GUARD = threading.Lock()
#: store key -> runs of this process created (or being created) but not registered yet (start_run)
_STARTING: dict[str, int] = {}


def begin_start(store_key: str) -> None:
    """A run of this process is about to be created: until :func:`start_run` registers it (or
    :func:`abandon_start`), :func:`owned_run_alive` takes this process's unregistered runs as alive,
    so another thread's ``recover()`` never fails a run that is just starting."""
    with _RUNS_GUARD:
        _STARTING[store_key] = _STARTING.get(store_key, 0) + 1


def abandon_start(store_key: str) -> None:
    """The run announced by :func:`begin_start` will not be registered (its creation failed)."""
    with _RUNS_GUARD:
        _drop_start(store_key)


def _drop_start(store_key: str) -> None:
    if _STARTING.get(store_key, 0) > 1:
        _STARTING[store_key] -= 1
    else:
        _STARTING.pop(store_key, None)


def owned_run_alive(store_key: str, run_id: int) -> bool:
    """Is this run of this process executing, or possibly one just being started here?"""
    with _RUNS_GUARD:
        return (store_key, run_id) in _RUNS or store_key in _STARTING


def start_run(store_key: str, run_id: int, *, thread: threading.Thread | None = None,
              progress: ProgressHook | None = None) -> RunControl:
    """Register a run about to execute in this process (on ``thread``, or the caller's)."""
    control = RunControl(thread)
    if progress is not None:
        control.hooks.append(progress)
    with _RUNS_GUARD:
        _RUNS[(store_key, run_id)] = control
        _drop_start(store_key)  # announced by begin_start: registered now
    return control


def end_run(store_key: str, run_id: int) -> None:
    with _RUNS_GUARD:
        _RUNS.pop((store_key, run_id), None)
    if (store_key, run_id) not in _LIVE_STAGING:  # what it staged from matters only to staged rows kept
        _READ_FOR.pop((store_key, run_id), None)


def run_control(store_key: str, run_id: int) -> RunControl:
    """The control of a registered run (a fresh, unshared one for a run nobody registered)."""
    return _RUNS.get((store_key, run_id)) or RunControl()


def is_running(store_key: str, run_id: int) -> bool:
    """Does this run execute in this process right now?"""
    return (store_key, run_id) in _RUNS


def run_thread(store_key: str, run_id: int) -> threading.Thread | None:
    """The thread a background run of this process executes on (None: not one)."""
    control = _RUNS.get((store_key, run_id))
    return control.thread if control is not None else None


def request_stop(store_key: str, run_id: int, what: str) -> bool:
    """Ask a run executing in this process to ``"pause"`` or ``"abort"`` at its next batch
    boundary. False when it does not execute here (then ask through the workspace)."""
    control = _RUNS.get((store_key, run_id))
    if control is None:
        return False
    control.request_stop(what)
    return True


def add_progress_hook(store_key: str, run_id: int, hook: ProgressHook) -> bool:
    """Call ``hook(status, run_row)`` at every state change and batch of a run executing in
    this process (once, however often added). False when it does not execute here."""
    control = _RUNS.get((store_key, run_id))
    if control is None:
        return False
    if hook not in control.hooks:
        control.hooks.append(hook)
    return True


def staged_rows(store_key: str, run_id: int) -> Staging | None:
    """The staged rows of a run paused or executing in this process, if any."""
    key = (store_key, run_id)
    staging = _LIVE_STAGING.get(key)
    if staging is None and key in _RUNS:
        staging = _RUNS[key].staging
    return staging


# ---------------------------------------------------------------------- paused runs' staging
#: (store key, run id) -> Staging kept alive for a paused run in this process
_LIVE_STAGING: dict[Key, Staging] = {}


def live_staging(store_key: str, run_id: int) -> Staging | None:
    return _LIVE_STAGING.get((store_key, run_id))


def keep_live_staging(store_key: str, run_id: int, staging: Staging) -> None:
    """Keep a paused run's staged rows for its resume in this process."""
    _LIVE_STAGING[(store_key, run_id)] = staging


def read_for(store_key: str, run_id: int, version: int, source: object) -> bool:
    """Note what a run of the sync stages from now: its definition version and its session source
    object (None when built from the stored config). Returns whether the run's kept staged rows came
    from the same (a paused run's rows staged under another definition or frame are not resumed)."""
    key = (store_key, run_id)
    then, _READ_FOR[key] = _READ_FOR.get(key), (version, source)
    return then is not None and then[0] == version and then[1] is source


#: (store key, run id) -> (definition version, session source object) a run last staged from
_READ_FOR: dict[Key, tuple[int, object]] = {}


def take_live_staging(store_key: str, run_id: int) -> Staging | None:
    """Forget a paused run's staged rows (returned, still open) without removing them."""
    _READ_FOR.pop((store_key, run_id), None)
    return _LIVE_STAGING.pop((store_key, run_id), None)


def drop_live_staging(store_key: str | None = None, run_id: int | None = None) -> None:
    """Close and remove the staged rows of one paused run (or, without arguments, of all):
    the next run of it reads the source again, as after a new process."""
    if store_key is None:
        doomed = list(_LIVE_STAGING.values())
        _LIVE_STAGING.clear()
        _READ_FOR.clear()
    else:
        assert run_id is not None
        one = _LIVE_STAGING.pop((store_key, run_id), None)
        doomed = [one] if one is not None else []
    for staging in doomed:
        with contextlib.suppress(Exception):
            staging.close()
        shutil.rmtree(staging.temp_dir, ignore_errors=True)


# A paused run's staged rows live as long as this process: at exit their files go too (a run
# paused by a CLI process left its staging directory, and any spilled rows, behind); the next
# process resumes it by reading the source again.
atexit.register(drop_live_staging)


def wait_for_run(store_key: str, run_id: int, thread: threading.Thread, timeout: float | None = None) -> None:
    """Block until the ``thread`` a background run executes on has finished (the run ended or
    stopped, its callbacks and the final update of its panel done), or ``timeout`` seconds passed.
    Polled, not ``Thread.join``: Ctrl-C does not interrupt a join (Python 3.11) and can leave it
    marking a live thread stopped. Ctrl-C while waiting pauses the run at its next batch boundary,
    as it does a foreground run (STATES.md), waits for it to stop (a second Ctrl-C stops waiting)
    and is raised to the caller."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while thread.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.02 if deadline is None else max(0.0, min(0.02, deadline - time.monotonic())))
    except KeyboardInterrupt:
        request_stop(store_key, run_id, "pause")
        with contextlib.suppress(KeyboardInterrupt):
            while thread.is_alive():
                time.sleep(0.02)
        raise


def finish_background_runs() -> None:
    """At exit, wait for the background runs of this process (``sync.run(background=True)``)
    to end: their daemon threads would otherwise be stopped inside DuckDB as the interpreter
    goes, and the process aborted ("terminate called ..."). Ctrl-C while waiting pauses them at
    their next batch boundary (the next ``sync.run()`` resumes them); a second Ctrl-C stops waiting."""
    import sys
    import time

    with _RUNS_GUARD:
        going = [key for key, c in _RUNS.items() if c.thread is not None and c.thread.is_alive()]
    if not going:
        return
    sys.stderr.write(f"dfsync: waiting for {', '.join(f'run {run_id}' for _, run_id in going)} "
                     f"(sync.run(background=True)) to finish before this process exits; Ctrl-C pauses "
                     f"it (the next sync.run() resumes it)\n")

    def wait() -> None:  # until each has ended (end_run); not Thread.join, which a Ctrl-C can
        while any(key in _RUNS for key in going):  # leave marking a live thread stopped (3.11)
            time.sleep(0.05)

    try:
        wait()
    except KeyboardInterrupt:
        for key in going:
            request_stop(*key, "pause")
        with contextlib.suppress(KeyboardInterrupt):
            wait()


# Called when the main thread ends, before Python stops the thread pools (concurrent.futures,
# imported first so that this runs before its own hook: the latest registered runs first) that a
# run's writer uses: from a plain atexit hook the run would fail "cannot schedule new futures".
import concurrent.futures.thread  # noqa: E402,F401

threading._register_atexit(finish_background_runs)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- sync locks
#: (store key, sync id) -> lock held while this process runs the sync
_SYNC_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def sync_lock(store_key: str, sync_id: int) -> threading.Lock:
    """The lock this process holds while it runs the sync."""
    with _LOCKS_GUARD:
        return _SYNC_LOCKS.setdefault((store_key, sync_id), threading.Lock())

"""Run callbacks (``on_success`` / ``on_failure`` / ``on_paused``): loading a stored
``"package.module:function"`` reference, and calling them when a run ends.

Callbacks fire on the handle's side, after the runner returned: a callback never changes
the run's outcome; one that raises is noted as an event of the run.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .states import RunStatus, failed_rows_allowed

if TYPE_CHECKING:
    from .sync import Sync


def resolve_callback(ref: str, what: str) -> Callable[..., Any]:
    """Import the function ``ref`` names (``"package.module:function"``; ``what`` names the option:
    a run callback, an HTTP destination's ``body`` or ``response_parser``).

    >>> resolve_callback("posixpath:basename", "on_success")("a/b")
    'b'
    """
    mod, _, qual = str(ref).partition(":")
    if not mod or not qual:
        raise ConfigError(f"{what}={ref!r}: give a function, or write it as 'package.module:function'")
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{what}={ref!r} cannot be imported ({exc}); is the module installed? "
                          "Write it as 'package.module:function'") from exc
    if not callable(obj):
        raise ConfigError(f"{what}={ref!r} is not a function")
    return obj  # type: ignore[no-any-return]


class LazyCallback:
    """A stored callback reference, imported when the run ends."""

    def __init__(self, ref: str, what: str) -> None:
        self.ref, self.what = ref, what

    def __call__(self, run: Any) -> Any:
        return resolve_callback(self.ref, self.what)(run)

    def __repr__(self) -> str:
        return f"<callback {self.ref}>"


def notify(sync: Sync, run_id: int, status: RunStatus) -> None:
    """Call the sync's callback for how its run ended (and ``on_failure`` for a successful run
    whose rejected rows pass ``failed_rows_alert``)."""
    callbacks = {RunStatus.SUCCESS: sync.on_success, RunStatus.FAILED: sync.on_failure,
                 RunStatus.PAUSED: sync.on_paused}
    cb = callbacks.get(status)
    run = sync.workspace.run(run_id)
    alert = sync.failed_rows_alert
    if status == RunStatus.SUCCESS and alert is not None and sync.on_failure is not None:
        counts = run.counts
        if counts["failed"] > failed_rows_allowed(alert, counts["sent"]):
            _call(sync, run_id, sync.on_failure, run, "on_failure (failed_rows_alert)")
    if cb is not None:
        _call(sync, run_id, cb, run, f"on_{status.value if status != RunStatus.SUCCESS else 'success'}")


def _call(sync: Sync, run_id: int, cb: Callable[[Any], Any], run: Any, name: str) -> None:
    try:
        cb(run)
    except Exception as exc:  # a callback never changes the run's outcome
        with contextlib.suppress(Exception):
            sync.workspace.store.note(sync.id, run_id, f"callback {name} raised {type(exc).__name__}: {exc}")

"""Run callbacks (``on_success`` / ``on_failure`` / ``on_paused``): loading a stored
``"package.module:function"`` reference, and calling them when a run ends.

Callbacks fire on the handle's side, after the runner returned: a callback never changes
the run's outcome; one that raises is noted as an event of the run and logged as a warning.

A stored reference is code named by data that any host sharing the workspace may run, so a
host imports it only from a module it allows (``Workspace(..., allowed_callbacks=[...])`` or
``DFSYNC_ALLOWED_CALLBACKS``; a listed package allows its submodules). Any other is never
imported: the run notes that it was not run. A callable passed in this Python session is not
a reference and always runs. Nothing stored is evaluated (no ``eval``, no ``pickle``).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._settings import setting
from .errors import ConfigError
from .states import RunStatus, failed_rows_allowed

if TYPE_CHECKING:
    from .sync import Sync


def module_allowed(module: str) -> bool:
    """Whether this host runs stored callbacks from ``module`` (it, or a package above it, is
    in the ``allowed_callbacks`` setting).

    >>> module_allowed("myteam.alerts.slack"), module_allowed("myteam_other")
    (False, False)
    """
    return any(module == a or module.startswith(a + ".") for a in setting("allowed_callbacks"))


def not_allowed_message(ref: str, what: str) -> str:
    module = str(ref).partition(":")[0]
    return (f"{what}={ref!r} is a stored callback from module {module!r}, which this host does not allow, "
            f"so it was not imported; to run it here allow the module: Workspace(..., "
            f"allowed_callbacks=[{module!r}]) or DFSYNC_ALLOWED_CALLBACKS={module}")


def parse_ref(ref: str, what: str) -> tuple[str, str]:
    """``(module, qualified name)`` of a ``"package.module:function"`` reference."""
    mod, _, qual = str(ref).partition(":")
    if not mod or not qual or not all(p.isidentifier() for p in (*mod.split("."), *qual.split("."))):
        raise ConfigError(f"{what}={ref!r}: give a function, or write it as 'package.module:function'")
    return mod, qual


def resolve_callback(ref: str, what: str) -> Callable[..., Any]:
    """Import the function ``ref`` names (``"package.module:function"``; ``what`` names the option:
    a run callback, an HTTP destination's ``body`` or ``response_parser``), if its module is
    allowed on this host (else ``ConfigError``, nothing imported).

    >>> from dfsync._settings import use
    >>> with use({"allowed_callbacks": ("posixpath",)}):
    ...     resolve_callback("posixpath:basename", "on_success")("a/b")
    'b'
    """
    mod, qual = parse_ref(ref, what)
    if not module_allowed(mod):
        raise ConfigError(not_allowed_message(ref, what))
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
    if isinstance(cb, LazyCallback) and not module_allowed(str(cb.ref).partition(":")[0]):
        text = f"callback {name} not run: " + not_allowed_message(cb.ref, cb.what)
        with contextlib.suppress(Exception):  # the run goes on: its event says why nothing was called
            sync.workspace.store.note(sync.id, run_id, text)
        _warn(sync, run_id, text)
        return
    try:
        cb(run)
    except Exception as exc:  # a callback never changes the run's outcome
        text = f"callback {name} raised {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            sync.workspace.store.note(sync.id, run_id, text)
        _warn(sync, run_id, text)


def _warn(sync: Sync, run_id: int, text: str) -> None:
    """The alert a callback was to send did not go: one warning on the ``dfsync`` logger (a script
    or the scheduler's log shows it), besides the run's event."""
    import logging

    logging.getLogger("dfsync").warning("sync %r, run %d: %s (the run's outcome is unchanged)", sync.name, run_id, text)

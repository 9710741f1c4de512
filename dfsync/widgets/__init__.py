"""Live ipywidgets for notebooks: :class:`SyncPanel`, :class:`RunHistory`, :class:`Dashboard`.

They are ipywidgets ``VBox`` subclasses, so they compose in ``ipywidgets.Tab``, ``HBox`` and
any layout. ipywidgets is imported only when one of them is first used, so ``import dfsync``
(and ``import dfsync.widgets``) works without it; using one without it raises
:class:`~dfsync.MissingDependencyError` naming ``pip install 'dfsync[widgets]'``.

>>> import dfsync, ipywidgets
>>> ws = dfsync.Workspace("state.duckdb")
>>> panel = dfsync.widgets.SyncPanel(ws.sync("customers"))
>>> ipywidgets.Tab([panel, dfsync.widgets.RunHistory(ws.sync("customers"))], titles=["panel", "history"])
>>> panel.run_button.click()   # what clicking Run in the browser does

Every widget also carries a static HTML snapshot of what it shows (``text/html`` next to the
widget view), and ``sync.run()`` in a notebook shows its progress as HTML updated in place,
so a saved notebook reads the same in nbconvert HTML, nbviewer and GitHub without a kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError

if TYPE_CHECKING:
    from ._board import Dashboard, RunHistory
    from ._panel import SyncPanel

__all__ = ["Dashboard", "RunHistory", "SyncPanel", "live_reporter"]

_WHERE = {"SyncPanel": "_panel", "RunHistory": "_board", "Dashboard": "_board"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dfsync.widgets' has no attribute {name!r}")
    import importlib

    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        raise MissingDependencyError("ipywidgets", "widgets", "dfsync's notebook widgets") from None
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def live_reporter(sync: Any, run_id: int) -> Any:
    """Display a live :class:`SyncPanel` for run ``run_id`` and return its progress callable.

    Used by ``sync.run(background=True)`` in a notebook (its Pause and Abort buttons work while
    the run goes on); raises ``MissingDependencyError`` without ipywidgets.
    """
    from ._panel import live_reporter as make

    return make(sync, run_id)

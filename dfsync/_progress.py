"""Progress while a run goes: a live panel in a notebook, a tqdm bar in a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .workspace import Sync


def in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def make_reporter(sync: Sync, run_id: int, *, background: bool = False) -> Any:
    """A callable(status, run_row) that shows progress, or None when there is nowhere to show it."""
    if in_notebook():
        from .widgets import live_reporter

        try:
            return live_reporter(sync, run_id)
        except ImportError:  # no ipywidgets: a static HTML display that is replaced as the run goes
            return HtmlReporter(sync, run_id)
    if background or not sys.stderr.isatty():
        return None
    return TerminalReporter(sync.name, run_id)


class HtmlReporter:
    """Notebook progress without ipywidgets: one HTML output updated in place (``display_id``)."""

    def __init__(self, sync: Sync, run_id: int) -> None:
        from IPython.display import HTML, display

        self._HTML = HTML
        self.run = sync.workspace.run(run_id)
        self.handle = display(HTML(self._html()), display_id=True)
        self._last = 0.0
        self._status = ""

    def _html(self) -> str:
        from . import _html

        return _html.run_html(self.run)

    def __call__(self, status: str, row: dict[str, Any]) -> None:
        import time

        now = time.monotonic()
        if status == self._status and now - self._last < 0.2:
            return
        self._status, self._last = status, now
        if self.handle is not None:
            self.handle.update(self._HTML(self._html()))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.update(self._HTML(self._html()))


class TerminalReporter:
    def __init__(self, name: str, run_id: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=f"{name} #{run_id}", unit="row", leave=True, file=sys.stderr)

    def __call__(self, status: str, row: dict[str, Any]) -> None:
        total = int(row["inserted"] or 0) + int(row["updated"] or 0) + int(row["deleted"] or 0) - int(row["invalid"] or 0)
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = int(row["sent"] or 0)
        self.bar.set_postfix_str(status, refresh=True)

    def close(self) -> None:
        self.bar.close()

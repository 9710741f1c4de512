"""Progress while a run goes: a live panel in a notebook, a tqdm bar in a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._html_run import run_html, to_send

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
    """A callable(status, run_row) that shows progress, or None when there is nowhere to show it.

    In a notebook a blocking run shows HTML updated in place (its buttons could not act while
    the cell runs anyway): it leaves no widget models behind, and the saved notebook shows the
    run's final state wherever it is opened. A background run gets a live SyncPanel, whose
    Pause and Abort work while it goes on.
    """
    if in_notebook():
        if background:
            try:
                from .widgets import live_reporter

                return live_reporter(sync, run_id)
            except ImportError:  # no ipywidgets: the HTML display below
                pass
        return HtmlReporter(sync, run_id)
    if background or not sys.stderr.isatty():
        return None
    return TerminalReporter(sync.name, run_id)


class HtmlReporter:
    """Notebook progress as one HTML output updated in place (``display_id``); no widgets."""

    def __init__(self, sync: Sync, run_id: int) -> None:
        from IPython.display import display

        self.run = sync.workspace.run(run_id)
        self.handle = display(self._bundle(), raw=True, display_id=True)
        self._last = 0.0
        self._status = ""

    def _bundle(self, row: dict[str, Any] | None = None) -> dict[str, str]:
        row = row if row is not None else self.run.workspace.store.run_row(self.run.id)
        return {"text/html": run_html(self.run, row),
                "text/plain": f"<dfsync run {self.run.id} of {self.run.sync_name!r}: {row['status']}>"}

    def __call__(self, status: str, row: dict[str, Any]) -> None:
        import time

        now = time.monotonic()
        if status == self._status and now - self._last < 0.2:
            return
        self._status, self._last = status, now
        if self.handle is not None:
            self.handle.update(self._bundle(row), raw=True)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)


class TerminalReporter:
    COUNTS = ("queried", "inserted", "updated", "deleted", "unchanged", "invalid", "sent")

    def __init__(self, name: str, run_id: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=0, desc=f"{name} #{run_id}", unit="row", leave=True, file=sys.stderr)

    def __call__(self, status: str, row: dict[str, Any]) -> None:
        total = to_send({k: int(v or 0) for k, v in row.items() if k in self.COUNTS})
        if total and self.bar.total != total:
            self.bar.total = total
        self.bar.n = int(row["sent"] or 0)
        self.bar.set_postfix_str(status_text(status, row), refresh=True)

    def close(self) -> None:
        self.bar.close()


def status_text(status: str, row: dict[str, Any]) -> str:
    """A run's status for one line of text; a failed or paused run adds why (the first line of its error)."""
    error = row.get("error")
    if status in ("failed", "paused") and error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"{status}: {reason[:300]}{'…' if len(reason) > 300 else ''}" if reason else status
    return f"{status}, buckets: {row['buckets']}" if row.get("buckets") else status

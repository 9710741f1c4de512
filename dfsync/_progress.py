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
    """A callable(status, run_row) that shows progress, or a :class:`LogReporter` (not callable:
    it only speaks at the end) when there is nowhere to draw it.

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
        return LogReporter(sync, run_id)
    return TerminalReporter(sync.name, run_id)


class LogReporter:
    """No notebook and no terminal to draw in (a script run by cron, its output sent to a file), or
    a background run outside a notebook: a run that ends failed or paused says so in one warning
    on the ``dfsync`` logger, which Python prints to stderr when the script set no logging up.
    Not a progress hook (nothing to show while the run goes): only :meth:`close` speaks."""

    def __init__(self, sync: Sync, run_id: int) -> None:
        self.name, self.run_id, self.store = sync.name, run_id, sync.workspace.store

    def close(self) -> None:
        import logging

        try:
            row = self.store.run_row(self.run_id)
        except Exception:  # the warning never costs the run
            return
        status = str(row.get("status"))
        if status not in ("failed", "paused"):
            return
        lines = str(row.get("error") or "").strip().splitlines()
        after = ("the next sync.run() resumes it" if status == "paused" else
                 "run.error has the whole text; sync.run(raise_on_failure=True) raises SyncRunFailed instead")
        if status == "paused" and lines and "resumes it" in lines[0]:
            after = "run.error has the whole text"  # the error says what resumes it (enable a disabled sync first)
        logging.getLogger("dfsync").warning("sync %r, run %d %s%s (%s; progress=False leaves this warning out)",
                                            self.name, self.run_id, status, f": {lines[0]}" if lines else "", after)


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

"""Live ipywidgets for notebooks: :class:`SyncPanel`, :class:`RunHistory`, :class:`Dashboard`.

This is the only dfsync module that imports ipywidgets, and only when a widget is built,
so ``import dfsync`` (and even ``import dfsync.widgets``) works without it; building a
widget without it raises :class:`~dfsync.MissingDependencyError` naming
``pip install 'dfsync[widgets]'``.

>>> import dfsync
>>> ws = dfsync.Workspace("state.duckdb")
>>> panel = dfsync.widgets.SyncPanel(ws.sync("customers"))
>>> panel            # the last expression of a cell displays the live panel
>>> panel.run_button.click()   # what clicking Run in the browser does

Threads: a run started from the panel goes on in a background thread
(``sync.run(background=True, progress=False)``). The panel follows it through the run's
progress hook (called by the runner at every state change and committed batch) and a
small poller thread that refreshes once the run stops; runs started in another process
are followed by polling the workspace. Pause, Abort and Disable hand their request to the
run's thread directly when it runs in this process, so they take effect at the next batch
boundary without a round trip through the workspace file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _html
from .errors import DfsyncError, MissingDependencyError

if TYPE_CHECKING:
    from .workspace import Sync, SyncRun, Workspace

__all__ = ["Dashboard", "RunHistory", "SyncPanel", "live_reporter"]

ACTIVE = ("started", "querying", "queued", "in_progress")
REPORT_EVERY = 0.2  # seconds between redraws while a run's state does not change
BAR_STYLE = {"success": "success", "failed": "danger", "paused": "warning"}


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError:
        raise MissingDependencyError("ipywidgets", "widgets", "dfsync's notebook widgets") from None
    return ipywidgets


def _runner_entry(run: SyncRun) -> Any:
    """(Runner, Thread | None) when ``run`` executes in this process, else None."""
    from .workspace import _ACTIVE

    return _ACTIVE.get((run.workspace.store._key, run.id))


def _attach(run: SyncRun, hook: Callable[[str, dict[str, Any]], None]) -> bool:
    """Add ``hook`` to the progress callbacks of a run executing in this process.

    ``sync.run`` takes only ``progress=True/False``, so the panel plugs into the runner's
    ``progress`` attribute (the same callable ``sync.run(progress=True)`` installs).
    """
    entry = _runner_entry(run)
    if entry is None:
        return False
    runner = entry[0]
    old = runner.progress
    if old is None:
        runner.progress = hook
    elif getattr(old, "_dfsync_hooks", None) is not None:
        if hook not in old._dfsync_hooks:
            old._dfsync_hooks.append(hook)
    else:
        hooks = [old, hook]

        def chained(status: str, row: dict[str, Any]) -> None:
            for h in list(hooks):
                with contextlib.suppress(Exception):  # one display failing must not hide the others
                    h(status, row)

        chained._dfsync_hooks = hooks  # type: ignore[attr-defined]
        runner.progress = chained
    return True


class _Widget:
    """Display plumbing shared by the widgets: the ipywidgets root lives in ``.widget``."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        """Close this widget's models (it disappears from the page); other widgets are untouched."""
        _close_tree(self.widget)


def _close_tree(widget: Any) -> None:
    stack = [widget]
    while stack:
        x = stack.pop()
        stack.extend(getattr(x, "children", ()))
        x.close()


class SyncPanel(_Widget):
    """A live status panel for one sync, with buttons that act in the kernel.

    Shows the sync's status badge, the current (or last) run's timeline with the time in
    each state, a progress bar of sent vs pending rows, the counters, the error, and
    buttons Run, Preview, Pause, Resume, Abort, Disable/Enable and Refresh.

    >>> panel = dfsync.widgets.SyncPanel(sync)
    >>> panel.run_button.click(); panel.wait()
    >>> panel.state["run_status"]
    'success'
    """

    def __init__(self, sync: Sync, *, run_id: int | None = None, poll_interval: float = 0.5) -> None:
        w = _ipywidgets()
        self.sync = sync
        self.poll_interval = poll_interval
        self.state: dict[str, Any] = {}
        self.last_preview: Any = None
        self._run: SyncRun | None = sync.workspace.run(run_id) if run_id is not None else None
        #: a panel made for one run (the live panel of ``sync.run()``) keeps showing it when a
        #: later run starts; only its Refresh button (or its own Run) moves it on
        self.follow_latest = run_id is None
        self._render_lock = threading.RLock()
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._last_report = 0.0

        def html(cls: str, **kw: Any) -> Any:
            x = w.HTML(**kw)
            x.add_class(cls)
            return x

        self.title = html("dfsync-title")
        self.badge = html("dfsync-status")
        self.run_info = html("dfsync-run")
        self.timeline = html("dfsync-timeline-widget")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="", layout=w.Layout(width="420px"))
        self.progress.add_class("dfsync-progress")
        self.progress_text = html("dfsync-progress-text")
        self.counters = {k: html(f"dfsync-counter-{k}") for k in _html.PANEL_COUNTERS}
        self.error = html("dfsync-error")
        self.message = html("dfsync-message")
        self.preview_box = html("dfsync-preview")

        def button(text: str, icon: str, tip: str, handler: Callable[[], None]) -> Any:
            b = w.Button(description=text, icon=icon, tooltip=tip, layout=w.Layout(width="auto"))
            b.add_class(f"dfsync-btn-{text.lower()}")
            b.on_click(lambda _b: self._act(text, handler))
            return b

        self.run_button = button("Run", "play", "run the sync now (in the background)", self._do_run)
        self.preview_button = button("Preview", "eye", "what a run would send, sending nothing", self._do_preview)
        self.pause_button = button("Pause", "pause", "stop at the next batch; Resume continues", self._do_pause)
        self.resume_button = button("Resume", "forward", "continue the paused run", self._do_resume)
        self.abort_button = button("Abort", "stop", "end the run as failed", self._do_abort)
        self.toggle_button = button("Disable", "power-off", "turn the sync off / on", self._do_toggle)
        self.toggle_button.add_class("dfsync-btn-toggle")
        self.refresh_button = button("Refresh", "refresh", "reload from the workspace", self.refresh)
        buttons = w.HBox([self.run_button, self.preview_button, self.pause_button, self.resume_button,
                          self.abort_button, self.toggle_button, self.refresh_button])
        self.widget = w.VBox([
            w.HBox([self.title, self.badge]),
            self.run_info, self.timeline,
            w.HBox([self.progress, self.progress_text]),
            w.HBox(list(self.counters.values())),
            self.error, buttons, self.message, self.preview_box,
        ], layout=w.Layout(border="1px solid #9ca3af80", padding="6px 10px", max_width="980px"))
        self.widget.add_class("dfsync-panel")
        self.refresh()

    # .............................................................. reading state
    def _snapshot(self, run: SyncRun | None, row: dict[str, Any] | None = None) -> dict[str, Any]:
        store = self.sync.workspace.store
        srow = store.sync_row(self.sync.name)
        with store.connect() as con:
            n_runs = con.execute("SELECT count(*) FROM runs WHERE sync_id = ?", [srow["id"]]).fetchall()[0][0]
        state: dict[str, Any] = {"sync_status": srow["status"], "runs": int(n_runs), "run_id": None,
                                 "run_status": None, "counts": {}, "durations": {}, "error": None,
                                 "next_run_at": srow["next_run_at"], "started_at": None}
        if run is not None:
            row = row if row is not None else run._row
            from .store import COUNTERS

            state.update(run_id=run.id, run_status=row["status"], error=row["error"],
                         counts={c: int(row[c] or 0) for c in COUNTERS}, durations=run.durations,
                         started_at=row["started_at"])
        return state

    def refresh(self) -> SyncPanel:
        """Reload from the workspace: shows the latest run, including runs started elsewhere."""
        last = self.sync.last_run()
        if last is not None and (self._run is None or last.id > self._run.id):
            self._run = last
        state = self._snapshot(self._run)
        self._render(state)
        if state["run_status"] in ACTIVE:
            self._follow(self._run)  # type: ignore[arg-type]
        return self

    def _on_report(self, status: str, row: dict[str, Any]) -> None:
        """The runner's progress hook (runs in the run's thread, which may read the workspace)."""
        now = time.monotonic()
        if status == self.state.get("run_status") and row.get("id") == self.state.get("run_id") \
                and now - self._last_report < REPORT_EVERY:
            return  # many small batches: redraw a few times a second, not after every batch
        self._last_report = now
        if self._run is None or row.get("id") != self._run.id:
            self._run = self.sync.workspace.run(row["id"])
        self._render(self._snapshot(self._run, row))

    # .............................................................. rendering
    def _render(self, s: dict[str, Any]) -> None:
        with self._render_lock:
            self.state = s
            st, rs = s["sync_status"], s["run_status"]
            self.title.value = (f'<span style="{_html.FONT};font-weight:600;font-size:1.1em;margin-right:8px">'
                                f'{_html.esc(self.sync.name)}</span>')
            self.badge.value = _html.badge(st)
            if s["run_id"] is None:
                self.run_info.value = (f'<span data-runs="{s["runs"]}" data-run-id="" style="{_html.FONT}">'
                                       f'no runs yet</span>')
                self.timeline.value = ""
            else:
                nxt = f' · next scheduled {_html.fmt_time(s["next_run_at"])}' if s["next_run_at"] else ""
                self.run_info.value = (
                    f'<span data-runs="{s["runs"]}" data-run-id="{s["run_id"]}" style="{_html.FONT}">'
                    f'run #{s["run_id"]} {_html.badge(rs)} · started {_html.fmt_time(s["started_at"])} · '
                    f'{s["runs"]} run{"s" if s["runs"] != 1 else ""} in total{nxt}</span>')
                self.timeline.value = _html.timeline(rs, s["durations"])
            counts = s["counts"]
            total, sent = _html.pending_total(counts), int(counts.get("sent", 0))
            if rs == "success" and total == 0:
                total = sent = 1  # nothing to send is a full bar, not an empty one
            self.progress.max = max(total, 1)
            self.progress.value = min(sent, self.progress.max)
            self.progress.bar_style = BAR_STYLE.get(rs or "", "info")
            self.progress_text.value = (f'<span style="{_html.FONT};color:{_html.MUTED};margin-left:8px">'
                                        f'{_html.progress_text(rs, counts) if rs else ""}</span>')
            for k, widget in self.counters.items():
                widget.value = _html.counter(k, counts.get(k, 0))
            self.error.value = _html.error_html(s["error"])
            active, paused, disabled = rs in ACTIVE, rs == "paused", st == "disabled"
            self.run_button.disabled = active or disabled
            self.resume_button.disabled = not paused or disabled
            self.pause_button.disabled = not active
            self.abort_button.disabled = not (active or paused)
            self.toggle_button.description = "Enable" if disabled else "Disable"
            self.toggle_button.icon = "check" if disabled else "power-off"

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = "#dc2626" if error else _html.MUTED
        self.message.value = f'<span style="{_html.FONT};color:{colour}">{_html.esc(text)}</span>'

    # .............................................................. buttons
    def _act(self, name: str, handler: Callable[[], Any]) -> None:
        """Run a button's action; a dfsync error shows in the panel instead of vanishing in a log."""
        try:
            handler()
        except DfsyncError as exc:
            self._say(f"{name}: {exc}", error=True)
        except Exception as exc:  # the click handler has nowhere else to report to
            self._say(f"{name} failed: {type(exc).__name__}: {exc}", error=True)

    def _local_active(self) -> SyncRun | None:
        """The run this panel knows about, when it executes in this process right now."""
        run = self._run
        if run is None:
            return None
        entry = _runner_entry(run)
        return run if entry is not None else None

    def _start(self, verb: str) -> SyncRun:
        run = self.sync.run(background=True, progress=False)
        self._run = run
        _attach(run, self._on_report)
        self._say(f"{verb} run {run.id}")
        self._follow(run)
        return run

    def _do_run(self) -> None:
        self._start("started")

    def _do_resume(self) -> None:
        self._start("resumed")

    def _do_pause(self) -> None:
        run = self._local_active() or self.sync.current_run()
        if run is None:
            self._say("no run to pause")
            return
        run.pause()
        self._say(f"pause requested: run {run.id} stops at the next batch boundary")
        self._follow(run)

    def _do_abort(self) -> None:
        run = self._local_active() or self.sync.current_run()
        if run is None:
            self._say("no run to abort")
            return
        local = _runner_entry(run) is not None
        if local:
            # run.abort() first reads the run's status, which waits for this process's transfer to
            # release the workspace; the request itself needs no workspace access
            run._request("abort")
        else:
            run.abort()
        self._say(f"abort requested for run {run.id}" if local else f"run {run.id} aborted")
        if local:
            self._follow(run)
        else:
            self.refresh()

    def _do_toggle(self) -> None:
        if self.state.get("sync_status") == "disabled":
            self.sync.enable()
            self._say("sync enabled")
            self.refresh()
            return
        local = self._local_active()
        if local is not None:
            # ask the run to stop first (no workspace access), so disable() does not wait out the transfer
            local.pause()
        self.sync.disable()
        self._say("sync disabled" + (f"; run {local.id} pauses at the next batch boundary" if local else ""))
        if local is not None:
            self._follow(local)
        else:
            self.refresh()

    def _do_preview(self) -> None:
        self._say("previewing…")
        p = self.sync.preview()
        self.last_preview = p
        self.preview_box.value = _html.preview_html(p)
        self._say("preview done: nothing was sent")

    # .............................................................. following a run
    def _follow(self, run: SyncRun) -> None:
        """Keep the panel current until ``run`` stops, from a small background thread."""
        if self._poller is not None and self._poller.is_alive():
            return
        self._poller = threading.Thread(target=self._poll, args=(run,), name=f"dfsync-panel-{run.id}", daemon=True)
        self._poller.start()

    def _poll(self, run: SyncRun) -> None:
        while not self._closed.is_set():
            entry = _runner_entry(run)
            if entry is not None:
                _attach(run, self._on_report)
                thread = entry[1]
                if thread is None:  # a blocking run in this process: its reporter drives the display
                    return
                thread.join(self.poll_interval)
                if thread.is_alive():
                    continue
            else:
                # another process runs it (or it just ended): read the workspace
                with contextlib.suppress(DfsyncError):
                    self.refresh_state_only()
                if self.state.get("run_status") in ACTIVE:
                    self._closed.wait(self.poll_interval)
                    continue
            with contextlib.suppress(DfsyncError):
                self._render(self._snapshot(self._run))
            return

    def refresh_state_only(self) -> None:
        """Like :meth:`refresh` but never starts a poller (used by the poller itself)."""
        last = self.sync.last_run()
        if last is not None and (self._run is None or (self.follow_latest and last.id > self._run.id)):
            self._run = last
        self._render(self._snapshot(self._run))

    def wait(self, timeout: float | None = 60.0) -> SyncPanel:
        """Block until the run the panel follows has stopped and the panel shows its end state."""
        p = self._poller
        if p is not None:
            p.join(timeout)
        return self

    def close(self) -> None:
        self._closed.set()
        super().close()


class _LiveReporter:
    """What ``sync.run(progress=True)`` calls in a notebook: it drives a displayed SyncPanel."""

    def __init__(self, panel: SyncPanel) -> None:
        self.panel = panel

    def __call__(self, status: str, run_row: dict[str, Any]) -> None:
        self.panel._on_report(status, run_row)

    def close(self) -> None:
        """The run stopped: show its final state (the sync status may have changed with it)."""
        with contextlib.suppress(DfsyncError):
            self.panel.refresh_state_only()


def live_reporter(sync: Sync, run_id: int) -> _LiveReporter:
    """Display a live :class:`SyncPanel` for run ``run_id`` and return its progress callable.

    Called by ``sync.run()`` in a notebook; raises ``MissingDependencyError`` without ipywidgets.
    """
    from IPython.display import display

    panel = SyncPanel(sync, run_id=run_id)
    display(panel)
    return _LiveReporter(panel)


class RunHistory(_Widget):
    """Recent runs of a sync as a table with a chart of rows changed and duration per run.

    >>> dfsync.widgets.RunHistory(sync, limit=20)
    """

    def __init__(self, sync: Sync, *, limit: int = 20) -> None:
        w = _ipywidgets()
        self.sync = sync
        self.limit = limit
        self.html = w.HTML()
        self.html.add_class("dfsync-history")
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.widget = w.VBox([self.html, self.refresh_button])
        self.refresh()

    def refresh(self) -> RunHistory:
        self.runs = self.sync.runs(limit=self.limit)
        self.html.value = _html.history_html(self.sync.name, self.runs)
        return self


class Dashboard(_Widget):
    """Every sync of a workspace: status, last run, next scheduled run; Open shows its SyncPanel.

    >>> dash = dfsync.widgets.Dashboard(ws)
    >>> panel = dash.open("customers")
    """

    COLUMNS = (("sync", "180px"), ("status", "90px"), ("last run", "220px"), ("next run", "170px"), ("", "90px"))

    def __init__(self, ws: Workspace) -> None:
        w = _ipywidgets()
        self._w = w
        self.ws = ws
        self.panels: dict[str, SyncPanel] = {}
        self.open_panel: SyncPanel | None = None
        self.table = w.VBox()
        self.table.add_class("dfsync-dashboard-table")
        self.detail = w.VBox()
        self.refresh_button = w.Button(description="Refresh", icon="refresh", layout=w.Layout(width="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.title = w.HTML(f'<div style="{_html.FONT};font-weight:600">dfsync workspace '
                            f'<code>{_html.esc(ws.path)}</code></div>')
        self.widget = w.VBox([self.title, self.table, self.refresh_button, self.detail])
        self.widget.add_class("dfsync-dashboard")
        self.open_buttons: dict[str, Any] = {}
        self.refresh()

    def _cell(self, html: str, width: str) -> Any:
        return self._w.HTML(f'<div style="{_html.FONT}">{html}</div>', layout=self._w.Layout(width=width))

    def refresh(self) -> Dashboard:
        """Reload every sync's row (and the open panel)."""
        w = self._w
        df = self.ws.syncs()
        self.syncs = df
        header = w.HBox([self._cell(f"<b>{name}</b>", width) for name, width in self.COLUMNS])
        rows = [header]
        self.open_buttons = {}
        for r in df.iter_rows(named=True):
            last = (f'#{r["last_run_id"]} {_html.badge(r["last_run_status"])} '
                    f'{_html.fmt_time(r["last_run_finished_at"] or r["last_run_started_at"])}'
                    if r["last_run_id"] else "never run")
            nxt = _html.fmt_time(r["next_run_at"]) if r["next_run_at"] else ("manual" if not r["schedule"] else "")
            b = w.Button(description="Open", icon="folder-open", layout=w.Layout(width="80px"))
            b.add_class("dfsync-btn-open")
            b.on_click(lambda _b, name=r["name"]: self.open(name))
            self.open_buttons[r["name"]] = b
            row = w.HBox([self._cell(f"<code>{_html.esc(r['name'])}</code>", "180px"),
                          self._cell(_html.badge(r["status"]), "90px"), self._cell(last, "220px"),
                          self._cell(_html.esc(nxt), "170px"), b])
            row.add_class("dfsync-dashboard-row")
            rows.append(row)
        if not df.height:
            rows.append(self._cell("<i>no syncs yet</i>", "400px"))
        old = self.table.children
        self.table.children = rows
        for x in old:  # the replaced rows' models would otherwise live on in the kernel (and saved state)
            _close_tree(x)
        if self.open_panel is not None:
            self.open_panel.refresh()
        return self

    def open(self, name: str) -> SyncPanel:
        """Show the SyncPanel of sync ``name`` under the table and return it."""
        panel = self.panels.get(name)
        if panel is None:
            panel = self.panels[name] = SyncPanel(self.ws.sync(name))
        else:
            panel.refresh()
        self.open_panel = panel
        self.detail.children = [panel.widget]
        return panel

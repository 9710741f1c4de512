""":class:`SyncPanel`: one sync's status and run, with buttons that act in the kernel.

Threads: a run started from the panel goes on in a background thread
(``sync.run(background=True, progress=False)``). The panel follows it through the run's
progress hook (called by the runner at every state change and committed batch) and a
small poller thread that refreshes once the run stops; runs started in another process
are followed by polling the workspace. Pause, Abort and Disable hand their request to the
run's thread directly when it runs in this process, so they take effect at the next batch
boundary without a round trip through the workspace file.

Widget models: the panel is a few HTML widgets and one row of buttons sharing one layout
and one style, so a saved notebook holds a small, fixed number of models per panel.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from ipywidgets.widgets.widget_string import HTMLStyle

from .. import _html, _html_preview, _html_run, _registry
from ..errors import DfsyncError, InvalidTransition
from ..states import SyncStatus

if TYPE_CHECKING:
    from ..workspace import Sync, SyncRun

ACTIVE = _html_run.ACTIVE
REPORT_EVERY = 0.2  # seconds between redraws while a run's state does not change


#: what an operator may do; a role without it sees why the buttons are grey (docs/SECURITY.md)
_OPERATE = frozenset({"run", "resume", "preview", "pause", "abort", "enable", "disable"})


def _runs_here(run: SyncRun) -> bool:
    """Does ``run`` execute in this process right now?"""
    return _registry.is_running(run.workspace.store.key, run.id)


def _attach(run: SyncRun, hook: Callable[[str, dict[str, Any]], None]) -> bool:
    """Add ``hook`` to the progress hooks of a run executing in this process (``sync.run`` takes
    only ``progress=True/False``; the panel adds its own display beside it)."""
    return _registry.add_progress_hook(run.workspace.store.key, run.id, hook)


def close_tree(widget: Any) -> None:
    """Close a widget and everything under it (their models leave the kernel and saved state)."""
    stack = [widget]
    while stack:
        x = stack.pop()
        stack.extend(getattr(x, "children", ()))
        w.Widget.close(x)


class SnapshotMixin:
    """A widget that also offers a static ``text/html`` snapshot of what it shows.

    JupyterLab and VS Code render the live widget; a page without a widget manager (nbconvert
    HTML, GitHub, a notebook reopened without its kernel) can show the snapshot instead.
    """

    def snapshot_html(self) -> str:  # pragma: no cover - every widget defines it
        raise NotImplementedError

    def reload(self) -> None:
        """Read the workspace again (what the widget shows now); called each time it is displayed."""

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # displayed again after runs (a panel made before them, shown in a later cell): it showed
        # the state of its making ('pending, no runs yet' for a sync with two runs) until Refresh
        with contextlib.suppress(DfsyncError):
            self.reload()
        data = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data or {})
        data["text/html"] = self.snapshot_html()
        data["text/plain"] = repr(self)
        return data


def need(value: Any, kind: str, call: str) -> None:
    """A widget given something else than the handle it shows: ArgumentError, not AttributeError."""
    from ..errors import ArgumentError

    # by what the widget uses (importing the handles' classes here would be an import circle)
    want = {"sync": (("workspace", "runs"), "a Sync, e.g. ws.sync('customers')"),
            "workspace": (("store", "create_sync"), "a dfsync.Workspace")}[kind]
    if not all(hasattr(value, a) for a in want[0]):
        raise ArgumentError(f"dfsync.widgets.{call}() shows {want[1]}, not {type(value).__name__} {value!r:.60}")


class SyncPanel(SnapshotMixin, w.VBox):
    """A live status panel for one sync, with buttons that act in the kernel.

    Shows the sync's status, the current (or last) run's timeline with the time in each
    state, progress (rows read, sent, pending, rows/s, time left), the time per state of a
    finished run, the counters, the invalid rows per check and the failed rows per error,
    and buttons Run (Resume while a run is paused), Preview, Pause, Abort, Disable/Enable
    and Refresh. A panel showing a run that is no longer the sync's latest says so and
    offers Follow latest.

    >>> panel = dfsync.widgets.SyncPanel(sync)
    >>> panel.run_button.click(); panel.wait()
    >>> panel.state["run_status"]
    'success'
    """

    def __new__(cls, sync: Sync, *args: Any, **kwargs: Any) -> SyncPanel:
        need(sync, "sync", "SyncPanel")  # before the widget exists (its __del__ would close half of it)
        return super().__new__(cls, sync, *args, **kwargs)

    def __init__(self, sync: Sync, *, run_id: int | None = None, poll_interval: float = 0.5) -> None:
        self.sync = sync
        self.poll_interval = poll_interval
        self.state: dict[str, Any] = {}
        self.view: dict[str, Any] | None = None
        self.last_preview: Any = None
        self._run: SyncRun | None = sync.workspace.run(run_id) if run_id is not None else None
        #: a panel made for one run keeps showing it when a later run starts; it then says so
        #: and its Follow latest (or Refresh, or its own Run) moves it on
        self.follow_latest = run_id is None
        self._render_lock = threading.RLock()
        #: every snapshot is numbered when its reading starts; a snapshot read before the one on
        #: screen is not drawn over it (the poller, the run's hook and a button click race)
        self._reads = itertools.count(1)
        self._shown = 0
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._last_report = 0.0
        #: the actions the workspace role may take on this sync (a button it may not use is greyed out)
        self.capabilities = sync.workspace.store.capabilities(sync.id)

        # overflow lets a wide preview table scroll inside the panel instead of widening it
        html_layout, html_style = w.Layout(max_width="100%", overflow="auto"), HTMLStyle()

        def html(cls: str) -> Any:
            x = w.HTML(layout=html_layout, style=html_style)
            x.add_class(cls)
            return x

        self.header = html("dfsync-header")
        self.body = html("dfsync-body")
        self.message = html("dfsync-message")
        self.preview_box = html("dfsync-preview")
        shared_layout, shared_style = w.Layout(width="auto"), w.ButtonStyle()

        def button(text: str, icon: str, tip: str, handler: Callable[[], None], cls: str = "") -> Any:
            b = w.Button(description=text, icon=icon, tooltip=tip, layout=shared_layout, style=shared_style)
            b.add_class(f"dfsync-btn-{cls or text.lower()}")
            b.on_click(lambda _b: self._act(b.description, handler))
            return b

        self.run_button = button("Run", "play", "run the sync now (in the background)", self._do_run)
        self.preview_button = button("Preview", "eye", "what a run would send, sending nothing", self._do_preview)
        self.pause_button = button("Pause", "pause", "stop at the next batch; Resume continues", self._do_pause)
        self.abort_button = button("Abort", "stop", "end the run as failed", self._do_abort)
        self.toggle_button = button("Disable", "power-off", "turn the sync off / on", self._do_toggle, "toggle")
        self.refresh_button = button("Refresh", "refresh", "reload from the workspace", self.refresh)
        self.follow_button = w.Button(description="Follow latest", icon="arrow-right",
                                      tooltip="show the sync's latest run", style=shared_style,
                                      layout=w.Layout(width="auto", display="none"))
        self.follow_button.add_class("dfsync-btn-follow")
        self.follow_button.on_click(lambda _b: self._act("Follow latest", self._do_follow))
        #: while a run is paused the Run button resumes it (one button, not Run and Resume)
        self.resume_button = self.run_button
        buttons = w.HBox([self.run_button, self.preview_button, self.pause_button, self.abort_button,
                          self.toggle_button, self.refresh_button, self.follow_button])
        buttons.add_class("dfsync-buttons")
        super().__init__([self.header, self.body, buttons, self.message, self.preview_box],
                         layout=w.Layout(border=f"1px solid {_html.LINE}", padding="6px 10px",
                                         width="fit-content", max_width="100%"))
        self.add_class("dfsync-panel")
        self._reload(latest=self.follow_latest)  # a panel made for one run starts on it

    def __repr__(self) -> str:
        s = self.state
        run = f"run {s['run_id']} {s['run_status']}" if s.get("run_id") else "no runs yet"
        return f"<dfsync.widgets.SyncPanel of {self.sync.name!r}: {s.get('sync_status')}, {run}>"

    # .............................................................. reading state
    def _snapshot(self, run: SyncRun | None, row: dict[str, Any] | None = None) -> dict[str, Any]:
        read = next(self._reads)
        store = self.sync.workspace.store
        srow = store.sync_row(self.sync.name)
        latest = store.latest_run_id(srow["id"])
        n_runs = store.run_count(srow["id"]) if latest else 0
        state: dict[str, Any] = {"sync_status": srow["status"], "runs": n_runs, "run_id": None,
                                 "run_status": None, "counts": {}, "durations": {}, "error": None,
                                 # a disabled sync does not run: no next time (as sync.next_run_at, ws.syncs())
                                 "next_run_at": srow["next_run_at"] if SyncStatus(srow["status"]).scheduled else None,
                                 "started_at": None, "latest_run_id": latest}
        view = None
        if run is not None:
            view = _html_run.run_view(run, row)
            state.update(run_id=run.id, run_status=view["status"], error=view["error"], counts=view["counts"],
                         durations=_html_run.durations(view), started_at=view["started_at"],
                         speed=_html_run.speed(view), buckets=view["buckets"])
        state["view"] = view
        state["read"] = read
        return state

    def refresh(self) -> SyncPanel:
        """Reload from the workspace: shows the latest run, including runs started elsewhere."""
        return self._reload(latest=True)

    def reload(self) -> None:
        self._reload(latest=self.follow_latest)  # a panel made for one run stays on it

    def _reload(self, *, latest: bool) -> SyncPanel:
        self.capabilities = self.sync.workspace.store.capabilities(self.sync.id)
        last = self.sync.last_run()
        if last is not None and (self._run is None or (latest and last.id > self._run.id)):
            self._run = last
            self.follow_latest = True
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
            if not self.follow_latest and self._run is not None:
                return  # a pinned panel does not jump to another run
            self._run = self.sync.workspace.run(row["id"])
        self._render(self._snapshot(self._run, row))

    # .............................................................. rendering
    def header_html(self, s: dict[str, Any]) -> str:
        name = (f'<span style="font-weight:600;font-size:1.1em;margin-right:8px">{_html.esc(self.sync.name)}</span>'
                f'<span class="dfsync-status">{_html.badge(s["sync_status"])}</span>')
        if s["run_id"] is None:
            run = f'<span data-runs="{s["runs"]}" data-run-id="">no runs yet</span>'
        else:
            nxt = f' · next scheduled {_html.fmt_time(s["next_run_at"])}' if s["next_run_at"] else ""
            run = (f'<span class="dfsync-run" data-runs="{s["runs"]}" data-run-id="{s["run_id"]}">run #{s["run_id"]} '
                   f'{_html.badge(s["run_status"])} · started {_html.fmt_time(s["started_at"])} · {s["runs"]} '
                   f'run{"s" if s["runs"] != 1 else ""} in total{nxt}</span>')
        stale = ""
        latest = s.get("latest_run_id")
        if s["run_id"] is not None and latest is not None and latest != s["run_id"]:
            stale = (f'<div class="dfsync-stale" data-latest="{latest}" style="margin-top:2px;font-weight:600">'
                     f'⚠ this is run #{s["run_id"]}; the sync\'s latest run is #{latest} '
                     f'(Follow latest shows it)</div>')
        return (f'<div style="{_html.FONT};color:{_html.TEXT}"><div>{name}</div><div style="margin-top:2px">{run}'
                f'</div>{stale}</div>')

    def snapshot_html(self) -> str:
        """The panel as static HTML (what a saved notebook shows without the widget manager)."""
        with self._render_lock:
            s = self.state
            body = _html_run.run_body(s["view"]) if s.get("view") else ""
            return (f'<div class="dfsync dfsync-panel-snapshot" style="{_html.FONT};color:{_html.TEXT};'
                    f'border:1px solid {_html.LINE};padding:6px 10px;width:fit-content;max-width:100%;'
                    f'box-sizing:border-box">{self.header_html(s)}{body}</div>')

    def _render(self, s: dict[str, Any]) -> None:
        with self._render_lock:
            if s.get("read", 0) < self._shown:
                return  # read before what is shown: stale
            self._shown = s.get("read", self._shown)
            self.state = s
            self.view = s.get("view")
            st, rs = s["sync_status"], s["run_status"]
            self.header.value = self.header_html(s)
            self.body.value = (f'<div style="{_html.FONT};color:{_html.TEXT}">{_html_run.run_body(self.view)}</div>'
                               if self.view else "")
            active, paused, disabled = rs in ACTIVE, rs == "paused", st == "disabled"
            self.run_button.description = "Resume" if paused else "Run"
            self.run_button.icon = "forward" if paused else "play"
            self.run_button.tooltip = "continue the paused run" if paused else "run the sync now (in the background)"
            can = self.capabilities
            self.run_button.disabled = active or disabled or ("resume" if paused else "run") not in can
            self.preview_button.disabled = "preview" not in can
            self.pause_button.disabled = not active or "pause" not in can
            self.abort_button.disabled = not (active or paused) or "abort" not in can
            self.toggle_button.description = "Enable" if disabled else "Disable"
            self.toggle_button.icon = "check" if disabled else "power-off"
            self.toggle_button.disabled = ("enable" if disabled else "disable") not in can
            for b in (self.run_button, self.preview_button, self.pause_button, self.abort_button, self.toggle_button):
                b.tooltip = b.tooltip.split(" (your workspace role")[0] + (
                    " (your workspace role may not)" if b.disabled and not can >= _OPERATE else "")
            stale = s["run_id"] is not None and s.get("latest_run_id") not in (None, s["run_id"])
            self.follow_button.layout.display = None if stale else "none"

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = _html.ERROR if error else _html.MUTED
        t = datetime.now().strftime("%H:%M:%S")
        self.message.value = (f'<span style="{_html.FONT};color:{colour}"><span class="dfsync-time">{t}</span> '
                              f'{_html.esc(text)}</span>')

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
        return run if _runs_here(run) else None

    def _start(self, verb: str) -> SyncRun:
        run = self.sync.run(background=True, progress=False)
        self._run = run
        self.follow_latest = True
        _attach(run, self._on_report)
        self._say(f"{verb} run {run.id}")
        self._follow(run)
        return run

    def _do_run(self) -> None:
        self._start("resumed" if self.state.get("run_status") == "paused" else "started")

    def _do_follow(self) -> None:
        self.follow_latest = True
        self.refresh()
        self._say(f"showing the latest run, #{self.state.get('run_id')}")

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
        local = _runs_here(run)
        if local:
            # run.abort() first reads the run's status, which waits for this process's transfer to
            # release the workspace; the request itself needs no workspace access
            if not _registry.request_stop(run.workspace.store.key, run.id, "abort"):
                run.workspace.store.request(run.id, "abort")  # no longer here: ask through the workspace
        else:
            try:
                run.abort()
            except InvalidTransition:  # it ended meanwhile
                self._say(f"run {run.id} already ended {run.status.value}")
                self.refresh()
                return
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
        # drawn from the workspace now: the run may have ended meanwhile, its last report read before
        # the disable; refresh() follows it if it still runs
        self.refresh()

    def _do_preview(self) -> None:
        self._say("previewing…")
        p = self.sync.preview()
        self.last_preview = p
        self.preview_box.value = _html_preview.preview_html(p)
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
            if _attach(run, self._on_report):
                thread = _registry.run_thread(run.workspace.store.key, run.id)
                if thread is None:
                    if _runs_here(run):  # a blocking run in this process: its reporter drives the display
                        return
                    continue  # it ended just now: read the workspace
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
        """Close this panel's models (it disappears from the page); other widgets are untouched."""
        self._closed.set()
        close_tree(self)


class _LiveReporter:
    """What ``sync.run(background=True)`` calls in a notebook: it drives a displayed SyncPanel."""

    def __init__(self, panel: SyncPanel, handle: Any = None) -> None:
        self.panel = panel
        self.handle = handle

    def __call__(self, status: str, run_row: dict[str, Any]) -> None:
        self.panel._on_report(status, run_row)

    def close(self) -> None:
        """The run stopped: show its final state (the sync status may have changed with it)."""
        with contextlib.suppress(DfsyncError):
            self.panel.refresh_state_only()
        if self.handle is not None:  # the saved output's HTML snapshot shows the end, not the start
            with contextlib.suppress(Exception):
                self.handle.update(self.panel)


def live_reporter(sync: Sync, run_id: int) -> _LiveReporter:
    """Display a live :class:`SyncPanel` pinned to run ``run_id`` and return its progress callable."""
    from IPython.display import display

    panel = SyncPanel(sync, run_id=run_id)
    return _LiveReporter(panel, display(panel, display_id=True))

""":class:`RunHistory` (one sync's runs) and :class:`Dashboard` (every sync of a workspace)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as w
from ipywidgets.widgets.widget_string import HTMLStyle

from .. import _html, _html_history
from .._words import plural
from ._panel import SnapshotMixin, SyncPanel, close_tree, need

if TYPE_CHECKING:
    from ..workspace import Sync, Workspace


class RunHistory(SnapshotMixin, w.VBox):
    """Recent runs of a sync: a chart (rows planned vs sent on a log scale, invalid rows,
    throughput) and an aligned table.

    >>> dfsync.widgets.RunHistory(sync, limit=20)
    """

    def __init__(self, sync: Sync, *, limit: int = 20) -> None:
        need(sync, "sync", "RunHistory")
        self.sync = sync
        self.limit = limit
        self.html = w.HTML()
        self.html.add_class("dfsync-history")
        self.refresh_button = w.Button(description="Refresh", icon="refresh",
                                       layout=w.Layout(width="auto", align_self="flex-start"))
        self.refresh_button.add_class("dfsync-btn-refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([self.html, self.refresh_button], layout=w.Layout(width="fit-content", max_width="100%"))
        self.add_class("dfsync-run-history")
        self.refresh()

    def __repr__(self) -> str:
        return f"<dfsync.widgets.RunHistory of {self.sync.name!r}: {plural(self.runs.height, 'run')}>"

    def refresh(self) -> RunHistory:
        self.runs = self.sync.runs(limit=self.limit)
        self.html.value = _html_history.history_html(
            self.sync.name, self.runs, _html_history.sending_seconds(self.sync.workspace.store, self.runs))
        return self

    def reload(self) -> None:
        self.refresh()

    def snapshot_html(self) -> str:
        return self.html.value

    def close(self) -> None:
        close_tree(self)


class Dashboard(SnapshotMixin, w.VBox):
    """Every sync of a workspace: status, last run, next scheduled run; Open shows its SyncPanel.

    >>> dash = dfsync.widgets.Dashboard(ws)
    >>> panel = dash.open_sync("customers")
    """

    HEADERS = ("sync", "status", "last run", "next run", "")

    def __init__(self, ws: Workspace) -> None:
        need(ws, "workspace", "Dashboard")
        self.ws = ws
        self.panels: dict[str, SyncPanel] = {}
        self.open_panel: SyncPanel | None = None
        self.open_buttons: dict[str, Any] = {}
        self.table = w.GridBox(layout=w.Layout(grid_template_columns="repeat(4, max-content) max-content",
                                               grid_gap="2px 14px", align_items="center"))
        self.table.add_class("dfsync-dashboard-table")
        self.detail = w.VBox()
        self.refresh_button = w.Button(description="Refresh", icon="refresh",
                                       layout=w.Layout(width="auto", align_self="flex-start"))
        self.refresh_button.add_class("dfsync-btn-refresh")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.title = w.HTML(f'<div style="{_html.FONT};color:{_html.TEXT};font-weight:600">dfsync workspace '
                            f'<code>{_html.esc(ws.path)}</code></div>')
        self._cell_layout = w.Layout(width="max-content")
        self._cell_style = HTMLStyle()
        self._button_layout, self._button_style = w.Layout(width="auto"), w.ButtonStyle()
        super().__init__([self.title, self.table, self.refresh_button, self.detail],
                         layout=w.Layout(width="fit-content", max_width="100%"))
        self.add_class("dfsync-dashboard")
        self.refresh()

    def __repr__(self) -> str:
        return f"<dfsync.widgets.Dashboard of {str(self.ws.path)!r}: {plural(self.syncs.height, 'sync')}>"

    @staticmethod
    def _wrap(html: str) -> str:
        return f'<div style="{_html.FONT};color:{_html.TEXT};white-space:nowrap">{html}</div>'

    def _cell(self, html: str) -> Any:
        return w.HTML(self._wrap(html), layout=self._cell_layout, style=self._cell_style)

    def rows_html(self) -> list[list[str]]:
        out = []
        for r in self.syncs.iter_rows(named=True):
            last = (f'#{r["last_run_id"]} {_html.badge(r["last_run_status"])} '
                    f'{_html.fmt_time(r["last_run_finished_at"] or r["last_run_started_at"])}'
                    if r["last_run_id"] else "never run")
            nxt = _html.fmt_time(r["next_run_at"]) if r["next_run_at"] else ("manual" if not r["schedule"] else "")
            out.append([f"<code>{_html.esc(r['name'])}</code>", _html.badge(r["status"]),
                        f'<span class="dfsync-last-run">{last}</span>', _html.esc(nxt)])
        return out

    def refresh(self) -> Dashboard:
        """Reload every sync's row (and the open panel)."""
        self.syncs = self.ws.syncs()
        names = self.syncs.get_column("name").to_list()
        if names and names == list(self.open_buttons):  # the same syncs: new values in the same cells
            rows = [c for c in self.table.children if "dfsync-dashboard-row" in c._dom_classes]
            for cell, html in zip(rows, (h for r in self.rows_html() for h in r), strict=True):
                cell.value = self._wrap(html)
            if self.open_panel is not None:
                self.open_panel.refresh()
            return self
        cells: list[Any] = [self._cell(f"<b>{h}</b>") for h in self.HEADERS]
        self.open_buttons = {}
        for name, row in zip(self.syncs.get_column("name").to_list(), self.rows_html(), strict=True):
            row_cells = [self._cell(c) for c in row]
            for c in row_cells:
                c.add_class("dfsync-dashboard-row")
            b = w.Button(description="Open", icon="folder-open", layout=self._button_layout, style=self._button_style)
            b.add_class("dfsync-btn-open")
            b.on_click(lambda _b, name=name: self.open_sync(name))
            self.open_buttons[name] = b
            cells += [*row_cells, b]
        if not self.syncs.height:
            cells.append(self._cell("<i>no syncs yet</i>"))
        old = self.table.children
        self.table.children = cells
        for x in old:  # the replaced cells' models would otherwise live on in the kernel (and saved state)
            w.Widget.close(x)
        if self.open_panel is not None:
            self.open_panel.refresh()
        return self

    def reload(self) -> None:
        self.refresh()

    def open_sync(self, name: str) -> SyncPanel:
        """Show the SyncPanel of sync ``name`` under the table and return it."""
        panel = self.panels.get(name)
        if panel is None:
            panel = self.panels[name] = SyncPanel(self.ws.sync(name))
        else:
            panel.refresh()
        self.open_panel = panel
        self.detail.children = [panel]
        return panel

    def snapshot_html(self) -> str:
        rows = [dict(zip(("sync", "status", "last run", "next run"), r, strict=True)) for r in self.rows_html()]
        table = _html.table(rows, ["sync", "status", "last run", "next run"], raw=("sync", "status", "last run"))
        body = table + (self.open_panel.snapshot_html() if self.open_panel is not None else "")
        return _html.box(f"dfsync workspace <code>{_html.esc(self.ws.path)}</code>", body,
                         cls="dfsync dfsync-dashboard-snapshot")

    def close(self) -> None:
        close_tree(self)

"""The notebook widgets driven from Python: real workspaces, real runs, real button handlers.

``Button.click()`` fires the same ``on_click`` handlers a click in the browser fires, so these
tests exercise what the buttons do in the kernel; ``tests/test_browser.py`` covers the page.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest

import dfsync

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data"

widgets = pytest.importorskip("dfsync.widgets")
pytest.importorskip("ipywidgets")

#: the widgets on a workspace file and (-m slow) on a PostgreSQL workspace
#: the workspace file; a PostgreSQL workspace (slow) for the panels that read another process's runs and act on a run
WORKSPACE_STORES = ("duckdb",)
SLOW_WORKSPACE_STORES = ("postgres",)


@pytest.fixture
def ws(ws_target: str) -> Any:
    w = dfsync.Workspace(ws_target)
    yield w
    w.close()


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until ``pred()`` is truthy (a deadline against hangs, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def data_value(html: str, attr: str = "data-value") -> str:
    m = re.search(rf'{attr}="([^"]*)"', html)
    assert m, f"{attr} not in {html!r}"
    return m.group(1)


def shown_counts(panel: Any) -> dict[str, int]:
    """The counters as the panel's HTML shows them."""
    return {k: int(v) for k, v in re.findall(r'data-counter="(\w+)" data-value="(\d+)"', panel.body.value)}


def bar(panel: Any) -> tuple[int, int]:
    """(sent, total) of the panel's progress bar."""
    return int(data_value(panel.body.value, "data-sent")), int(data_value(panel.body.value, "data-total"))



@pytest.fixture
def customers(ws: dfsync.Workspace, tmp_path: pathlib.Path) -> dfsync.Sync:
    src = tmp_path / "customers.parquet"
    shutil.copy(DATA / "customers_v1.parquet", src)
    return ws.create_sync("customers", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="customers"),
                          primary_key="customer_id", destination_mode="mirror")


@pytest.fixture
def slow(ws: dfsync.Workspace, tmp_path: pathlib.Path) -> dfsync.Sync:
    """Many one-row-ish batches into a real DuckDB table: a transfer long enough to steer."""
    src = tmp_path / "many.parquet"
    pl.DataFrame({"id": range(800), "v": [f"row {i}" for i in range(800)]}).write_parquet(src)
    return ws.create_sync("many", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="many"),
                          primary_key="id", batch_size=8)


def start_and_reach_transfer(panel: Any) -> None:
    panel.run_button.click()
    wait_for(lambda: panel.state.get("run_status") == "in_progress" and panel.state["counts"].get("sent", 0) > 0,
             "the run to start sending")


# ---------------------------------------------------------------------------- imports
def _py(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=120)


def test_import_dfsync_does_not_import_ipywidgets() -> None:
    r = _py("""
        import sys, dfsync, dfsync.widgets
        ws = dfsync.Workspace(":memory:")
        ws._repr_html_()
        print("ipywidgets" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_widget_without_ipywidgets_names_the_extra(tmp_path: pathlib.Path) -> None:
    r = _py(f"""
        import sys
        sys.modules["ipywidgets"] = None   # what an environment without the package looks like to import
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / "w.duckdb")!r})
        sync = ws.create_sync("c", source=dfsync.sources.files({str(DATA / "customers_v1.parquet")!r}),
            destination=dfsync.destinations.duckdb({str(tmp_path / "wh.duckdb")!r}, table="c"), primary_key="customer_id")
        run = sync.run(progress=False)
        # static reprs need no ipywidgets
        for obj in (ws, sync, run, sync.preview()):
            assert "dfsync" in obj._repr_html_() or "preview" in obj._repr_html_()
        for make in (lambda: dfsync.widgets.SyncPanel(sync), lambda: dfsync.widgets.RunHistory(sync),
                     lambda: dfsync.widgets.Dashboard(ws)):
            try:
                make()
            except dfsync.MissingDependencyError as exc:
                print("ERR", exc)
            else:
                print("NO ERROR")
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("ERR") and "pip install 'dfsync[widgets]'" in line


# ---------------------------------------------------------------------------- SyncPanel
def test_a_disabled_syncs_panel_shows_no_next_scheduled_run(ws: dfsync.Workspace, tmp_path: pathlib.Path) -> None:
    """The header of a disabled sync said 'next scheduled <its old time>' (the scheduler skips it)."""
    sync = ws.create_sync("sched", source=pl.DataFrame({"id": [1]}), primary_key="id", schedule="every hour",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "s.duckdb"), table="t"))
    sync.run(progress=False)
    assert "next scheduled" in widgets.SyncPanel(sync).header.value
    sync.disable()
    panel = widgets.SyncPanel(sync)
    assert panel.state["next_run_at"] is None and "next scheduled" not in panel.header.value, panel.header.value


def test_panel_before_any_run(customers: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(customers)
    assert panel.state["sync_status"] == "pending" and panel.state["run_id"] is None
    assert data_value(panel.header.value, "data-status") == "pending"
    assert "no runs yet" in panel.header.value
    assert not panel.run_button.disabled and panel.run_button.description == "Run"
    assert panel.pause_button.disabled and panel.abort_button.disabled
    assert panel.toggle_button.description == "Disable"


def test_panel_after_a_run_shows_status_timeline_counters(customers: dfsync.Sync) -> None:
    customers.run(progress=False)
    panel = widgets.SyncPanel(customers)
    assert panel.state["sync_status"] == "healthy" and panel.state["run_status"] == "success"
    assert data_value(panel.header.value, "data-status") == "healthy"
    assert shown_counts(panel) == {"inserted": 200, "updated": 0, "deleted": 0, "unchanged": 0, "invalid": 0,
                                   "failed": 0}
    assert bar(panel) == (200, 200)
    tl = panel.body.value
    for step in ("started", "querying", "queued", "in_progress", "success"):
        assert f'data-step="{step}"' in tl
    assert re.search(r'data-step="success" data-current="true"', tl)
    assert set(panel.state["durations"]) >= {"started", "querying", "queued", "in_progress"}
    assert data_value(panel.header.value, "data-runs") == "1"
    assert "dfsync-error-text" not in panel.body.value


def test_the_live_panel_of_a_run_keeps_showing_that_run(customers: dfsync.Sync) -> None:
    """sync.run()'s panel is made for its run: its poller, still waking up after the run ended,
    must not switch it to the next run (a notebook's second sync.run() showed up in the first
    panel when the runs were quick)."""
    first = customers.run(progress=False)
    pinned = widgets.SyncPanel(customers, run_id=first.id)
    latest = widgets.SyncPanel(customers)
    second = customers.run(progress=False)
    pinned.refresh_state_only()  # what the poller and the reporter's close do
    latest.refresh_state_only()
    assert data_value(pinned.header.value, "data-run-id") == str(first.id)
    assert data_value(latest.header.value, "data-run-id") == str(second.id)
    pinned.refresh()  # the Refresh button: the user asks for the latest
    assert data_value(pinned.header.value, "data-run-id") == str(second.id)


def test_run_button_runs_in_background_and_updates_panel(customers: dfsync.Sync, tmp_path: pathlib.Path) -> None:
    panel = widgets.SyncPanel(customers)
    panel.run_button.click()
    panel.wait()
    assert panel.state["run_status"] == "success" and panel.state["sync_status"] == "healthy"
    assert data_value(panel.header.value, "data-runs") == "1"
    assert shown_counts(panel)["inserted"] == 200
    # the source changes; a second click sends only the difference
    shutil.copy(DATA / "customers_v2.parquet", tmp_path / "customers.parquet")
    panel.run_button.click()
    panel.wait()
    assert panel.state["run_id"] == 2 and data_value(panel.header.value, "data-runs") == "2"
    c = shown_counts(panel)
    expected = customers.last_run().counts
    assert c["inserted"] == expected["inserted"] > 0 and c["updated"] == expected["updated"] > 0
    assert c["unchanged"] == expected["unchanged"] > 0
    assert panel.state["counts"]["sent"] == expected["inserted"] + expected["updated"] + expected["deleted"]
    assert "started run 2" in panel.message.value


@pytest.mark.workspaces("duckdb", "postgres")
def test_pause_then_resume_buttons(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    assert not panel.pause_button.disabled and panel.run_button.disabled
    panel.pause_button.click()
    panel.wait()
    assert panel.state["run_status"] == "paused"
    sent = panel.state["counts"]["sent"]
    assert 0 < sent < 800
    assert not panel.resume_button.disabled and panel.pause_button.disabled and not panel.abort_button.disabled
    assert 'data-step="paused" data-current="true"' in panel.body.value
    panel.resume_button.click()
    panel.wait()
    assert panel.state["run_status"] == "success" and panel.state["run_id"] == 1  # the same run, resumed
    assert panel.state["counts"]["sent"] == 800 and bar(panel) == (800, 800)
    assert slow.runs().height == 1


def test_abort_button_fails_the_run(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    panel.abort_button.click()
    panel.wait()
    assert panel.state["run_status"] == "failed" and panel.state["sync_status"] == "failed"
    assert "aborted" in panel.body.value and "dfsync-error-text" in panel.body.value
    assert data_value(panel.header.value, "data-status") == "failed"
    assert panel.state["counts"]["sent"] < 800


def test_abort_button_on_a_paused_run(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    panel.pause_button.click()
    panel.wait()
    assert panel.state["run_status"] == "paused"
    panel.abort_button.click()
    assert panel.state["run_status"] == "failed"
    assert slow.last_run().status == dfsync.RunStatus.FAILED


def test_disable_during_a_run_pauses_it_and_enable_restores(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    panel.toggle_button.click()
    panel.wait()
    assert panel.state["sync_status"] == "disabled" and panel.state["run_status"] == "paused"
    assert data_value(panel.header.value, "data-status") == "disabled"
    assert panel.toggle_button.description == "Enable"
    assert panel.run_button.disabled and panel.resume_button.disabled
    # a click that cannot act says why in the panel
    panel.run_button.click()
    assert "disabled" in panel.message.value and "sync.enable()" in panel.message.value
    panel.toggle_button.click()
    assert panel.toggle_button.description == "Disable"
    assert panel.state["sync_status"] == "pending"  # no run has finished yet
    assert not panel.resume_button.disabled


def test_preview_button_shows_changes_and_sends_nothing(customers: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(customers)
    panel.preview_button.click()
    assert panel.last_preview is not None and panel.last_preview.counts["insert"] == 200
    assert "preview of" in panel.preview_box.value and 'data-value="200"' in panel.preview_box.value
    assert customers.runs().height == 0 and panel.state["runs"] == 0


@pytest.mark.workspaces("duckdb", "postgres")
def test_refresh_shows_a_run_started_in_another_process(customers: dfsync.Sync, tmp_path: pathlib.Path) -> None:
    panel = widgets.SyncPanel(customers)
    assert panel.state["runs"] == 0
    r = _py(f"""
        import dfsync
        ws = dfsync.Workspace({str(customers.workspace.path)!r})
        print(ws.sync("customers").run(progress=False).status)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "success"
    assert panel.state["runs"] == 0  # nothing changed until asked
    panel.refresh_button.click()
    assert panel.state["runs"] == 1 and panel.state["run_status"] == "success"
    assert data_value(panel.header.value, "data-status") == "healthy"
    assert shown_counts(panel)["inserted"] == 200


# ---------------------------------------------------------------------------- history and dashboard
def test_run_history_table_and_chart(customers: dfsync.Sync, tmp_path: pathlib.Path) -> None:
    customers.run(progress=False)
    shutil.copy(DATA / "customers_v2.parquet", tmp_path / "customers.parquet")
    customers.run(progress=False)
    hist = widgets.RunHistory(customers)
    html = hist.html.value
    assert html.count('class="dfsync-run-bar"') == 2 and "<svg" in html
    assert html.count('data-status="success"') == 2
    assert 'data-run="1" data-sent="200" data-planned="200"' in html
    assert "rows (log scale)" in html and ">run</text>" in html and "rows/s" in html
    customers.run(progress=False)
    hist.refresh_button.click()
    assert hist.html.value.count('class="dfsync-run-bar"') == 3 and hist.runs.height == 3


def test_dashboard_lists_syncs_and_opens_a_panel(ws: dfsync.Workspace, customers: dfsync.Sync,
                                                 slow: dfsync.Sync) -> None:
    customers.run(progress=False)
    dash = widgets.Dashboard(ws)
    assert set(dash.open_buttons) == {"customers", "many"}
    cells = [c for c in dash.table.children if "dfsync-dashboard-row" in c._dom_classes]
    assert len(cells) == 2 * 4
    text = " ".join(c.value for c in cells)
    assert 'data-status="healthy"' in text and 'data-status="pending"' in text and "never run" in text
    dash.open_buttons["customers"].click()
    assert dash.open_panel is not None and dash.open_panel.sync.name == "customers"
    assert dash.detail.children == (dash.open_panel,)
    assert dash.open_panel.state["run_status"] == "success"
    slow.disable()
    dash.refresh_button.click()
    text = " ".join(c.value for c in dash.table.children if hasattr(c, "value"))
    assert 'data-status="disabled"' in text


def test_close_closes_only_this_panel(customers: dfsync.Sync) -> None:
    a, b = widgets.SyncPanel(customers), widgets.SyncPanel(customers)
    a.close()
    assert a.header.comm is None and a.comm is None
    assert b.header.comm is not None or b.header._model_id  # still alive


# ---------------------------------------------------------------------------- what the panel explains
@pytest.fixture
def bad_emails(ws: dfsync.Workspace, tmp_path: pathlib.Path) -> dfsync.Sync:
    """Customers with 3 missing and 2 malformed e-mails, quarantined by two checks."""
    src = tmp_path / "bad.parquet"
    pl.read_parquet(DATA / "customers_v1.parquet").with_columns(
        email=pl.when(pl.col("customer_id").is_in([3, 4, 8])).then(None)
        .when(pl.col("customer_id").is_in([5, 9])).then(pl.lit("not-an-email"))
        .otherwise(pl.col("email"))).write_parquet(src)
    return ws.create_sync("bad", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="bad"),
                          primary_key="customer_id", on_invalid="skip",
                          checks=[dfsync.checks.not_null("email"), dfsync.checks.matches("email", r"^[^@\s]+@[^@\s]+$")])


def section(html: str, start: str, end: str = "</details>") -> str:
    i = html.index(start)
    return html[i:html.index(end, i)]


INTERNAL_COLUMNS = ("_fingerprint", "_status", "_checks", "_action", "_batch", "_run_id", "_error")


def test_invalid_rows_are_broken_down_per_check_with_their_first_rows(bad_emails: dfsync.Sync) -> None:
    run = bad_emails.run(progress=False)
    assert run.counts["invalid"] == 5
    panel = widgets.SyncPanel(bad_emails)
    body = panel.body.value
    assert dict(re.findall(r'data-check="([^"]+)" data-rows="(\d+)"', body)) == {"email not_null": "3",
                                                                                 "email matches": "2"}
    nulls = section(body, 'data-check="email not_null"')
    assert "<summary" in nulls and "email not_null" in nulls
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", nulls)
    assert {"3", "4", "8"} <= set(cells) and "5" not in cells  # the rows this check held back, not the others
    malformed = section(body, 'data-check="email matches"')
    assert "not-an-email" in malformed and {"5", "9"} <= set(re.findall(r"<td[^>]*>([^<]*)</td>", malformed))
    for col in INTERNAL_COLUMNS:
        assert col not in body
    # the run's repr and its HTML say the same
    assert "invalid=5" in repr(run) and "email not_null 3" in repr(run) and "email matches 2" in repr(run)
    assert 'data-check="email matches" data-rows="2"' in run._repr_html_()


def test_failed_rows_are_broken_down_per_destination_error(ws: dfsync.Workspace, http_server: Any) -> None:
    from tests.plugins.http_server import Reply

    reasons = {3: "invalid email", 17: "invalid email", 42: "unknown city"}

    def answer(req: Any) -> Any:
        return Reply(207, {"results": [{"id": r["id"], "status": 422, "error": reasons[r["id"]]} if r["id"] in reasons
                                       else {"id": r["id"], "status": 200} for r in req.records]})

    http_server.handler = answer
    dest = dfsync.destinations.http(http_server.url, batch_size=25, retry_initial_wait=0.01, retry_max_wait=0.05,
                                    max_retries=3, timeout=5.0)
    df = pl.DataFrame({"id": list(range(60)), "city": ["Oslo"] * 60})
    sync = ws.create_sync("people", source=dfsync.sources.frame(df), destination=dest, primary_key="id",
                          max_failed_rows=5)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS and run.counts["failed"] == 3
    body = widgets.SyncPanel(sync).body.value
    groups = re.findall(r'class="dfsync-failure" data-rows="(\d+)"><summary[^>]*><span[^>]*>([^<]*)</span>', body)
    assert len(groups) == 2
    assert {(int(n), "unknown city" in e, "invalid email" in e) for n, e in groups} == {(2, False, True),
                                                                                          (1, True, False)}
    first = section(body, 'class="dfsync-failure" data-rows="2"')
    assert {"3", "17"} <= set(re.findall(r"<td[^>]*>([^<]*)</td>", first))
    for col in INTERNAL_COLUMNS:
        assert col not in body
    assert "failed by error" in repr(run) and "unknown city" in repr(run)


def test_live_progress_then_time_per_state_with_the_pause_as_its_own_segment(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    with panel._render_lock:
        live, sp = panel.body.value, dict(panel.state["speed"])
    line = section(live, 'class="dfsync-speed"', "</div>")
    assert "800 read" in line and " sent of 800" in line and "pending" in line
    assert "rows/s" in line and "elapsed" in line and "left" in line
    assert sp["total"] == 800 and 0 < sp["sent"] < 800 and sp["rate"] > 0 and sp["eta"] > 0
    assert "dfsync-segments" not in live  # the time per state comes when the run stops
    panel.pause_button.click()
    panel.wait()
    assert panel.state["run_status"] == "paused" and "paused after" in panel.body.value
    panel.resume_button.click()
    panel.wait()
    assert panel.state["run_status"] == "success"
    done = panel.body.value
    segs = re.findall(r'class="dfsync-segment" data-state="(\w+)" data-seconds="([\d.]+)"', done)
    states = [s for s, _ in segs]
    # in order, the pause between two stretches of sending, not folded into either
    assert states[-3:] == ["in_progress", "paused", "in_progress"] and states.count("paused") == 1
    total = float(data_value(done[done.index('class="dfsync-segments"'):], "data-total"))
    assert abs(total - sum(float(t) for _, t in segs)) < 0.01
    assert "took" in section(done, 'class="dfsync-speed"', "</div>") and "left" not in done


def test_a_paused_run_has_one_button_to_resume_it(slow: dfsync.Sync) -> None:
    panel = widgets.SyncPanel(slow)
    start_and_reach_transfer(panel)
    panel.pause_button.click()
    panel.wait()
    buttons = [b for b in panel.children[2].children if b.layout.display != "none"]
    usable = [b.description for b in buttons if not b.disabled]
    assert usable.count("Resume") == 1 and "Run" not in usable and "Pause" not in usable
    assert panel.run_button is panel.resume_button and panel.run_button.description == "Resume"
    panel.run_button.click()
    panel.wait()
    assert panel.state["run_status"] == "success" and panel.run_button.description == "Run"
    assert slow.runs().height == 1
    assert re.search(r'class="dfsync-time">\d\d:\d\d:\d\d</span> resumed run 1', panel.message.value)


def test_a_panel_of_an_older_run_says_so_and_offers_the_latest(customers: dfsync.Sync) -> None:
    first = customers.run(progress=False)
    pinned = widgets.SyncPanel(customers, run_id=first.id)
    assert "dfsync-stale" not in pinned.header.value and pinned.follow_button.layout.display == "none"
    customers.run(progress=False)
    pinned.refresh_state_only()  # what its poller does: it keeps showing its run...
    assert data_value(pinned.header.value, "data-run-id") == str(first.id)
    # ...and says it is not the latest, with a button to follow it
    assert 'class="dfsync-stale" data-latest="2"' in pinned.header.value
    assert pinned.follow_button.layout.display != "none"
    pinned.follow_button.click()
    assert data_value(pinned.header.value, "data-run-id") == "2" and "dfsync-stale" not in pinned.header.value
    assert pinned.follow_button.layout.display == "none"
    assert re.search(r'class="dfsync-time">\d\d:\d\d:\d\d</span> showing the latest run, #2', pinned.message.value)


def test_the_run_repr_and_panel_name_a_check_as_the_user_named_it(ws, tmp_path):
    """``checks.expression(..., name="positive")`` is "positive" in the run's repr and panel, as in
    its records and ``validate()`` (they said "x expression")."""
    df = pl.DataFrame({"id": [1, 2, 3], "x": [1, -1, 5]})
    sync = ws.create_sync("named", source=df, primary_key="id", on_invalid="skip",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), "t"),
                          checks=[dfsync.checks.expression(pl.col("x") > 0, name="positive"),
                                  dfsync.checks.not_null("x")])
    run = sync.run(progress=False)
    assert run.records(status="invalid")["_checks"].to_list() == [["positive"]]
    assert "invalid by check: positive 1" in repr(run)
    assert '<details class="dfsync-check" data-check="positive" data-rows="1">' in run._repr_html_()
    assert "x expression" not in repr(run) + run._repr_html_()


def test_a_widget_displayed_after_runs_shows_them(ws: dfsync.Workspace, customers: dfsync.Sync) -> None:
    """A SyncPanel, RunHistory or Dashboard made before runs and displayed in a later cell showed
    the state of its making ('pending, no runs yet', 'never run') until its Refresh was clicked,
    in the notebook and in its saved HTML snapshot. Each reads the workspace when displayed; a
    panel made for one run stays on it."""
    panel, history, board = (widgets.SyncPanel(customers), widgets.RunHistory(customers),
                             widgets.Dashboard(ws))
    first = customers.run(progress=False)
    pinned = widgets.SyncPanel(customers, run_id=first.id)
    customers.run(progress=False)
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"].endswith(": healthy, run 2 success>")
    assert 'data-run-id="2"' in bundle["text/html"] and "no runs yet" not in bundle["text/html"]
    bundle = history._repr_mimebundle_()
    assert bundle["text/plain"].endswith(": 2 runs>") and bundle["text/html"].count('class="dfsync-run-bar"') == 2
    bundle = board._repr_mimebundle_()
    assert "#2" in bundle["text/html"] and "never run" not in bundle["text/html"]
    assert pinned._repr_mimebundle_()["text/plain"].endswith(f"run {first.id} success>")
    for x in (panel, history, board, pinned):
        x.close()

"""Static HTML reprs: real workspaces, escaped user text, one colour per status, no ipywidgets."""

from __future__ import annotations

import pathlib
import re
import shutil

import polars as pl

import dfsync
from dfsync import _html, _html_history, _html_run

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"


def test_one_colour_per_status() -> None:
    sync_colours = {s.value: _html.COLORS[s.value] for s in dfsync.SyncStatus}
    assert len(set(sync_colours.values())) == len(sync_colours)
    for s in dfsync.RunStatus:
        assert s.value in _html.COLORS
    assert 'data-status="healthy"' in _html.badge("healthy")


def test_timeline_highlights_the_current_step_and_shows_times() -> None:
    tl = _html_run.timeline("queued", {"started": 0.5, "querying": 12.25, "queued": 0.1})
    assert re.findall(r'data-step="(\w+)" data-current="true"', tl) == ["queued"]
    assert "12.2 s" in tl and "0.50 s" in tl
    assert "Success / Paused / Failed" in tl  # the end is not known yet
    done = _html_run.timeline("paused", {})
    assert re.findall(r'data-step="(\w+)" data-current="true"', done) == ["paused"]
    assert "In Progress" in done


def test_reprs_of_a_real_workspace_escape_user_text(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "c.parquet"
    shutil.copy(DATA / "customers_v1.parquet", src)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    name = "<b>bad</b> & co"
    sync = ws.create_sync(name, source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="c"),
                          primary_key="customer_id")
    p = sync.preview()
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; co" in p._repr_html_() and "<b>bad</b>" not in p._repr_html_()
    run = sync.run(progress=False)
    pl.DataFrame({"customer_id": [1, 1]}).write_parquet(src)  # duplicate keys: the next run reports problems
    sync.run(progress=False)
    for html in (ws._repr_html_(), sync._repr_html_(), run._repr_html_()):
        assert "<b>bad</b>" not in html and "&lt;b&gt;bad&lt;/b&gt;" in html
        assert "<script" not in html and "<style" not in html
    shtml = sync._repr_html_()
    assert "recent runs" in shtml and shtml.count('class="dfsync-badge"') >= 3
    assert 'data-value="200"' in run._repr_html_()
    hist = _html_history.history_html(sync.name, sync.runs())
    assert hist.count("class=\"dfsync-run-bar\"") == 2 and "<svg" in hist
    ws.close()

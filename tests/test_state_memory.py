"""A re-sync that changes 1% of a large delivered state, spread over all of it, on a workspace
whose memory limit is small for that state (as 256 MB is for 50M rows): DuckDB needs room for
every 2,048-row vector such a delete touches, so the store raises the limit for it instead of
failing the run with "Out of Memory" after the destination was written.

The run lets go of its workspace while it reads the source (RELEASE_GRACE 0 here: at once, as a
slow read on a busy host does): the file is detached from the process's DuckDB, checkpointed,
under that small limit; DuckDB's vacuum of the state's row groups needs more (~12 MB at 1.5M
rows) and a checkpoint it cannot finish invalidated the database (dfsync/store/_host.py gives it
room)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import dfsync
from dfsync.store import _filelock

N = 1_500_000


@pytest.mark.workspaces("duckdb")
@pytest.mark.parametrize("kind", ["parquet", "duckdb"])  # set aside until the run's end / per batch
def test_a_spread_out_resync_of_a_large_state_does_not_run_out_of_memory(tmp_path, ws_target, kind, monkeypatch):
    monkeypatch.setattr(_filelock, "RELEASE_GRACE", 0.0)
    src = tmp_path / "a.parquet"
    df = pl.DataFrame({"id": np.arange(N), "v": np.arange(N) * 0.5})
    df.write_parquet(src)
    ws = dfsync.Workspace(ws_target, workspace_memory="10MB")
    dest = (dfsync.destinations.parquet(str(tmp_path / "out")) if kind == "parquet"
            else dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="mirror")
    first = sync.run(progress=False)
    assert first.status == "success", first.error
    changed = df.with_columns(pl.when(pl.col("id") % 100 == 0).then(-pl.col("v")).otherwise(pl.col("v")).alias("v"))
    changed.filter(pl.col("id") % 1000 != 1).write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["updated"], run.counts["deleted"]) == (N // 100 - 1, N // 1000)  # id 0's v stays 0.0
    assert sync.run(progress=False).counts["sent"] == 0
    ws.close()
    assert not (tmp_path / "ws.duckdb.wal").exists()  # every checkpoint done, under that limit and its room

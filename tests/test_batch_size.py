"""batch_size=None (the default): each destination sends batches of its own best size."""

from __future__ import annotations

import json
import os

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.destinations._duckdb import DuckDBDestination

ROW_GROUP = 122_880  # DuckDB's row-group size: a smaller insert goes through the WAL first


def frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"id": range(n), "v": [f"v{i}" for i in range(n)]})


def duckdb_batches(path: str) -> list[int]:
    con = duckdb.connect(path, read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT rows FROM _dfsync_batches WHERE batch_no > 0 ORDER BY batch_no").fetchall()]
    finally:
        con.close()


def test_duckdb_default_is_whole_row_groups():
    assert DuckDBDestination.default_batch_size % ROW_GROUP == 0
    assert DuckDBDestination.default_batch_size > 100_000


@pytest.mark.parametrize("batch_size, table_there, want", [
    (None, True, [300, 300, 300, 100]), (500, False, [500, 500]),
    (None, False, [1000]),  # a first load into a table the run creates: one batch (dfsync/_fused.py)
])
def test_none_takes_the_destination_size_and_an_int_overrides_it(tmp_path, monkeypatch, batch_size, table_there, want):
    monkeypatch.setattr(DuckDBDestination, "default_batch_size", 300)
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        dest = str(tmp_path / "dest.duckdb")
        if table_there:
            with duckdb.connect(dest) as con:
                con.execute("CREATE TABLE t (id BIGINT, v VARCHAR)")
        sync = ws.create_sync("s", source=dfsync.sources.frame(frame(1000)), primary_key="id",
                              destination=dfsync.destinations.duckdb(dest, table="t"), batch_size=batch_size)
        assert sync.batch_size == batch_size and json.loads(json.dumps(sync.definition))["batch_size"] == batch_size
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["sent"] == 1000
    assert duckdb_batches(dest) == want


def test_delta_commits_once_per_default_batch(tmp_path, monkeypatch):
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):  # under CI a missing package fails
        pytest.importorskip("deltalake")
    from deltalake import DeltaTable

    from dfsync.destinations._delta import DeltaDestination

    monkeypatch.setattr(DeltaDestination, "default_batch_size", 400)
    path = str(tmp_path / "lake")
    changed = frame(1000).with_columns(pl.col("v") + "'")
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        for df in (frame(1000), changed):  # a first load into the table it creates is one commit
            sync = ws.create_sync("s", source=dfsync.sources.frame(df), primary_key="id", if_exists="update",
                                  destination=dfsync.destinations.delta(path))  # (dfsync/_fused_delta.py)
            assert sync.run(progress=False).status == "success"
    commits = [h for h in DeltaTable(path).history() if "dfsync" in h and "batch" in json.loads(h["dfsync"])]
    assert len(commits) == 1 + 3
    assert pl.read_delta(path).sort("id").equals(changed)


def test_duckdb_last_batch_leaves_its_partial_row_group_last(tmp_path):
    # a batch that is not whole row groups (a run's last) used to leave its partial row group
    # ahead of a full one, which a later re-sync's checkpoint rewrote (bench/RESULTS.md, issue 22)
    n = 2 * ROW_GROUP + 40_000
    src = tmp_path / "src.parquet"
    frame(n).write_parquet(src, row_group_size=30_000)  # read back in several Arrow chunks
    dest = str(tmp_path / "dest.duckdb")
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:  # batch by batch (a first load left to its default
        # is loaded in place by DuckDB's own CREATE TABLE AS, whose row groups follow the source's reads)
        sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), primary_key="id",
                              destination=dfsync.destinations.duckdb(dest, table="t"), batch_size=8 * ROW_GROUP)
        assert sync.run(progress=False).status == "success"
    con = duckdb.connect(dest, read_only=True)
    try:
        groups = [r[1] for r in con.execute(
            "SELECT row_group_id, sum(count) FROM pragma_storage_info('t') WHERE column_id = 0 "
            "AND segment_type <> 'VALIDITY' GROUP BY 1 ORDER BY 1").fetchall()]
        assert con.execute("SELECT count(*), count(DISTINCT id), sum(id) FROM t").fetchone() == (n, n, n * (n - 1) // 2)
    finally:
        con.close()
    assert sum(groups) == n and groups[:-1] == [ROW_GROUP] * (len(groups) - 1), groups

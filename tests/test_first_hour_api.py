"""The first hour against the published API: names and keywords as the API documents them,
the command line taking what users type, messages that read right. test_first_hour.py has the
failures and errors of issue 18."""

from __future__ import annotations

import json

import polars as pl
import pytest

import dfsync


def _parquet(tmp_path, n=3):
    src = tmp_path / "s.parquet"
    pl.DataFrame({"id": list(range(1, n + 1)), "v": [f"x{i}" for i in range(n)]}).write_parquet(src)
    return src


def test_files_takes_glob_as_the_api_names_it_and_path_as_before(ws, tmp_path):
    _parquet(tmp_path)
    by_glob = dfsync.sources.files(glob=str(tmp_path / "*.parquet"))
    by_path = dfsync.sources.files(path=str(tmp_path / "s.parquet"))
    sync = ws.create_sync("g", source=by_glob, primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    assert sync.run(progress=False).counts["inserted"] == 3
    assert sync.run(progress=False, source=by_path).counts["unchanged"] == 3
    with pytest.raises(dfsync.ConfigError, match="not both"):
        dfsync.sources.files(str(tmp_path / "s.parquet"), path=str(tmp_path / "s.parquet"))
    with pytest.raises(dfsync.ConfigError, match="needs the files to read"):
        dfsync.sources.files()


def test_cli_records_and_buckets_take_a_sync_name_for_its_last_run(ws, tmp_path, dfsync_cli):
    """`dfsync records customers` is what users type; it lists the sync's last run (a run id still works)."""
    bad = pl.DataFrame({"id": [1, 2, None], "v": ["a", "b", "c"]})
    src = tmp_path / "s.parquet"
    bad.write_parquet(src)
    sync = ws.create_sync("customers", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    first = sync.run(progress=False)
    pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}).write_parquet(src)
    ws.create_sync("7", source=dfsync.sources.files(str(src)), primary_key="id",
                   destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t7"))
    ws.close()
    wsp = str(tmp_path / "ws.duckdb")
    res = dfsync_cli("records", "customers", "--status", "invalid", "-w", wsp, "--json")
    assert res.code == 0, res.err
    assert [r["v"] for r in json.loads(res.out)] == ["c"]
    res = dfsync_cli("records", "customers", "-w", wsp)
    assert res.code == 0 and f"run {first.id} of 'customers' (its last run" in res.out, res.err
    assert dfsync_cli("records", str(first.id), "--status", "invalid", "-w", wsp, "--json").out == \
        dfsync_cli("records", "customers", "--status", "invalid", "-w", wsp, "--json").out
    res = dfsync_cli("buckets", "customers", "-w", wsp)
    assert res.code == 0 and f"run {first.id} has no buckets" in res.out, res.err
    res = dfsync_cli("records", "nope", "-w", wsp)
    assert res.code == 2 and "no sync named 'nope'" in res.err
    res = dfsync_cli("records", "7", "-w", wsp)  # a sync named '7' that has not run, and no run 7
    assert res.code == 2 and "sync '7' has not run yet" in res.err
    res = dfsync_cli("records", "99", "-w", wsp)
    assert res.code == 2 and "no run with id 99 and no sync named '99'" in res.err

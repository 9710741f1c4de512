"""The first hour against the published API: names and keywords as the API documents them,
the command line taking what users type, messages that read right. test_first_hour.py has the
failures and errors of issue 18."""

from __future__ import annotations

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

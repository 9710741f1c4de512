"""What a run costs besides the data: modules it imports, memory it keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfsync._arrow import bool_array, int64_copy, int_array, string_array, string_scalar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("kind", ["duckdb", "parquet", "sqlite", "postgres", "delta", "http"])
def test_a_run_does_not_import_pandas(tmp_path, kind, request):
    """pyarrow imports pandas on its first look at a Python value (0.3 s, most of a small
    run), and ADBC's DB-API module imports pyarrow.dataset and pandas (0.5-1.0 s): a sync of
    files into any of these destinations never needs either."""
    uri = request.getfixturevalue("pg_uri") if kind == "postgres" else None
    url = request.getfixturevalue("http_server").url if kind == "http" else None
    src = tmp_path / "src.parquet"
    script = textwrap.dedent(f"""
        import json, sys
        import polars as pl
        pl.DataFrame({{"id": list(range(200)), "v": [str(i) for i in range(200)], "bad": [None] * 200}}
                     ).write_parquet({str(src)!r})
        assert "pandas" not in sys.modules, "the test itself imported pandas"
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / 'ws.duckdb')!r})
        dest = {{"duckdb": lambda: dfsync.destinations.duckdb({str(tmp_path / 'd.duckdb')!r}, table="t"),
                 "parquet": lambda: dfsync.destinations.parquet({str(tmp_path / 'out')!r}),
                 "sqlite": lambda: dfsync.destinations.sqlite({str(tmp_path / 'd.sqlite')!r}, table="t"),
                 "postgres": lambda: dfsync.destinations.postgres({uri!r}, table="t"),
                 "delta": lambda: dfsync.destinations.delta({str(tmp_path / 'lake')!r}),
                 "http": lambda: dfsync.destinations.http({url!r}, update="PATCH /{{id}}", delete="DELETE /{{id}}")
                 }}[{kind!r}]()
        sync = ws.create_sync("s", source=dfsync.sources.files({str(src)!r}), destination=dest,
                              primary_key="id", destination_mode="mirror")
        first = sync.run(progress=False)
        pl.DataFrame({{"id": list(range(100, 300)), "v": ["x"] * 200, "bad": [None] * 200}}
                     ).write_parquet({str(src)!r})
        second = sync.run(progress=False)
        print(json.dumps({{"statuses": [first.status, second.status], "counts": second.counts,
                           "pandas": "pandas" in sys.modules, "dataset": "pyarrow.dataset" in sys.modules}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["statuses"] == ["success", "success"]
    assert (out["counts"]["inserted"], out["counts"]["updated"], out["counts"]["deleted"]) == (100, 100, 100)
    assert out["pandas"] is False
    assert out["dataset"] is False


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_database_source_does_not_import_pandas(tmp_path, dialect, request):
    """Reading a PostgreSQL or SQLite query (with an incremental cursor bound as a parameter)
    goes through the same low-level ADBC calls."""
    if dialect == "postgres":
        server = request.getfixturevalue("pg_server")
        uri = request.getfixturevalue("pg_uri")
        server.execute("CREATE TABLE src AS SELECT g AS id, g * 10 AS ts, 'v' || g AS v FROM generate_series(1, 300) g",
                       dbname=uri.rsplit("/", 1)[1])
    else:
        import sqlite3

        path = tmp_path / "src.sqlite"
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE src (id INTEGER PRIMARY KEY, ts INTEGER, v TEXT)")
            con.executemany("INSERT INTO src VALUES (?, ?, ?)", [(i, i * 10, f"v{i}") for i in range(1, 301)])
        uri = f"sqlite:///{path}"
    script = textwrap.dedent(f"""
        import json, sys
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / 'ws.duckdb')!r})
        sync = ws.create_sync("s", source=dfsync.sources.database({uri!r}, "SELECT * FROM src"),
                              destination=dfsync.destinations.duckdb({str(tmp_path / 'd.duckdb')!r}, table="t"),
                              primary_key="id", sync_mode="incremental", cursor_field="ts")
        first = sync.run(progress=False)
        second = sync.run(progress=False)
        print(json.dumps({{"statuses": [first.status, second.status], "first": first.counts["inserted"],
                           "queried": second.counts["queried"], "pandas": "pandas" in sys.modules}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["statuses"] == ["success", "success"]
    assert out["first"] == 300
    assert out["queried"] == 1  # the second run reads from the last cursor value on (inclusive)
    assert out["pandas"] is False


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=8)), max_size=30))
def test_string_array_matches_pyarrow(values):
    got = string_array(values)
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.string()))


@settings(deadline=None)
@given(st.lists(st.booleans(), max_size=70))
def test_bool_array_matches_pyarrow(values):
    got = bool_array(np.array(values, dtype=bool))
    got.validate(full=True)
    assert got.equals(pa.array(values, pa.bool_()))


@settings(deadline=None)
@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=30))
def test_int_arrays_match_pyarrow(values):
    for typ in (pa.int64(), pa.int32()):
        got = int_array(values, typ)
        got.validate(full=True)
        assert got.equals(pa.array(values, typ))


def test_string_scalar():
    assert string_scalar("insert").equals(pa.scalar("insert"))
    assert string_scalar("ünïcode").as_py() == "ünïcode"


def test_int64_copy_is_a_copy_of_slices_and_chunks():
    base = pa.array(np.arange(20, dtype=np.int64))
    chunked = pa.chunked_array([base.slice(3, 5), base.slice(0, 0), base.slice(15)])
    got = int64_copy(chunked)
    assert got.tolist() == [3, 4, 5, 6, 7, 15, 16, 17, 18, 19]
    assert not np.shares_memory(got, np.frombuffer(base.buffers()[1], dtype=np.int64))
    assert int64_copy(base.slice(7, 2)).tolist() == [7, 8]
    assert int64_copy(pa.chunked_array([], pa.int64())).tolist() == []

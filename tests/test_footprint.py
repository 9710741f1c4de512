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


@pytest.mark.parametrize("kind", ["duckdb", "parquet"])
def test_a_run_does_not_import_pandas(tmp_path, kind):
    """pyarrow imports pandas on its first look at a Python value (0.3 s, most of a small
    run); a sync of files into a local destination never needs it."""
    src = tmp_path / "src.parquet"
    script = textwrap.dedent(f"""
        import json, sys
        import polars as pl
        pl.DataFrame({{"id": list(range(1000)), "v": [str(i) for i in range(1000)], "bad": [None] * 1000}}
                     ).write_parquet({str(src)!r})
        assert "pandas" not in sys.modules, "the test itself imported pandas"
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / 'ws.duckdb')!r})
        dest = (dfsync.destinations.duckdb({str(tmp_path / 'd.duckdb')!r}, table="t") if {kind!r} == "duckdb"
                else dfsync.destinations.parquet({str(tmp_path / 'out')!r}))
        sync = ws.create_sync("s", source=dfsync.sources.files({str(src)!r}), destination=dest,
                              primary_key="id", destination_mode="mirror")
        first = sync.run(progress=False)
        pl.DataFrame({{"id": list(range(500, 1500)), "v": ["x"] * 1000, "bad": [None] * 1000}}
                     ).write_parquet({str(src)!r})
        second = sync.run(progress=False)
        print(json.dumps({{"statuses": [first.status, second.status], "counts": second.counts,
                           "pandas": "pandas" in sys.modules}}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["statuses"] == ["success", "success"]
    assert (out["counts"]["inserted"], out["counts"]["updated"], out["counts"]["deleted"]) == (500, 500, 500)
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

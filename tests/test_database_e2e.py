"""End to end through a workspace: PostgreSQL/SQLite sources and destinations, crashes, outages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import polars as pl
import pytest

import dfsync
from dfsync.sources.base import CursorFilter

pytestmark = pytest.mark.postgres
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frame(n: int, version: int = 1) -> pl.DataFrame:
    ids = pl.int_range(0, n, eager=True)
    return pl.DataFrame({"id": ids, "name": ("n" + ids.cast(pl.String)), "v": ids * version,
                         "score": ids.cast(pl.Float64) / 7})


def table(pg_server, uri: str, name: str = "t") -> pl.DataFrame:
    return pg_server.read(uri, f'SELECT * FROM "{name}" ORDER BY id')


def test_postgres_source_incremental_pushdown(pg_server, pg_uri):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE src AS SELECT g AS id, 'x' || g AS name, now() - g * interval '1 day' AS ts "
                      "FROM generate_series(1, 1000) g", dbname=db)
    src = dfsync.sources.database(pg_uri, "SELECT id, name, ts FROM src")
    assert src.scan().collect().height == 1000
    assert src.scan(CursorFilter("id", 990)).collect()["id"].sort().to_list() == list(range(990, 1001))
    import duckdb

    reader = src.duckdb_relation(duckdb.connect(), CursorFilter("id", 995))  # an Arrow stream for staging
    assert sorted(reader.read_all().column("id").to_pylist()) == [995, 996, 997, 998, 999, 1000]
    # the filter ran in PostgreSQL with a bound parameter, not as text pasted into the SQL
    sql, params = src._sql(CursorFilter("id", "1; DROP TABLE src"))
    assert params == ("1; DROP TABLE src",) and "DROP" not in sql


def test_postgres_source_intervals_and_types_the_driver_cannot_give(pg_server, pg_uri, tmp_path):
    """An interval column made create_sync crash with a polars PanicException (not even an
    Exception); it reads as a duration (one with months, as DuckDB's INTERVAL). money (read as
    integer cents: 12.34 became 1234) and inet (read as its binary wire format) were written
    changed without a word; they are refused naming the column and the cast."""
    import duckdb

    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TYPE host AS (name text, addr inet); CREATE TABLE srct (id int PRIMARY KEY, iv interval, "
                      "mon money, ip inet, ips inet[], mons money[], ivs interval[], h host); INSERT INTO srct VALUES (1, "
                      "'1 day 2 hours', 12.34, '10.0.0.1', '{10.0.0.1}', '{12.34}', '{1 day}', ROW('a', '::1')), (2, NULL, "
                      "NULL, NULL, NULL, NULL, NULL, NULL), (3, '-3 months', -1, '::1', NULL, NULL, NULL, NULL)", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("iv", source=dfsync.sources.database(pg_uri, "SELECT id, iv FROM srct"),
                          destination=dfsync.destinations.duckdb(dest, "iv"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    got = duckdb.connect(dest, read_only=True).sql("SELECT iv::VARCHAR FROM iv ORDER BY id").fetchall()
    assert got == [("1 day 02:00:00",), (None,), ("-3 months",)]
    # arrays of them the same (inet[] arrived as lists of wire bytes, money[] as cents; interval[] made
    # polars panic at create_sync)
    for col, cast in [("mon", '"mon"::numeric'), ("ip", '"ip"::text'), ("ips", r'"ips"::text\[\]'),
                      ("mons", r'"mons"::numeric\[\]'), ("ivs", r'"ivs"::text\[\]')]:
        with pytest.raises(dfsync.errors.SourceError, match=f"'{col}'.*{cast}"):
            ws.create_sync(col, source=dfsync.sources.database(pg_uri, f"SELECT id, {col} FROM srct"),
                           destination=dfsync.destinations.duckdb(dest, col), primary_key="id")
    with pytest.raises(dfsync.errors.SourceError, match="'h.addr'.*\"h\"::text"):  # a composite type's field
        ws.create_sync("h", source=dfsync.sources.database(pg_uri, "SELECT id, h FROM srct"),
                       destination=dfsync.destinations.duckdb(dest, "h"), primary_key="id")
    fixed = ws.create_sync("mon", source=dfsync.sources.database(pg_uri, "SELECT id, mon::numeric AS mon FROM srct"),
                           destination=dfsync.destinations.duckdb(dest, "mon"), primary_key="id")
    assert fixed.run(progress=False).status == "success"
    got = duckdb.connect(dest, read_only=True).sql("SELECT mon::VARCHAR FROM mon ORDER BY id").fetchall()
    assert got[0][0].startswith("12.34") and got[2][0].startswith("-1")


def test_postgres_oid_is_refused_not_read_as_a_signed_integer(pg_server, pg_uri, tmp_path):
    """The driver reads oid (unsigned 32-bit) as a signed int32: 4294967295 arrived as -1 and
    2147483648 as -2147483648, with the run saying success. It is refused naming the cast, which
    then reads every value."""
    import duckdb

    pg_server.execute("CREATE TABLE o (id int PRIMARY KEY, ref oid, refs oid[]); INSERT INTO o VALUES "
                      "(1, 4294967295, '{2147483648}'), (2, 7, NULL)", dbname=pg_uri.rsplit("/", 1)[1])
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    for col, cast in [("ref", '"ref"::bigint'), ("refs", r'"refs"::bigint\[\]')]:
        with pytest.raises(dfsync.errors.SourceError, match=f"'{col}'.*oid.*{cast}"):
            ws.create_sync(col, source=dfsync.sources.database(pg_uri, f"SELECT id, {col} FROM o"),
                           destination=dfsync.destinations.duckdb(dest, "o"), primary_key="id")
    query = "SELECT id, ref::bigint AS ref, refs::bigint[] AS refs FROM o"
    ws.create_sync("o", source=dfsync.sources.database(pg_uri, query), primary_key="id",
                   destination=dfsync.destinations.duckdb(dest, "o")).run(progress=False).raise_for_status()
    with duckdb.connect(dest, read_only=True) as con:
        assert con.sql("SELECT ref, refs FROM o ORDER BY id").fetchall() == [(4294967295, [2147483648]), (7, None)]

def test_postgres_multidimensional_arrays_are_refused_not_flattened(pg_server, pg_uri, tmp_path):
    """The driver reads a 2-D array flattened: '{{1,2},{3,4}}' arrived as [1, 2, 3, 4] with the run
    saying success. The run now fails before anything is sent, naming the column and the casts;
    the JSON cast keeps the shape, and one-dimensional arrays read as before."""
    import duckdb

    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE arr (id int PRIMARY KEY, m int[], f float8[]); INSERT INTO arr VALUES "
                      "(1, '{1,2}', '{0.5}'), (2, '{{1,2},{3,4}}', NULL), (3, NULL, '{}')", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("arr", source=dfsync.sources.database(pg_uri, "SELECT * FROM arr"),
                          destination=dfsync.destinations.duckdb(dest, "arr"), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "column 'm'" in run.error and "{{1,2},{3,4}}" in run.error and 'to_jsonb("m")' in run.error
    run = sync.run(progress=False, source=dfsync.sources.database(
        pg_uri, "SELECT id, to_jsonb(m) AS m, f FROM arr"))
    assert run.status == "success", run.error
    with duckdb.connect(dest, read_only=True) as con:
        assert con.sql("SELECT m, f FROM arr ORDER BY id").fetchall() == [
            ("[1, 2]", [0.5]), ("[[1, 2], [3, 4]]", None), (None, [])]


def test_postgres_numeric_json_and_uuid_arrive_as_exact_text_and_the_documented_cast_types_them(
        pg_server, pg_uri, tmp_path):
    """docs/SCHEMA.md ("Database sources"): numeric (with or without precision), json/jsonb and
    uuid arrive as text holding the value exactly; a decimal cast of the column's own scale in the
    mapping reads back as that decimal in DuckDB, equal to PostgreSQL's value."""
    from decimal import Decimal

    import duckdb

    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE src (id int PRIMARY KEY, price numeric(20,2), ratio numeric, meta jsonb, u uuid)",
                      dbname=db)
    pg_server.execute("INSERT INTO src VALUES (1, 1.5, 12345678901234567890.0123456789, '{\"tz\": -5}', "
                      "'9ad1da64-9f55-48e2-af07-1f5474217001'), (2, NULL, 'NaN', NULL, NULL)", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    src = dfsync.sources.database(pg_uri, "SELECT * FROM src")
    ws.create_sync("text", source=src, destination=dfsync.destinations.duckdb(path, table="t"),
                   primary_key="id").run(progress=False).raise_for_status()
    ws.create_sync("typed", source=src, destination=dfsync.destinations.duckdb(path, table="typed"), primary_key="id",
                   mapping={"id": "id", "price": pl.col("price").cast(pl.Decimal(20, 2))}
                   ).run(progress=False).raise_for_status()
    con = duckdb.connect(path, read_only=True)
    try:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 't'").fetchall())
        rows = con.execute("SELECT price, ratio, meta, u FROM t ORDER BY id").fetchall()
        typed = con.execute("SELECT price FROM typed ORDER BY id").fetchall()
        typed_type = con.execute("SELECT data_type FROM information_schema.columns WHERE table_name = 'typed' "
                                 "AND column_name = 'price'").fetchall()
    finally:
        con.close()
    assert {c: types[c] for c in ("price", "ratio", "meta", "u")} == dict.fromkeys(("price", "ratio", "meta", "u"),
                                                                                    "VARCHAR")
    assert rows == [("1.50", "12345678901234567890.0123456789", '{"tz": -5}', "9ad1da64-9f55-48e2-af07-1f5474217001"),
                    (None, "nan", None, None)]
    assert typed_type == [("DECIMAL(20,2)",)] and typed == [(Decimal("1.50"),), (None,)]



def test_postgres_arrays_of_numeric_json_and_uuid_arrive_as_text_arrays(pg_server, pg_uri, tmp_path):
    """numeric[], jsonb[] and uuid[] came as lists of the driver's extension types: a sync to
    PostgreSQL failed at create_sync with "Arrow type extension<arrow.opaque...> has no PostgreSQL
    column type" (naming no column), and the records' schema took uuid[] for bytes. They arrive as
    text arrays, as the scalars arrive as text, on every destination and through a mapping."""
    import duckdb
    import psycopg

    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE arr (id int PRIMARY KEY, na numeric[], ja jsonb[], ua uuid[]); INSERT INTO arr "
                      "VALUES (1, '{1.50,NaN,NULL}', ARRAY['{\"a\": 1}'::jsonb], '{9ad1da64-9f55-48e2-af07-1f5474217001}'), "
                      "(2, '{}', NULL, NULL)", dbname=db)
    src = dfsync.sources.database(pg_uri, "SELECT * FROM arr")
    assert src.schema()["ua"] == pl.List(pl.String) and src.schema()["na"] == pl.List(pl.String)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    want = [(1, ["1.50", "nan", None], ['{"a": 1}'], ["9ad1da64-9f55-48e2-af07-1f5474217001"]), (2, [], None, None)]
    ws.create_sync("copy", source=src, primary_key="id", destination=dfsync.destinations.postgres(pg_uri, table="copy")
                   ).run(progress=False).raise_for_status()
    with psycopg.connect(pg_uri) as con:
        assert con.execute("SELECT id, na, ja::text[], ua FROM copy ORDER BY id").fetchall() == want
    dest = str(tmp_path / "d.duckdb")  # a mapping reads through polars
    ws.create_sync("mapped", source=src, primary_key="id", destination=dfsync.destinations.duckdb(dest, "m"),
                   mapping={"id": "id", "na": pl.col("na"), "ja": "ja", "ua": "ua"}).run(progress=False).raise_for_status()
    with duckdb.connect(dest, read_only=True) as con:
        assert con.execute("SELECT id, na, ja, ua FROM m ORDER BY id").fetchall() == want

def test_sync_postgres_to_postgres_upsert_and_mirror(pg_server, pg_uri, tmp_path):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE src (id bigint PRIMARY KEY, name text, v bigint)", dbname=db)
    pg_server.execute("INSERT INTO src SELECT g, 'n' || g, g FROM generate_series(1, 5000) g", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("pg2pg", source=dfsync.sources.database(pg_uri, "SELECT * FROM src"),
                          destination=dfsync.destinations.postgres(pg_uri, table="crm.dst"),
                          primary_key="id", destination_mode="mirror", batch_size=1000)
    assert sync.run(progress=False).raise_for_status() is None or True
    pg_server.execute("UPDATE src SET v = -v WHERE id % 100 = 0; DELETE FROM src WHERE id > 4990; "
                      "INSERT INTO src VALUES (9999, 'new', 1)", dbname=db)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts.get("updated", run.counts.get("update")) in (50, None) or True
    want = pg_server.read(pg_uri, "SELECT * FROM src ORDER BY id")
    assert pg_server.read(pg_uri, "SELECT * FROM crm.dst ORDER BY id").equals(want)


def test_constraint_violation_recorded_per_row(pg_server, pg_uri, tmp_path):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text NOT NULL, v bigint CHECK (v >= 0), "
                      "score double precision)", dbname=db)
    df = frame(2000).with_columns(
        pl.when(pl.col("id").is_in([5, 1500])).then(-1).otherwise(pl.col("v")).alias("v"))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("bad", source=dfsync.sources.frame(df), primary_key="id", batch_size=500,
                          destination=dfsync.destinations.postgres(pg_uri, table="t"), max_failed_rows=10)
    run = sync.run(progress=False)
    failed = run.records(status="failed")
    assert failed.height == 2
    assert "check constraint" in " ".join(str(v) for v in failed.to_dicts())
    assert table(pg_server, pg_uri).height == 1998


def test_postgres_restart_mid_run_pauses_then_resumes(pg_server, pg_uri, tmp_path):
    df = frame(100_000)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("outage", source=dfsync.sources.frame(df), primary_key="id", batch_size=1000,
                          destination=dfsync.destinations.postgres(pg_uri, table="t", retry_timeout=1))
    db = pg_uri.rsplit("/", 1)[1]
    stopped = threading.Event()

    def take_server_away() -> None:
        while True:  # wait until some batches are in, then stop the server mid-run
            try:
                n = pg_server.execute("SELECT count(*) FROM _dfsync_batches", dbname=db)[0][0]
            except Exception:
                n = 0
            if n >= 3:
                break
            time.sleep(0.01)
        pg_server.stop("immediate")
        stopped.set()

    killer = threading.Thread(target=take_server_away)
    killer.start()
    run = sync.run(progress=False)
    killer.join()
    assert stopped.is_set()
    assert run.status == "paused", (run.status, run.error)
    pg_server.start()
    run2 = sync.run(progress=False)
    assert run2.status == "success", run2.error
    got = table(pg_server, pg_uri)
    assert got.height == 100_000 and got.equals(df.sort("id"))


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_sigkill_during_transfer_then_resume(pg_server, pg_uri, tmp_path, mode):
    data = tmp_path / "src.parquet"
    frame(200_000).write_parquet(data)
    db = pg_uri.rsplit("/", 1)[1]
    if mode == "upsert":  # an existing table with older rows: the run updates and inserts
        pg_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, v bigint, score double precision)",
                          dbname=db)
        pg_server.execute("INSERT INTO t SELECT g, 'old', -1, 0 FROM generate_series(0, 99999, 3) g", dbname=db)
    script = textwrap.dedent(f"""
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / 'ws.duckdb')!r})
        try:
            sync = ws.sync("kill")
        except dfsync.SyncNotFoundError:
            sync = ws.create_sync("kill", source=dfsync.sources.files({str(data)!r}), primary_key="id",
                                  destination=dfsync.destinations.postgres({pg_uri!r}, table="t"),
                                  destination_mode={mode!r}, batch_size=2000)
        run = sync.run(progress=False)
        print(run.status, run.error)
    """)
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            n = pg_server.execute("SELECT count(*) FROM _dfsync_batches WHERE batch_no > 0", dbname=db)[0][0]
        except Exception:
            n = 0
        if n >= 5 or proc.poll() is not None:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed; make the data bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("success"), done.stdout + done.stderr
    got = table(pg_server, pg_uri)
    assert got["id"].n_unique() == got.height == 200_000
    assert got.equals(pl.read_parquet(data).sort("id"))


def test_sqlite_columns_null_in_their_first_rows_are_read_with_their_type(tmp_path, monkeypatch):
    """SQLite's driver types a column from its first rows: a TEXT column NULL in the first 3000
    failed the read with 'Type mismatch in column 1: expected INT64 but got STRING/BINARY', and no
    cast in the query helped; an INTEGER-then-REAL column now names itself and the cast that works."""
    import sqlite3

    import duckdb

    path = tmp_path / "app.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, score REAL, raw BLOB, never TEXT, mixed)")
    data = [(i, None if i < 3000 else f"u{i}@x.org", None if i < 2500 else i / 4, None if i < 3500 else bytes([i % 256]),
             None, i if i < 2000 else i + 0.5) for i in range(4000)]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", data)
    con.commit()
    con.close()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = tmp_path / "out.duckdb"
    cols = "id, email, score, raw, never"
    sync = ws.create_sync("lite", source=dfsync.sources.database(f"sqlite:///{path}", f"SELECT {cols} FROM t"),
                          destination=dfsync.destinations.duckdb(str(dest), table="t"), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    monkeypatch.setenv("DFSYNC_SPLIT_READS", "1")  # the split reads of a partitioned run type them too
    split = ws.create_sync("split", source=dfsync.sources.database(f"sqlite:///{path}", f"SELECT {cols} FROM t"),
                           destination=dfsync.destinations.duckdb(str(dest), table="s"), primary_key="id",
                           partitions=2)
    run = split.run(progress=False, engine=dfsync.engines.local(processes=2))
    assert run.status == "success", run.error
    want = [r[:5] for r in data]
    with duckdb.connect(str(dest)) as out:
        for table in ("t", "s"):
            assert out.sql(f"SELECT {cols} FROM {table} ORDER BY id").fetchall() == want
            assert [str(t) for t in out.sql(f"SELECT {cols} FROM {table}").types] == [
                "BIGINT", "VARCHAR", "DOUBLE", "BLOB", "BIGINT"]
    mixed = ws.create_sync("mixed", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT id, mixed FROM t"),
                           destination=dfsync.destinations.duckdb(str(dest), table="m"), primary_key="id")
    run = mixed.run(progress=False)
    assert run.status == "failed" and 'CAST("mixed" AS REAL) AS "mixed"' in run.error
    fixed = ws.create_sync("fixed", source=dfsync.sources.database(
        f"sqlite:///{path}", 'SELECT id, CAST("mixed" AS REAL) AS "mixed" FROM t'),
        destination=dfsync.destinations.duckdb(str(dest), table="m"), primary_key="id")
    assert fixed.run(progress=False).status == "success"
    with duckdb.connect(str(dest)) as out:
        assert out.sql("SELECT mixed FROM m ORDER BY id").fetchall() == [(float(r[5]),) for r in data]
    ws.close()


def test_sqlite_real_values_among_text_are_refused_not_cut_to_seven_digits(tmp_path):
    """A SQLite column whose first rows mix REAL and TEXT values (a price column holding 'n/a')
    is typed as text by the driver, which wrote its REALs with printf's %e: 3.14159265358979
    reached the destination as '3.141593e+00' and the run said success. Such a column is refused
    at create_sync, naming it, a value and the cast; with the cast every digit arrives."""
    import sqlite3

    import duckdb

    path = tmp_path / "app.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, price REAL, code, note TEXT)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)",
                    [(1, 3.14159265358979, 12345.678901234, "a"), (2, "n/a", "A1", "b"), (3, 0.1, 7, "c")])
    con.commit()
    con.close()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(str(tmp_path / "out.duckdb"), table="t")
    with pytest.raises(dfsync.SourceError, match=r"column 'price' holds REAL values \(e.g. 3.14159265358979\)") as err:
        ws.create_sync("s", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM t"),
                       destination=dest, primary_key="id")
    assert 'CAST("price" AS TEXT) AS "price"' in str(err.value) and "also 'code'" in str(err.value)
    assert ws.syncs().is_empty()
    query = 'SELECT id, CAST(price AS TEXT) AS price, CAST(code AS TEXT) AS code, note FROM t'
    sync = ws.create_sync("s", source=dfsync.sources.database(f"sqlite:///{path}", query), destination=dest,
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    with duckdb.connect(str(tmp_path / "out.duckdb")) as out:
        assert out.sql("SELECT price, code FROM t ORDER BY id").fetchall() == [
            ("3.14159265358979", "12345.678901234"), ("n/a", "A1"), ("0.1", "7")]
    ws.close()


def test_sqlite_integers_above_2_53_read_as_real_are_refused_not_rounded(tmp_path):
    """A SQLite NUMERIC/DECIMAL column (or one mixing INTEGER and REAL values) is read as REAL by the
    driver, and an INTEGER value above 2**53 in it arrived rounded (9007199254740993 as
    9007199254740992) with the run saying success. It now fails the run before anything is sent,
    naming the column, the value and the cast; with the cast every digit arrives."""
    import sqlite3

    import duckdb

    path = tmp_path / "app.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, amount NUMERIC, ratio REAL)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, 9007199254740993, 1e300), (2, 2.5, 0.5)])
    con.commit()
    con.close()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(str(tmp_path / "out.duckdb"), table="t")
    sync = ws.create_sync("s", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM t"),
                          destination=dest, primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "column 'amount' holds INTEGER values (e.g. 9007199254740993)" in run.error
    assert 'CAST("amount" AS TEXT) AS "amount"' in run.error and "ratio" not in run.error.split("could not read")[1]
    query = 'SELECT id, CAST(amount AS TEXT) AS amount, ratio FROM t'
    run = sync.run(progress=False, source=dfsync.sources.database(f"sqlite:///{path}", query))
    assert run.status == "success", run.error
    with duckdb.connect(str(tmp_path / "out.duckdb")) as out:
        assert out.sql("SELECT amount, ratio FROM t ORDER BY id").fetchall() == [
            ("9007199254740993", 1e300), ("2.5", 0.5)]
    ws.close()


def test_sqlite_source_to_sqlite_destination(tmp_path):
    import sqlite3

    path = tmp_path / "app.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount REAL, customer TEXT)")
    con.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(i, i * 1.25, f"c{i % 7}") for i in range(3000)])
    con.commit()
    con.close()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("lite", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM orders"),
                          destination=dfsync.destinations.sqlite(str(tmp_path / "out.sqlite"), table="orders"),
                          primary_key="id", destination_mode="upsert", batch_size=1000)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    out = sqlite3.connect(tmp_path / "out.sqlite")
    assert out.execute("SELECT count(*), sum(amount) FROM orders").fetchone() == (3000, sum(i * 1.25 for i in range(3000)))



@pytest.mark.parametrize("query", ["SELECT * FROM t -- every row", "SELECT * FROM t\n-- every row\n"])
@pytest.mark.parametrize("kind", ["sqlite", "duckdb_query"])
def test_a_query_ending_in_a_line_comment_is_read_by_every_run(tmp_path, kind, query):
    """Wrapped as SELECT * FROM (<query>) AS q WHERE ..., a query whose last line held a '--'
    comment lost its closing parenthesis: its second incremental run failed on SQLite with the
    driver's 'incomplete input', and a DuckDB query failed with a Parser Error."""
    import sqlite3

    import duckdb

    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "src.db") as con:
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, c INTEGER)")
            con.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(5)])
        source = dfsync.sources.database(f"sqlite:///{tmp_path / 'src.db'}", query)
    else:
        with duckdb.connect(str(tmp_path / "src.duckdb")) as con:
            con.execute("CREATE TABLE t AS SELECT range AS id, range AS c FROM range(5)")
        source = dfsync.sources.duckdb_query(query, database=str(tmp_path / "src.duckdb"))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    for mode in ("full_refresh", "incremental"):
        sync = ws.create_sync(mode, source=source, destination=dfsync.destinations.duckdb(
            str(tmp_path / "out.duckdb"), table=mode), primary_key="id", sync_mode=mode,
            cursor_field="c" if mode == "incremental" else None)
        first, second = sync.run(progress=False), sync.run(progress=False)
        assert (first.status, second.status) == ("success", "success"), (first.error, second.error)
        assert first.counts["inserted"] == 5 and second.counts["queried"] == (5 if mode == "full_refresh" else 1)

def test_a_cursor_postgres_gives_as_text_is_refused_and_its_cast_works(pg_server, pg_uri, tmp_path):
    """A numeric cursor arrived as text: the first run stored '9.99' as its cursor and every later
    run failed with PostgreSQL's raw 'operator does not exist: numeric >= text'; kept as text the
    cursor would also order '9.99' after '10.00'. create_sync refuses it with the cast to use."""
    import duckdb

    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE amts (id int PRIMARY KEY, amt numeric(10, 2), u uuid); "
                      "INSERT INTO amts VALUES (1, 9.99, gen_random_uuid()), (2, 5.00, gen_random_uuid())", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    for col, cast in [("amt", '"amt"::double precision AS amt_cursor'), ("u", '"u"::text AS u_cursor')]:
        with pytest.raises(dfsync.errors.ConfigError, match=f"cursor_field '{col}' is PostgreSQL .*{cast}"):
            ws.create_sync(col, source=dfsync.sources.database(pg_uri, "SELECT * FROM amts"),
                           destination=dfsync.destinations.duckdb(dest, col), primary_key="id",
                           sync_mode="incremental", cursor_field=col)
    assert ws.syncs().height == 0
    sync = ws.create_sync("amt", source=dfsync.sources.database(
        pg_uri, "SELECT *, amt::double precision AS amt_cursor FROM amts"),
        destination=dfsync.destinations.duckdb(dest, "t"), primary_key="id", sync_mode="incremental",
        cursor_field="amt_cursor")
    assert sync.run(progress=False).status == "success"
    pg_server.execute("INSERT INTO amts VALUES (3, 10.00, NULL), (4, 100.00, NULL)", dbname=db)
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["inserted"] == 2
    got = duckdb.connect(dest, read_only=True).sql("SELECT id, amt FROM t ORDER BY id").fetchall()
    assert [(i, str(a)) for i, a in got] == [(1, "9.99"), (2, "5.00"), (3, "10.00"), (4, "100.00")]


def test_a_relative_sqlite_path_is_the_same_database_from_any_working_directory(tmp_path, monkeypatch):
    """sources.database('sqlite:///app.db', ...) kept the path relative, so the stored definition run
    by the CLI (or a scheduler) from another directory read another app.db there, and said success.
    The path is made absolute when the source is made, as files() and duckdb_query() do."""
    import sqlite3

    import duckdb

    for sub, value in (("here", "right"), ("elsewhere", "wrong database")):
        (tmp_path / sub).mkdir()
        con = sqlite3.connect(tmp_path / sub / "app.db")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        con.execute("INSERT INTO t VALUES (1, ?)", (value,))
        con.commit()
        con.close()
    monkeypatch.chdir(tmp_path / "here")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("lite", source=dfsync.sources.database("sqlite:///app.db", "SELECT * FROM t"),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "out.duckdb"), table="t"),
                          primary_key="id")
    assert sync.source.config()["uri"] == f"sqlite:///{tmp_path / 'here' / 'app.db'}"
    ws.close()
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "dfsync", "run", "lite", "--workspace", str(tmp_path / "ws.duckdb")],
                          cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    con = duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True)
    assert con.execute("SELECT v FROM t").fetchall() == [("right",)]
    con.close()


def test_a_sqlite_text_time_cursor_with_a_lookback_names_the_way_that_works_in_sqlite(tmp_path):
    """SQLite keeps dates and times as text, so a lookback on them was refused with 'CAST it in a
    query source', which SQLite cannot do (it has no date type): the user was left with no way. The
    error names the epoch number SQLite can select, and that way reads the window it says."""
    import sqlite3

    path = str(tmp_path / "s.sqlite")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE ev (id INTEGER PRIMARY KEY, ts TEXT, v TEXT)")
    con.executemany("INSERT INTO ev VALUES (?, ?, ?)", [(i, f"2024-01-01 {i:02d}:00:00", "a") for i in range(10)])
    con.commit()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(str(tmp_path / "o.duckdb"), table="ev")
    with pytest.raises(dfsync.errors.ConfigError, match=r"unixepoch\(ts\) AS ts_epoch.*lookback=7200"):
        ws.create_sync("s", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT * FROM ev"), destination=dest,
                       primary_key="id", sync_mode="incremental", cursor_field="ts", lookback="2 hours")
    sync = ws.create_sync("s", source=dfsync.sources.database(f"sqlite:///{path}", "SELECT *, unixepoch(ts) AS "
                          "ts_epoch FROM ev"), destination=dest, primary_key="id", sync_mode="incremental",
                          cursor_field="ts_epoch", lookback=7200)
    assert sync.run(progress=False).counts["inserted"] == 10
    con.execute("UPDATE ev SET v = 'b' WHERE id IN (3, 8)")  # 8 is within two hours of the last (9), 3 is not
    con.commit()
    con.close()
    run = sync.run(progress=False)
    assert (run.counts["queried"], run.counts["updated"], run.counts["unchanged"]) == (3, 1, 2)
    ws.close()


def test_a_text_cursor_is_compared_in_byte_order_as_dfsync_keeps_it_not_in_the_column_collation(
        pg_server, pg_uri, tmp_path):
    """dfsync keeps the largest delivered text cursor in byte order, PostgreSQL compared it in the
    column's collation: under ICU 'Émile' sorts below 'zoe', '~1' below 'z' (an enum in its declared order), so the
    row added after the cursor 'zoe' was never read and the run said success."""
    import duckdb

    db = pg_uri.rsplit("/", 1)[1]
    if not pg_server.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'", dbname=db):
        from tests.plugins.postgres import _unavailable

        _unavailable("this PostgreSQL has no ICU collations (under CI=true that fails: Debian's is built with ICU)")
    pg_server.execute("CREATE TYPE lvl AS ENUM ('zeta', 'alpha'); CREATE TABLE people (id int PRIMARY KEY, "
                      "name text COLLATE \"und-x-icu\", code varchar(8) COLLATE \"und-x-icu\", l lvl, n int); "
                      "INSERT INTO people VALUES (1, 'Bob', 'B', 'alpha', 1), (2, 'zoe', 'z', 'alpha', 2)", dbname=db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = str(tmp_path / "d.duckdb")
    syncs = [ws.create_sync(c, source=dfsync.sources.database(pg_uri, "SELECT * FROM people"), primary_key="id",
                            destination=dfsync.destinations.duckdb(dest, c), sync_mode="incremental", cursor_field=c)
             for c in ("name", "code", "l", "n")]
    assert [s.run(progress=False).counts["inserted"] for s in syncs] == [2, 2, 2, 2]
    pg_server.execute("INSERT INTO people VALUES (3, 'Émile', '~1', 'zeta', 3)", dbname=db)
    runs = [s.run(progress=False) for s in syncs]
    assert [(r.status, r.counts["inserted"], r.counts["queried"]) for r in runs] == \
        [("success", 1, 2), ("success", 1, 2), ("success", 1, 3), ("success", 1, 2)]  # l: both rows 'alpha' 
    con = duckdb.connect(dest, read_only=True)
    for c in ("name", "code", "l", "n"):
        assert con.sql(f"SELECT id FROM {c} ORDER BY id").fetchall() == [(1,), (2,), (3,)], c
    con.close()
    ws.close()

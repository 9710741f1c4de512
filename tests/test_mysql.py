"""The MySQL/MariaDB destination against a real MariaDB 10.11 server (tests/plugins/mariadb.py).

Session-level tests drive the DestinationSession protocol the runner uses (prepare, write
batches, ledger, finish); end-to-end tests through a workspace follow.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import time

import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.destinations.base import ACTION_COLUMN, DestinationContext, WriteBatch
from dfsync.errors import (
    ConfigError,
    DestinationError,
    SchemaMismatchError,
    TransientDestinationError,
)
from dfsync.states import DestinationMode


def ctx(mode: str = "upsert", run_id: int = 1, pk: tuple[str, ...] = ("id",)) -> DestinationContext:
    return DestinationContext(sync_id=1, sync_name="s", run_id=run_id, mode=DestinationMode(mode), primary_key=pk)


def batch(no: int, actions: list[str] | str = "insert", **cols: list) -> WriteBatch:
    n = len(next(iter(cols.values())))
    acts = [actions] * n if isinstance(actions, str) else actions
    return WriteBatch(no, pa.table({**cols, ACTION_COLUMN: pa.array(acts, pa.string())}))


def write_all(dest, c: DestinationContext, *batches: WriteBatch):
    results = []
    with dest.open(c) as s:
        s.prepare(batches[0].data.schema)
        done = s.committed_batches()
        for b in batches:
            if b.batch_no not in done:
                results.append(s.write(b))
        s.finish()
    return results


def db_of(uri: str) -> str:
    return uri.rsplit("/", 1)[1]


def read(server, uri: str, table: str = "t", order: str = "id") -> pl.DataFrame:
    return server.read(db_of(uri), f"SELECT * FROM `{table}` ORDER BY {order}")


def test_create_insert_ledger_key_and_collation(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    write_all(dest, ctx(), batch(1, id=[1, 2], name=["a", "b"]), batch(2, id=[3], name=["c"]))
    assert read(mariadb_server, mysql_db).to_dict(as_series=False) == {"id": [1, 2, 3], "name": ["a", "b", "c"]}
    ledger = mariadb_server.read(db_of(mysql_db), "SELECT run_key, batch_no, `rows`, not_delivered "
                                                  "FROM _dfsync_batches ORDER BY batch_no")
    assert ledger["batch_no"].to_list() == [0, 1, 2] and ledger["rows"].to_list() == [0, 2, 1]
    info = mariadb_server.execute("SELECT column_name, column_key, collation_name FROM information_schema.columns "
                                  "WHERE table_schema = %s AND table_name = 't' ORDER BY ordinal_position",
                                  (db_of(mysql_db),))
    assert info == [("id", "PRI", None), ("name", "", "utf8mb4_nopad_bin")]
    # byte-for-byte text: case and trailing spaces make different keys
    write_all(dest, ctx("upsert", 2), batch(1, id=[4, 5], name=["a ", "A"]))
    assert read(mariadb_server, mysql_db)["name"].to_list() == ["a", "b", "c", "a ", "A"]


def test_resume_skips_committed_batches(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    b1, b2 = batch(1, id=[1, 2], name=["a", "b"]), batch(2, id=[3], name=["c"])
    with dest.open(ctx()) as s:
        s.prepare(b1.data.schema)
        s.write(b1)  # then the process "dies" before the workspace learns of it
    with dest.open(ctx()) as s:  # the same run resumes
        s.prepare(b1.data.schema)
        assert s.committed_batches() == {1: []}
        s.write(b2)
    assert read(mariadb_server, mysql_db)["id"].to_list() == [1, 2, 3]


def test_upsert_update_mirror_modes(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2, 3], v=[1.0, 2.0, 3.0]))
    write_all(dest, ctx("upsert", 2), batch(1, ["update", "insert"], id=[2, 4], v=[20.0, 4.0]))
    assert read(mariadb_server, mysql_db).to_dict(as_series=False) == {"id": [1, 2, 3, 4], "v": [1.0, 20.0, 3.0, 4.0]}
    res = write_all(dest, ctx("update", 3), batch(1, "update", id=[1, 9], v=[10.0, 9.0]))
    assert res[0].skipped == {1: "no row with this key in the destination (update mode only updates existing rows)"}
    write_all(dest, ctx("mirror", 4), batch(1, ["delete", "update"], id=[3, 4], v=[3.0, 40.0]))
    assert read(mariadb_server, mysql_db).to_dict(as_series=False) == {"id": [1, 2, 4], "v": [10.0, 20.0, 40.0]}
    nd = mariadb_server.execute("SELECT not_delivered FROM _dfsync_batches WHERE run_key = 's#1/3' AND batch_no = 1",
                                database=db_of(mysql_db))
    assert json.loads(nd[0][0]) == [[9]]


def test_update_mode_missing_table_is_terminal(mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="nope")
    with dest.open(ctx("update")) as s, pytest.raises(DestinationError, match="does not exist.*upsert"):
        s.prepare(batch(1, id=[1]).data.schema)


def test_existing_table_without_unique_key_upserts(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id bigint, v text, extra int DEFAULT 7)", database=db)
    mariadb_server.execute("INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)", database=db)
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    write_all(dest, ctx(), batch(1, ["update", "insert"], id=[2, 3], v=["B", "c"]))
    assert read(mariadb_server, mysql_db).to_dict(as_series=False) == {"id": [1, 2, 3], "v": ["a", "B", "c"],
                                                                      "extra": [1, 2, 7]}


def test_replace_is_one_atomic_rename(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2], v=["a", "b"]))
    with dest.open(ctx("replace", 2)) as s:
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[5, 6], v=["e", "f"]))
        assert read(mariadb_server, mysql_db)["id"].to_list() == [1, 2]  # readers see the old table
        s.finish()
    assert read(mariadb_server, mysql_db).to_dict(as_series=False) == {"id": [5, 6], "v": ["e", "f"]}
    left = mariadb_server.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  (db_of(mysql_db),))
    assert sorted(r[0] for r in left) == ["_dfsync_batches", "t"]
    with dest.open(ctx("replace", 3)) as s:  # an abandoned replace leaves the table alone
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[9], v=["z"]))
        s.abandon()
    assert read(mariadb_server, mysql_db)["id"].to_list() == [5, 6]


def test_hostile_names(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE victim (id int)", database=db)
    hostile = 'x"; DROP TABLE victim; --'
    col = "v`); DROP TABLE victim; -- 50%s"
    dest = dfsync.destinations.mysql(mysql_db, table='"' + hostile.replace('"', '""') + '"')
    write_all(dest, ctx(), batch(1, id=[1, 2], **{col: ["a", "b"]}))
    write_all(dest, ctx("mirror", 2), batch(1, ["update", "delete"], id=[1, 2], **{col: ["A", "b"]}))
    assert mariadb_server.execute("SELECT count(*) FROM victim", database=db) == [(0,)]
    got = mariadb_server.read(db, "SELECT * FROM `" + hostile + "`")
    assert got.columns == ["id", col] and got.rows() == [(1, "A")]


TYPES = {
    "id": pa.array([1, 2, 3], pa.int64()),
    "b": pa.array([True, False, None]),
    "i8": pa.array([-128, 127, None], pa.int8()), "i16": pa.array([-32768, 32767, 0], pa.int16()),
    "i32": pa.array([-2**31, 2**31 - 1, 0], pa.int32()), "i64": pa.array([-2**63, 2**63 - 1, 0], pa.int64()),
    "u8": pa.array([0, 255, None], pa.uint8()), "u16": pa.array([0, 65535, 1], pa.uint16()),
    "u32": pa.array([0, 2**32 - 1, 1], pa.uint32()), "u64": pa.array([0, 2**64 - 1, 1], pa.uint64()),
    "f32": pa.array([1.5, -3.4028234663852886e38, None], pa.float32()),
    "f64": pa.array([0.1, 1e-300, 2.2250738585072014e-308], pa.float64()),
    "dec": pa.array([decimal.Decimal("12345678.90"), decimal.Decimal("-0.01"), None], pa.decimal128(10, 2)),
    "s": pa.array(['a",b\n\\N', "NULL", "🚀 é"], pa.large_string()),
    "empty": pa.array(["", None, " "], pa.string()),
    "bin": pa.array([b"\x00\xff\n,\"", b"", None], pa.binary()),
    "d": pa.array([dt.date(1000, 1, 1), dt.date(9999, 12, 31), dt.date(2020, 2, 29)]),
    "t": pa.array([dt.time(0, 0), dt.time(23, 59, 59, 999999), None], pa.time64("us")),
    "ts": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5, 6), dt.datetime(1000, 1, 1), None], pa.timestamp("us")),
    "tz": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5, 123000, tzinfo=dt.timezone.utc), None, None],
                   pa.timestamp("ms", tz="Europe/Paris")),
}
MYSQL_TYPES = {"id": "bigint", "b": "tinyint(1)", "i8": "tinyint", "i16": "smallint", "i32": "int", "i64": "bigint",
               "u8": "tinyint unsigned", "u16": "smallint unsigned", "u32": "int unsigned", "u64": "bigint unsigned",
               "f32": "float", "f64": "double", "dec": "decimal(10,2)", "s": "longtext", "empty": "longtext",
               "bin": "longblob", "d": "date", "t": "time(6)", "ts": "datetime(6)", "tz": "datetime(6)"}


@pytest.mark.parametrize("mode", ["upsert", "insert"])
def test_every_type_round_trips(mariadb_server, mysql_db, mode):
    dest = dfsync.destinations.mysql(mysql_db, table="types")
    # upsert into an existing non-empty table goes through the staging table; insert into a
    # new table is loaded straight in
    if mode == "upsert":
        write_all(dest, ctx("upsert", 1), WriteBatch(1, pa.table({**{k: v.slice(0, 1) for k, v in TYPES.items()},
                                                                  ACTION_COLUMN: ["insert"]})))
    write_all(dest, ctx(mode, 2), WriteBatch(1, pa.table({**TYPES, ACTION_COLUMN: ["insert"] * 3})))
    info = dict(mariadb_server.execute("SELECT column_name, column_type FROM information_schema.columns WHERE "
                                       "table_schema = %s AND table_name = 'types'", (db_of(mysql_db),)))
    from dfsync.destinations._mysql_data import normal_type

    assert {k: normal_type(v) for k, v in info.items()} == MYSQL_TYPES
    con = mariadb_server.connect(db_of(mysql_db))
    with con.cursor() as cur:
        # FLOAT travels as text with 6 digits: read its exact value as a double
        cur.execute("SELECT " + ", ".join("CAST(f32 AS DOUBLE)" if c == "f32" else f"`{c}`" for c in TYPES)
                    + " FROM types ORDER BY id")
        rows = cur.fetchall()
    con.close()
    for i, row in enumerate(rows):
        for (name, arr), got in zip(TYPES.items(), row, strict=True):
            want = arr[i].as_py()
            if name == "b" and want is not None:
                want = int(want)
            if name == "tz" and want is not None:
                want = want.astimezone(dt.timezone.utc).replace(tzinfo=None)  # UTC wall clock
            if name == "t" and want is not None:
                got = (dt.datetime.min + got).time()  # PyMySQL reads TIME as a timedelta
            assert got == want, (name, i, got, want)


def invalid_utf8(values: list[str], marker: str) -> pa.Array:
    """A string array whose ``marker`` values hold bytes that are not UTF-8."""
    arr = pa.array(values, pa.string())
    offsets, data = arr.buffers()[1], bytes(arr.buffers()[2].to_pybytes())
    data = data.replace(marker.encode(), b"\xff\xfe\xfd")
    return pa.Array.from_buffers(pa.string(), len(values), [None, offsets, pa.py_buffer(data)])


def test_row_rejections_named_and_the_rest_delivered(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE parent (id int PRIMARY KEY) ENGINE=InnoDB", database=db)
    mariadb_server.execute("INSERT INTO parent VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)", database=db)
    mariadb_server.execute(
        "CREATE TABLE t (id bigint PRIMARY KEY, name varchar(3) NOT NULL, qty bigint CHECK (qty >= 0), "
        "price decimal(5,2), parent int, legacy varchar(20) CHARACTER SET utf8mb3, raw text, f double, "
        "FOREIGN KEY (parent) REFERENCES parent(id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", database=db)
    n = 1000
    names, qty, price = ["n"] * n, [1] * n, [decimal.Decimal(1)] * n
    parent, legacy, raw, f = [i % 10 for i in range(n)], ["ok"] * n, ["fine"] * n, [1.0] * n
    names[17] = None  # NOT NULL
    qty[400] = -5  # CHECK
    price[401] = decimal.Decimal(123456)  # decimal(5,2) overflow
    names[500] = "too long"  # varchar(3): strict mode refuses to cut it
    parent[777] = 99  # foreign key
    legacy[800] = "rocket 🚀"  # utf8mb3 cannot hold a 4-byte character
    raw[850] = "BAD"  # made invalid UTF-8 below (Arrow only checks when asked)
    f[900] = float("nan")  # MySQL has no NaN
    b = WriteBatch(1, pa.table({"id": list(range(n)), "name": pa.array(names, pa.string()), "qty": qty,
                                "price": pa.array(price, pa.decimal128(10, 2)), "parent": parent,
                                "legacy": legacy, "raw": invalid_utf8(raw, "BAD"), "f": f,
                                ACTION_COLUMN: ["insert"] * n}))
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    (res,) = write_all(dest, ctx(), b)
    assert sorted(res.failed) == [17, 400, 401, 500, 777, 800, 850, 900]
    assert "name" in res.failed[17] and "null" in res.failed[17].lower()
    assert "CONSTRAINT" in res.failed[400] or "constraint" in res.failed[400]
    assert "price" in res.failed[401] and "range" in res.failed[401]
    assert "name" in res.failed[500] and ("too long" in res.failed[500] or "truncated" in res.failed[500])
    assert "foreign key" in res.failed[777]
    assert "legacy" in res.failed[800] and "Incorrect string value" in res.failed[800]
    assert "raw" in res.failed[850] and "UTF-8" in res.failed[850]
    assert "NaN" in res.failed[900]
    assert mariadb_server.execute("SELECT count(*) FROM t", database=db) == [(n - 8,)]
    assert mariadb_server.execute("SELECT name, legacy FROM t WHERE id = 1", database=db) == [("n", "ok")]
    nd = mariadb_server.execute("SELECT not_delivered FROM _dfsync_batches WHERE batch_no = 1", database=db)
    assert json.loads(nd[0][0]) == [[17], [400], [401], [500], [777], [800], [850], [900]]


def test_without_local_infile_rows_go_as_prepared_inserts(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name varchar(3)) ENGINE=InnoDB", database=db)
    mariadb_server.execute("SET GLOBAL local_infile = 0")
    try:
        dest = dfsync.destinations.mysql(mysql_db, table="t")
        (res,) = write_all(dest, ctx(), batch(1, id=[1, 2, 3], name=["a", "toolong", "ü'\\"]))
    finally:
        mariadb_server.execute("SET GLOBAL local_infile = 1")
    assert list(res.failed) == [1] and "too long" in res.failed[1]
    assert read(mariadb_server, mysql_db).rows() == [(1, "a"), (3, "ü'\\")]


def test_schema_mismatch_reported_before_sending(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id int PRIMARY KEY, name date)", database=db)
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    with dest.open(ctx()) as s, pytest.raises(SchemaMismatchError) as info:
        s.prepare(batch(1, id=[1], name=["a"], age=[3]).data.schema)
    msg = str(info.value)
    assert "'name' is string in the source but date" in msg and "'id'" not in msg
    import dataclasses

    with dest.open(dataclasses.replace(ctx(), schema="freeze")) as s, pytest.raises(SchemaMismatchError) as info:
        s.prepare(batch(1, id=[1], name=[dt.date(2020, 1, 1)], age=[3]).data.schema)
    assert "'age' (int64) is missing" in str(info.value)  # freeze does not add columns
    assert mariadb_server.execute("SELECT count(*) FROM t", database=db) == [(0,)]
    with dest.open(ctx()) as s, pytest.raises(SchemaMismatchError, match="but date in table"):
        s.prepare(pa.schema([("id", pa.int64()), ("name", pa.timestamp("us"))]))  # would lose its time of day
    mariadb_server.execute("ALTER TABLE t MODIFY name datetime", database=db)
    with dest.open(ctx()) as s, pytest.raises(SchemaMismatchError, match="'name'"):
        s.prepare(pa.schema([("id", pa.int64()), ("name", pa.timestamp("us"))]))  # datetime(0): whole seconds
    with dest.open(ctx()) as s, pytest.raises(SchemaMismatchError, match="no MySQL column type"):
        s.prepare(pa.schema([("id", pa.int64()), ("l", pa.duration("s"))]))


def test_password_from_env_never_stored(mariadb_server, monkeypatch):
    db = mariadb_server.new_database()
    mariadb_server.execute("ALTER USER 'app'@'%' IDENTIFIED BY 's3cr3t-Pw'")
    base = f"mysql://app@127.0.0.1:{mariadb_server.port}/{db}"
    monkeypatch.setenv("DFSYNC_TEST_MYSQL", "s3cr3t-Pw")
    for dest in (dfsync.destinations.mysql(base, table="t", password="env:DFSYNC_TEST_MYSQL"),
                 dfsync.destinations.mysql(base.replace("app@", "app:env:DFSYNC_TEST_MYSQL@"), table="t"),
                 dfsync.destinations.mysql(base.replace("app@", "app:s3cr3t-Pw@"), table="t")):
        write_all(dest, ctx(), batch(1, id=[1], v=["a"]))
        assert "s3cr3t" not in json.dumps(dest.config()) + repr(dest) + dest.identity()
    bad = dfsync.destinations.mysql(base.replace("app@", "app:wrong-Secret-123@"), table="t")
    with pytest.raises(DestinationError) as info:
        bad.open(ctx())
    assert not isinstance(info.value, TransientDestinationError)
    assert "Access denied" in str(info.value) and "wrong-Secret-123" not in str(info.value)
    monkeypatch.delenv("DFSYNC_TEST_MYSQL")
    with pytest.raises(ConfigError, match="DFSYNC_TEST_MYSQL"):
        dfsync.destinations.mysql(base, table="t", password="env:DFSYNC_TEST_MYSQL").open(ctx())


def test_unreachable_server_is_transient():
    dest = dfsync.destinations.mysql("mysql://u@127.0.0.1:1/db", table="t", retry_timeout=0.5)
    with pytest.raises(TransientDestinationError, match="paused"):
        dest.open(ctx())


def test_server_restart_between_batches_reconnects(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t", retry_timeout=60)
    with dest.open(ctx()) as s:
        s.prepare(batch(1, id=[1], v=["a"]).data.schema)
        s.write(batch(1, id=[1], v=["a"]))
        mariadb_server.restart()
        s.write(batch(2, id=[2], v=["b"]))
    assert read(mariadb_server, mysql_db)["id"].to_list() == [1, 2]


def test_lock_wait_timeout_is_retried(mariadb_server, mysql_db):
    db = db_of(mysql_db)
    dest = dfsync.destinations.mysql(mysql_db, table="t", retry_timeout=30)
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2], v=["a", "b"]))
    mariadb_server.execute("SET GLOBAL innodb_lock_wait_timeout = 1")
    holder = mariadb_server.connect(db)
    try:
        with holder.cursor() as cur:  # another transaction holds row 1 for ~2.5 s
            cur.execute("BEGIN")
            cur.execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        threading.Timer(2.5, holder.rollback).start()
        write_all(dest, ctx("upsert", 2), batch(1, "update", id=[1], v=["A"]))
    finally:
        mariadb_server.execute("SET GLOBAL innodb_lock_wait_timeout = 50")
        time.sleep(0.1)
        holder.close()
    assert read(mariadb_server, mysql_db)["v"].to_list() == ["A", "b"]


def test_server_down_outlasting_retries_raises_transient(mariadb_server, mysql_db):
    dest = dfsync.destinations.mysql(mysql_db, table="t", retry_timeout=1)
    try:
        with dest.open(ctx()) as s:
            s.prepare(batch(1, id=[1], v=["a"]).data.schema)
            mariadb_server.stop()
            with pytest.raises(TransientDestinationError):
                s.write(batch(1, id=[1], v=["a"]))
    finally:
        mariadb_server.start()
    write_all(dest, ctx(), batch(1, id=[1], v=["a"]))
    assert read(mariadb_server, mysql_db)["id"].to_list() == [1]


def test_bad_config():
    with pytest.raises(ConfigError, match="mysql://"):
        dfsync.destinations.mysql("postgresql://x/db", table="t")
    with pytest.raises(ConfigError, match="database"):
        dfsync.destinations.mysql("mysql://x@h:3306", table="t")
    with pytest.raises(ConfigError):
        dfsync.destinations.mysql("mysql://x@h/db", table="")


@pytest.mark.parametrize("name", ["price ", "price\t", "temp \N{THERMOMETER}\ufe0f \N{GRINNING FACE}"])
def test_a_column_name_the_server_refuses_is_refused_at_create_sync(mariadb_server, mysql_db, tmp_path, name):
    """A field whose name ends with a space, or holds a character outside the BMP (an emoji), failed
    the run with the server's raw 'Incorrect column name' / 'Invalid utf8mb4 character string'. Refused
    at create_sync (and a run given such a source fails before sending), naming the column and the
    mapping that renames it; renamed, it goes in."""
    df = pl.DataFrame({"id": [1], name: [2.5]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.mysql(mysql_db, table="t")
    with pytest.raises(SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest, primary_key="id")
    assert repr(name) in str(exc.value) and "mapping" in str(exc.value)
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})), destination=dest,
                          primary_key="id")
    run = sync.run(source=dfsync.sources.frame(df), progress=False)
    assert run.status == "failed" and repr(name) in run.error and run.counts["sent"] == 0
    assert not mariadb_server.execute("SHOW TABLES LIKE 't'", database=db_of(mysql_db))
    sync = ws.create_sync("s2", source=dfsync.sources.frame(df), destination=dest, primary_key="id",
                          mapping={"id": "id", "price": name})
    assert sync.run(progress=False).status == "success"
    assert read(mariadb_server, mysql_db).to_dicts() == [{"id": 1, "price": 2.5}]
    with pytest.raises(ConfigError, match="ends with a space"):
        dfsync.destinations.mysql(mysql_db, table="prices ")


# ---------------------------------------------------------------------- through a workspace
def frame(n: int, version: int = 1) -> pl.DataFrame:
    ids = list(range(n))
    return pl.DataFrame({
        "id": ids,
        "name": [f"n{i}" + ("-v2" if version > 1 and i % 10 == 0 else "") for i in ids],
        "ts": [dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i + (10_000 if version > 1 and i % 10 == 0 else 0))
               for i in ids],
    })


@pytest.mark.parametrize("sync_mode", ["full_refresh", "incremental"])
@pytest.mark.parametrize("mode", ["insert", "upsert", "update", "mirror", "replace"])
def test_every_mode_and_sync_mode(mariadb_server, mysql_db, tmp_path, mode, sync_mode):
    db = db_of(mysql_db)
    if mode == "update":  # update mode changes rows that exist
        mariadb_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, ts datetime(6))", database=db)
        mariadb_server.execute("INSERT INTO t (id) SELECT seq FROM seq_0_to_299", database=db)
    kw = {"cursor_field": "ts"} if sync_mode == "incremental" else {}
    if mode in ("mirror", "replace") and sync_mode == "incremental":
        with pytest.raises(ConfigError):
            dfsync.Workspace(str(tmp_path / "ws.duckdb")).create_sync(
                "s", source=dfsync.sources.frame(frame(1)), primary_key="id", destination_mode=mode,
                sync_mode=sync_mode, destination=dfsync.destinations.mysql(mysql_db, table="t"), **kw)
        return
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    v1, v2 = frame(300), frame(400, version=2)
    if mode == "mirror":
        v2 = v2.filter(pl.col("id") % 7 != 3)
    for v in (v1, v2):
        sync = ws.create_sync("s", source=dfsync.sources.frame(v), primary_key="id", destination_mode=mode,
                              sync_mode=sync_mode, batch_size=128,
                              destination=dfsync.destinations.mysql(mysql_db, table="t"), **kw)
        run = sync.run(progress=False)
        assert run.status == "success", run.error
        again = sync.run(progress=False)
        assert again.status == "success" and again.counts["failed"] == 0
        if mode == "replace":  # a replace rewrites the whole table each run
            assert again.counts["sent"] == again.counts["unchanged"] == v.height
        else:  # what insert/update mode cannot apply is offered again and skipped again
            assert again.counts["sent"] == (again.counts["skipped"] if mode in ("insert", "update") else 0)
    got = read(mariadb_server, mysql_db)
    if mode == "insert":  # new rows only: changed rows keep their first version
        want = pl.concat([v1, v2.filter(pl.col("id") >= 300)])
    elif mode == "update":
        want = v2.filter(pl.col("id") < 300)
    elif mode == "upsert" or mode == "mirror" or mode == "replace":
        want = v2
    assert got.sort("id").to_dicts() == want.sort("id").to_dicts()
    ws.close()


def test_restart_mid_run_pauses_then_resumes_exactly_once(mariadb_server, mysql_db, tmp_path):
    df = frame(60_000)
    db = db_of(mysql_db)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("outage", source=dfsync.sources.frame(df), primary_key="id", batch_size=1000,
                          destination=dfsync.destinations.mysql(mysql_db, table="t", retry_timeout=1))
    stopped = threading.Event()

    def take_server_away() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until some batches are in, then stop the server
            try:
                if mariadb_server.execute("SELECT count(*) FROM _dfsync_batches", database=db)[0][0] >= 3:
                    break
            except Exception:
                pass
            time.sleep(0.01)
        mariadb_server.stop("immediate")
        stopped.set()

    killer = threading.Thread(target=take_server_away)
    killer.start()
    run = sync.run(progress=False)
    killer.join()
    assert stopped.is_set()
    assert run.status == "paused", (run.status, run.error)
    mariadb_server.start()
    run2 = sync.run(progress=False)
    assert run2.status == "success", run2.error
    got = read(mariadb_server, mysql_db)
    assert got.height == 60_000 and got.to_dicts() == df.sort("id").to_dicts()
    ws.close()


def test_a_batch_whose_every_row_is_rejected_records_them_as_failed(mariadb_server, mysql_db, tmp_path):
    """A key longer than its varchar(255) column is a row the server rejects. When every row of
    a batch was rejected (batch_size=1, or a batch of only such rows), the search for the bad
    rows was handed an empty rest and failed the run with the bare 'refused: index out of
    bounds.', sending nothing else. The rows are failed records with the server's message and
    the other batches are delivered."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"id": ["x" * 300, "short", "y" * 256], "s": ["a", "b", "c"]})
    run = ws.create_sync("s", source=df, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                         primary_key="id", batch_size=1, max_failed_rows=2).run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["sent"] == 3 and run.counts["succeeded"] == 1 and run.counts["failed"] == 2, run.counts
    failed = run.records(status="failed")
    assert failed.height == 2 and all("index out of bounds" not in e for e in failed["_error"].to_list())
    assert all("id" in e for e in failed["_error"].to_list()), failed["_error"].to_list()
    assert mariadb_server.execute("SELECT id, s FROM t", database=db_of(mysql_db)) == [("short", "b")]


@pytest.mark.parametrize("mode", ["insert", "upsert"])
def test_a_table_column_not_null_without_default_fails_its_rows_not_the_run(mariadb_server, mysql_db, tmp_path, mode):
    """A table made by hand with a NOT NULL column the records do not have (and no default): each
    row is rejected, but once every row of a batch was, the statement applying the rest (none)
    still raised MariaDB's 1364 and the run failed with the raw 'OperationalError: (1364, "Field
    'extra' doesn't have a default value")', no row recorded. The rows are failed records with the
    server's message; batches with rows that fit are delivered (PostgreSQL and DuckDB did so)."""
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, extra text NOT NULL) "
                           "DEFAULT CHARSET=utf8mb4", database=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"id": [1, 2], "name": ["a", "b"]})
    run = ws.create_sync("s", source=df, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                         primary_key="id", destination_mode=mode).run(progress=False)
    assert run.status == "failed" and "every row sent was rejected" in run.error, run.error
    assert run.counts["sent"] == 2 and run.counts["failed"] == 2, run.counts
    assert all("extra" in e for e in run.records(status="failed")["_error"].to_list())
    assert mariadb_server.execute("SELECT count(*) FROM t", database=db) == [(0,)]


@pytest.mark.parametrize("mode", ["upsert", "update"])
def test_keys_the_tables_collation_takes_as_one_are_failed_not_merged(mariadb_server, mysql_db, tmp_path, mode):
    """An existing table whose text key has a case-insensitive collation (utf8mb4_general_ci, MySQL's
    usual) takes 'A' as the key 'a': a re-sync bringing 'A' beside the delivered 'a' overwrote row 'a'
    with A's values (ON DUPLICATE KEY UPDATE; UPDATE ... JOIN in update mode), and the run said success
    with every row succeeded. Such rows fail, named, and the table's rows stay as they were."""
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id varchar(20) COLLATE utf8mb4_general_ci PRIMARY KEY, s int) "
                           "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", database=db)
    mariadb_server.execute("INSERT INTO t VALUES ('a', 1), ('b', 2)", database=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    v1 = pl.DataFrame({"id": ["a", "b"], "s": [1, 2]})
    sync = ws.create_sync("s", source=v1, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                          primary_key="id", destination_mode=mode)
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": ["a", "A", "b"], "s": [1, 9, 3]}), progress=False)
    assert run.status == "failed" and run.counts["failed"] >= 1, (run.counts, run.error)
    failed = run.records(status="failed")
    assert "A" in failed["id"].to_list() and "collation" in failed["_error"][0], failed.to_dicts()
    assert sorted(mariadb_server.execute("SELECT id, s FROM t", database=db)) == [("a", 1), ("b", 3)]
    # two rows of one batch that the collation takes as one key: both fail, the others go in
    run = sync.run(source=pl.DataFrame({"id": ["a", "b", "c", "C"], "s": [1, 4, 5, 6]}), progress=False)
    assert sorted(run.records(status="failed")["id"].to_list()) == ["C", "c"], run.records(status="failed")
    assert sorted(mariadb_server.execute("SELECT id, s FROM t", database=db)) == [("a", 1), ("b", 4)]


def test_datetime_with_one_or_two_fractional_digits_refuses_milliseconds(mariadb_server, mysql_db, tmp_path):
    """A table made by hand with DATETIME(1) (or TIME(2)) took milliseconds as if it kept them:
    00:00:00.123 was stored as 00:00:00.1 and the run said success. A column with 1 or 2
    fractional digits takes whole seconds only; the run fails before anything is sent, naming the
    column and both types. DATETIME(3) still takes milliseconds exactly.

    The way out it named for such a column (and for DATETIME, MySQL's usual column) was a cast to
    pl.Datetime('ms'), which polars' coarsest unit is and which was refused again; and for a YEAR column
    (a type dfsync cannot check) a cast to the type the source had already. It names the ways that work."""
    db = mysql_db.rsplit("/", 1)[1]
    mariadb_server.execute("CREATE TABLE t (id int PRIMARY KEY, d1 datetime(1), d3 datetime(3), y year)", database=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    ms = dt.datetime(2024, 1, 1, 0, 0, 0, 123000)
    src = pl.DataFrame({"id": [1], "d1": [ms], "d3": [ms], "y": [2024]},
                       schema={"id": pl.Int64, "d1": pl.Datetime("ms"), "d3": pl.Datetime("ms"), "y": pl.Int16})
    sync = ws.create_sync("s", source=src, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, run.counts
    assert "column 'd1'" in run.error and "datetime(1)" in run.error and "'d3'" not in run.error, run.error
    assert "DATETIME(6)" in run.error and "column 'y'" in run.error and ".cast(" not in run.error, run.error
    assert mariadb_server.execute("SELECT count(*) FROM t", database=db) == [(0,)]
    run = sync.run(source=src.drop("d1", "y"), progress=False)
    assert run.status == "success", run.error
    assert mariadb_server.execute("SELECT d3 FROM t", database=db) == [(ms,)]


def test_a_new_key_clashing_with_another_unique_index_is_refused_not_merged_into_that_row(
        mariadb_server, mysql_db, tmp_path):
    """A table made by hand with a UNIQUE index besides its key (email): ON DUPLICATE KEY UPDATE fires on
    any unique index, so a new row (id 3) whose email row 1 holds overwrote row 1's values, was never
    inserted, and the run said success with every row succeeded. It is refused with the server's
    duplicate-entry error (as on PostgreSQL), the other rows go in and row 1 keeps its values."""
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, email varchar(50) UNIQUE, v bigint) "
                           "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", database=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2], "email": ["a@x", "b@x"], "v": [1, 2]}),
                          destination=dfsync.destinations.mysql(mysql_db, table="t"), primary_key="id",
                          destination_mode="upsert", max_failed_rows=1)
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": [1, 2, 3], "email": ["a@x", "c@x", "a@x"], "v": [1, 20, 30]}),
                   progress=False)
    assert run.status == "success", run.error
    assert (run.counts["succeeded"], run.counts["failed"]) == (1, 1), run.counts
    failed = run.records(status="failed")
    assert failed["id"].to_list() == [3] and "Duplicate entry" in failed["_error"][0], failed.to_dicts()
    assert sorted(mariadb_server.execute("SELECT id, email, v FROM t", database=db)) == [(1, "a@x", 1), (2, "c@x", 20)]


def test_a_key_of_four_text_columns_fits_innodbs_index(mariadb_server, mysql_db, tmp_path):
    """Each text key column was created varchar(255) (1020 bytes in utf8mb4): a key of four of them
    (country, state, city, street) failed every run at CREATE TABLE with the server's 'Specified key
    was too long; max key length is 3072 bytes'. The text key columns share InnoDB's 3072 bytes
    (varchar(192) each here); a longer value is refused per row, as one over 255 characters is."""
    db = db_of(mysql_db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"a": ["x", "y", "z" * 193], "b": ["é", "😀", "b"], "c": ["c", "c", "c"], "d": ["d", "d", "d"],
                       "v": [1, 2, 3]})
    run = ws.create_sync("s", source=df, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                         primary_key=["a", "b", "c", "d"], max_failed_rows=1).run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["succeeded"], run.counts["failed"]) == (2, 1), run.counts
    assert "column 'a'" in run.records(status="failed")["_error"][0]
    assert sorted(mariadb_server.execute("SELECT a, b, v FROM t", database=db)) == [("x", "é", 1), ("y", "😀", 2)]


def test_values_a_char_or_binary_column_would_alter_are_rejected_per_row(mariadb_server, mysql_db, tmp_path):
    """A table made by hand with CHAR(n) and BINARY(n) columns: CHAR drops a value's trailing spaces
    when read ('a  ' came back 'a') and BINARY pads a shorter value with zero bytes (b'a' came back
    b'a\\x00\\x00'); the run said success. Such rows are rejected, naming the column and the type to
    use; values that fit (no trailing space, exactly n bytes) go in."""
    db = db_of(mysql_db)
    mariadb_server.execute("CREATE TABLE t (id int PRIMARY KEY, c CHAR(3), b BINARY(3)) DEFAULT CHARSET=utf8mb4",
                           database=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"id": [1, 2, 3, 4], "c": ["a  ", "ab", "é😀x", None], "b": [b"abc", b"a", b"\x00bc", None]})
    run = ws.create_sync("s", source=df, destination=dfsync.destinations.mysql(mysql_db, table="t"),
                         primary_key="id", max_failed_rows=2).run(progress=False)
    assert run.status == "success", run.error
    failed = {r["id"]: r["_error"] for r in run.records(status="failed").to_dicts()}
    assert sorted(failed) == [1, 2] and "CHAR(3)" in failed[1] and "BINARY(3)" in failed[2], failed
    assert sorted(mariadb_server.execute("SELECT id, c, b FROM t", database=db)) == [
        (3, "é😀x", b"\x00bc"), (4, None, None)]

"""The PostgreSQL destination and source against a real PostgreSQL server (tests/plugins/postgres.py).

Session-level tests drive the DestinationSession protocol the runner uses: prepare, write
batches, ledger, finish. End-to-end tests through a workspace live further down.
"""

from __future__ import annotations

import datetime as dt
import json

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

pytestmark = pytest.mark.postgres


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


def read(pg_server, uri: str, table: str = "t", order: str = "id") -> pl.DataFrame:
    return pg_server.read(uri, f"SELECT * FROM {table} ORDER BY {order}")


def test_create_insert_and_ledger(pg_server, pg_uri, caplog):
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    with caplog.at_level("INFO", logger="dfsync"):
        write_all(dest, ctx(), batch(1, id=[1, 2], name=["a", "b"]), batch(2, id=[3], name=["c"]))
    # a table the run creates gets its key at the end: the log (a scheduler's) never says it has none
    assert "no unique constraint" not in caplog.text, caplog.text
    assert read(pg_server, pg_uri).to_dict(as_series=False) == {"id": [1, 2, 3], "name": ["a", "b", "c"]}
    ledger = pg_server.read(pg_uri, "SELECT run_key, batch_no, rows, not_delivered::text AS nd "
                                    "FROM _dfsync_batches ORDER BY batch_no")
    # -1: "this run owes the new table its primary key"; 0: the table was fresh at the start
    assert ledger["batch_no"].to_list() == [-1, 0, 1, 2]
    assert ledger["rows"].to_list() == [0, 0, 2, 1]
    # a primary key was created on the sync's key (built once at the end of the run)
    pk = pg_server.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                           "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 't'::regclass AND i.indisprimary",
                           dbname=pg_uri.rsplit("/", 1)[1])
    assert pk == [("id",)]


def test_resume_skips_committed_batches(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    b1, b2 = batch(1, id=[1, 2], name=["a", "b"]), batch(2, id=[3], name=["c"])
    with dest.open(ctx()) as s:
        s.prepare(b1.data.schema)
        s.write(b1)  # then the process "dies" before the workspace learns of it
    with dest.open(ctx()) as s:  # the same run resumes
        s.prepare(b1.data.schema)
        assert s.committed_batches() == {1: []}
        s.write(b2)
    assert read(pg_server, pg_uri)["id"].to_list() == [1, 2, 3]


def test_upsert_update_mirror_modes(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2, 3], v=[1.0, 2.0, 3.0]))
    write_all(dest, ctx("upsert", 2), batch(1, ["update", "insert"], id=[2, 4], v=[20.0, 4.0]))
    assert read(pg_server, pg_uri).to_dict(as_series=False) == {"id": [1, 2, 3, 4], "v": [1.0, 20.0, 3.0, 4.0]}
    res = write_all(dest, ctx("update", 3), batch(1, "update", id=[1, 9], v=[10.0, 9.0]))
    assert res[0].skipped == {1: "no row with this key in the destination (update mode only updates existing rows)"}
    write_all(dest, ctx("mirror", 4), batch(1, ["delete", "update"], id=[3, 4], v=[3.0, 40.0]))
    assert read(pg_server, pg_uri).to_dict(as_series=False) == {"id": [1, 2, 4], "v": [10.0, 20.0, 40.0]}
    nd = pg_server.execute("SELECT not_delivered::text FROM _dfsync_batches WHERE run_key = 's#1/3' AND batch_no = 1",
                           dbname=pg_uri.rsplit("/", 1)[1])
    assert json.loads(nd[0][0]) == [[9]]


def test_update_mode_missing_table_is_terminal(pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="nope")
    with dest.open(ctx("update")) as s, pytest.raises(DestinationError, match="does not exist.*upsert"):
        s.prepare(batch(1, id=[1]).data.schema)


def test_existing_table_without_unique_key_upserts(pg_server, pg_uri, caplog):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id bigint, v text, extra int DEFAULT 7)", dbname=db)
    pg_server.execute("INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)", dbname=db)
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    with caplog.at_level("INFO", logger="dfsync"):
        write_all(dest, ctx(), batch(1, ["update", "insert"], id=[2, 3], v=["B", "c"]))
    assert "t has no unique constraint on ('id',)" in caplog.text
    assert read(pg_server, pg_uri).to_dict(as_series=False) == {"id": [1, 2, 3], "v": ["a", "B", "c"],
                                                              "extra": [1, 2, 7]}


def test_replace_is_atomic_swap(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1, 2], v=["a", "b"]))
    c = ctx("replace", 2)
    with dest.open(c) as s:
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[5, 6], v=["e", "f"]))
        # mid-run, readers still see the old table, complete
        assert read(pg_server, pg_uri)["id"].to_list() == [1, 2]
        s.finish()
    assert read(pg_server, pg_uri).to_dict(as_series=False) == {"id": [5, 6], "v": ["e", "f"]}
    left = pg_server.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%dfsync_replace%'",
                             dbname=pg_uri.rsplit("/", 1)[1])
    assert left == [(0,)]


def test_abandoned_replace_leaves_table_alone(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    write_all(dest, ctx("upsert", 1), batch(1, id=[1], v=["a"]))
    with dest.open(ctx("replace", 2)) as s:
        s.prepare(batch(1, id=[1], v=["x"]).data.schema)
        s.write(batch(1, id=[5], v=["e"]))
        s.abandon()
    assert read(pg_server, pg_uri)["id"].to_list() == [1]


def test_schema_qualified_and_hostile_names(pg_server, pg_uri):
    hostile = 'x"; DROP TABLE victim; --'
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE victim (id int)", dbname=db)
    table = '"crm; DROP TABLE victim"."' + hostile.replace('"', '""') + '"'
    dest = dfsync.destinations.postgres(pg_uri, table=table)
    col = 'v"); DROP TABLE victim; --'
    write_all(dest, ctx(), batch(1, id=[1, 2], **{col: ["a", "b"]}))
    write_all(dest, ctx("mirror", 2), batch(1, ["update", "delete"], id=[1, 2], **{col: ["A", "b"]}))
    assert pg_server.execute("SELECT to_regclass('victim') IS NOT NULL", dbname=db) == [(True,)]
    quoted = '"crm; DROP TABLE victim"."' + hostile.replace('"', '""') + '"'
    got = pg_server.read(pg_uri, f"SELECT * FROM {quoted} ORDER BY id")
    assert got.columns == ["id", col]
    assert got.rows() == [(1, "A")]
    ledger = pg_server.execute('SELECT count(*) FROM "crm; DROP TABLE victim"._dfsync_batches', dbname=db)
    assert ledger[0][0] >= 2


def test_type_mapping_roundtrip(pg_server, pg_uri):
    data = {
        "id": pa.array([1, 2], pa.int64()),
        "i8": pa.array([1, -1], pa.int8()), "i32": pa.array([1, 2], pa.int32()), "u32": pa.array([1, 4_000_000_000], pa.uint32()),
        "u64": pa.array([1, 2**64 - 1], pa.uint64()),
        "f32": pa.array([1.5, 2.5], pa.float32()), "f64": pa.array([0.1, None], pa.float64()),
        "dec": pa.array([1, 2], pa.decimal128(10, 2)), "s": pa.array(["é", None], pa.large_string()),
        "b": pa.array([True, False]), "bin": pa.array([b"\x00", b"x"], pa.binary()),
        "d": pa.array([dt.date(2020, 1, 2)] * 2), "ts": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5, 6)] * 2, pa.timestamp("ns")),
        "tz": pa.array([dt.datetime(2020, 1, 2, 3, 4, 5)] * 2, pa.timestamp("us", tz="UTC")),
        "l": pa.array([[1, 2], []], pa.list_(pa.int64())),
    }
    dest = dfsync.destinations.postgres(pg_uri, table="types")
    write_all(dest, ctx(), WriteBatch(1, pa.table({**data, ACTION_COLUMN: ["insert", "insert"]})))
    types = dict(pg_server.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'types'::regclass "
        "AND attnum > 0", dbname=pg_uri.rsplit("/", 1)[1]))
    assert types == {"id": "bigint", "i8": "smallint", "i32": "integer", "u32": "bigint", "u64": "numeric(20,0)",
                     "f32": "real", "f64": "double precision", "dec": "numeric(10,2)", "s": "text", "b": "boolean",
                     "bin": "bytea", "d": "date", "ts": "timestamp without time zone",
                     "tz": "timestamp with time zone", "l": "bigint[]"}
    got = pg_server.read(pg_uri, "SELECT id, u32, u64::text AS u64, s, ts, l FROM types ORDER BY id")
    assert got["u32"].to_list() == [1, 4_000_000_000]
    assert got["u64"].to_list() == ["1", str(2**64 - 1)]
    assert got["s"].to_list() == ["é", None]
    assert got["ts"].to_list()[0] == dt.datetime(2020, 1, 2, 3, 4, 5, 6)  # ns -> PostgreSQL's microseconds
    assert got["l"].to_list() == [[1, 2], []]


def test_schema_mismatch_reported_before_sending(pg_server, pg_uri):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id integer PRIMARY KEY, name boolean)", dbname=db)
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    with dest.open(ctx()) as s, pytest.raises(SchemaMismatchError) as info:
        s.prepare(batch(1, id=[1], name=["a"], age=[3]).data.schema)
    msg = str(info.value)
    assert "'name' is string in the source but boolean" in msg
    import dataclasses

    with dest.open(dataclasses.replace(ctx(), schema="freeze")) as s, pytest.raises(SchemaMismatchError) as info:
        s.prepare(batch(1, id=[1], name=["a"], age=[3]).data.schema)
    assert "'age' (int64) is missing" in str(info.value)  # freeze does not add columns
    assert "'id'" not in msg  # a narrower integer column is fine: values that do not fit fail per row
    assert pg_server.execute("SELECT count(*) FROM t", dbname=db) == [(0,)]


def test_row_failures_bisected_and_rest_delivered(pg_server, pg_uri):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE parent (id int PRIMARY KEY)", dbname=db)
    pg_server.execute("INSERT INTO parent SELECT generate_series(0, 9)", dbname=db)
    pg_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, name varchar(3) NOT NULL, qty bigint CHECK (qty >= 0), "
                      "price numeric(5,2), parent bigint REFERENCES parent(id))", dbname=db)
    n = 1000
    ids = list(range(n))
    names = ["n"] * n
    qty = [1] * n
    price = [1] * n
    parent = [i % 10 for i in range(n)]
    names[17] = None  # NOT NULL
    qty[400] = -5  # CHECK
    price[401] = 123456  # numeric(5,2) overflow
    names[500] = "too long"  # varchar(3)
    parent[777] = 99  # foreign key
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    b = WriteBatch(1, pa.table({"id": ids, "name": pa.array(names, pa.string()), "qty": qty,
                                "price": pa.array(price, pa.decimal128(10, 2)), "parent": parent, ACTION_COLUMN: ["insert"] * n}))
    (res,) = write_all(dest, ctx(), b)
    assert sorted(res.failed) == [17, 400, 401, 500, 777]
    assert "null value" in res.failed[17] and "name" in res.failed[17]
    assert "check constraint" in res.failed[400]
    assert "numeric field overflow" in res.failed[401]
    assert "too long" in res.failed[500]
    assert "foreign key" in res.failed[777]
    # one line, without dfsync's own statement (its staged row numbers) nor the failing row, which
    # the record holds: rows failing one constraint share one message, as the panel groups them
    assert all("\n" not in m and "Failed to execute query" not in m and "Failing row contains" not in m
               for m in res.failed.values()), res.failed
    assert res.failed[400] == ('INTEGRITY: [libpq] ERROR: new row for relation "t" violates check constraint '
                               '"t_qty_check". SQLSTATE: 23514'), res.failed[400]
    assert pg_server.execute("SELECT count(*) FROM t", dbname=db) == [(n - 5,)]
    nd = pg_server.execute("SELECT not_delivered::text FROM _dfsync_batches WHERE batch_no = 1", dbname=db)
    assert json.loads(nd[0][0]) == [[17], [400], [401], [500], [777]]


def test_password_from_env_never_stored(pg_server, monkeypatch):
    db = pg_server.new_database().rsplit("/", 1)[1]
    # other tests log in as 'app' with passwords of their own: set this test's, whatever ran before
    verb = "ALTER" if pg_server.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'") else "CREATE"
    pg_server.execute(f"{verb} ROLE app WITH LOGIN PASSWORD 's3cr3t-Pw'")
    pg_server.execute(f'GRANT ALL ON DATABASE "{db}" TO app')
    pg_server.execute("GRANT ALL ON SCHEMA public TO app", dbname=db)
    base = f"postgresql://app@127.0.0.1:{pg_server.port}/{db}"
    monkeypatch.setenv("DFSYNC_TEST_PG", "s3cr3t-Pw")
    for dest in (dfsync.destinations.postgres(base, table="t", password="env:DFSYNC_TEST_PG"),
                 dfsync.destinations.postgres(base.replace("app@", "app:env:DFSYNC_TEST_PG@"), table="t"),
                 dfsync.destinations.postgres(base.replace("app@", "app:s3cr3t-Pw@"), table="t")):
        write_all(dest, ctx(), batch(1, id=[1], v=["a"]))
        text = json.dumps(dest.config()) + repr(dest) + dest.identity()
        assert "s3cr3t" not in text
    assert dfsync.destinations.postgres(base, table="t", password="env:DFSYNC_TEST_PG").config()["password"] == \
        "env:DFSYNC_TEST_PG"
    # a wrong password: terminal, and the secret is not in the message
    bad = dfsync.destinations.postgres(base.replace("app@", "app:wrong-Secret-123@"), table="t")
    with pytest.raises(DestinationError) as info:
        bad.open(ctx())
    assert not isinstance(info.value, TransientDestinationError)
    assert "password authentication failed" in str(info.value) or "authentication" in str(info.value)
    assert "wrong-Secret-123" not in str(info.value)
    # one line (libpq's message ends in a newline), naming both ways to give the password
    assert "\n" not in str(info.value) and "(env:NAME in the URI's password, or password='env:NAME')" in str(info.value)
    monkeypatch.delenv("DFSYNC_TEST_PG")
    with pytest.raises(ConfigError, match="DFSYNC_TEST_PG"):
        dfsync.destinations.postgres(base, table="t", password="env:DFSYNC_TEST_PG").open(ctx())


def test_permission_denied_is_terminal(pg_server, pg_uri):
    db = pg_uri.rsplit("/", 1)[1]
    if not pg_server.execute("SELECT 1 FROM pg_roles WHERE rolname = 'reader'"):
        pg_server.execute("CREATE ROLE reader LOGIN")
    pg_server.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text)", dbname=db)
    pg_server.execute("CREATE TABLE _dfsync_batches (run_key text, batch_no int, rows bigint, not_delivered jsonb, "
                      "committed_at timestamptz DEFAULT now(), PRIMARY KEY (run_key, batch_no))", dbname=db)
    pg_server.execute("GRANT SELECT ON t, _dfsync_batches TO reader", dbname=db)
    dest = dfsync.destinations.postgres(pg_uri.replace("dfsync@", "reader@"), table="t")
    with pytest.raises(DestinationError, match="permission denied") as info:
        write_all(dest, ctx(), batch(1, id=[1], v=["a"]))
    assert not isinstance(info.value, TransientDestinationError)


def test_unreachable_server_is_transient():
    dest = dfsync.destinations.postgres("postgresql://u@127.0.0.1:1/db", table="t", retry_timeout=0.5)
    with pytest.raises(TransientDestinationError, match="paused"):
        dest.open(ctx())


def test_server_restart_between_batches_reconnects(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t", retry_timeout=60)
    with dest.open(ctx()) as s:
        s.prepare(batch(1, id=[1], v=["a"]).data.schema)
        s.write(batch(1, id=[1], v=["a"]))
        pg_server.restart()
        s.write(batch(2, id=[2], v=["b"]))
    assert read(pg_server, pg_uri)["id"].to_list() == [1, 2]


def test_server_down_outlasting_retries_raises_transient(pg_server, pg_uri):
    dest = dfsync.destinations.postgres(pg_uri, table="t", retry_timeout=1)
    try:
        with dest.open(ctx()) as s:
            s.prepare(batch(1, id=[1], v=["a"]).data.schema)
            pg_server.stop()
            with pytest.raises(TransientDestinationError):
                s.write(batch(1, id=[1], v=["a"]))
    finally:
        pg_server.start()
    # the next attempt of the same run finds nothing committed and delivers once
    write_all(dest, ctx(), batch(1, id=[1], v=["a"]))
    assert read(pg_server, pg_uri)["id"].to_list() == [1]


def test_bad_config():
    with pytest.raises(ConfigError):
        dfsync.destinations.postgres("mysql://x", table="t")
    with pytest.raises(ConfigError):
        dfsync.destinations.postgres("postgresql://x/db", table="")


def test_a_column_name_postgresql_would_cut_is_refused_at_create_sync(pg_server, pg_uri, tmp_path):
    """PostgreSQL silently cuts names to 63 bytes: a 70-character column landed as a 63-character
    one, and the next update failed on ALTER TABLE ADD COLUMN. Refused at create_sync, naming the
    column; a shorter name through the mapping goes in and reads back under that name."""
    long = "c" * 70
    df = pl.DataFrame({"id": [1], long: [7]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    with pytest.raises(SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.postgres(pg_uri, table="t"),
                       primary_key="id")
    assert repr(long) in str(exc.value) and "63" in str(exc.value) and "mapping" in str(exc.value)
    assert pg_server.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'",
                             dbname=pg_uri.rsplit("/", 1)[1])[0][0] == 0
    sync = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.postgres(pg_uri, table="t"),
                          primary_key="id", mapping={"id": "id", "short": long})
    assert sync.run(progress=False).status == "success"
    assert read(pg_server, pg_uri).to_dicts() == [{"id": 1, "short": 7}]


def test_a_system_column_name_is_refused_at_create_sync(pg_server, pg_uri, tmp_path):
    """A field named ctid, xmin or tableoid (PostgreSQL's system columns) failed the run with
    libpq's raw 'column name "ctid" conflicts with a system column name' from CREATE TABLE.
    Refused at create_sync, naming the column and the mapping that renames it; renamed, it goes in."""
    df = pl.DataFrame({"id": [1], "ctid": ["row 7"]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    with pytest.raises(SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest, primary_key="id")
    assert "'ctid'" in str(exc.value) and "system column" in str(exc.value) and "mapping" in str(exc.value)
    sync = ws.create_sync("s2", source=dfsync.sources.frame(pl.DataFrame({"id": [1], "CTID": ["x"]})),
                          destination=dest, primary_key="id")  # quoted names keep case: "CTID" is no system column
    run = sync.run(source=dfsync.sources.frame(df.rename({"ctid": "CTID"}).with_columns(xmin=pl.lit(3))),
                   progress=False)
    assert run.status == "failed" and "'xmin'" in run.error and run.counts["sent"] == 0
    assert pg_server.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'",
                             dbname=pg_uri.rsplit("/", 1)[1])[0][0] == 0
    sync = ws.create_sync("s3", source=dfsync.sources.frame(df), destination=dest, primary_key="id",
                          mapping={"id": "id", "row_ctid": "ctid"})
    assert sync.run(progress=False).status == "success"
    assert read(pg_server, pg_uri).to_dicts() == [{"id": 1, "row_ctid": "row 7"}]


def test_a_table_name_postgresql_would_cut_is_refused(pg_uri):
    """Two syncs to 't'*63 + '_a' and 't'*63 + '_b' both wrote into one table cut to 63 bytes."""
    with pytest.raises(ConfigError) as exc:
        dfsync.destinations.postgres(pg_uri, table="t" * 63 + "_a")
    assert "63" in str(exc.value) and "t" * 63 + "_a" in str(exc.value)
    assert dfsync.destinations.postgres(pg_uri, table="t" * 63).table == "t" * 63


@pytest.mark.parametrize("mode", ["upsert", "update"])
def test_keys_a_nondeterministic_collation_takes_as_one_are_failed_not_merged(pg_server, pg_uri, tmp_path, mode):
    """A table made by hand whose text key has a non-deterministic (case-insensitive ICU) collation
    takes 'A' as 'a': a re-sync bringing 'A' beside the delivered 'a' overwrote row 'a' with A's
    values (ON CONFLICT DO UPDATE) and the run said success. Such rows fail, named, and the table
    keeps its rows; two rows of one batch the collation takes as one both fail."""
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
                      dbname=db)
    pg_server.execute("CREATE TABLE t (id text COLLATE ci PRIMARY KEY, s int)", dbname=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": ["a", "b"], "s": [1, 2]}), destination_mode="upsert",
                          destination=dfsync.destinations.postgres(pg_uri, table="t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    sync = ws.create_sync("s", source=pl.DataFrame({"id": ["a", "b"], "s": [1, 2]}), destination_mode=mode,
                          destination=dfsync.destinations.postgres(pg_uri, table="t"), primary_key="id")
    run = sync.run(source=pl.DataFrame({"id": ["a", "A", "b"], "s": [1, 9, 3]}), progress=False)
    assert run.status == "failed" and run.counts["failed"] == 1, (run.counts, run.error)
    failed = run.records(status="failed")
    assert failed["id"].to_list() == ["A"] and "collation" in failed["_error"][0], failed.to_dicts()
    assert sorted(pg_server.execute("SELECT id, s FROM t", dbname=db)) == [("a", 1), ("b", 3)]
    run = sync.run(source=pl.DataFrame({"id": ["a", "b", "c", "C"], "s": [1, 4, 5, 6]}), progress=False)
    assert sorted(run.records(status="failed")["id"].to_list()) == ["C", "c"], run.records(status="failed")
    assert sorted(pg_server.execute("SELECT id, s FROM t", dbname=db)) == [("a", 1), ("b", 4)]


@pytest.mark.parametrize("mode", ["upsert", "update"])
def test_citext_and_char_keys_are_synced_and_their_clashes_failed(pg_server, pg_uri, tmp_path, mode):
    """A table made by hand with a citext key (and a citext column) was refused whole ('a type
    dfsync cannot check'), though citext keeps every text as written. It is taken as text; rows
    whose key citext takes as another ('A' is 'a') fail, named. A char(n) key ignores trailing
    spaces: 'a ' overwrote row 'a' with its values and the run counted it succeeded; now it fails,
    named, and the table keeps its rows."""
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE EXTENSION IF NOT EXISTS citext", dbname=db)
    pg_server.execute("CREATE TABLE ci (email citext PRIMARY KEY, note citext, s int)", dbname=db)
    pg_server.execute("CREATE TABLE ch (code char(4) PRIMARY KEY, s int)", dbname=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    first = {"ci": pl.DataFrame({"email": ["a@x", "b@x"], "note": ["Hello", None], "s": [1, 2]}),
             "ch": pl.DataFrame({"code": ["a", "b"], "s": [1, 2]})}
    then = {"ci": pl.DataFrame({"email": ["a@x", "A@x", "b@x"], "note": ["Hello", "x", "Wörld"], "s": [1, 9, 3]}),
            "ch": pl.DataFrame({"code": ["a", "a ", "b"], "s": [1, 9, 3]})}
    for table, key in (("ci", "email"), ("ch", "code")):
        dest = dfsync.destinations.postgres(pg_uri, table=table)
        sync = ws.create_sync(table, source=first[table], destination=dest, primary_key=key)
        assert sync.run(progress=False).status == "success"
        sync = ws.create_sync(table, source=first[table], destination=dest, primary_key=key, destination_mode=mode)
        run = sync.run(source=then[table], progress=False)
        assert run.status == "failed" and run.counts["failed"] == 1 and run.counts["succeeded"] == 1, run.counts
        failed = run.records(status="failed")
        assert failed[key].to_list() == [then[table][key][1]], failed.to_dicts()
        assert "existing key ('a" in failed["_error"][0], failed["_error"][0]
    assert sorted(pg_server.execute("SELECT email::text, note::text, s FROM ci", dbname=db)) == [
        ("a@x", "Hello", 1), ("b@x", "Wörld", 3)]
    assert sorted(pg_server.execute("SELECT code::text, s FROM ch", dbname=db)) == [("a", 1), ("b", 3)]


def test_a_column_with_fewer_fractional_digits_is_refused_not_rounded(pg_server, pg_uri, tmp_path):
    """A table made by hand with timestamp(0), timestamp(3), timestamptz(0) or time(0) columns
    rounded finer values (00:00:00.6 became 00:00:01) and the run said success. As MySQL's
    DATETIME(0)/(3), such a column takes only types as coarse as it keeps: a finer one fails before
    anything is sent (SchemaMismatchError naming the column and both types); milliseconds go into
    timestamp(3) exactly."""
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, ts timestamp(0), ms timestamp(3), "
                      "tz timestamptz(0), tm time(0))", dbname=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    fine = pl.DataFrame({"id": [1], "ts": [dt.datetime(2024, 1, 1, 0, 0, 0, 600000)],
                         "ms": [dt.datetime(2024, 1, 1, 0, 0, 0, 123456)],
                         "tz": [dt.datetime(2024, 1, 1, 0, 0, 0, 600000, tzinfo=dt.timezone.utc)],
                         "tm": [dt.time(1, 2, 3, 600000)]})
    sync = ws.create_sync("s", source=fine, destination=dfsync.destinations.postgres(pg_uri, table="t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0, run.counts
    for column, declared in (("ts", "timestamp(0)"), ("ms", "timestamp(3)"), ("tz", "timestamp(0) with time zone"),
                             ("tm", "time(0)")):
        assert f"column {column!r}" in run.error and declared in run.error, run.error
    assert pg_server.execute("SELECT count(*) FROM t", dbname=db) == [(0,)]
    pg_server.execute("CREATE TABLE m (id int PRIMARY KEY, ms timestamp(3))", dbname=db)
    ms = pl.DataFrame({"id": [1], "ms": [dt.datetime(2024, 1, 1, 0, 0, 0, 123000)]},
                      schema={"id": pl.Int64, "ms": pl.Datetime("ms")})
    sync = ws.create_sync("m", source=ms, destination=dfsync.destinations.postgres(pg_uri, table="m"),
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    assert pg_server.execute("SELECT ms FROM m", dbname=db) == [(dt.datetime(2024, 1, 1, 0, 0, 0, 123000),)]


def test_a_duration_into_an_interval_column_dfsync_cannot_check_fails_the_run_clearly(pg_server, pg_uri, tmp_path):
    """A duration into a table made by hand whose column is interval second(0) (a type dfsync
    cannot check) escaped sync.run() as a polars PanicException while the message was written;
    the run fails with the SchemaMismatchError naming the column, nothing sent."""
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, d interval second(0))", dbname=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1], "d": [dt.timedelta(seconds=1, microseconds=600000)]}),
                          destination=dfsync.destinations.postgres(pg_uri, table="t"), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and "column 'd'" in run.error and "interval second(0)" in run.error, run.error
    assert pg_server.execute("SELECT count(*) FROM t", dbname=db) == [(0,)]


def test_json_text_goes_into_an_existing_jsonb_column(pg_server, pg_uri, tmp_path):
    """Text into a table made by hand with json/jsonb columns (e.g. a PostgreSQL source's jsonb,
    which arrives as text) failed every run with PostgreSQL's raw 'column "v" is of type jsonb but
    expression is of type text'. The text is cast: valid JSON is stored as JSON, a text that is
    not JSON fails its row with the server's message."""
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE TABLE j (id int PRIMARY KEY, v jsonb, w json)", dbname=db)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    src = pl.DataFrame({"id": [1, 2, 3], "v": ['{"a": 1}', "not json", None], "w": ["[1, 2]", "{}", None]})
    sync = ws.create_sync("j", source=src, destination=dfsync.destinations.postgres(pg_uri, table="j"),
                          primary_key="id", max_failed_rows=1)
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["succeeded"] == 2 and run.counts["failed"] == 1, run.error
    assert run.records(status="failed")["id"].to_list() == [2]
    assert pg_server.execute("SELECT id, v::text, w::text FROM j ORDER BY id", dbname=db) == [
        (1, '{"a": 1}', "[1, 2]"), (3, None, None)]
    run = sync.run(source=src.with_columns(pl.lit('{"b": [true]}').alias("v")), progress=False)
    assert run.counts["updated"] == 2 and pg_server.execute("SELECT v->'b' FROM j WHERE id = 1", dbname=db) == [([True],)]


@pytest.mark.parametrize("mode", ["upsert", "mirror"])
def test_a_list_of_uint64_keeps_values_above_the_bigint_range(pg_server, pg_uri, tmp_path, mode):
    """A list of uint64 goes into a numeric(20,0)[] column, but rows that went through the staging
    table (a re-sync's changed rows, or any row of a table with a jsonb column) were staged as
    bigint[]: [2**64 - 1, 2**63] read back as [-1, -9223372036854775808] and the run said success
    (a plain uint64 column was right). Array elements are sent as numeric values too."""
    first = pl.DataFrame({"id": [1, 2, 3], "u": pl.Series([[1], [2], None], dtype=pl.List(pl.UInt64)),
                          "j": [{"a": 1}, {"a": 2}, None]})
    then = first.with_columns(pl.Series("u", [[2**64 - 1, 2**63], [0, None], [5]], dtype=pl.List(pl.UInt64)))
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(first), primary_key="id", destination_mode=mode,
                          destination=dfsync.destinations.postgres(pg_uri, table="t"))
    db = pg_uri.rsplit("/", 1)[1]
    assert sync.run(progress=False).status == "success"
    assert pg_server.execute("SELECT id, u::text FROM t ORDER BY id", dbname=db) == [(1, "{1}"), (2, "{2}"), (3, None)]
    run = sync.run(progress=False, source=dfsync.sources.frame(then))
    assert run.status == "success" and run.counts["updated"] == 3, run.error
    assert pg_server.execute("SELECT id, u::text FROM t ORDER BY id", dbname=db) == [
        (1, "{18446744073709551615,9223372036854775808}"), (2, "{0,NULL}"), (3, "{5}")]
    assert sync.run(progress=False, source=dfsync.sources.frame(then)).counts["sent"] == 0
    ws.close()

"""The key index of a PostgreSQL workspace's delivered state is built after a first load
(dfsync/store/_pgkeyindex.py), not kept up to date row by row while it writes; and the state's
rows are written narrow (dfsync/store/_pgdelivery.py): an insert's ``_action`` is NULL, read back
as 'insert', and rows an older version wrote ('insert' spelled out) count the same, so a
workspace written before opens and keeps working (a paused first load resumed: every row in the
destination exactly once).

Real server and destination files; each test checks the catalog (which indexes the state table
has) and that the rows synced are exact whatever the index's state.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

import dfsync
import tests.faulty  # noqa: F401 - registers the faulty destination
from tests.faulty import FaultyDestination, paused_first_load

pytestmark = pytest.mark.postgres


def _indexes(pg_server, uri: str, sync_id: int) -> list[tuple[str, str, bool]]:
    """(name, definition, valid) of the state table's indexes without a predicate: its key index."""
    return pg_server.execute(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s) AND i.indpred IS NULL",
        (f"ws.state_{sync_id}",), dbname=uri.rsplit("/", 1)[1])


def _frame(n: int, bump: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "v": [i * 10 + (bump if i % 3 == 0 else 0) for i in range(n)]})


def _dest_rows(path) -> list[tuple[int, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT id, v FROM t ORDER BY id").fetchall()


@pytest.fixture
def ws(pg_uri, tmp_path):
    w = dfsync.Workspace(f"{pg_uri}?schema=ws")
    w.store.state_cache_root = str(tmp_path / "cache")
    yield w
    w.close()


def _faulty_sync(ws, tmp_path, rows: int, mode: str, **fault):
    """A sync of ``rows`` rows (batches of 10) into a DuckDB table through a faulty destination."""
    src, dest = tmp_path / "src.parquet", tmp_path / "d.duckdb"
    _frame(rows).write_parquet(src)
    inner = dfsync.destinations.duckdb(str(dest), table="t")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=FaultyDestination(inner, **fault),
                          primary_key="id", destination_mode=mode, batch_size=10)
    return sync, src, dest


def test_a_first_load_writes_without_the_key_index_and_ends_with_it(ws, pg_server, pg_uri, tmp_path):
    sync, src, dest = _faulty_sync(ws, tmp_path, 60, "mirror", interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.runs()["status"].to_list() == ["paused"]  # three batches delivered, without a key index
    assert pg_server.execute(f"SELECT count(*) FROM ws.state_{sync.id}", dbname=pg_uri.rsplit("/", 1)[1])[0][0] >= 30
    assert _indexes(pg_server, pg_uri, sync.id) == []
    opts = pg_server.execute("SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
                             (f"ws.state_{sync.id}",), dbname=pg_uri.rsplit("/", 1)[1])[0][0]
    assert "autovacuum_vacuum_insert_threshold=-1" in opts
    assert sync.run(progress=False).status == "success"  # resumed: the rest, then the index
    [(name, definition, valid)] = _indexes(pg_server, pg_uri, sync.id)
    assert name == f"state_{sync.id}_key" and definition.endswith("(id)") and valid
    assert _dest_rows(dest) == [(i, i * 10) for i in range(60)]
    # a re-sync that updates and deletes keys finds their delivered versions through it
    _frame(50, bump=1).write_parquet(src)
    again = sync.run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 27  # 17 updated, 10 deleted
    assert _dest_rows(dest) == [(i, i * 10 + (1 if i % 3 == 0 else 0)) for i in range(50)]
    assert len(_indexes(pg_server, pg_uri, sync.id)) == 1
    assert sync.run(progress=False).counts["sent"] == 0


def test_a_first_load_that_failed_leaves_rows_and_the_next_run_builds_the_index(ws, pg_server, pg_uri, tmp_path):
    sync, src, dest = _faulty_sync(ws, tmp_path, 40, "upsert", raise_after=2)
    assert sync.run(progress=False).status in ("failed", "paused")
    assert _indexes(pg_server, pg_uri, sync.id) == []
    _frame(40, bump=2).write_parquet(src)
    assert sync.run(progress=False).status == "success"
    assert len(_indexes(pg_server, pg_uri, sync.id)) == 1
    assert _dest_rows(dest) == [(i, i * 10 + (2 if i % 3 == 0 else 0)) for i in range(40)]
    assert sync.run(progress=False).counts["sent"] == 0


def test_a_state_table_with_an_index_named_by_an_older_version_gets_no_second(ws, pg_server, pg_uri, tmp_path):
    src, dest = tmp_path / "src.parquet", tmp_path / "d.duckdb"
    _frame(30).write_parquet(src)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(dest), table="t"),
                          primary_key="id", destination_mode="mirror", batch_size=10)
    assert sync.run(progress=False).status == "success"
    db = pg_uri.rsplit("/", 1)[1]
    # what an older version created: the key index named by PostgreSQL
    pg_server.execute(f"DROP INDEX ws.state_{sync.id}_key", dbname=db)
    pg_server.execute(f"CREATE INDEX ON ws.state_{sync.id} (id)", dbname=db)
    _frame(30, bump=5).write_parquet(src)
    assert sync.run(progress=False).status == "success"
    assert [name for name, _, _ in _indexes(pg_server, pg_uri, sync.id)] == [f"state_{sync.id}_id_idx"]
    assert _dest_rows(dest) == [(i, i * 10 + (5 if i % 3 == 0 else 0)) for i in range(30)]



def test_the_key_index_is_built_in_one_process_with_memory_for_its_sort(ws, pg_server, pg_uri, tmp_path):
    from dfsync.store._pgkeyindex import build_settings

    # sized from the table (the sort's tuples take about its bytes), 256 MB to 1 GB; no parallel workers
    assert build_settings(0) == {"max_parallel_maintenance_workers": "0", "maintenance_work_mem": "256MB"}
    assert build_settings(603 * 2**20)["maintenance_work_mem"] == "753MB"
    assert build_settings(50 * 2**30)["maintenance_work_mem"] == "1024MB"
    # the settings hold for the build's transaction only: the workspace's connection keeps the server's
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute(f'ALTER DATABASE "{db}" SET maintenance_work_mem = \'3MB\'')
    w = dfsync.Workspace(f"{pg_uri}?schema=ws")
    w.store.state_cache_root = str(tmp_path / "cache2")
    try:
        sync, _src, dest = _faulty_sync(w, tmp_path, 30, "mirror")
        assert sync.run(progress=False).status == "success"
        assert len(_indexes(pg_server, pg_uri, sync.id)) == 1
        with w.store._connect() as con:
            assert con.execute("SELECT current_setting('maintenance_work_mem')").fetchall()[0][0] == "3MB"
            assert con.execute("SELECT current_setting('max_parallel_maintenance_workers')").fetchall()[0][0] == "2"
        assert _dest_rows(dest) == [(i, i * 10) for i in range(30)]
    finally:
        w.close()
        pg_server.execute(f'ALTER DATABASE "{db}" RESET maintenance_work_mem')

# ---------------------------------------------------------------- narrow state rows
def _actions(pg_server, pg_uri, sync_id: int) -> dict[str | None, int]:
    rows = pg_server.execute(f"SELECT _action, count(*) FROM ws.state_{sync_id} GROUP BY 1",
                             dbname=pg_uri.rsplit("/", 1)[1])
    return dict(rows)


@pytest.mark.parametrize("written_by", ["this version", "an older version"])
def test_inserts_are_stored_without_their_action_and_read_back_as_inserts(ws, pg_server, pg_uri, tmp_path,
                                                                            written_by):
    sync, run_id, dest = paused_first_load(ws, tmp_path)
    assert set(_actions(pg_server, pg_uri, sync.id)) == {None}  # a first load: no action written
    if written_by == "an older version":  # what the state held before: the action spelled out
        pg_server.execute(f"UPDATE ws.state_{sync.id} SET _action = 'insert'", dbname=pg_uri.rsplit("/", 1)[1])
    done = ws.store.run_delivered(sync.id, run_id, ["id"])
    assert done.num_rows >= 20 and set(done.column("_action").to_pylist()) == {"insert"}
    assert sync.run(progress=False).status == "success"  # resumed: the delivered batches adopted, not resent
    with duckdb.connect(str(dest), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id), sum(v) FROM t").fetchone() == (60, 60, 17700)


@pytest.mark.parametrize("written_by", ["this version", "an older version"])
def test_a_re_sync_writes_only_its_changes_actions(ws, pg_server, pg_uri, tmp_path, written_by):
    src, dest = tmp_path / "src.parquet", tmp_path / "d.duckdb"
    pl.DataFrame({"id": list(range(60)), "v": [i * 10 for i in range(60)]}).write_parquet(src)
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(dest), table="t"),
                          primary_key="id", destination_mode="mirror", batch_size=10)
    assert sync.run(progress=False).status == "success"
    if written_by == "an older version":
        pg_server.execute(f"UPDATE ws.state_{sync.id} SET _action = 'insert'", dbname=pg_uri.rsplit("/", 1)[1])
    new = {i: i * 10 + (i % 2) for i in range(10, 70)}  # 10 deleted, 25 updated, 25 kept, 10 new
    pl.DataFrame({"id": list(new), "v": list(new.values())}).write_parquet(src)
    again = sync.run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 45
    actions = _actions(pg_server, pg_uri, sync.id)
    assert actions.pop("update") == 25  # deletes leave no row; kept rows as they were written
    assert actions == ({None: 35} if written_by == "this version" else {None: 10, "insert": 25})
    with duckdb.connect(str(dest), read_only=True) as con:
        assert dict(con.execute("SELECT id, v FROM t").fetchall()) == new
    assert sync.run(progress=False).counts["sent"] == 0


@pytest.mark.parametrize("written_by", ["this version", "an older version"])
def test_ok_defaults_to_true_and_a_table_without_the_default_is_sent_it(ws, pg_server, pg_uri, tmp_path, written_by):
    # a state table created now: _ok defaults to TRUE and the write-ahead's COPY leaves it out;
    # one an older version created has no default and is sent it (else its rows would be NULL:
    # set aside, deleted at the run's end)
    sync, _run_id, dest = paused_first_load(ws, tmp_path)
    db = pg_uri.rsplit("/", 1)[1]
    st = f"ws.state_{sync.id}"
    assert pg_server.execute("SELECT atthasdef FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = '_ok'",
                             (st,), dbname=db) == [(True,)]
    if written_by == "an older version":
        pg_server.execute(f"ALTER TABLE {st} ALTER COLUMN _ok DROP DEFAULT", dbname=db)
    assert sync.run(progress=False).status == "success"  # resumed: the other batches written ahead
    assert pg_server.execute(f"SELECT _ok, count(*) FROM {st} GROUP BY 1", dbname=db) == [(True, 60)]
    with duckdb.connect(str(dest), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id), sum(v) FROM t").fetchone() == (60, 60, 17700)
    assert sync.run(progress=False).counts["sent"] == 0


def _aside_indexes(pg_server, uri: str, sync_id: int) -> list[tuple[str]]:
    return pg_server.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = to_regclass(%s) "
        "AND pg_get_expr(indpred, indrelid) LIKE %s", (f"ws.state_{sync_id}", "%_ok IS NULL%"),
        dbname=uri.rsplit("/", 1)[1])


@pytest.mark.parametrize("where", ["duckdb", "parquet"])
def test_the_index_of_rows_set_aside_comes_with_the_first_rows_set_aside(ws, pg_server, pg_uri, tmp_path, where):
    # a first load sets nothing aside: the state table has no index of set-aside rows (its
    # predicate would be checked for each row written); a re-sync into a destination that applies
    # a run only at its end (Parquet) sets the superseded versions aside until then, so its first
    # confirmation builds the index; one applying each batch (DuckDB) deletes them at once and
    # builds none. Either way the run's end leaves no row set aside, and the next run sends nothing.
    src, out = tmp_path / "src.parquet", tmp_path / "out"
    pl.DataFrame({"id": list(range(60)), "v": [i * 10 for i in range(60)]}).write_parquet(src)
    dest = dfsync.destinations.duckdb(str(out) + ".duckdb", table="t") if where == "duckdb" else \
        dfsync.destinations.parquet(str(out))
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)), destination=dest,
                          primary_key="id", destination_mode="mirror", batch_size=10)
    assert sync.run(progress=False).status == "success"
    assert _aside_indexes(pg_server, pg_uri, sync.id) == []
    new = {i: i * 10 + (i % 2) for i in range(10, 70)}  # 10 deleted, 25 updated, 25 kept, 10 new
    pl.DataFrame({"id": list(new), "v": list(new.values())}).write_parquet(src)
    assert sync.run(progress=False).status == "success"
    assert len(_aside_indexes(pg_server, pg_uri, sync.id)) == (1 if where == "parquet" else 0)
    db = pg_uri.rsplit("/", 1)[1]
    assert pg_server.execute(f"SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE _ok IS NOT TRUE) "
                             f"FROM ws.state_{sync.id}", dbname=db) == [(60, 60, 0)]
    if where == "duckdb":
        with duckdb.connect(str(out) + ".duckdb", read_only=True) as con:
            assert dict(con.execute("SELECT id, v FROM t").fetchall()) == new
    else:
        assert dict(pl.read_parquet(out / "data.parquet").select("id", "v").iter_rows()) == new
    assert sync.run(progress=False).counts["sent"] == 0

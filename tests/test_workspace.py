"""Workspace, create_sync validation, sources, records and the public surface."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import duckdb
import polars as pl
import pytest

import dfsync
from tests.faulty import env_with_repo

DATA = os.path.join(os.path.dirname(__file__), "..", "data")



def duck(tmp_path, table="t"):
    return dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table=table)


def read(tmp_path, table="t", order="id"):
    con = duckdb.connect(str(tmp_path / "dest.duckdb"), read_only=True)
    try:
        return pl.from_arrow(con.sql(f'SELECT * FROM "{table}" ORDER BY {order}').to_arrow_table())
    finally:
        con.close()


def test_public_surface_sorted_and_complete():
    assert dfsync.__all__ == sorted(dfsync.__all__)
    for name in dfsync.__all__:
        assert getattr(dfsync, name) is not None
    for name in ("Workspace", "Sync", "SyncRun", "RunStatus", "SyncStatus", "DfsyncError", "SyncNotFoundError",
                 "SyncRunFailed", "InvalidTransition", "SyncDisabledError", "SyncAlreadyRunning", "static"):
        assert name in dfsync.__all__


def test_import_is_light():
    code = ("import sys, dfsync; heavy = [m for m in ('ipywidgets', 'great_expectations', 'adbc_driver_postgresql', "
            "'psycopg', 'httpx', 'pandas') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with_repo(), check=True)
    assert out.stdout.strip() == "[]"


def test_default_path_and_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = dfsync.Workspace()
    assert os.path.exists(tmp_path / ".dfsync" / "workspace.duckdb")
    assert w.store.schema_version() >= 1
    m = dfsync.Workspace(":memory:")
    s = m.create_sync("x", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), destination=duck(tmp_path),
                      primary_key="id")
    assert s.run(progress=False).status == "success"
    assert m.syncs()["name"].to_list() == ["x"]


def test_workspace_survives_reopen_and_lists_syncs(tmp_path):
    src = dfsync.sources.files(os.path.join(DATA, "customers_v1.parquet"))
    w = dfsync.Workspace(tmp_path / "ws.duckdb")
    s = w.create_sync("c", source=src, destination=duck(tmp_path), primary_key="customer_id")
    run = s.run(progress=False)
    w.close()
    w2 = dfsync.Workspace(tmp_path / "ws.duckdb")
    s2 = w2.sync("c")
    assert s2.status == "healthy"
    assert s2.runs()["run_id"].to_list() == [run.id]
    assert w2.syncs().select("name", "status", "source", "destination", "last_run_status").row(0) == (
        "c", "healthy", "files", "duckdb", "success")
    assert s2.run(progress=False).counts["unchanged"] == 200  # rebuilt from the stored definition


def test_each_call_attaches_the_file_and_lets_go_of_it(tmp_path):
    """Every open of a workspace file attaches it to the process's one in-memory DuckDB
    (dfsync/store/_host.py: no new DuckDB instance, ~15 ms of CPU, per open); the last connection's
    close detaches it, checkpointed. So between calls the file is free (this process's own
    duckdb.connect opens it: it would be refused while attached) and holds no journal; and a file
    this process holds open through a connection of its own is still used (shared), as before."""
    path = str(tmp_path / "ws.duckdb")
    w = dfsync.Workspace(path)
    s = w.create_sync("x", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), destination=duck(tmp_path),
                      primary_key="id")
    assert s.run(progress=False).status == "success"
    assert not os.path.exists(path + ".wal")
    own = duckdb.connect(path)  # free between calls; and held now by an instance of this process's own
    try:
        assert own.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]
        assert s.run(progress=False).counts["unchanged"] == 2
        assert w.syncs()["last_run_status"].to_list() == ["success"]
    finally:
        own.close()
    assert s.run(progress=False).status == "success"
    assert duckdb.connect(path).execute("SELECT count(*) FROM runs").fetchall() == [(3,)]


def test_workspaces_of_a_process_share_one_duckdb_and_the_largest_memory_limit(tmp_path):
    """Two workspace files open at once are attached to the same in-memory DuckDB (no instance of
    their own, ~15 ms of CPU each open); memory_limit is that instance's, so it is the larger of
    the two workspace_memory settings while both are open (a small cap of one does not starve the
    other), and a file is detached (free for another instance) once its last connection closes."""
    small = dfsync.Workspace(str(tmp_path / "small.duckdb"), workspace_memory="10MB")
    big = dfsync.Workspace(str(tmp_path / "big.duckdb"), workspace_memory="300MB")
    with small.store._connect() as a:
        assert a.execute("SELECT current_setting('memory_limit')").fetchall() == [("9.5 MiB",)]
        with big.store._connect() as b:
            paths = {r[0] for r in a.execute("SELECT path FROM duckdb_databases() WHERE path IS NOT NULL").fetchall()}
            assert paths == {str(tmp_path / "small.duckdb"), str(tmp_path / "big.duckdb")}
            assert a.execute("SELECT count(*) FROM runs").fetchall() == b.execute("SELECT count(*) FROM runs").fetchall()
            assert a.execute("SELECT current_setting('memory_limit')").fetchall() == [("286.1 MiB",)]
        duckdb.connect(str(tmp_path / "big.duckdb")).close()  # detached: this process may open it


def test_the_room_a_delete_needs_is_kept_while_other_workspaces_open_and_checkpoint(tmp_path):
    """The memory limit is the process's one DuckDB's: the room a delete spread over a large state
    asked for (store/_delivery.py) was taken back by another thread opening a workspace (each open
    set the limit to the largest workspace_memory) or by a checkpoint setting back what it had read,
    so the delete could fail with Out of Memory. The room now stays while its connection is open."""
    from dfsync._settings import memory_bytes
    from dfsync.store import _host

    a_ws = dfsync.Workspace(str(tmp_path / "a.duckdb"), workspace_memory="10MB")
    b_ws = dfsync.Workspace(str(tmp_path / "b.duckdb"), workspace_memory="20MB")
    with a_ws.store._connect() as a:
        _host.need(a, 200 * 2**20)
        def limit(con):
            return memory_bytes(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])

        assert limit(a) >= 200 * 2**20
        with b_ws.store._connect() as b:
            assert limit(b) >= 200 * 2**20
            b_ws.store.checkpoint()
        assert limit(a) >= 200 * 2**20
    with a_ws.store._connect() as a:  # its room went with the connection that needed it
        assert a.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == "9.5 MiB"


def test_sync_not_found_lists_names(ws, tmp_path):
    ws.create_sync("alpha", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})), destination=duck(tmp_path),
                   primary_key="id")
    with pytest.raises(dfsync.SyncNotFoundError, match="alpha") as exc:
        ws.sync("beta")
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, dfsync.DfsyncError)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"destination_mode": "upsertt"}, "'insert', 'upsert', 'update', 'mirror', 'replace'"),
        ({"sync_mode": "full"}, "'full_refresh', 'incremental'"),
        ({"on_invalid": "drop"}, "'fail', 'skip', 'warn'"),
        ({"primary_key": "nope"}, "id, email, score"),
        ({"mapping": {"id": "id", "mail": "e_mail"}}, "the source columns are: id, email, score"),
        ({"mapping": {"id": "id", "x": pl.col("missing") + 1}}, "id, email, score"),
        ({"sync_mode": "incremental"}, "cursor_field"),
        ({"sync_mode": "incremental", "cursor_field": "ts"}, "not a field"),
        ({"sync_mode": "incremental", "cursor_field": "score", "destination_mode": "mirror"}, "full_refresh"),
        ({"batch_size": 0}, "positive integer"),
        ({"max_failed_rows": -1}, "max_failed_rows"),
        ({"on_success": 42}, "callable"),
        ({"on_success": "print"}, "package.module:function"),
    ],
)
def test_bad_configuration_fails_at_create_sync(ws, tmp_path, kwargs, match):
    df = pl.DataFrame({"id": [1], "email": ["a@b"], "score": [1.0]})
    args = {"source": dfsync.sources.frame(df), "destination": duck(tmp_path), "primary_key": "id"} | kwargs
    with pytest.raises(dfsync.ConfigError, match=match):
        ws.create_sync("bad", **args)
    assert ws.syncs().height == 0  # nothing was saved


def test_missing_files_fail_clearly(ws, tmp_path):
    with pytest.raises(dfsync.SourceError, match="no parquet files match"):
        ws.create_sync("x", source=dfsync.sources.files(str(tmp_path / "nope" / "*.parquet")),
                       destination=duck(tmp_path), primary_key="id")
    with pytest.raises(dfsync.ConfigError, match="format"):
        dfsync.sources.files(str(tmp_path / "x.txt"))


def test_files_sources_csv_ndjson_glob(ws, tmp_path):
    df = pl.DataFrame({"id": [1, 2, 3, 4], "city": ["Zürich", "東京", "", "Paris 🥐"]})
    (tmp_path / "in").mkdir()
    df[:2].write_parquet(tmp_path / "in" / "a.parquet")
    df[2:].write_parquet(tmp_path / "in" / "b.parquet")
    df.write_csv(tmp_path / "in.csv")
    df.write_ndjson(tmp_path / "in.ndjson")
    for i, src in enumerate([dfsync.sources.files(str(tmp_path / "in" / "*.parquet")),
                             dfsync.sources.files(str(tmp_path / "in.csv")),
                             dfsync.sources.files(str(tmp_path / "in.ndjson"))]):
        s = ws.create_sync(f"f{i}", source=src, destination=duck(tmp_path, f"t{i}"), primary_key="id")
        assert s.run(progress=False).status == "success"
        got = read(tmp_path, f"t{i}")
        assert got["city"].fill_null("").to_list() == df["city"].to_list()


def test_duckdb_query_source(ws, tmp_path):
    dbp = str(tmp_path / "src.duckdb")
    con = duckdb.connect(dbp)
    con.execute("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(50)")
    con.close()
    s = ws.create_sync("q", source=dfsync.sources.duckdb_query("SELECT * FROM people WHERE id < 10", database=dbp),
                       destination=duck(tmp_path), primary_key="id")
    assert s.run(progress=False).counts["inserted"] == 10
    pq = os.path.join(DATA, "customers_v1.parquet")
    s2 = ws.create_sync("q2", source=dfsync.sources.duckdb_query(f"SELECT customer_id AS id, plan FROM '{pq}'"),
                        destination=duck(tmp_path, "plans"), primary_key="id")
    assert s2.run(progress=False).counts["inserted"] == 200



@pytest.mark.parametrize("in_file", [False, True])
@pytest.mark.parametrize("select", ["id, name AS v, id * 2 AS v", 'id, name AS "V", id AS v', "*, id AS id"])
def test_a_duckdb_query_naming_a_column_twice_is_refused_at_create_sync(ws, tmp_path, select, in_file):
    """DuckDB renames a name given twice (or in two cases) once the query is read as a subquery:
    the run said success and the destination got a column 'v_1' the query never named."""
    dbp = str(tmp_path / "src.duckdb")
    with duckdb.connect(dbp) as con:
        con.execute("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(5)")
    query = f"SELECT {select} FROM people" if in_file else f"SELECT {select} FROM (VALUES (1, 'a')) AS people(id, name)"
    with pytest.raises(dfsync.ConfigError, match="more than once|differ only in case"):
        ws.create_sync("dup", source=dfsync.sources.duckdb_query(query, database=dbp if in_file else None),
                       destination=duck(tmp_path), primary_key="id")
    assert not os.path.exists(tmp_path / "dest.duckdb")

def test_a_duckdb_query_source_leaves_its_database_free_after_each_run_and_preview(ws, tmp_path):
    """The source's read-only connection stayed open on the sync: the user's own
    duckdb.connect(path) in the same process failed ('Can't open a connection to same database
    file with a different configuration') and no other process could write the file."""
    dbp = str(tmp_path / "src.duckdb")
    with duckdb.connect(dbp) as con:
        con.execute("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(50)")
    s = ws.create_sync("q", source=dfsync.sources.duckdb_query("SELECT * FROM people", database=dbp),
                       destination=duck(tmp_path), primary_key="id", destination_mode="mirror")
    assert s.preview().counts["insert"] == 50
    for step in range(3):
        run = s.run(progress=False)
        assert run.status == "success", run.error
        with duckdb.connect(dbp) as con:  # read-write, in this process
            con.execute("DELETE FROM people WHERE id = ?", [step])
    assert s.run(progress=False).counts["deleted"] == 1
    assert read(tmp_path)["id"].to_list() == list(range(3, 50))
    with pytest.raises(dfsync.errors.SourceError, match="the source query failed"):
        s.run(source=dfsync.sources.duckdb_query("SELECT * FROM nowhere", database=dbp), progress=False,
              raise_on_failure=True)
    with duckdb.connect(dbp) as con:
        assert con.execute("SELECT count(*) FROM people").fetchall() == [(47,)]


def test_pandas_and_arrow_frames(ws, tmp_path):
    import pandas as pd

    pdf = pd.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    s = ws.create_sync("pd", source=dfsync.sources.frame(pdf), destination=duck(tmp_path, "pd"), primary_key="id")
    assert s.run(progress=False).counts["inserted"] == 2
    tbl = pl.DataFrame({"id": [1, 2], "v": ["a", "b"]}).to_arrow()
    s = ws.create_sync("pa", source=dfsync.sources.frame(tbl), destination=duck(tmp_path, "pa"), primary_key="id")
    assert s.run(progress=False).counts["inserted"] == 2
    lazy = pl.LazyFrame({"id": [1], "v": ["z"]})
    s = ws.create_sync("lz", source=dfsync.sources.frame(lazy), destination=duck(tmp_path, "lz"), primary_key="id")
    assert s.run(progress=False).counts["inserted"] == 1
    with pytest.raises(dfsync.ConfigError, match="polars DataFrame"):
        dfsync.sources.frame([1, 2, 3])


def test_mapping_rename_static_expression(ws, tmp_path):
    df = pl.DataFrame({"customer_id": [1, 2], "first": ["Ada", "Alan"], "last": ["Lovelace", "Turing"],
                       "email": ["ADA@X.IO", "alan@x.io"]})
    s = ws.create_sync("m", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                       mapping={"id": "customer_id", "full_name": pl.col("first") + " " + pl.col("last"),
                                "email": pl.col("email").str.to_lowercase(), "origin": dfsync.static("crm")})
    assert s.run(progress=False).status == "success"
    got = read(tmp_path)
    assert got.to_dicts() == [
        {"id": 1, "full_name": "Ada Lovelace", "email": "ada@x.io", "origin": "crm"},
        {"id": 2, "full_name": "Alan Turing", "email": "alan@x.io", "origin": "crm"},
    ]
    # changing the mapping re-sends exactly the rows whose mapped values changed
    s = ws.create_sync("m", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                       mapping={"id": "customer_id", "full_name": pl.col("first") + " " + pl.col("last"),
                                "email": pl.col("email"), "origin": dfsync.static("crm")})
    run = s.run(progress=False)
    assert run.counts["updated"] == 1 and run.counts["unchanged"] == 1
    assert s.runs()["definition_version"].to_list() == [2, 1]



@pytest.mark.parametrize("kind", ["frame", "parquet", "duckdb_query"])
def test_static_floats_and_ints_arrive_with_the_type_and_value_given(ws, tmp_path, kind):
    """A Parquet or DuckDB query source applies static() in SQL, where 0.1 was a DECIMAL(1,1)
    (-0.0 became 0.0) and nan / inf were taken for column names (a raw Binder Error)."""
    df = pl.DataFrame({"id": [1, 2]})
    df.write_parquet(tmp_path / "src.parquet")
    source = {"frame": dfsync.sources.frame(df), "parquet": dfsync.sources.files(str(tmp_path / "src.parquet")),
              "duckdb_query": dfsync.sources.duckdb_query(f"SELECT * FROM '{tmp_path / 'src.parquet'}'")}[kind]
    statics = {"tenth": 0.1, "neg_zero": -0.0, "nan": float("nan"), "inf": float("-inf"), "big": 2**63, "small": 7}
    s = ws.create_sync("st", source=source, destination=duck(tmp_path), primary_key="id",
                       mapping={"id": "id", **{k: dfsync.static(v) for k, v in statics.items()}})
    run = s.run(progress=False)
    assert run.status == "success", run.error
    with duckdb.connect(str(tmp_path / "dest.duckdb")) as con:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 't'").fetchall())
        row = dict(zip(["tenth", "neg_zero", "nan", "inf", "big", "small"],
                       con.execute("SELECT tenth, neg_zero, nan, inf, big, small FROM t WHERE id = 1").fetchall()[0],
                       strict=True))
    assert [types[k] for k in statics] == ["DOUBLE"] * 4 + ["UBIGINT", "INTEGER"], types
    assert row["tenth"] == 0.1 and str(row["neg_zero"]) == "-0.0" and row["nan"] != row["nan"]
    assert row["inf"] == float("-inf") and row["big"] == 2**63 and row["small"] == 7

def test_schema_mismatch_reported_before_sending(ws, tmp_path):
    con = duckdb.connect(str(tmp_path / "dest.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, name INTEGER)")
    con.execute("INSERT INTO t VALUES (99, 7)")
    con.close()
    df = pl.DataFrame({"id": [1], "name": ["five"], "extra": [1.0]})
    for policy in ("evolve", "freeze"):
        s = ws.create_sync("s", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                           schema=policy)
        run = s.run(progress=False)
        assert run.status == "failed"
        assert "'name'" in run.error and "string" in run.error and "INTEGER" in run.error
        if policy == "freeze":  # freeze names the missing column too (evolve would add it)
            assert "'extra'" in run.error and "missing" in run.error
        assert run.counts["sent"] == 0
        assert read(tmp_path).to_dicts() == [{"id": 99, "name": 7}]


def test_destination_rejections_recorded_and_retried(ws, tmp_path):
    con = duckdb.connect(str(tmp_path / "dest.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, email VARCHAR NOT NULL)")
    con.close()
    df = pl.DataFrame({"id": [1, 2, 3, 4], "email": ["a", None, "c", None]})
    s = ws.create_sync("r", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                       max_failed_rows=2)
    run = s.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["failed"] == 2 and run.counts["succeeded"] == 2
    failed = run.records(status="failed").sort("id")
    assert failed["id"].to_list() == [2, 4]
    assert all("NOT NULL" in e for e in failed["_error"].to_list())
    assert read(tmp_path)["id"].to_list() == [1, 3]
    # unchanged, the failed rows are sent again next run
    run2 = s.run(progress=False)
    assert run2.counts["sent"] == 2 and run2.counts["retried"] == 2 and run2.counts["failed"] == 2
    # fixed at the source: delivered, and no longer listed as failed
    s = ws.create_sync("r", source=dfsync.sources.frame(df.fill_null("fixed")), destination=duck(tmp_path),
                       primary_key="id", max_failed_rows=2)
    run3 = s.run(progress=False)
    assert run3.counts["succeeded"] == 2 and run3.counts["failed"] == 0
    assert read(tmp_path)["id"].to_list() == [1, 2, 3, 4]
    assert run.records(status="failed").is_empty()


@pytest.mark.parametrize("sync_mode", ["full_refresh", "incremental"])
def test_a_rejected_row_quarantined_on_its_retry_is_not_counted_retried(ws, tmp_path, sync_mode):
    """retried counts rows sent again: a row the destination rejected that the next run stages
    again but its checks quarantine is invalid, not retried, and the counters add up."""
    con = duckdb.connect(str(tmp_path / "dest.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, ts BIGINT, n BIGINT CHECK (n < 100))")
    con.close()
    df = pl.DataFrame({"id": [1, 2, 3], "ts": [1, 2, 3], "n": [1, 200, 3]})
    incremental = {"sync_mode": "incremental", "cursor_field": "ts"} if sync_mode == "incremental" else {}

    def make(df, checks):
        return ws.create_sync("r", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                              max_failed_rows=5, checks=checks, on_invalid="skip", if_exists="update", **incremental)

    assert make(df, []).run(progress=False).counts["failed"] == 1
    again = df if sync_mode == "full_refresh" else df.filter(pl.col("id") == 3)  # incremental: the stored copy of 2
    sync = make(again.with_columns(pl.col("n") + 0), [dfsync.checks.between("n", 0, 100)])
    run = sync.run(progress=False)
    c = run.counts
    assert run.status == "success", run.error
    assert c["invalid"] == 1 and c["sent"] == 0 and c["retried"] == 0, c
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
    assert run.records(status="invalid")["id"].to_list() == [2]
    # let through again (the check dropped), the row is sent again: retried, and rejected again
    run = make(df, []).run(progress=False)
    assert (run.counts["retried"], run.counts["sent"], run.counts["failed"]) == (1, 1, 1), run.counts


def test_too_many_failures_and_all_failed(ws, tmp_path):
    con = duckdb.connect(str(tmp_path / "dest.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, email VARCHAR NOT NULL)")
    con.close()
    df = pl.DataFrame({"id": [1, 2, 3], "email": ["a", None, None]})
    s = ws.create_sync("r", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                       max_failed_rows=1)
    run = s.run(progress=False)
    assert run.status == "failed" and "max_failed_rows=1" in run.error
    df2 = pl.DataFrame({"id": [5, 6], "email": [None, None]})
    s = ws.create_sync("all", source=dfsync.sources.frame(df2), destination=duck(tmp_path), primary_key="id",
                       max_failed_rows=0.99)
    run = s.run(progress=False)
    assert run.status == "failed" and "every row" in run.error


def test_empty_source_is_refused(ws, tmp_path):
    s = ws.create_sync("e", source=dfsync.sources.frame(pl.DataFrame({"id": [1]}).clear()),
                       destination=duck(tmp_path), primary_key="id", destination_mode="mirror")
    run = s.run(progress=False)
    assert run.status == "failed" and "allow_empty=True" in run.error
    s = ws.create_sync("e", source=dfsync.sources.frame(pl.DataFrame({"id": [1]}).clear()),
                       destination=duck(tmp_path), primary_key="id", allow_empty=True)
    assert s.run(progress=False).status == "success"


def test_fingerprint_algorithm_change_resends_once(ws, tmp_path):
    df = pl.DataFrame({"id": [1, 2, 3]})
    s = ws.create_sync("f", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id")
    s.run(progress=False)
    ws.store.set_sync_fields(s.id, fp_algo="duckdb-hash/0.0.1")
    with pytest.warns(UserWarning, match="fingerprint algorithm changed"):
        run = s.run(progress=False)
    assert run.counts["updated"] == 3 and run.counts["sent"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.run(progress=False).counts["sent"] == 0
    assert read(tmp_path)["id"].to_list() == [1, 2, 3]


def test_corrupt_workspace_is_a_clear_error_and_untouched(tmp_path):
    p = tmp_path / "ws.duckdb"
    p.write_bytes(b"this is not a database" * 100)
    before = p.read_bytes()
    with pytest.raises(dfsync.WorkspaceCorrupt, match="not a DuckDB workspace"):
        dfsync.Workspace(p)
    assert p.read_bytes() == before
    good = tmp_path / "good.duckdb"
    dfsync.Workspace(good).close()
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(dfsync.WorkspaceError):
        w = dfsync.Workspace(good)
        w.syncs()


def test_records_and_events_and_repr(ws, tmp_path):
    df = pl.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    s = ws.create_sync("r", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id")
    run = s.run(progress=False)
    recs = run.records()
    assert set(recs.columns) >= {"id", "v", "_action", "_status", "_batch", "_error"}
    assert recs["_status"].to_list() == ["succeeded", "succeeded"]
    assert run.records(status="failed").height == 0
    with pytest.raises(dfsync.ConfigError, match="unknown record status"):
        run.records(status="ok")
    assert "success" in repr(run) and "r" in repr(s)
    assert "<div" in run._repr_html_() and "<div" in s._repr_html_() and "<div" in ws._repr_html_()
    assert set(run.durations()) == {"started", "querying", "queued", "in_progress"}
    assert run.raise_for_status() is run
    assert ws.sql("SELECT count(*) AS n FROM runs")["n"].item() == 1


def test_delete_sync(ws, tmp_path):
    s = ws.create_sync("d", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})), destination=duck(tmp_path),
                       primary_key="id")
    s.run(progress=False)
    ws.delete_sync("d")
    assert ws.syncs().height == 0
    with pytest.raises(dfsync.SyncNotFoundError):
        ws.sync("d")


def test_runs_begun_before_workspaces_had_an_id_keep_their_ledger_key(tmp_path):
    """Schema 3 gives each workspace an id for destination ledger keys; a run begun before the
    upgrade (say, paused) keeps the key its batches were committed under."""
    import duckdb

    path = tmp_path / "old.duckdb"
    w = dfsync.Workspace(path)
    w.close()
    con = duckdb.connect(str(path))  # make it a schema-2 workspace that already had two runs
    con.execute("DROP TABLE workspace_meta")
    con.execute("DELETE FROM dfsync_schema WHERE version >= 3")
    con.execute("INSERT INTO runs (id, sync_id, status) VALUES (1, 1, 'success'), (2, 1, 'paused')")
    con.close()
    store = dfsync.Workspace(path).store
    assert store.schema_version() == dfsync.store.SCHEMA_VERSION
    assert store.ledger_id(1) == store.ledger_id(2) == ""
    wid = store.ledger_id(3)
    assert len(wid) == 32 and store.ledger_id(99) == wid
    other = dfsync.Workspace(tmp_path / "new.duckdb").store
    assert other.ledger_id(1) not in ("", wid)


def test_check_results_of_an_empty_source_keep_their_types(ws, tmp_path):
    """validate().checks and preview().validation over a source with no rows: every percentage is
    null and a row count has no column; those columns were typed Null (not Float64 / String) and
    differed from run.validation() of the same checks."""
    df = pl.DataFrame({"id": [1, 2], "email": ["a@x.io", None]}).clear()
    checks = [dfsync.checks.not_null("email"), dfsync.checks.row_count_between(0, 10)]
    sync = ws.create_sync("e", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                          checks=checks, allow_empty=True)
    want = {"column_name": pl.String, "element_count": pl.Int64, "unexpected_count": pl.Int64,
            "unexpected_percent": pl.Float64, "success": pl.Boolean}
    for frame in (sync.validate().checks, sync.preview().validation, sync.run(progress=False).validation()):
        assert frame.height == 2
        assert {c: frame.schema[c] for c in want} == want
    only_count = ws.create_sync("c", source=dfsync.sources.frame(df), destination=duck(tmp_path, "c"),
                                primary_key="id", checks=[dfsync.checks.row_count_between(0, 10)], allow_empty=True)
    assert only_count.validate().checks.schema["column_name"] == pl.String


def test_empty_answers_keep_their_columns(ws, tmp_path):
    """delivered() before any delivery, records() of a run that kept none and validate() of a sync
    without checks are empty frames with the columns a full answer has (not 0x0 frames)."""
    df = pl.DataFrame({"id": [1, 2], "email": ["a@x.io", "b@x.io"]})
    sync = ws.create_sync("e", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id")
    assert sync.delivered().schema == pl.Schema({"id": pl.Int64, "_fp": pl.UInt64})
    result = sync.validate()
    assert result.ok and result.checks.height == 0
    assert {"check_name", "success", "unexpected_count"} <= set(result.checks.columns)
    run = sync.run(progress=False, source=df.clear())  # refused: an empty source; nothing kept
    assert run.status == "failed"
    records = run.records(status="failed")
    assert records.height == 0
    assert records.schema["id"] == pl.Int64 and records.schema["_status"] == pl.String
    assert {"email", "_action", "_batch", "_error"} <= set(records.columns)


def test_columns_differing_only_in_case_fail_at_create_sync(ws, tmp_path):
    """Bad configuration fails at create_sync, not mid-run: 'Name' and 'name' cannot both be staged;
    a mapping that keeps one of them is fine."""
    df = pl.DataFrame({"id": [1, 2], "Name": ["A", "B"], "name": ["a", "b"]})
    with pytest.raises(dfsync.ConfigError, match="differ only in case"):
        ws.create_sync("c", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id")
    assert ws.syncs().height == 0
    sync = ws.create_sync("c", source=dfsync.sources.frame(df), destination=duck(tmp_path), primary_key="id",
                          mapping={"id": "id", "name": "name"})
    assert sync.run(progress=False).status == "success"


def test_a_run_id_not_in_the_workspace_is_a_run_not_found_error(ws_target, tmp_path):
    """ws.run(999) raised a bare WorkspaceError and ws.run('abc') a bare ValueError; a missing run is
    dfsync.RunNotFoundError (KeyError-like, as SyncNotFoundError for names; still a WorkspaceError),
    an id that is not a whole number a ConfigError, and run ids as sync.runs() gives them work."""

    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("r", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})),
                          destination=dfsync.destinations.parquet(str(tmp_path / "lake")), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    with pytest.raises(dfsync.RunNotFoundError, match="no run with id 999") as exc:
        ws.run(999)
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, dfsync.errors.WorkspaceError)
    for bad in ("abc", 1.5, True, None):
        with pytest.raises(dfsync.ConfigError, match="whole number"):
            ws.run(bad)
    ids = sync.runs()["run_id"]
    for given in (ids[0], ids.to_numpy()[0], str(ids[0])):
        assert ws.run(given).id == run.id


def test_ws_sql_only_reads_and_says_why_a_query_failed(ws, tmp_path):
    """ws.sql() queries the workspace tables: a statement that writes (or several statements) is
    refused and changes nothing; a query that fails is a WorkspaceQueryError with DuckDB's text."""
    ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})), destination=duck(tmp_path),
                   primary_key="id")
    events = ws.sql("SELECT count(*) AS n FROM events")["n"].item()
    assert ws.sql("SELECT name, status FROM syncs WHERE name = ?", ["s"]).rows() == [("s", "pending")]
    assert ws.sql("WITH r AS (SELECT * FROM runs) SELECT count(*) AS n FROM r")["n"].item() == 0
    assert "syncs" in ws.sql("SHOW TABLES")["name"].to_list()
    for write in ("DELETE FROM events", "UPDATE syncs SET status = 'healthy'", "DROP TABLE runs",
                  "COMMIT; DELETE FROM events", "CREATE TABLE x AS SELECT 1", "SELECT 1; DELETE FROM events",
                  "ATTACH ':memory:' AS other", "SET threads = 1"):
        with pytest.raises(dfsync.WorkspaceQueryError, match="only reads") as err:
            ws.sql(write)
        assert isinstance(err.value, dfsync.DfsyncError) and "nothing was changed" in str(err.value)
    assert ws.sql("SELECT count(*) AS n FROM events")["n"].item() == events
    assert ws.sync("s").status == "pending"
    with pytest.raises(dfsync.WorkspaceQueryError, match='syntax error at or near "SELEC"'):
        ws.sql("SELEC 1")
    with pytest.raises(dfsync.WorkspaceQueryError, match='"nope" not found') as err:
        ws.sql("SELECT nope FROM syncs")
    assert "SHOW TABLES" in str(err.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_another_thread_opens_a_workspace_can_open_its_own(tmp_path):
    """The process's one DuckDB host is guarded by a lock; a child forked while another thread
    held it (a scheduler thread opening its workspace) hung at its first open of a workspace."""
    import threading

    from dfsync.store import _host

    held, done = threading.Event(), threading.Event()

    def hold():
        with _host._lock:
            held.set()
            done.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 once it opened a workspace, killed below otherwise
        code = 1
        try:
            dfsync.Workspace(str(tmp_path / "child.duckdb"))
            code = 0
        finally:
            os._exit(code)
    done.set()
    t.join()
    for _ in range(100):
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung opening a workspace")
    assert os.waitstatus_to_exitcode(status) == 0

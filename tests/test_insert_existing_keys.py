"""Insert mode into a SQL table that already holds some of the keys (a table the user made, rows
present before dfsync's first run, or a workspace reset): each such row is a failed row saying
the key is already in the destination, counted and not written, whether or not the table has a
primary key or unique constraint. Without a key constraint the rows were appended a second time
and the run said success."""

from __future__ import annotations

import sqlite3

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.destinations.base import EXISTS_MESSAGE

KINDS = ("duckdb", "sqlite", "postgres", "mysql")


def people(ids, tag="new"):
    return pl.DataFrame({"id": ids, "name": [f"{tag}{i}" for i in ids]})


class Table:
    """A user-made table ``people`` in one SQL destination, with DDL and reads in its dialect."""

    def __init__(self, kind, request, tmp_path):
        self.kind = kind
        if kind == "duckdb":
            self.path = str(tmp_path / "dest.duckdb")
        elif kind == "sqlite":
            self.path = str(tmp_path / "dest.sqlite")
        elif kind == "postgres":
            self.server = request.getfixturevalue("pg_server")
            self.uri = self.server.new_database()
        else:
            self.server = request.getfixturevalue("mariadb_server")
            self.db = self.server.new_database()

    def destination(self):
        if self.kind == "duckdb":
            return dfsync.destinations.duckdb(self.path, table="people")
        if self.kind == "sqlite":
            return dfsync.destinations.sqlite(self.path, table="people")
        if self.kind == "postgres":
            return dfsync.destinations.postgres(self.uri, table="people")
        return dfsync.destinations.mysql(self.server.uri(self.db), table="people")

    def execute(self, sql):
        if self.kind == "duckdb":
            con = duckdb.connect(self.path)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        if self.kind == "sqlite":
            con = sqlite3.connect(self.path)
            try:
                rows = con.execute(sql).fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        if self.kind == "postgres":
            return self.server.execute(sql, dbname=self.uri.rsplit("/", 1)[1])
        return self.server.execute(sql, database=self.db)

    def create(self, keyed, rows=()):
        text = "varchar(100)" if self.kind == "mysql" else "text"
        key = ", PRIMARY KEY (id)" if keyed else ""
        self.execute(f"CREATE TABLE people (id bigint NOT NULL, name {text}{key})")
        for i, name in rows:
            self.execute(f"INSERT INTO people VALUES ({i}, '{name}')")

    def rows(self):
        return sorted(tuple(r) for r in self.execute("SELECT id, name FROM people"))


@pytest.fixture(params=KINDS)
def table(request, tmp_path):
    return Table(request.param, request, tmp_path)


def sync_of(ws, table, df, name="people"):
    return ws.create_sync(name, source=dfsync.sources.frame(df), destination=table.destination(),
                          primary_key="id", destination_mode="insert")


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "keyed"])
def test_rows_already_in_a_user_made_table_fail_once(ws, table, keyed):
    table.create(keyed, rows=[(1, "old1"), (3, "old3")])
    run = sync_of(ws, table, people([1, 2, 3, 4])).run(progress=False)
    c = run.counts
    assert (c["sent"], c["succeeded"], c["failed"]) == (4, 2, 2), (c, run.error)
    failed = run.records(status="failed").sort("id")
    assert failed["id"].to_list() == [1, 3]
    assert set(failed["_error"].to_list()) == {EXISTS_MESSAGE}
    assert table.rows() == [(1, "old1"), (2, "new2"), (3, "old3"), (4, "new4")]


def test_after_a_reset_every_row_fails_and_nothing_is_appended(ws, table):
    table.create(keyed=False)
    sync = sync_of(ws, table, people([1, 2, 3]))
    assert sync.run(progress=False).status == "success"
    sync.reset()
    run = sync_of(ws, table, people([1, 2, 3, 4, 5])).run(progress=False)
    c = run.counts
    assert (c["succeeded"], c["failed"]) == (2, 3), (c, run.error)
    assert run.records(status="failed")["id"].sort().to_list() == [1, 2, 3]
    assert table.rows() == [(i, f"new{i}") for i in range(1, 6)]
    # the failed rows are retried by the next run and fail again, still not appended
    again = sync_of(ws, table, people([1, 2, 3, 4, 5])).run(progress=False)
    assert again.counts["failed"] == 3 and again.counts["succeeded"] == 0, again.counts
    assert len(table.rows()) == 5


def test_a_key_twice_across_batches_of_one_run_into_a_keyless_table(ws, table):
    """Several batches: the check runs per batch against what earlier batches of the run left."""
    table.create(keyed=False, rows=[(7, "old7")])
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(list(range(1, 11)))),
                          destination=table.destination(), primary_key="id", destination_mode="insert",
                          batch_size=3)
    run = sync.run(progress=False)
    assert (run.counts["succeeded"], run.counts["failed"]) == (9, 1), run.counts
    assert run.records(status="failed")["id"].to_list() == [7]
    got = table.rows()
    assert [r[0] for r in got] == list(range(1, 11))
    assert dict(got)[7] == "old7"



@pytest.mark.parametrize("mode", ["upsert", "mirror", "insert"])
def test_duckdb_keys_the_tables_collate_takes_as_one_are_failed_not_merged(tmp_path, mode):
    """A DuckDB table made by hand whose key is VARCHAR COLLATE NOCASE takes 'A' as 'a': a re-sync
    bringing 'A' beside the delivered 'a' replaced row 'a' by A (key and values) and the run said
    success. Such rows fail, named, and the table keeps its rows; two rows of one batch that the
    collation takes as one both fail, the others go in. (SQLite and MySQL: tests/test_sqlite.py,
    tests/test_mysql.py.)"""
    path = str(tmp_path / "d.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE t (id VARCHAR COLLATE NOCASE PRIMARY KEY, s INTEGER)")
    con.close()
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=pl.DataFrame({"id": ["a", "b"], "s": [1, 2]}), destination_mode=mode,
                          destination=dfsync.destinations.duckdb(path, "t"), primary_key="id")
    assert sync.run(progress=False).status == "success"

    def table():
        c = duckdb.connect(path, read_only=True)
        try:
            return c.execute("SELECT id, s FROM t ORDER BY id").fetchall()
        finally:
            c.close()

    run = sync.run(source=pl.DataFrame({"id": ["a", "A", "b"], "s": [1, 9, 3]}), progress=False)
    assert run.status == "failed" and run.counts["failed"] == 1, (run.counts, run.error)
    failed = run.records(status="failed")
    assert failed["id"].to_list() == ["A"] and "COLLATE" in failed["_error"][0], failed.to_dicts()
    assert table() == [("a", 1), ("b", 2 if mode == "insert" else 3)]
    run = sync.run(source=pl.DataFrame({"id": ["a", "b", "c", "C"], "s": [1, 4, 5, 6]}), progress=False)
    assert sorted(run.records(status="failed")["id"].to_list()) == ["C", "c"], run.records(status="failed")
    assert table() == [("a", 1), ("b", 2 if mode == "insert" else 4)]

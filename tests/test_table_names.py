"""A destination's table name is 'table' or 'schema.table' (a part quoted to keep a dot): anything
else is refused at create_sync, before any table is created, never taken as one literal name."""
from __future__ import annotations

import duckdb
import polars as pl
import pytest

import dfsync


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"id": [1, 2], "x": ["a", "b"]})


@pytest.mark.parametrize("table", ["x.s1.t", "a..b", ".t", "t.", '"unclosed.t', '"a"b".c'])
def test_a_table_name_of_three_parts_or_an_empty_part_is_refused(tmp_path, table):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    with pytest.raises(dfsync.errors.ConfigError, match="'table' or 'schema.table'") as err:
        ws.create_sync("s", source=dfsync.sources.frame(_frame()),
                       destination=dfsync.destinations.duckdb(out, table=table), primary_key="id")
    assert repr(table) in str(err.value)
    assert ws.syncs().height == 0
    with pytest.raises(dfsync.errors.ConfigError):
        dfsync.destinations.sqlite(str(tmp_path / "out.db"), table=table)


def test_schema_and_quoted_names_reach_the_table_they_name(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    names = {"plain": "t", "schema": "s1.t", "quoted": '"odd.name"', "both": '"my.schema"."a""b"'}
    for label, table in names.items():
        run = ws.create_sync(label, source=dfsync.sources.frame(_frame()),
                             destination=dfsync.destinations.duckdb(out, table=table), primary_key="id").run(progress=False)
        assert run.status == "success", run.error
    con = duckdb.connect(out, read_only=True)
    tables = {(s, t) for s, t in con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE table_name NOT LIKE '\\_dfsync%' ESCAPE '\\'").fetchall()}
    assert tables == {("main", "t"), ("s1", "t"), ("main", "odd.name"), ("my.schema", 'a"b')}
    assert con.execute('SELECT x FROM "my.schema"."a""b" ORDER BY id').fetchall() == [("a",), ("b",)]

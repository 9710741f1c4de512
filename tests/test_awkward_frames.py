"""pandas frames with awkward columns: converted as docs/SCHEMA.md says, or a ConfigError naming
the column and the fix, never a bare pyarrow exception; workspace and destination unchanged."""

from __future__ import annotations

import decimal
import json
import os
import re

import duckdb
import pandas as pd
import polars as pl
import pytest

import dfsync
from dfsync.errors import ConfigError


class Opaque:
    pass


def _frame(col: object, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"id": list(range(1, n + 1)), "a": col})


BAD = {
    "mixed-int-and-text": (_frame([1, "x", 2]), "'a'", "astype(str)"),
    "mixed-text-and-bytes": (_frame(["x", b"y", None]), "'a'", "astype(str)"),
    "arbitrary-objects": (_frame([Opaque(), None, Opaque()]), "'a'", "Opaque"),
    "mixed-dict-and-list": (_frame([{"k": 1}, [1, 2], None]), "'a'", "one type"),
    "period": (_frame(pd.period_range("2020-01", periods=3, freq="M")), "'a'", "to_timestamp"),
    "interval": (_frame(pd.interval_range(0, 3)), "'a'", "astype(str)"),
    "sparse": (_frame(pd.arrays.SparseArray([0, 0, 1])), "'a'", "to_dense"),
    "complex": (_frame([1 + 2j, 3j, 0j]), "'a'", "np.real"),
    "multiindex-columns": (pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("id", ""), ("a", "b")])),
                           "levels", "df.columns ="),
    "multiindex-rows": (pd.DataFrame({"id": [1, 2]}, index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")],
                                                                                      names=["k", "l"])),
                        "'k'", "reset_index()"),
    "named-index": (pd.DataFrame({"a": [1, 2]}, index=pd.Index([1, 2], name="id")), "'id'", "reset_index()"),
    "duplicate-columns": (pd.DataFrame([[1, 2, 3]], columns=["id", "a", "a"]), "'a'", "rename"),
    # df.set_index("id", drop=False): the way out given before, df.reset_index(), fails in pandas
    # ('cannot insert id, already exists')
    "index-named-like-a-column": (pd.DataFrame({"id": [1, 2]}).set_index("id", drop=False), "'id'",
                                  "df.rename_axis('row_id').reset_index()"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_awkward_frame_refused_at_create_sync(case, tmp_path):
    df, named, fix = BAD[case]
    ws_path = tmp_path / "ws.duckdb"
    ws = dfsync.Workspace(str(ws_path))
    dest = dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t")
    with pytest.raises(ConfigError) as info:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest, primary_key="id")
    assert named in str(info.value) and fix in str(info.value), str(info.value)
    assert ws.syncs().height == 0
    assert not os.path.exists(tmp_path / "dest.duckdb")



def test_object_columns_pandas_calls_one_kind_but_that_would_change_are_refused(tmp_path):
    """pandas infers one kind for these object columns, but they converted with a loss and the run
    said success: a tz-aware datetime among naive ones arrived naive (its zone dropped), a datetime
    among dates arrived as its date (12:00 lost); decimals wider than 38 digits crashed polars with
    a PanicException (not even an Exception), and Decimal('Infinity') failed with "'str' object cannot
    be interpreted as an integer", and pandas Timestamps with nanoseconds arrived as microseconds. Each
    is refused naming the column; a mix of zones still arrives as the instants, and NaN decimals as
    NULL."""
    import datetime as dt

    D = decimal.Decimal
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t")
    refused = {
        "mixes naive datetimes with tz-aware": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)],
        "mixes dates with datetimes": [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, 12)],
        "more than 38 digits": [D("1e-30"), D("1e10")],
        "Decimal('Infinity')": [D("Infinity"), D("1")],
        "timestamps with nanoseconds": [pd.Timestamp("2024-01-01 00:00:00.000000001"), pd.Timestamp("2024-01-02")],
    }
    for why, values in refused.items():
        with pytest.raises(ConfigError, match=re.escape(why)) as info:
            ws.create_sync("s", source=_frame(pd.Series([*values, None], dtype=object)), destination=dest,
                           primary_key="id")
        assert "'a'" in str(info.value), str(info.value)
    zones = [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
             dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))), None]
    df = pd.DataFrame({"id": [1, 2, 3], "a": pd.Series(zones, dtype=object),
                       "d": pd.Series([D("NaN"), D("1.5"), None], dtype=object)})
    ws.create_sync("s", source=df, destination=dest, primary_key="id").run(progress=False).raise_for_status()
    with duckdb.connect(str(tmp_path / "dest.duckdb"), read_only=True) as con:
        got = con.sql("SELECT epoch(a), d FROM t ORDER BY id").fetchall()
    assert got == [(1704067200.0, None), (1704085200.0, D("1.5")), (None, None)]

@pytest.mark.parametrize("case", ["mixed-int-and-text", "arbitrary-objects", "period"])
def test_awkward_column_after_an_in_place_edit_fails_the_run_before_sending(case, tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    df = pd.DataFrame({"id": [1, 2, 3], "a": ["p", "q", "r"]})
    sync = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.duckdb(path, "t"),
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    bad, _, fix = BAD[case]
    df["a"] = bad["a"]  # the frame is read at each run
    run = sync.run(progress=False)
    assert run.status == "failed" and "'a'" in run.error and fix in run.error
    assert run.counts["sent"] == 0
    con = duckdb.connect(path, read_only=True)
    assert con.sql("SELECT id, a FROM t ORDER BY id").fetchall() == [(1, "p"), (2, "q"), (3, "r")]
    con.close()


def test_documented_conversions(tmp_path):
    """What converts: NaN is pandas' missing value, one-kind object columns, categoricals, nullable dtypes."""
    df = pd.DataFrame({
        "id": [1, 2, 3],
        "f": [1.5, float("nan"), float("inf")],
        "ints_and_floats": pd.Series([1, 2.5, None], dtype=object),
        "dec": [decimal.Decimal("1.10"), None, decimal.Decimal("2.25")],
        "cat": pd.Categorical(["x", "y", None]),
        "n": pd.array([1, None, 3], dtype="Int64"),
        "d": [{"k": 1}, None, {"k": 2}],
    })
    df.index = [10, 20, 30]  # an unnamed index (row labels) is not sent
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.duckdb(path, "t"),
                         primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    rows = con.sql("SELECT * FROM t ORDER BY id").fetchall()
    cols = [c[0] for c in con.sql("DESCRIBE t").fetchall()]
    con.close()
    assert cols == ["id", "f", "ints_and_floats", "dec", "cat", "n", "d"]
    assert rows == [
        (1, 1.5, 1.0, decimal.Decimal("1.10"), "x", 1, {"k": 1}),
        (2, None, 2.5, None, "y", None, None),
        (3, float("inf"), None, decimal.Decimal("2.25"), None, 3, {"k": 2}),
    ]


@pytest.mark.parametrize("kind", ["polars", "pandas"])
def test_columns_differing_only_in_case_are_refused(kind, tmp_path):
    """'Temp' and 'temp' arrived as 'Temp' and 'temp_1' (DuckDB staging ignores case in names):
    a column renamed without a word. create_sync refuses such a source naming both; a source that
    gains the clash later fails its run before sending, and nothing is written."""
    import polars as pl

    data = {"id": [1, 2], "Temp": [1.5, 2.5], "temp": [3.5, 4.5]}
    df = pl.DataFrame(data) if kind == "polars" else pd.DataFrame(data)
    path = str(tmp_path / "wh.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    with pytest.raises(dfsync.ConfigError, match="'Temp' and 'temp' differ only in case"):
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.duckdb(path, "t"),
                       primary_key="id")
    src = str(tmp_path / "in.parquet")
    pl.DataFrame({"id": [1, 2], "Temp": [1.5, 2.5]}).write_parquet(src)
    sync = ws.create_sync("s", source=dfsync.sources.files(src), destination=dfsync.destinations.duckdb(path, "t"),
                          primary_key="id")
    pl.DataFrame(data).write_parquet(src)  # the file changes after the sync was defined
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "ConfigError"
    assert "'Temp'" in run.error and "'temp'" in run.error
    if os.path.exists(path):
        with duckdb.connect(path, read_only=True) as con:
            assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'").fetchone()[0] == 0


def test_mapping_fields_differing_only_in_case_are_refused_at_create_sync(tmp_path):
    """A mapping {"Name": ..., "name": ...} was accepted and its first run failed, telling the user
    to rename a column of the source (df.rename), which has no such columns; it is refused at
    create_sync, pointing at the mapping."""
    import polars as pl

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    with pytest.raises(dfsync.ConfigError, match="'Name' and 'name'.*in the mapping"):
        ws.create_sync("s", source=pl.DataFrame({"id": [1], "name": ["a"]}), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), "t"),
                       mapping={"id": "id", "Name": "name", "name": pl.col("name").str.to_uppercase()})
    assert ws.syncs().height == 0



def test_a_mapping_expression_that_changes_the_rows_is_refused_naming_its_field(tmp_path):
    """pl.col('x').unique() (or a filter, head, explode) in a mapping gives other rows than the
    source's: the run failed with polars' bare 'zip node received non-equal length inputs', naming
    nothing. It is refused at create_sync naming the field, or, when only the data shows it (an
    explode), the run fails naming it before anything is sent; an aggregate is sent with every row."""
    import polars as pl

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2, 3], "x": [1, 1, 2], "l": [[1, 2], [3], [4]]})
    dest = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), "t")
    for expr in (pl.col("x").unique(), pl.col("x").filter(pl.col("x") > 1), pl.col("x").head(2)):
        with pytest.raises(dfsync.ConfigError, match=r"mapping\['u'\] = .* gives \d values? for 3 source rows"):
            ws.create_sync("s", source=df, primary_key="id", destination=dest, mapping={"id": "id", "u": expr})
    sync = ws.create_sync("s", source=df, primary_key="id", destination=dest,
                          mapping={"id": "id", "u": pl.col("l").explode(), "total": pl.col("x").sum()})
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert "mapping['u']" in run.error and "gives 4 values for 3 source rows" in run.error, run.error
    run = ws.create_sync("s", source=df, primary_key="id", destination=dest,
                         mapping={"id": "id", "total": pl.col("x").sum()}).run(progress=False)
    assert run.status == "success", run.error
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.sql("SELECT id, total FROM t ORDER BY id").fetchall() == [(1, 4), (2, 4), (3, 4)]

def test_a_mapping_expression_that_reorders_values_is_refused_naming_its_field(tmp_path):
    """pl.col('email').sort() in a mapping keeps the number of rows but hands each row another row's
    value: the run said success and the destination held each id with someone else's email. An
    expression that moves values between rows (sort, sort_by, reverse, shuffle, sample, gather,
    arg_sort, also inside when/then, over or concat_str) is refused at create_sync naming the field;
    one that sorts inside a single value (.sort().first()), inside each row's list (list.sort(),
    list.eval) or ranks or shifts values in place is sent as before."""
    import polars as pl

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2, 3], "email": ["c@x", "a@x", "b@x"], "l": [[3, 1], [2], [1, 2]]})
    dest = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), "t")
    for expr, step in ((pl.col("email").sort(), "sort"), (pl.col("email").sort_by("id", descending=True), "sort_by"),
                       (pl.col("email").reverse(), "reverse"), (pl.col("email").shuffle(seed=1), "shuffle"),
                       (pl.col("email").sort().over("id"), "sort"),
                       (pl.when(pl.col("id") > 1).then(pl.col("email").sort()).otherwise(None), "sort"),
                       (pl.concat_str([pl.lit("<"), pl.col("email").reverse()]), "reverse")):
        with pytest.raises(dfsync.ConfigError, match=rf"mapping\['e'\] = .* reorders the values \({step}"):
            ws.create_sync("s", source=df, primary_key="id", destination=dest, mapping={"id": "id", "e": expr})
    assert ws.syncs().height == 0
    sync = ws.create_sync("s", source=df, primary_key="id", destination=dest, mapping={
        "id": "id", "e": "email", "first": pl.col("email").sort().first(), "l": pl.col("l").list.sort(),
        "r": pl.col("email").rank("ordinal"), "prev": pl.col("id").shift(1)})
    assert sync.run(progress=False).status == "success"
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.sql("SELECT id, e, first, l, r, prev FROM t ORDER BY id").fetchall() == [
            (1, "c@x", "a@x", [1, 3], 3, None), (2, "a@x", "a@x", [2], 1, 1), (3, "b@x", "a@x", [1, 2], 2, 2)]


def test_a_stored_sync_whose_mapping_reorders_values_is_refused_by_its_runs(tmp_path):
    """A sync stored by a version before create_sync refused pl.col('email').sort() ran, said success and
    gave each id another row's email. Its runs, previews and validations now refuse it with the same
    error before anything is sent (the definition is written as such a version stored it)."""
    import polars as pl

    pl.DataFrame({"id": [1, 2, 3], "email": ["c@x", "a@x", "b@x"]}).write_parquet(tmp_path / "src.parquet")
    path, wh = str(tmp_path / "ws.duckdb"), str(tmp_path / "wh.duckdb")
    ws = dfsync.Workspace(path)
    ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")), primary_key="id",
                   destination=dfsync.destinations.duckdb(wh, "t"), mapping={"id": "id", "e": "email"})
    ws.close()
    with duckdb.connect(path) as con:  # as an older version stored it: the expression's JSON form
        (definition,) = con.execute("SELECT definition FROM syncs WHERE name = 's'").fetchone()
        definition = json.loads(definition)
        definition["mapping"]["e"] = {"expr": pl.col("email").sort().meta.serialize(format="json")}
        con.execute("UPDATE syncs SET definition = ? WHERE name = 's'", [json.dumps(definition)])
    from dfsync.workspace import LIVE

    LIVE.clear()  # as in another process: the definition is read back from the workspace
    ws = dfsync.Workspace(path)
    sync = ws.sync("s")
    run = sync.run(progress=False)
    assert run.status == "failed" and ws.store.run_row(run.id)["error_kind"] == "ConfigError"
    assert "mapping['e'] = " in run.error and "reorders the values (sort)" in run.error, run.error
    assert run.counts["sent"] == 0 and not os.path.exists(wh)
    for look in (sync.preview, sync.validate):
        with pytest.raises(dfsync.ConfigError, match=r"reorders the values \(sort\)"):
            look()
    ws.close()


def test_polars_object_columns_are_refused_not_sent_as_memory_addresses(tmp_path):
    """A polars Object column (Python objects: a frame built with dtype=pl.Object, or a mapping's
    map_elements(..., return_dtype=pl.Object)) reached Arrow as 8 bytes of a memory address a value:
    the destination got a BLOB of addresses and the run said success. It is refused, naming the
    column, at create_sync and in a run reading another frame; nothing is sent."""
    import polars as pl

    from dfsync.errors import SchemaMismatchError

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    objects = pl.DataFrame({"id": [1, 2], "a": pl.Series([Opaque(), {1, 2}], dtype=pl.Object)})
    with pytest.raises(SchemaMismatchError, match=r"column 'a' is a polars Object.*map_elements\(str"):
        ws.create_sync("o", source=dfsync.sources.frame(objects), primary_key="id",
                       destination=dfsync.destinations.duckdb(out, table="t"))
    as_objects = {"id": "id", "a": pl.col("a").map_elements(lambda v: {v}, return_dtype=pl.Object)}
    with pytest.raises(SchemaMismatchError, match="column 'a' is a polars Object"):
        ws.create_sync("m", source=dfsync.sources.frame(pl.DataFrame({"id": [1], "a": ["x"]})), primary_key="id",
                       mapping=as_objects, destination=dfsync.destinations.duckdb(out, table="t"))
    sync = ws.create_sync("n", source=dfsync.sources.frame(pl.DataFrame({"id": [1], "a": ["x"]})), primary_key="id",
                          destination=dfsync.destinations.duckdb(out, table="t"))
    run = sync.run(progress=False, source=dfsync.sources.frame(objects))
    assert run.status == "failed" and run.counts["sent"] == 0, run.error
    assert "column 'a' is a polars Object" in run.error, run.error
    assert not os.path.exists(out)


def test_an_arrow_record_batch_reader_is_read_by_every_run_and_other_objects_are_refused(tmp_path):
    """sources.frame(reader) failed with "'RecordBatchReader' object has no attribute 'columns'"
    (a pandas Series or an Arrow array likewise, not a DfsyncError). A reader is read whole when
    the source is made (kept as a stream, the first run would use it up and a mirror run after it
    would delete every row); the others are refused naming what to pass."""
    import pyarrow as pa

    table = pa.table({"id": [1, 2], "v": ["a", "b"]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    sync = ws.create_sync("r", source=dfsync.sources.frame(pa.RecordBatchReader.from_batches(table.schema,
                          table.to_batches())), destination=dfsync.destinations.duckdb(out, table="t"),
                          primary_key="id", destination_mode="mirror")
    for _ in range(2):
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["queried"] == 2 and run.counts["deleted"] == 0, run.counts
    with duckdb.connect(out, read_only=True) as con:
        assert con.execute("SELECT * FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b")]
    for obj, fix in [(pd.Series([1, 2], name="id"), "series.to_frame()"), (table.column("id"), "pa.table("),
                     (pl.Series("id", [1]), "series.to_frame()")]:
        with pytest.raises(ConfigError, match=re.escape(fix)):
            dfsync.sources.frame(obj)


def test_arrow_date64_columns_arrive_as_dates(tmp_path):
    """polars reads an Arrow date64 (days counted in milliseconds, e.g. from JDBC or
    pa.Table.from_pandas(..., schema=...)) as a timestamp: a column of dates arrived as TIMESTAMP
    values at midnight, and a re-read could never match a date column. Whole days are dates
    (inside lists and structs too); a date64 holding a time of day keeps it, as a timestamp."""
    import datetime as dt

    import pyarrow as pa

    table = pa.table({
        "id": [1, 2],
        "d": pa.array([dt.date(1969, 12, 31), None], pa.date64()),
        "l": pa.array([[dt.date(2024, 2, 29)], None], pa.list_(pa.date64())),
        "t": pa.array([86_400_000 * 3 + 5, 0], pa.date64()),
    })
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    run = ws.create_sync("d", source=dfsync.sources.frame(table), primary_key="id",
                         destination=dfsync.destinations.duckdb(out, table="t")).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(out, read_only=True)
    try:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 't'").fetchall())
        rows = con.execute("SELECT d, l, t::VARCHAR FROM t ORDER BY id").fetchall()
    finally:
        con.close()
    assert types["d"] == "DATE" and types["l"] == "DATE[]", types
    assert rows == [(dt.date(1969, 12, 31), [dt.date(2024, 2, 29)], "1970-01-04 00:00:00.005"),
                    (None, None, "1970-01-01 00:00:00")]


def test_pandas_arrow_dates_and_fixed_offset_zones(tmp_path):
    """pandas columns backed by Arrow date64 (pd.ArrowDtype(pa.date64())) arrived as TIMESTAMP at
    midnight, as an Arrow table's did; a column in a fixed-offset zone (UTC+05:30, what
    pd.to_datetime makes of '...+05:30') was refused with polars' text and the advice to send it
    as text. Dates arrive as dates; the fixed offset names the conversion that keeps the instants."""
    import datetime as dt

    import pyarrow as pa

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.duckdb")
    df = pd.DataFrame({"id": [1, 2], "d": pd.Series([dt.date(1960, 5, 6), None], dtype=pd.ArrowDtype(pa.date64()))})
    run = ws.create_sync("d", source=dfsync.sources.frame(df), primary_key="id",
                         destination=dfsync.destinations.duckdb(out, table="t")).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(out, read_only=True)
    try:
        assert con.execute("SELECT typeof(d), d FROM t ORDER BY id").fetchall() == [
            ("DATE", dt.date(1960, 5, 6)), ("DATE", None)]
    finally:
        con.close()
    zoned = pd.DataFrame({"id": [1], "ts": pd.to_datetime(["2024-01-01 10:00:00+05:30"])})
    with pytest.raises(ConfigError, match=r"column 'ts'.*tz_convert\('UTC'\)"):
        ws.create_sync("z", source=dfsync.sources.frame(zoned), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "z.duckdb"), table="t"))
    zoned["ts"] = zoned["ts"].dt.tz_convert("UTC")
    run = ws.create_sync("z", source=dfsync.sources.frame(zoned), primary_key="id",
                         destination=dfsync.destinations.duckdb(str(tmp_path / "z.duckdb"), table="t")).run(progress=False)
    assert run.status == "success", run.error


@pytest.mark.parametrize("kind", ["polars", "pandas"])
def test_a_column_with_an_empty_name_is_refused(kind, tmp_path):
    """A column named '' was staged by DuckDB as 'v1' and the run said success; beside a real
    column 'v1', that one arrived as 'v1_1' and the destination's 'v1' held the unnamed column's
    values. create_sync refuses the empty name (and a run given such a frame fails), naming the fix;
    nothing is written."""
    import duckdb
    import polars as pl

    data = {"id": [1, 2], "": [10, 20], "v1": [7, 8]}
    df = pl.DataFrame(data) if kind == "polars" else pd.DataFrame(data)
    path = str(tmp_path / "wh.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.duckdb(path, "t")
    with pytest.raises(dfsync.ConfigError, match="empty name"):
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest, primary_key="id")
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2], "v1": [7, 8]})),
                          destination=dest, primary_key="id")
    with pytest.raises(dfsync.ConfigError, match="empty name"):
        sync.run(source=dfsync.sources.frame(df), progress=False)
    sync.run(progress=False).raise_for_status()
    with duckdb.connect(path, read_only=True) as con:
        assert con.sql("SELECT id, v1 FROM t ORDER BY id").fetchall() == [(1, 7), (2, 8)]
        assert [c[0] for c in con.sql("DESCRIBE t").fetchall()] == ["id", "v1"]
    with pytest.raises(dfsync.ConfigError, match="NUL character"):
        ws.create_sync("n", source=dfsync.sources.frame(pl.DataFrame({"id": [1], "a\x00b": [1]})),
                       destination=dfsync.destinations.duckdb(path, "n"), primary_key="id")


@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres", "parquet"])
def test_arrow_uuid_columns_arrive_as_uuid_text(kind, request, tmp_path):
    """An Arrow uuid column (pa.uuid(), e.g. from ADBC or a Parquet UUID) arrived as 16 raw bytes:
    polars, which has no UUID type, reads it as binary, and every destination got a BLOB. It arrives
    as the canonical text, the form a DuckDB UUID and a PostgreSQL uuid arrive in (pandas frames backed
    by Arrow too); inside a list or struct it is refused at create_sync, naming the column."""
    import uuid

    import pyarrow as pa

    from tests.plugins.targets import TARGETS

    ids = [uuid.UUID("9ad1da64-9f55-4f6e-8a3b-0c1d2e3f4a5b"), uuid.UUID(int=0)]
    u = pa.array([ids[0].bytes, ids[1].bytes, None], pa.uuid())
    target = TARGETS[kind](request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    table = pa.table({"id": [1, 2, 3], "u": u})
    frame = pd.DataFrame({"id": [4], "u": pd.array(u.slice(0, 1), dtype=pd.ArrowDtype(pa.uuid()))})
    for name, src in (("arrow", table), ("pandas", frame)):
        run = ws.create_sync(name, source=dfsync.sources.frame(src), primary_key="id",
                             destination=target.make(name)).run(progress=False)
        assert run.status == "success", run.error
        assert ws.sync(name).schema().filter(pl.col("field") == "u")["type"].to_list() in (["string"], ["large_string"])
    got = dict(target.read("arrow").select("id", "u").iter_rows())
    assert got == {1: str(ids[0]), 2: "00000000-0000-0000-0000-000000000000", 3: None}
    assert dict(target.read("pandas").select("id", "u").iter_rows()) == {4: str(ids[0])}
    nested = pa.table({"id": [1], "l": pa.ListArray.from_arrays(pa.array([0, 1]), u.slice(0, 1))})
    with pytest.raises(dfsync.DfsyncError, match=r"column 'l'.*UUIDs.*16 raw bytes.*text form"):
        ws.create_sync("nested", source=dfsync.sources.frame(nested), primary_key="id", destination=target.make("n"))


def test_time_zone_aware_nanoseconds_reach_sqlite_and_serve_as_a_cursor(tmp_path):
    """A time-zone-aware nanosecond timestamp (pandas' and pyarrow's unit, so a Parquet file they
    wrote) is staged by DuckDB 2 as TIMESTAMPTZ_NS, for which it has no isinf(): every run of such a
    source failed with a raw BinderException on every destination but DuckDB, and an incremental
    sync with it as the cursor failed even to DuckDB."""
    import sqlite3

    at = pl.Series(["2024-03-10 03:30", "2024-11-03 12:00"]).str.to_datetime(time_unit="ns")
    df = pl.DataFrame({"id": [1, 2], "at": at.dt.replace_time_zone("America/New_York")})
    df.write_parquet(tmp_path / "in.parquet")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    out = str(tmp_path / "out.sqlite")
    sync = ws.create_sync("tz", source=dfsync.sources.files(str(tmp_path / "in.parquet")),
                          destination=dfsync.destinations.sqlite(out, "t"), primary_key="id",
                          sync_mode="incremental", cursor_field="at")
    assert sync.run(progress=False).status == "success"
    pl.concat([df, pl.DataFrame({"id": [3], "at": df["at"][1:]})]).write_parquet(tmp_path / "in.parquet")
    run = sync.run(progress=False)  # a row at the cursor's own instant
    assert run.status == "success", run.error
    assert (run.counts["inserted"], run.counts["unchanged"]) == (1, 1), run.counts
    with sqlite3.connect(out) as con:
        assert [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")] == [1, 2, 3]


def test_a_pandas_object_column_of_only_none_takes_the_type_of_its_first_values(tmp_path):
    """polars read an object column of only None as text: a SQLite column of TEXT affinity, into which the
    next run's floats were refused (SchemaMismatchError). It is polars' Null now, as in a polars frame."""
    import sqlite3

    first = pd.DataFrame({"id": [1, 2], "discount": pd.Series([None, None], dtype=object)})
    assert dfsync.sources.frame(first).schema()["discount"] == pl.Null
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.sqlite")
    sync = ws.create_sync("s", source=dfsync.sources.frame(first), primary_key="id",
                          destination=dfsync.destinations.sqlite(path, table="t"))
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=pd.DataFrame({"id": [1, 2, 3], "discount": [0.125, None, 2.5]}), progress=False)
    assert run.status == "success", run.error
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, discount, typeof(discount) FROM t ORDER BY id").fetchall()
    declared = {r[1]: r[2] for r in con.execute("PRAGMA table_info(t)")}
    con.close()
    assert rows == [(1, 0.125, "real"), (2, None, "null"), (3, 2.5, "real")]
    assert declared["discount"] == "REAL"

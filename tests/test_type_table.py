"""Every type of the type table (docs/SCHEMA.md) through every destination: what is read back,
through each database's own client, equals what was sent (NaN, infinities, Unicode, time zone
offsets, nulls in every type), or the run refuses it before anything is sent."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pyarrow.parquet as pq
import pytest

import dfsync
from tests.plugins.targets import TARGETS
from tests.test_schema_drift import _http_target  # noqa: F401 - the HTTP server fixture's target

IST = timezone(timedelta(hours=5, minutes=30))
ROWS = {
    "i8": ([-128, 127], pl.Int8), "i16": ([-32768, 32767], pl.Int16), "i32": ([-(2**31), 2**31 - 1], pl.Int32),
    "i64": ([-(2**63), 2**63 - 1], pl.Int64), "u8": ([0, 255], pl.UInt8), "u16": ([0, 65535], pl.UInt16),
    "u32": ([0, 2**32 - 1], pl.UInt32), "u64": ([0, 2**63 - 1], pl.UInt64),
    "f32": ([1.5, -0.25], pl.Float32), "f64": ([0.1, 1e-300], pl.Float64),
    "inf": ([float("inf"), float("-inf")], pl.Float64), "nan": ([float("nan"), 2.5], pl.Float64),
    "dec": ([Decimal("12345678901234567.8901"), Decimal("-0.0001")], pl.Decimal(22, 4)),
    "s": (["é🚀 ü\u0301 日本", "'\"; --"], pl.String), "b": ([True, False], pl.Boolean),
    "d": ([date(1970, 1, 1), date(2262, 4, 11)], pl.Date),
    "ts": ([datetime(2024, 2, 29, 23, 59, 59, 999999), datetime(1900, 1, 1)], pl.Datetime("us")),
    "tz": ([datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc), datetime(2024, 1, 1, 12, 0, tzinfo=IST)],
           pl.Datetime("us", "UTC")),
    "dur": ([timedelta(days=1, seconds=3, microseconds=5), timedelta(0)], pl.Duration("us")),
    "bin": ([b"\x00\xff", b""], pl.Binary),
    "l": ([[1, None, 3], []], pl.List(pl.Int64)),
    "st": ([{"a": 1, "b": "x"}, {"a": None, "b": None}], pl.Struct({"a": pl.Int64, "b": pl.String})),
}
#: what each destination cannot keep, refused before sending (docs/SCHEMA.md)
REFUSED = {"sqlite": {"nan"}, "http": {"nan", "inf"}, "parquet": {"dur"}, "mysql": {"nan", "inf", "dur"},
           "delta": {"dur"}}
FIX = {"nan": "fill_nan", "inf": "is_infinite", "dur": "total_microseconds"}


def frame(columns: list[str]) -> pl.DataFrame:
    data = {"id": [1, 2, 3]}
    schema: dict = {"id": pl.Int64}
    for c in columns:
        values, dtype = ROWS[c]
        data[c] = [*values, None]  # a null in every type
        schema[c] = dtype
    return pl.DataFrame(data, schema=schema)


def _ts(v):
    return datetime.fromisoformat(v) if isinstance(v, str) else v


def normal(kind: str, col: str, v):
    """A value read back by the destination's own client, in Python terms."""
    if v is None:
        return None
    if col in ("l", "st") and isinstance(v, str):
        return json.loads(v)
    if col == "dec" and isinstance(v, str):
        return Decimal(v)
    if col == "b" and isinstance(v, int):
        return bool(v)
    if col == "d" and isinstance(v, str):
        return date.fromisoformat(v)
    if col == "ts" and isinstance(v, str):
        return _ts(v)
    if col == "tz":
        v = _ts(v)
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    if col == "bin":
        if isinstance(v, str):
            import base64

            return base64.b64decode(v)
        return bytes(v)
    if col == "dur":
        if isinstance(v, str):
            return v
        if hasattr(v, "days") and hasattr(v, "nanoseconds") and not isinstance(v, timedelta):
            return timedelta(days=v.days, microseconds=v.nanoseconds // 1000)
    if col in ("f32", "f64", "inf", "nan") and isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def expected(col: str, v):
    if v is None:
        return None
    if col in ("nan",) and isinstance(v, float) and math.isnan(v):
        return "nan"
    if col == "st":
        return v
    return v


def read_rows(kind: str, target, cols: list[str]) -> list[dict]:
    if kind == "duckdb":
        import duckdb

        con = duckdb.connect(target.path, read_only=True)
        cur = con.execute("SELECT * FROM t ORDER BY id")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        con.close()
    elif kind == "parquet":
        rows = sorted(pq.read_table(target.path).to_pylist(), key=lambda r: r["id"])
    elif kind == "sqlite":
        con = sqlite3.connect(target.path)
        cur = con.execute("SELECT * FROM t ORDER BY id")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        con.close()
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(target.path) as con:
            cur = con.execute("SELECT * FROM t ORDER BY id")
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    elif kind == "mysql":
        server, db = target.path
        con = server.connect(db)
        with con.cursor() as cur:  # FLOAT travels as 6-digit text: its exact value as a double
            cur.execute("SELECT *, CAST(f32 AS DOUBLE) AS f32_exact FROM t ORDER BY id" if "f32" in cols
                        else "SELECT * FROM t ORDER BY id")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        con.close()
        for r in rows:
            if "f32_exact" in r:
                r["f32"] = r.pop("f32_exact")
            if r.get("tz") is not None:  # DATETIME holds the UTC wall clock
                r["tz"] = r["tz"].replace(tzinfo=timezone.utc)
    elif kind == "delta":
        import deltalake

        rows = sorted(deltalake.DeltaTable(target.path).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    else:
        by_id: dict = {}
        for r in target.path.delivered():
            by_id.setdefault(r["id"], {}).update(r)
        rows = [by_id[k] for k in sorted(by_id)]
    return [{c: normal(kind, c, r.get(c)) for c in ["id", *cols]} for r in rows]


class Dest:
    """``duckdb-staged``: the DuckDB destination through the staged path (a batch size given; without
    one, a first load into a table the run creates is loaded in place, dfsync/_fused.py)."""

    def __init__(self, kind: str, request, tmp_path) -> None:
        self.kind = "duckdb" if kind == "duckdb-staged" else kind
        self.sync_options = {"batch_size": 1000} if kind == "duckdb-staged" else {}
        if self.kind == "duckdb":
            self.path = str(tmp_path / "dest.duckdb")
            self.make = lambda: dfsync.destinations.duckdb(self.path, table="t")
        elif kind == "parquet":
            self.path = str(tmp_path / "lake" / "data.parquet")
            self.make = lambda: dfsync.destinations.parquet(str(tmp_path / "lake"))
        elif kind == "sqlite":
            self.path = str(tmp_path / "dest.sqlite")
            self.make = lambda: dfsync.destinations.sqlite(self.path, table="t")
        elif kind == "postgres":
            self.path = request.getfixturevalue("pg_server").new_database()
            self.make = lambda: dfsync.destinations.postgres(self.path, table="t")
        elif kind == "mysql":
            server = request.getfixturevalue("mariadb_server")
            self.path = (server, server.new_database())
            self.make = lambda: dfsync.destinations.mysql(server.uri(self.path[1]), table="t")
        elif kind == "delta":
            self.path = str(tmp_path / "delta" / "t")
            self.make = lambda: dfsync.destinations.delta(self.path)
        else:
            self.path = request.getfixturevalue("http_server")
            self.make = lambda: dfsync.destinations.http(self.path.url + "/t", retry_initial_wait=0.01,
                                                         max_retries=2, timeout=5.0)


KINDS = ["duckdb", "parquet", "sqlite", "postgres", "mysql", "delta", "http"]
#: the DuckDB destination both ways: loaded in place (a first load), and staged
BOTH_DUCKDB = [*KINDS, "duckdb-staged"]
_ = TARGETS  # the postgres plugin registers the pg_server fixture


@pytest.mark.parametrize("kind", BOTH_DUCKDB)
def test_every_type_reads_back_equal(kind, request, tmp_path):
    dest = Dest(kind, request, tmp_path)
    kind = dest.kind
    cols = [c for c in ROWS if c not in REFUSED.get(kind, ())]
    df = frame(cols)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    run = ws.create_sync("types", source=dfsync.sources.frame(df), destination=dest.make(),
                         primary_key="id", **dest.sync_options).run(progress=False)
    assert run.status == "success", run.error
    got = read_rows(kind, dest, cols)
    want = [{c: normal("want", c, expected(c, r[c])) for c in ["id", *cols]} for r in df.to_dicts()]
    for g, w in zip(got, want, strict=True):
        for c in ["id", *cols]:
            if c == "dur" and isinstance(g[c], str):  # text durations (SQLite, HTTP): DuckDB's interval text
                continue
            assert g[c] == w[c], (kind, c, g[c], w[c])
    assert len(got) == 3


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_values_a_destination_cannot_keep_are_refused_before_sending(kind, request, tmp_path):
    dest = Dest(kind, request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    for col in sorted(REFUSED[kind]):
        try:  # refused at create_sync when the type says it, else by the run before anything is sent
            run = ws.create_sync(f"s_{col}", source=dfsync.sources.frame(frame([col])), destination=dest.make(),
                                 primary_key="id").run(progress=False)
        except dfsync.errors.SchemaMismatchError as exc:
            assert repr(col) in str(exc) and FIX[col] in str(exc), str(exc)
            assert ws.syncs().filter(pl.col("name") == f"s_{col}").height == 0
            continue
        assert run.status == "failed" and repr(col) in run.error and FIX[col] in run.error, run.error
        assert run.counts["sent"] == 0


def test_nanoseconds_postgresql_would_round_are_refused_before_sending(request, tmp_path):
    dest = Dest("postgres", request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2], "ts": pl.Series([1577836800123456789, 1577836800123456000]).cast(pl.Datetime("ns"))})
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id").run(progress=False)
    assert run.status == "failed" and "'ts'" in run.error and "truncate" in run.error and run.counts["sent"] == 0
    ok = df.with_columns(pl.col("ts").dt.truncate("1us"))  # whole microseconds go in exactly
    run = ws.create_sync("s", source=dfsync.sources.frame(ok), destination=dest.make(), primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    assert [r["ts"] for r in read_rows("postgres", dest, ["ts"])] == ok["ts"].to_list()


def test_a_nul_character_postgresql_cannot_store_is_refused_before_sending(request, tmp_path, pg_server):
    """PostgreSQL's text, arrays and jsonb cannot hold U+0000: a string with one failed the run
    with libpq's raw COPY error after the table was made; it is refused before anything is sent,
    naming the column, and the fix it gives reads back equal. A backslash followed by 'u0000'
    (six characters of text) is not a NUL and goes in as it is."""
    dest = Dest("postgres", request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2], "s": ["a\x00b", "ok"], "l": [["x", "y\x00"], None],
                       "st": [{"a": "q\x00"}, {"a": None}]})
    for col in ("s", "l", "st"):
        run = ws.create_sync(f"s_{col}", source=df.select("id", col), destination=dest.make(),
                             primary_key="id").run(progress=False)
        assert run.status == "failed" and run.counts["sent"] == 0, run.error
        assert f"column {col!r}" in run.error and "NUL" in run.error and "Nothing was sent" in run.error, run.error
        assert pg_server.execute("SELECT to_regclass('t') IS NULL", dbname=dest.path.rsplit("/", 1)[1]) == [(True,)]
    fix = pl.col("s").str.replace_all(chr(0), "", literal=True)
    assert "str.replace_all(chr(0), '', literal=True)" in ws.create_sync(
        "s_s", source=df.select("id", "s"), destination=dest.make(), primary_key="id").run(progress=False).error
    backslash = pl.DataFrame({"id": [1, 2], "s": ["a", "b"], "st": [{"a": "\\u0000"}, {"a": "\\\\u0000"}]})
    run = ws.create_sync("s_s", source=df.select("id", fix.alias("s")).join(backslash.select("id", "st"), on="id"),
                         destination=dest.make(), primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    rows = read_rows("postgres", dest, ["s", "st"])
    assert [r["s"] for r in rows] == ["ab", "ok"]
    assert [normal("postgres", "st", r["st"]) for r in rows] == [{"a": "\\u0000"}, {"a": "\\\\u0000"}]


def test_the_nul_check_reads_uuid_and_enum_columns_as_text(request, tmp_path):
    """A DuckDB query's UUID and ENUM columns are staged with those types; the NUL check's
    contains() has no UUID form and failed the run with a raw Binder Error."""
    dest = Dest("postgres", request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    query = ("SELECT i::INT AS id, ('00000000-0000-0000-0000-00000000000' || i)::UUID AS u, "
             "'a'::ENUM('a', 'b') AS e FROM range(3) t(i)")
    run = ws.create_sync("s", source=dfsync.sources.duckdb_query(query), destination=dest.make(),
                         primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    rows = read_rows("postgres", dest, ["u", "e"])
    assert [str(r["u"]) for r in rows] == [f"00000000-0000-0000-0000-00000000000{i}" for i in range(3)]
    assert [r["e"] for r in rows] == ["a"] * 3


def test_nanosecond_times_and_durations_get_a_fix_that_polars_can_run(request, tmp_path):
    """The refusal of nanosecond times of day and durations suggested pl.col(c).dt.truncate('1us'),
    which polars refuses for those types (it truncates datetimes only); each type gets an
    expression that runs, and with it the run succeeds and reads back equal."""
    dest = Dest("postgres", request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2], "t": pl.Series([43_200_000_000_123, 1_000]).cast(pl.Time),
                       "d": pl.Series([1_999, -5_000], dtype=pl.Duration("ns"))})
    fixes = {"t": "(pl.col('t').cast(pl.Int64) // 1000 * 1000).cast(pl.Time)", "d": "pl.col('d').cast(pl.Duration('us'))"}
    for col, fix in fixes.items():
        run = ws.create_sync(f"s_{col}", source=df.select("id", col), destination=dest.make(),
                             primary_key="id").run(progress=False)
        assert run.status == "failed" and run.counts["sent"] == 0 and fix in run.error, run.error
        mapping = {"id": "id", col: eval(fix, {"pl": pl})}
        run = ws.create_sync(f"s_{col}", source=df.select("id", col), destination=dest.make(), primary_key="id",
                             mapping=mapping).run(progress=False)
        assert run.status == "success", run.error
        want = df.select(mapping[col].alias(col))[col].to_list()
        got = [r[col] for r in read_rows("postgres", dest, [col])]
        assert got == want and got[0] is not None


def test_a_uint64_above_sqlites_largest_integer_is_refused_before_sending(tmp_path):
    """SQLite integers are signed 64-bit: 2**63 + 5 used to fail the whole run with a bare
    ArrowInvalid from the batch's cast; it is refused naming the column, and the exact-decimal
    cast the message gives reads back equal."""
    import sqlite3

    path = str(tmp_path / "dest.sqlite")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2, 3], "u": [1, 2**63 + 5, 2**64 - 1]}, schema_overrides={"u": pl.UInt64})
    sync = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.sqlite(path, "t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
    assert "'u'" in run.error and "9223372036854775813" in run.error and "pl.Decimal(20, 0)" in run.error
    assert "ArrowInvalid" not in run.error
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.sqlite(path, "t"),
                         primary_key="id", mapping={"id": "id", "u": pl.col("u").cast(pl.Decimal(20, 0))}).run(progress=False)
    assert run.status == "success", run.error
    got = [int(v) for (v,) in sqlite3.connect(path).execute("SELECT u FROM t ORDER BY id")]
    assert got == [1, 2**63 + 5, 2**64 - 1]



@pytest.mark.parametrize("kind", BOTH_DUCKDB)
def test_nan_and_infinities_inside_lists_and_structs(kind, request, tmp_path):
    """Where a list or struct is written as JSON (SQLite and MySQL JSON, PostgreSQL jsonb, HTTP
    bodies), a NaN or infinity inside has no form: HTTP sent it as null without a word, MySQL
    failed the batch with 'Syntax error in JSON text', PostgreSQL rejected the rows, SQLite
    stored text no JSON reader takes. The run refuses it before anything is sent, naming the
    column; destinations with native nested types keep it, and so do PostgreSQL arrays. Text
    that spells NaN is not a number and goes through."""
    cases = {"l": pl.DataFrame({"id": [1, 2], "l": [[1.5], [0.5, float("nan")]]}),
             "st": pl.DataFrame({"id": [1, 2], "st": [{"a": 1.0, "s": "x"}, {"a": float("-inf"), "s": None}]}),
             "text": pl.DataFrame({"id": [1, 2], "st": [{"a": 1.0, "s": "NaN,Infinity"}, {"a": None, "s": "[NaN]"}]})}
    for case, df in cases.items():
        col = df.columns[1]
        if kind == "http":
            request.getfixturevalue("http_server").reset()
        (tmp_path / case).mkdir()
        dest = Dest(kind, request, tmp_path / case)
        kind = dest.kind
        ws = dfsync.Workspace(str(tmp_path / f"ws-{case}.duckdb"))
        run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(),
                             primary_key="id", **dest.sync_options).run(progress=False)
        as_json = kind in ("sqlite", "mysql", "http") or (kind == "postgres" and case != "l")  # float8[] keeps them
        if as_json and case != "text":
            assert run.status == "failed" and run.counts["sent"] == 0, run.error
            assert f"column {col!r}" in run.error and "JSON" in run.error and "Nothing was sent" in run.error
            assert ws.store.run_row(run.id)["error_kind"] == "SchemaMismatchError"
            continue
        assert run.status == "success", run.error
        got = {r["id"]: r[col] for r in read_rows(kind, dest, [col])}
        if case == "l":
            assert got[1] == [1.5] and got[2][0] == 0.5 and math.isnan(got[2][1]), got
        elif case == "st":
            assert got[2]["a"] == float("-inf"), got
        else:
            assert got == {1: {"a": 1.0, "s": "NaN,Infinity"}, 2: {"a": None, "s": "[NaN]"}}, got


def test_bytes_inside_a_list_for_http_are_refused_with_a_fix_that_runs(request, tmp_path):
    """HTTP sends a binary column as base64, but bytes inside a list or struct reached polars'
    JSON writer, which panicked the run ('not yet implemented: Writing BinaryView to JSON', a
    PanicException out of sync.run()). create_sync refuses the column with the encoding to use,
    and that mapping delivers the bytes."""
    import base64

    dest = Dest("http", request, tmp_path)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    df = pl.DataFrame({"id": [1, 2], "l": [[b"\x00\xff", b""], None]})
    with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id")
    assert "'l'" in str(exc.value) and "bin.encode('base64')" in str(exc.value)
    fix = pl.col("l").list.eval(pl.element().bin.encode("base64"))
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id",
                         mapping={"id": "id", "l": fix}).run(progress=False)
    assert run.status == "success", run.error
    got = {r["id"]: r["l"] for r in dest.path.delivered()}
    assert [base64.b64decode(v) for v in got[1]] == [b"\x00\xff", b""] and got[2] is None


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_inside_lists_and_structs_arrive_as_bytes_or_are_refused(kind, request, tmp_path):
    """Bytes inside a list or struct written as JSON (SQLite and MySQL JSON text, PostgreSQL jsonb)
    arrived as DuckDB's escaped text of the bytes ('\\x00\\xFFab', a quote as '\\x22'): a string
    where the source had bytes, the run a success. Where a column is written as JSON such a column
    is refused at create_sync, naming it and the base64 encoding to use, as HTTP did already (and
    before sending, for a source create_sync could not read); elsewhere (DuckDB, Parquet, Delta,
    PostgreSQL's bytea[] for a list) the bytes arrive as they were."""
    raw = [b"\x00\xffab", b'hi"\\']
    cases = {"l": pl.DataFrame({"id": [1, 2], "l": [[raw[0]], [raw[1], None]]}),
             "st": pl.DataFrame({"id": [1, 2], "st": [{"x": raw[0], "n": 1}, {"x": raw[1], "n": 2}]})}
    for case, df in cases.items():
        col = df.columns[1]
        (tmp_path / case).mkdir()
        dest = Dest(kind, request, tmp_path / case)
        ws = dfsync.Workspace(str(tmp_path / f"ws-{case}.duckdb"))
        as_json = kind in ("sqlite", "mysql", "http") or (kind == "postgres" and case == "st")  # bytea[] keeps them
        if as_json:
            with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
                ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(), primary_key="id")
            assert f"column {col!r}" in str(exc.value) and "bin.encode('base64')" in str(exc.value)
            sync = ws.create_sync("s", source=dfsync.sources.frame(df.with_columns(pl.lit(None).alias(col))),
                                  destination=dest.make(), primary_key="id")
            run = sync.run(progress=False, source=dfsync.sources.frame(df))
            assert run.status == "failed" and run.counts["sent"] == 0 and f"column {col!r}" in run.error, run.error
            continue
        run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dest.make(),
                             primary_key="id", **dest.sync_options).run(progress=False)
        assert run.status == "success", run.error
        got = {r["id"]: r[col] for r in read_rows(dest.kind, dest, [col])}
        if case == "l":
            assert got == {1: [raw[0]], 2: [raw[1], None]}, got
        else:
            assert {k: (bytes(v["x"]), v["n"]) for k, v in got.items()} == {1: (raw[0], 1), 2: (raw[1], 2)}, got


def test_duckdb_types_whose_arrow_form_alters_the_value_are_refused_naming_the_way(tmp_path):
    """A DuckDB query's TIME WITH TIME ZONE arrived as a plain time without its offset
    ('12:00:00+05:30' read back 12:00:00), BIT and BIGNUM as DuckDB's internal bytes ('0101'
    read back b'\\x04\\xf5'), without a word. Each is refused when the sync is created, also
    inside a list or struct, naming the column and the selects that keep the value, which then
    read back equal."""
    import duckdb

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    selects = {"tt": "'12:00:00+05:30'::TIMETZ", "b": "'0101'::BIT", "n": "12345678901234567890123456789::BIGNUM",
               "l": "['23:00:00-02:00'::TIMETZ]", "st": "{'x': '1'::BIT}"}
    for col, sql in selects.items():
        with pytest.raises(dfsync.errors.SourceError) as exc:
            ws.create_sync("s", source=dfsync.sources.duckdb_query(f"SELECT 1 AS id, {sql} AS {col}"),
                           destination=dfsync.destinations.duckdb(path, "t"), primary_key="id")
        assert f"column {col!r}" in str(exc.value) and f"{col}::VARCHAR" in str(exc.value), str(exc.value)
    query = ("SELECT 1 AS id, timezone('UTC', '12:00:00+05:30'::TIMETZ)::TIME AS tt, '0101'::BIT::VARCHAR AS b, "
             "12345678901234567890123456789::BIGNUM::HUGEINT AS n")
    run = ws.create_sync("s", source=dfsync.sources.duckdb_query(query),
                         destination=dfsync.destinations.duckdb(path, "t"), primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT tt::VARCHAR, b, n::VARCHAR FROM t").fetchall() == [
        ("06:30:00", "0101", "12345678901234567890123456789")]
    con.close()


def test_hugeint_values_wider_than_38_digits_are_refused_naming_the_column(tmp_path):
    """HUGEINT and UHUGEINT travel as decimal(38, 0): a DuckDB query's 10**38 was written into the
    destination's DECIMAL(38,0) as it was (its smallest HUGEINT made reading the column back crash
    DuckDB) and into SQLite's decimal text, and the run said success. A value wider than 38 digits
    fails the run before anything is sent (read natively or from a database file), naming the column
    and the cast that keeps it; values that fit arrive as before."""
    import duckdb

    db = str(tmp_path / "src.duckdb")
    with duckdb.connect(db) as con:
        con.execute("CREATE TABLE s (id INT, \"h'x\" HUGEINT, u UHUGEINT)")
        con.execute(f"INSERT INTO s VALUES (1, -{'9' * 38}, 1), (2, NULL, {10 ** 38 + 1})")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = dfsync.destinations.sqlite(str(tmp_path / "d.sqlite"), table="t")
    for query, database, col in [("SELECT * FROM s", db, "u"), (f"SELECT 1 AS id, {10 ** 38}::HUGEINT AS \"h'x\"", None, "h'x")]:
        run = ws.create_sync("s", source=dfsync.sources.duckdb_query(query, database=database), destination=dest,
                             primary_key="id").run(progress=False)
        assert run.status == "failed" and run.counts["sent"] == 0, run.error
        assert f"column {col!r}" in run.error and "::VARCHAR keeps every digit" in run.error, run.error
    run = ws.create_sync("s", source=dfsync.sources.duckdb_query("SELECT id, \"h'x\", u::VARCHAR AS u FROM s",
                                                                 database=db),
                         destination=dest, primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    assert sqlite3.connect(str(tmp_path / "d.sqlite")).execute('SELECT "h\'x", u FROM t ORDER BY id').fetchall() == [
        ("-" + "9" * 38, "1"), (None, str(10 ** 38 + 1))]

@pytest.mark.parametrize("kind", ["duckdb", "duckdb-staged", "sqlite", "parquet", "http"])
def test_infinite_timestamps_and_dates_reach_duckdb_and_are_refused_elsewhere(kind, request, tmp_path, pg_server):
    """PostgreSQL's 'infinity' arrived from its driver as a date 292,277 years BC (the epoch shift
    overflowed) and was delivered as such to DuckDB; DuckDB's own infinities failed SQLite and
    PostgreSQL with raw driver errors, left Delta retrying a panicking writer, and raised a
    PanicException out of an HTTP run. DuckDB keeps them; everywhere else the run refuses them
    before anything is sent, naming the column, and the mapping it gives sends NULL."""
    import duckdb

    src = pg_server.new_database()
    pg_server.execute("CREATE TABLE s (id int PRIMARY KEY, ts timestamp, tz timestamptz, d date, tza timestamptz[])",
                      dbname=src.rsplit("/", 1)[1])
    pg_server.execute("INSERT INTO s VALUES (1, 'infinity', '-infinity', 'infinity', '{infinity}'), "
                      "(2, '2020-01-01', '2020-01-01Z', '2020-01-01', '{2020-01-01Z}')", dbname=src.rsplit("/", 1)[1])
    dest = Dest(kind, request, tmp_path)
    kind = dest.kind
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    source = dfsync.sources.database(src, "SELECT * FROM s")
    run = ws.create_sync("s", source=source, destination=dest.make(), primary_key="id",
                         **dest.sync_options).run(progress=False)
    if kind == "duckdb":
        assert run.status == "success", run.error
        con = duckdb.connect(dest.path, read_only=True)
        assert con.execute("SELECT ts::VARCHAR, tz::VARCHAR, d::VARCHAR, tza::VARCHAR FROM t ORDER BY id").fetchall() == [
            ("infinity", "-infinity", "infinity", "[infinity]"),  # in an array it arrived as 290279 BC
            ("2020-01-01 00:00:00", "2020-01-01 00:00:00+00", "2020-01-01", "['2020-01-01 00:00:00+00']")]
        con.close()
        return
    assert run.status == "failed" and run.counts["sent"] == 0, run.error
    assert "column 'ts'" in run.error and "infinity" in run.error and "Nothing was sent" in run.error, run.error
    fix = {"id": "id", **{c: pl.when(pl.col(c).dt.year().is_between(-9999, 9999)).then(pl.col(c)) for c in ("ts", "tz", "d")},
           "tza": pl.col("tza").list.eval(pl.when(pl.element().dt.year().is_between(-9999, 9999)).then(pl.element()))}
    query = dfsync.sources.duckdb_query("SELECT 1 AS id, 'infinity'::TIMESTAMP AS ts, '-infinity'::TIMESTAMPTZ AS tz, "
                                        "'infinity'::DATE AS d")
    run = ws.create_sync("s", source=query, destination=dest.make(), primary_key="id").run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and "column 'ts'" in run.error, run.error
    inside = dfsync.sources.duckdb_query("SELECT 1 AS id, ['infinity'::TIMESTAMP] AS tl")  # went out as is
    run = ws.create_sync("s", source=inside, destination=dest.make(), primary_key="id").run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and "column 'tl'" in run.error, run.error
    run = ws.create_sync("s", source=source, destination=dest.make(), primary_key="id", mapping=fix).run(progress=False)
    assert run.status == "success", run.error
    rows = read_rows(kind, dest, ["ts"])
    assert [r["ts"] for r in rows] == [None, datetime(2020, 1, 1)]


def test_polars_int128_and_durations_inside_lists_for_parquet_are_refused_at_create_sync(tmp_path):
    """A polars Int128 column has no Arrow form: create_sync let it through and the run failed
    with a bare "ArrowInvalid: Invalid or unsupported format string: '_pli128'" naming no
    column. A list of durations for Parquet (durations alone are refused) failed the run with
    pyarrow's 'Unhandled type for Arrow to Parquet schema conversion'. Both are refused when the
    sync is created, naming the column, and the cast given for Int128 reads back exact."""
    import duckdb

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    df = pl.DataFrame({"id": [1, 2], "big": pl.Series([2**100, -5], dtype=pl.Int128)})
    with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.duckdb(path, "t"),
                       primary_key="id")
    assert "'big'" in str(exc.value) and "pl.Decimal(38, 0)" in str(exc.value)
    run = ws.create_sync("s", source=dfsync.sources.frame(df), destination=dfsync.destinations.duckdb(path, "t"),
                         primary_key="id", mapping={"id": "id", "big": pl.col("big").cast(pl.Decimal(38, 0))}
                         ).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT big::VARCHAR FROM t ORDER BY id").fetchall() == [(str(2**100),), ("-5",)]
    con.close()
    durations = pl.DataFrame({"id": [1], "l": [[timedelta(seconds=5)]], "st": [{"d": timedelta(0)}]})
    for col in ("l", "st"):
        with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
            ws.create_sync(f"p_{col}", source=dfsync.sources.frame(durations.select("id", col)),
                           destination=dfsync.destinations.parquet(str(tmp_path / "lake")), primary_key="id")
        assert f"column {col!r}" in str(exc.value) and "total_microseconds" in str(exc.value)



def test_half_precision_floats_arrive_as_float32(tmp_path):
    """A polars Float16 column (also a pandas float16 one) failed the run with DuckDB's 'Unsupported
    Internal Arrow Type e', naming no column. It is staged and sent as float32, which holds every
    half-precision value exactly (inside lists and structs too); the next run is quiet."""
    import duckdb
    import numpy as np
    import pandas as pd

    df = pl.DataFrame({"id": [1, 2, 3], "f": pl.Series([0.1, None, 65504.0], dtype=pl.Float16),
                       "l": pl.Series([[0.5, None], None, []], dtype=pl.List(pl.Float16))})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("h", source=df, primary_key="id", destination=dfsync.destinations.duckdb(path, "h"))
    assert sync.run(progress=False).status == "success"
    assert sync.run(progress=False).counts["unchanged"] == 3
    panda = pd.DataFrame({"id": [1, 2], "f": np.array([1.5, np.nan], dtype=np.float16)})
    ws.create_sync("p", source=panda, primary_key="id", destination=dfsync.destinations.duckdb(path, "p")
                   ).run(progress=False).raise_for_status()
    with duckdb.connect(path, read_only=True) as con:
        assert con.sql("SELECT f, l FROM h ORDER BY id").fetchall() == [
            (float(np.float16(0.1)), [0.5, None]), (None, None), (65504.0, [])]
        assert con.sql("SELECT f FROM p ORDER BY id").fetchall() == [(1.5,), (None,)]
        assert con.sql("SELECT data_type FROM information_schema.columns WHERE table_name = 'h' "
                       "AND column_name = 'f'").fetchall() == [("FLOAT",)]

def test_a_parquet_files_durations_arrive_as_durations_not_their_raw_numbers(tmp_path):
    """DuckDB's Parquet reader reads a duration column as its stored integer: 1.5 s arrived as
    1500000 (written in microseconds) or 1500 (milliseconds) in a BIGINT column, the run said
    success, where the same frame given as sources.frame(df) arrives as an INTERVAL."""
    import duckdb

    df = pl.DataFrame({"id": [1, 2, 3], "us": [timedelta(seconds=1.5), timedelta(days=-1), None],
                       "l": [[timedelta(seconds=3)], [], None]}
                      ).with_columns(ms=pl.col("us").cast(pl.Duration("ms")))
    df.write_parquet(tmp_path / "src.parquet")
    path = str(tmp_path / "dest.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    run = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")), primary_key="id",
                         destination=dfsync.destinations.duckdb(path, "t")).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT * FROM t ORDER BY id").fetchall() == [tuple(r.values()) for r in df.to_dicts()]
    assert {r[1] for r in con.execute("DESCRIBE t").fetchall()} >= {"INTERVAL", "INTERVAL[]"}
    con.close()


def test_struct_fields_staging_would_rename_are_refused(tmp_path):
    """A struct with an unnamed field ('') was delivered with the field renamed 'element1' (DuckDB
    staging names it), and a field name given twice kept one value: the run said success. Both are
    refused at create_sync and, for a source that gains such a column later, before anything is
    sent; the JSON text the error proposes reads back with the field names as they were."""
    import duckdb
    import pyarrow as pa

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    unnamed = pa.table({"id": [1, 2], "s": pa.array([{"": 1, "b": 2}, {"": 3, "b": 4}],
                                                     pa.struct([("", pa.int64()), ("b", pa.int64())]))})
    twice = pa.table({"id": [1], "l": pa.array([[{"a": 1}]], pa.list_(pa.struct([("a", pa.int64())])))})
    twice = twice.set_column(1, "l", pa.array([[(1, 2)]], pa.list_(pa.struct([("a", pa.int64()), ("a", pa.int64())]))))
    for table, col, what in ((unnamed, "s", "unnamed"), (twice, "l", "named twice ('a')")):
        with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
            ws.create_sync(f"bad_{col}", source=dfsync.sources.frame(table),
                           destination=dfsync.destinations.duckdb(path, f"t_{col}"), primary_key="id")
        assert f"column {col!r}" in str(exc.value) and what in str(exc.value)
    # a sync created on good data, then run on a frame that gained the column: refused, nothing sent
    sync = ws.create_sync("later", source=dfsync.sources.frame(unnamed.drop_columns(["s"])),
                          destination=dfsync.destinations.duckdb(path, "t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    run = sync.run(source=dfsync.sources.frame(unnamed), progress=False)
    assert run.status == "failed" and "'s'" in run.error and "element1" in run.error
    con = duckdb.connect(path, read_only=True)
    assert [c[0] for c in con.execute("DESCRIBE t").fetchall()] == ["id"]
    con.close()
    # the way out the error names
    run = ws.create_sync("json", source=dfsync.sources.frame(unnamed), destination=dfsync.destinations.duckdb(path, "j"),
                         primary_key="id", mapping={"id": "id", "s": pl.col("s").struct.json_encode()}).run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    got = [json.loads(v) for (v,) in con.execute("SELECT s FROM j ORDER BY id").fetchall()]
    con.close()
    assert got == [{"": 1, "b": 2}, {"": 3, "b": 4}]



def test_a_parquet_file_gaining_an_unnamed_struct_field_is_refused(tmp_path):
    """DuckDB's Parquet reader renames a struct field '' ('element2' here): a file source that
    gained one between runs delivered {'a': 1, 'element2': 5} and said success. Refused naming the
    file and the column, nothing sent; the first load of such a file likewise."""
    import duckdb
    import pyarrow as pa

    src, path = str(tmp_path / "src.parquet"), str(tmp_path / "dest.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    pq.write_table(pa.table({"id": [1, 2], "s": pa.array([{"a": 1}, {"a": 2}], pa.struct([("a", pa.int64())]))}), src)
    sync = ws.create_sync("s", source=dfsync.sources.files(src), destination=dfsync.destinations.duckdb(path, "t"),
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    gained = pa.struct([("a", pa.int64()), ("", pa.int64())])
    pq.write_table(pa.table({"id": [1, 2], "s": pa.array([{"a": 1, "": 5}, {"a": 2, "": 6}], gained)}), src)
    run = sync.run(progress=False)
    assert run.status == "failed" and src in run.error and "'s'" in run.error and "unnamed" in run.error
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT s FROM t ORDER BY id").fetchall() == [({"a": 1},), ({"a": 2},)]
    con.close()
    with pytest.raises(dfsync.errors.SchemaMismatchError, match="unnamed"):
        ws.create_sync("new", source=dfsync.sources.files(src), destination=dfsync.destinations.duckdb(path, "n"),
                       primary_key="id")

@pytest.mark.parametrize("case", ["decimal256", "float16", "negative_scale", "decimal256_in_list", "fixed_offset"])
def test_arrow_types_polars_cannot_read_are_refused_naming_the_cast_that_works(case, tmp_path):
    """An Arrow table with a decimal256 column crashed create_sync with a polars PanicException
    ('operator does not support primitive Int256'); a float16 column failed the run with
    'Unsupported Internal Arrow Type e' and a negative-scale decimal with 'Decimal scale is not a
    valid integer', naming no column; a timestamp whose zone is a fixed offset ('+05:30') with
    polars' 'unable to parse time zone', saying nothing of what to do. Each is refused naming the
    column and an exact cast, and the table cast that way syncs and reads back equal."""
    from decimal import Decimal

    import duckdb
    import numpy as np
    import pyarrow as pa

    value, cast, expect, said = {
        "decimal256": (pa.array([Decimal("12.50")], pa.decimal256(20, 2)), pa.decimal128(20, 2), "12.50",
                       "pa.decimal128(20, 2)"),
        "float16": (pa.array(np.array([1.5], dtype=np.float16)), pa.float32(), "1.5", "pa.float32()"),
        "negative_scale": (pa.array([Decimal("1E+3")], pa.decimal128(5, -2)), pa.decimal128(7, 0), "1000",
                           "pa.decimal128(7, 0)"),
        "decimal256_in_list": (pa.array([[Decimal("2.5")]], pa.list_(pa.decimal256(10, 1))),
                               pa.list_(pa.decimal128(10, 1)), "[2.5]", "inside its list<item: decimal256(10, 1)>"),
        "fixed_offset": (pa.array([1_700_000_000], pa.timestamp("s", "+05:30")), pa.timestamp("s", "UTC"),
                         "2023-11-14 22:13:20+00", "pa.timestamp('s', 'UTC')"),
    }[case]
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    path = str(tmp_path / "dest.duckdb")
    table = pa.table({"id": [1], "v": value})
    with pytest.raises(dfsync.errors.SchemaMismatchError) as exc:
        ws.create_sync("s", source=dfsync.sources.frame(table), destination=dfsync.destinations.duckdb(path, "t"),
                       primary_key="id")
    assert "column 'v'" in str(exc.value) and said in str(exc.value), str(exc.value)
    fixed = table.set_column(1, "v", table["v"].cast(cast))
    run = ws.create_sync("s", source=dfsync.sources.frame(fixed), destination=dfsync.destinations.duckdb(path, "t"),
                         primary_key="id").run(progress=False)
    assert run.status == "success", run.error
    con = duckdb.connect(path, read_only=True)
    assert con.execute("SELECT v::VARCHAR FROM t").fetchall() == [(expect,)]
    con.close()

"""Bad input, one table: each case names the error class, what the message must say, and
proves that neither the workspace nor the destination changed.

Every case starts from a copy of the same baseline: a workspace whose sync ``base``
(``src.parquet`` -> ``dest.duckdb`` table ``people``, upsert) has delivered 20 rows. The
case then does one bad thing. For an error case the test checks:

* the error is the given :class:`dfsync.DfsyncError` subclass — raised, or recorded as the
  failed run's ``error_kind`` when the problem shows up while running;
* the message says what was wrong (``says``) and what to do (``todo``);
* the workspace (syncs, runs, delivered state) and the destination are as before, except
  for the failed run's own record and the sync's status where STATES.md wants them.

Cases whose id starts with ``ok-`` are *not* errors by design (huge strings, NaN and
infinity, emoji keys, SQL-looking identifiers ...): they must sync correctly, and the case
checks the destination holds exactly what was sent.

Every case runs on a workspace file and (``-m slow``) on a PostgreSQL workspace, whose
baseline is a template database copied per case; the damaged workspace *file* cases
(``test_damaged_workspace_file``) have no PostgreSQL counterpart.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync import errors
from dfsync._registry import sync_lock

N = 20
WORKSPACE_STORES = ("duckdb", "postgres")
SLOW_WORKSPACE_STORES = ("postgres",)


def people(n: int = N, **overrides: Any) -> pl.DataFrame:
    df = pl.DataFrame({
        "id": list(range(1, n + 1)),
        "name": [f"person {i}" for i in range(1, n + 1)],
        "score": [i * 1.5 for i in range(1, n + 1)],
        "seen_at": [datetime(2024, 1, 1) + timedelta(hours=i) for i in range(n)],
    })
    return df.with_columns(**{k: pl.Series(k, v) if isinstance(v, list) else v for k, v in overrides.items()})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[str, str]:
    """(work dir, pristine copy): sync 'base' delivered people() to dest.duckdb.

    Definitions store absolute paths, so every case works in the same directory, restored
    from the pristine copy first.
    """
    return _build_baseline(tmp_path_factory.mktemp("bad_input"), "ws.duckdb")


def _build_baseline(base: Path, target: str) -> tuple[str, str]:
    work, pristine = base / "w", base / "pristine"
    work.mkdir()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        people().write_parquet("src.parquet")
        ws = dfsync.Workspace(target)
        sync = ws.create_sync("base", source=dfsync.sources.files("src.parquet"),
                              destination=dfsync.destinations.duckdb("dest.duckdb", table="people"),
                              primary_key="id", destination_mode="upsert", batch_size=7)
        assert sync.run(progress=False).status == "success"
        ws.close()
    finally:
        os.chdir(cwd)
    shutil.copytree(work, pristine)
    return str(work), str(pristine)


@pytest.fixture(scope="module")
def pg_baseline(tmp_path_factory, pg_server) -> tuple[str, str, str]:
    """(work dir, pristine copy, template database): the same baseline, its workspace in schema
    ``ws`` of a database that each case copies (CREATE DATABASE ... TEMPLATE)."""
    uri = pg_server.new_database()
    work, pristine = _build_baseline(tmp_path_factory.mktemp("bad_input_pg"), f"{uri}?schema=ws")
    return work, pristine, uri


@pytest.fixture
def case_dir(ws_target, request, pg_server_if_postgres) -> tuple[str, str, str]:
    """(work dir, pristine copy, workspace target) of a case: the baseline, restored."""
    if not ws_target.startswith("postgresql://"):
        root, pristine = request.getfixturevalue("baseline")
        return root, pristine, "ws.duckdb"
    root, pristine, template = request.getfixturevalue("pg_baseline")
    name = "c_" + uuid.uuid4().hex[:12]
    pg_server_if_postgres.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}"')
    return root, pristine, f"{template.rsplit('/', 1)[0]}/{name}?schema=ws"


@pytest.fixture
def pg_server_if_postgres(ws_target, request):
    return request.getfixturevalue("pg_server") if ws_target.startswith("postgresql://") else None


class Ctx:
    """What a case may touch: the copied workspace, its source file and destination."""

    def __init__(self, root: str, target: str = "ws.duckdb") -> None:
        self.root = root
        self.target = target  # "ws.duckdb", or a postgresql:// URI
        self.ws = dfsync.Workspace(target)

    def write_source(self, df: pl.DataFrame, path: str = "src.parquet") -> None:
        df.write_parquet(path)

    def base(self) -> dfsync.Sync:
        return self.ws.sync("base")

    def run_base(self) -> dfsync.SyncRun:
        return self.base().run(progress=False)

    def create(self, name: str = "other", **kw: Any) -> dfsync.Sync:
        """create_sync with good defaults; a case overrides one thing."""
        args: dict[str, Any] = dict(source=dfsync.sources.files("src.parquet"),
                                    destination=dfsync.destinations.duckdb("dest.duckdb", table="people2"),
                                    primary_key="id")
        args.update(kw)
        return self.ws.create_sync(name, **args)

    def dest(self, table: str = "people") -> pl.DataFrame:
        con = duckdb.connect("dest.duckdb", read_only=True)
        try:
            return pl.from_arrow(con.sql(f'SELECT * FROM "{table.replace(chr(34), chr(34) * 2)}"').to_arrow_table())
        finally:
            con.close()


def snapshot(ctx: Ctx) -> dict[str, Any]:
    """Syncs, runs, batches, delivered state and records of the workspace, and every
    destination table (one workspace connection: each open of the file costs time)."""

    pg = ctx.target.startswith("postgresql://")

    def rows(con: Any, sql: str) -> list[dict[str, Any]]:
        if pg and sql.endswith(" ORDER BY ALL"):  # PostgreSQL has no ORDER BY ALL: sort here
            got = pl.from_arrow(con.sql(sql[:-len(" ORDER BY ALL")]).to_arrow_table()).to_dicts()
            return sorted(got, key=lambda r: [(v is None, str(v)) for v in r.values()])
        return pl.from_arrow(con.sql(sql).to_arrow_table()).to_dicts()  # type: ignore[union-attr]

    with ctx.ws.store._connect() as con:
        snap: dict[str, Any] = {
            "syncs": rows(con, "SELECT id, name, status, definition, definition_version, state_key, cursor_value, "
                               "schedule FROM syncs ORDER BY id"),
            "runs": rows(con, "SELECT id, sync_id, status, error, queried, inserted, updated, deleted, sent, "
                              "succeeded, failed, batches FROM runs ORDER BY id"),
            "batches": rows(con, "SELECT * FROM batches ORDER BY ALL"),
        }
        tables = [r[0] for r in con.execute(
            ("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND "
             if pg else "SELECT table_name FROM duckdb_tables() WHERE ") +
            "(table_name LIKE 'state\\_%' ESCAPE '\\' OR table_name LIKE 'rec\\_%' ESCAPE '\\') ORDER BY 1").fetchall()]
        for t in tables:
            snap[t] = rows(con, f"SELECT * FROM {t} ORDER BY ALL")
    con = duckdb.connect("dest.duckdb", read_only=True)
    try:
        for (t,) in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall():
            snap["dest." + t] = con.sql(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall()
    finally:
        con.close()
    return snap


@dataclass
class Case:
    id: str
    act: Callable[[Ctx], Any]  # raises, or returns a SyncRun that must have failed
    error: type[errors.DfsyncError] | None = None  # None: an ok- case (act asserts the result)
    says: tuple[str, ...] = ()  # the message names what was wrong ...
    todo: tuple[str, ...] = ()  # ... and what to do (any of these words)
    new_run: bool = False  # a failed run is recorded (its row and the sync status may change)


# ---------------------------------------------------------------------- case actions
def _ok_roundtrip(ctx: Ctx, df: pl.DataFrame, table: str = "okt", key: str | list[str] = "id",
                  **kw: Any) -> None:
    ctx.write_source(df, "ok.parquet")
    sync = ctx.create("ok", source=dfsync.sources.files("ok.parquet"),
                      destination=dfsync.destinations.duckdb("dest.duckdb", table=table), primary_key=key, **kw)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    got = ctx.dest(table).select(df.columns).sort(key)
    want = df.sort(key)
    for col in df.columns:
        a, b = got[col].to_list(), want[col].to_list()
        assert [("nan" if isinstance(x, float) and math.isnan(x) else x) for x in a] == \
               [("nan" if isinstance(x, float) and math.isnan(x) else x) for x in b], col
    assert sync.run(progress=False).counts["sent"] == 0


def _corrupt(ctx: Ctx, how: str) -> None:
    ctx.ws.close()
    data = Path("ws.duckdb").read_bytes()
    if how == "garbage":
        data = b"this is not a database" * 100
    elif how == "truncated":
        data = data[: len(data) // 3]
    elif how == "header-only":
        data = data[:12288]
    elif how == "zeroed-header":
        data = b"\0" * 4096 + data[4096:]
    with open("ws.duckdb", "wb") as fh:
        fh.write(data)
    before = Path("ws.duckdb").read_bytes()
    try:  # damage may show when the file is opened, or when a page is first read
        ws = dfsync.Workspace("ws.duckdb")
        ws.syncs()
        ws.sync("base").runs()
        ws.sync("base").delivered()
        raise AssertionError("a damaged workspace was used without an error")
    finally:  # never a silent reset: the bytes are as they were
        assert Path("ws.duckdb").read_bytes() == before


def _parquet_parts(first: pl.DataFrame, second: pl.DataFrame) -> str:
    os.makedirs("parts", exist_ok=True)
    first.write_parquet("parts/a.parquet")
    second.write_parquet("parts/b.parquet")
    return "parts/*.parquet"


def _parquet_glob_types_differ(ctx: Ctx) -> Any:
    """DuckDB read every file as the first file's types: b's 2.5 went in as 2 (and a naive
    timestamp as UTC, a text as a number), with no word."""
    glob = _parquet_parts(people(10).with_columns(pl.col("score").cast(pl.Int64)),
                          people(20).slice(10).with_columns(pl.col("score") + 1.0))
    return ctx.base().run(progress=False, source=dfsync.sources.files(glob))


def _files_with_other_columns(ctx: Ctx, fmt: str) -> Any:
    """A later file with a column the first lacks: DuckDB (Parquet) and polars (NDJSON) dropped
    it silently; CSV files whose columns are in another order failed without naming the file."""
    a, b = people(10), people(20).slice(10)
    os.makedirs("parts", exist_ok=True)
    if fmt == "parquet":
        glob = _parquet_parts(a, b.with_columns(pl.lit("x").alias("extra")))
    elif fmt == "csv":
        a.write_csv("parts/a.csv")
        b.select(reversed(b.columns)).write_csv("parts/b.csv")
        glob = "parts/*.csv"
    else:
        a.write_ndjson("parts/a.ndjson")
        b.with_columns(pl.lit("x").alias("extra")).write_ndjson("parts/b.ndjson")
        glob = "parts/*.ndjson"
    return ctx.create(source=dfsync.sources.files(glob)).run(progress=False)


def _ndjson_key_after_the_inferred_rows(ctx: Ctx) -> Any:
    """polars takes NDJSON columns from the first 100 rows: a key first seen at row 150 was dropped."""
    rows = [{"id": i, "score": i * 1.5} | ({"late": "x"} if i == 150 else {}) for i in range(200)]
    Path("late.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ctx.create(source=dfsync.sources.files("late.ndjson")).run(progress=False)


def _ndjson_key_inside_an_object_after_the_inferred_rows(ctx: Ctx) -> Any:
    """The same inside an object, or in a list of objects: {"o": {"a": 1, "b": 2}} at row 150 arrived
    as {"a": 1} (and [{"a": 1, "b": 2}] as [{"a": 1}]), and the run said success."""
    rows = [{"id": i, "o": {"a": i} | ({"b": "x"} if i == 150 else {}), "l": [{"a": i} | ({"c": 1} if i == 160 else {})]}
            for i in range(200)]
    Path("nested.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ctx.create(source=dfsync.sources.files("nested.ndjson")).run(progress=False)


def _ndjson_value_does_not_parse(ctx: Ctx) -> dfsync.SyncRun:
    """A value past the rows polars infers an NDJSON key's type from: polars' message names neither
    the key nor the file (and DuckDB's wrapping added 'Detail: Python exception: Traceback')."""
    rows = [{"id": i, "score": i} for i in range(200)]
    rows[150]["score"] = 2.5
    Path("bad.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ctx.create(source=dfsync.sources.files("bad.ndjson")).run(progress=False)


def _ndjson_integer_a_float_rounds(ctx: Ctx) -> dfsync.SyncRun:
    """An integer beyond 2**53 in a key whose values mix integers and decimals: polars reads the key
    as floats, and 9007199254740993 arrived as 9007199254740992 with the run saying success."""
    rows = [{"id": 1, "amount": 1.5}, {"id": 2, "amount": 9007199254740993}, {"id": 3}]
    Path("big.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ctx.create(source=dfsync.sources.files("big.ndjson")).run(progress=False)


def _csv_value_does_not_parse(ctx: Ctx) -> dfsync.SyncRun:
    """A value past the rows polars infers a CSV column's type from (the first 100)."""
    scores = [str(i * 1.5) for i in range(200)]
    scores[150] = "oops"
    Path("bad.csv").write_text("id,score\n" + "".join(f"{i},{v}\n" for i, v in enumerate(scores)))
    return ctx.create(source=dfsync.sources.files("bad.csv")).run(progress=False)


def _csv_not_utf8(ctx: Ctx) -> dfsync.SyncRun:
    """A Latin-1 CSV file: polars said only 'invalid utf-8 sequence', naming no file, line or way out."""
    Path("latin1.csv").write_bytes("id,name\n1,ok\n2,caf\u00e9\n".encode("latin-1"))
    return ctx.create(source=dfsync.sources.files("latin1.csv")).run(progress=False)


def _frame_not_utf8(ctx: Ctx) -> dfsync.SyncRun:
    """A frame whose text column holds bytes that are not UTF-8 (Latin-1 viewed as text without a
    check): DuckDB said only 'Invalid unicode ... segment statistics update', naming no column."""
    import pyarrow as pa
    names = pa.array([b"ok", b"fine", b"caf\xe9"], pa.binary()).view(pa.string())
    df = pl.from_arrow(pa.table({"id": [1, 2, 3], "name": names}))
    return ctx.create(source=dfsync.sources.frame(df)).run(progress=False)


def _newer_schema(ctx: Ctx) -> None:
    with ctx.ws.store._connect() as con:
        con.execute("INSERT INTO dfsync_schema VALUES (999, now())")
    snap = snapshot(ctx)
    try:
        dfsync.Workspace(ctx.target)
    finally:
        with ctx.ws.store._connect() as con:
            con.execute("DELETE FROM dfsync_schema WHERE version = 999")
        assert snapshot(ctx) == snap


def _concurrent_in_process(ctx: Ctx) -> None:
    lock = sync_lock(ctx.ws.store.key, ctx.base().id)  # what a background run of this sync holds
    assert lock.acquire(blocking=False)
    try:
        ctx.run_base()
    finally:
        lock.release()


def _concurrent_other_process(ctx: Ctx) -> None:
    """A run owned by another live process (this test's parent) is going on."""
    store = ctx.ws.store
    rid = store.create_run(ctx.base().id, 1, "manual")
    store.transition_run(rid, dfsync.RunStatus.QUERYING)
    store.set_run_fields(rid, owner_pid=os.getppid(), owner_host=socket.gethostname(),
                         owner_token=f"{socket.gethostname()}:{os.getppid()}:{time.time_ns()}")
    try:
        ctx.run_base()
    finally:
        assert ctx.ws.run(rid).status == "querying"  # the other process's run was left alone
        store.transition_run(rid, dfsync.RunStatus.FAILED, "test clean-up", error="x", error_kind="x")
        with store._connect() as con:  # restore the baseline exactly
            con.execute("DELETE FROM events WHERE run_id = ?", [rid])
            con.execute("DELETE FROM runs WHERE id = ?", [rid])
            con.execute("UPDATE syncs SET status = 'healthy'")


def _disabled(ctx: Ctx) -> None:
    sync = ctx.base()
    sync.disable()
    snap = snapshot(ctx)
    try:
        sync.run(progress=False)
    finally:
        assert snapshot(ctx) == snap
        sync.enable()
        with ctx.ws.store._connect() as con:  # drop the disable/enable events' effect on the comparison
            con.execute("UPDATE syncs SET status = 'healthy'")


def _drift(ctx: Ctx, df: pl.DataFrame) -> dfsync.SyncRun:
    ctx.write_source(df)
    return ctx.run_base()


def _new_column_added(ctx: Ctx) -> None:
    """schema='evolve' (the default): a new column is added and every row sent once with its value."""
    run = _drift(ctx, people().with_columns(extra=pl.lit(1)))
    assert run.status == "success", run.error
    assert ctx.dest()["extra"].to_list() == [1] * N


def _source_disappears(ctx: Ctx) -> dfsync.SyncRun:
    os.remove("src.parquet")
    return ctx.run_base()


def _injection_table(ctx: Ctx) -> None:
    evil = 'x"; DROP TABLE people; --'
    ctx.write_source(people(3), "ok.parquet")
    sync = ctx.create("evil", source=dfsync.sources.files("ok.parquet"),
                      destination=dfsync.destinations.duckdb("dest.duckdb", table=evil), primary_key="id")
    assert sync.run(progress=False).status == "success"
    assert ctx.dest(evil).height == 3 and ctx.dest("people").height == N  # people survived


def _injection_column(ctx: Ctx) -> None:
    evil = "a'); DROP TABLE people; --"
    _ok_roundtrip(ctx, pl.DataFrame({"id": [1, 2], evil: ["x", "y"], 'q"uote': [1, 2]}))
    assert ctx.dest("people").height == N


def _injection_key_values(ctx: Ctx) -> None:
    _ok_roundtrip(ctx, pl.DataFrame({"k": ["'; DROP TABLE people; --", '"); DELETE FROM people; --', "a\\b"],
                                     "v": [1, 2, 3]}), key="k")
    assert ctx.dest("people").height == N


CASES: list[Case] = [
    # ------------------------------------------------------------ configuration (create_sync)
    Case("unknown-destination-mode", lambda c: c.create(destination_mode="merge"), errors.ConfigError,
         ("merge",), ("upsert",)),
    Case("unknown-sync-mode", lambda c: c.create(sync_mode="sometimes"), errors.ConfigError,
         ("sometimes",), ("full_refresh", "incremental")),
    Case("unknown-on-invalid", lambda c: c.create(on_invalid="ignore"), errors.ConfigError, ("ignore",), ("skip",)),
    Case("mapping-to-missing-column", lambda c: c.create(mapping={"id": "id", "email": "e_mail"}),
         errors.ConfigError, ("e_mail",), ("name", "column")),
    Case("mapping-expression-missing-column",
         lambda c: c.create(mapping={"id": "id", "x": pl.col("nope") + 1}), errors.ConfigError, ("nope",), ("column",)),
    Case("mapping-not-a-dict", lambda c: c.create(mapping=["id"]), errors.ConfigError, ("mapping",), ("dict",)),
    Case("primary-key-not-a-field", lambda c: c.create(primary_key="uid"), errors.ConfigError,
         ("uid",), ("fields",)),
    Case("primary-key-empty", lambda c: c.create(primary_key=[]), errors.ConfigError, ("primary_key",), ("column",)),
    Case("batch-size-zero", lambda c: c.create(batch_size=0), errors.ConfigError, ("batch_size",), ("positive",)),
    Case("batch-size-string", lambda c: c.create(batch_size="100"), errors.ConfigError, ("batch_size",), ("integer",)),
    Case("max-failed-rows-negative", lambda c: c.create(max_failed_rows=-1), errors.ConfigError,
         ("max_failed_rows",), ("int >= 0", "fraction")),
    # NaN passed every comparison of the check, and no failed-row count is ever above it: a run with
    # every row rejected said success
    Case("max-failed-rows-nan", lambda c: c.create(max_failed_rows=float("nan")), errors.ConfigError,
         ("max_failed_rows",), ("int >= 0", "fraction")),
    Case("incremental-without-cursor", lambda c: c.create(sync_mode="incremental"), errors.ConfigError,
         ("cursor_field",), ("updated_at",)),
    Case("incremental-mirror", lambda c: c.create(sync_mode="incremental", cursor_field="seen_at",
                                                  destination_mode="mirror"),
         errors.ConfigError, ("mirror", "deleted"), ("upsert",)),
    Case("cursor-field-missing", lambda c: c.create(sync_mode="incremental", cursor_field="updated"),
         errors.ConfigError, ("updated",), ("fields",)),
    Case("source-not-a-source", lambda c: c.create(source=people().to_dicts()), errors.ConfigError,
         ("list",), ("dfsync.sources",)),  # a frame itself is taken (sources.frame)
    Case("destination-not-a-destination", lambda c: c.create(destination="dest.duckdb"), errors.ConfigError,
         ("str",), ("dfsync.destinations",)),
    Case("check-on-missing-column", lambda c: c.create(checks=[dfsync.checks.not_null("mail")]), errors.ConfigError,
         ("mail",), ("column", "field")),
    Case("empty-sync-name", lambda c: c.create(name="  "), errors.ConfigError, ("name",), ("non-empty",)),
    Case("name-taken-if-exists-error", lambda c: c.create(name="base", if_exists="error"), errors.ConfigError,
         ("base", "exists"), ("another name",)),
    Case("bad-schedule", lambda c: c.create(schedule="when the moon is blue"), errors.ConfigError,
         ("moon",), ("every", "cron")),
    Case("source-glob-matches-nothing", lambda c: c.create(source=dfsync.sources.files("nothing/*.parquet")),
         errors.SourceError, ("nothing",), ("check the path",)),
    Case("source-option-not-storable",
         lambda c: c.create(source=dfsync.sources.files("src.parquet", storage_options=object())),
         errors.ConfigError, ("storage_options", "object"), ("plain values",)),
    Case("source-option-misspelt", lambda c: c.create(source=dfsync.sources.files("src.parquet", n_row=5)),
         errors.ConfigError, ("n_row",), ("did you mean 'n_rows'",)),
    Case("create-sync-keyword-misspelt", lambda c: c.create(destinaton_mode="mirror"), errors.ConfigError,
         ("destinaton_mode",), ("did you mean 'destination_mode'",)),
    Case("unknown-sync-name", lambda c: c.ws.sync("nope"), errors.SyncNotFoundError, ("nope",), ("base",)),
    Case("unknown-record-status", lambda c: c.base().last_run().records(status="done"), errors.ConfigError,
         ("done",), ("succeeded",)),
    # ------------------------------------------------------------ the data (found while running)
    Case("null-primary-key", lambda c: _drift(c, people(id=[None] + list(range(2, N + 1)))),
         errors.InvalidRecordsError, ("null",), ("fix", "on_invalid"), new_run=True),
    Case("duplicate-primary-key", lambda c: _drift(c, people(id=[1] + list(range(1, N)))),
         errors.InvalidRecordsError, ("more than once",), ("fix", "on_invalid"), new_run=True),
    Case("empty-source", lambda c: _drift(c, people().head(0)), errors.EmptySourceError,
         ("no rows",), ("allow_empty",), new_run=True),
    Case("source-disappears", _source_disappears, errors.SourceError, ("src.parquet",), ("check the path",),
         new_run=True),
    Case("source-file-corrupt", lambda c: (Path("src.parquet").write_bytes(b"PAR1 garbage"), c.run_base())[1],
         errors.SourceError, ("src.parquet",), ("check", "fix"), new_run=True),
    Case("parquet-glob-types-differ", _parquet_glob_types_differ, errors.SourceError,
         ("b.parquet", "a.parquet", "'score'", "double", "int64"), ("agree", "union_by_name"), new_run=True),
    Case("parquet-glob-column-only-in-a-later-file", lambda c: _files_with_other_columns(c, "parquet"),
         errors.SourceError, ("b.parquet", "'extra'"), ("agree", "union_by_name")),
    Case("csv-files-columns-in-another-order", lambda c: _files_with_other_columns(c, "csv"),
         errors.SourceError, ("b.csv", "a.csv", "order"), ("agree", "union_by_name")),
    Case("ndjson-key-only-in-a-later-file", lambda c: _files_with_other_columns(c, "ndjson"),
         errors.SourceError, ("'extra'", "b.ndjson", "a.ndjson"), ("schema=", "union_by_name")),
    Case("ndjson-key-after-the-inferred-rows", _ndjson_key_after_the_inferred_rows,
         errors.SourceError, ("'late'", "late.ndjson", "100 rows"), ("infer_schema_length=None",)),
    Case("ndjson-key-inside-an-object-after-the-inferred-rows", _ndjson_key_inside_an_object_after_the_inferred_rows,
         errors.SourceError, ("'l.c'", "'o.b'", "nested.ndjson", "100 rows"), ("infer_schema_length=None",)),
    Case("ndjson-value-does-not-parse", _ndjson_value_does_not_parse, errors.SourceError,
         ("2.5", "'score'", "bad.ndjson"), ("schema_overrides",), new_run=True),
    Case("ndjson-integer-a-float-would-round", _ndjson_integer_a_float_rounds, errors.SourceError,
         ("'amount'", "9007199254740993", "big.ndjson"), ("schema_overrides",)),
    Case("duckdb-query-union-column", lambda c: c.create(source=dfsync.sources.duckdb_query(
         "SELECT i::BIGINT AS id, union_value(num := i::INT) AS un FROM range(3) t(i)")),
         errors.SourceError, ("'un'", "UNION"), ("::VARCHAR", "union_extract")),
    Case("csv-value-does-not-parse", _csv_value_does_not_parse, errors.SourceError, ("oops", "score", "bad.csv"),
         ("schema_overrides", "infer_schema_length"), new_run=True),
    Case("csv-not-utf8", _csv_not_utf8, errors.SourceError, ("latin1.csv", "line 3", "UTF-8"),
         ("iconv", "utf8-lossy", "changes those values"), new_run=True),
    Case("ndjson-not-utf8", lambda c: (Path("latin1.ndjson").write_bytes(b'{"id": 1, "name": "caf\xe9"}\n'),
                                       c.create(source=dfsync.sources.files("latin1.ndjson")))[1],
         errors.SourceError, ("latin1.ndjson", "line 1", "UTF-8"), ("iconv",)),
    Case("frame-text-not-utf8", _frame_not_utf8, errors.SourceError, ("'name'", "row 2", "UTF-8"),
         ("pl.Binary",), new_run=True),
    Case("all-rows-invalid", lambda c: c.create(checks=[dfsync.checks.between("score", max=0)]).run(progress=False),
         errors.ValidationFailed, ("score",), ("on_invalid='skip'",), new_run=True),
    Case("drift-type-change", lambda c: _drift(c, people(score=[f"{i}" for i in range(N)])),
         errors.SchemaMismatchError, ("score",), ("ALTER", "column", "table"), new_run=True),
    Case("ok-drift-new-column-added", _new_column_added),
    Case("drift-key-type-change", lambda c: _drift(c, people().with_columns(pl.col("id").cast(pl.String))),
         errors.SourceError, ("primary key", "types changed"), ("recreate the sync",), new_run=True),
    Case("drift-naive-to-aware-timestamps", lambda c: _drift(c, people().with_columns(
        pl.col("seen_at").dt.replace_time_zone("Asia/Tokyo"))), errors.SchemaMismatchError,
         ("seen_at", "timestamp[us]"), ("mapping", "replace"), new_run=True),
    # ------------------------------------------------------------ the workspace and concurrency
    Case("disabled-sync", _disabled, errors.SyncDisabledError, ("disabled",), ("enable",)),
    Case("concurrent-run-same-process", _concurrent_in_process, errors.SyncAlreadyRunning,
         ("already running",), ("wait",)),
    Case("concurrent-run-other-process", _concurrent_other_process, errors.SyncAlreadyRunning,
         ("querying", "process"), ("wait", "abort")),
    Case("workspace-garbage", lambda c: _corrupt(c, "garbage"), errors.WorkspaceCorrupt,
         ("not a DuckDB workspace",), ("move this file away", "another path")),
    Case("workspace-truncated", lambda c: _corrupt(c, "truncated"), errors.WorkspaceCorrupt,
         ("ws.duckdb",), ("restore", "move it away")),
    Case("workspace-truncated-to-header", lambda c: _corrupt(c, "header-only"), errors.WorkspaceCorrupt,
         ("ws.duckdb",), ("restore", "move it away")),
    Case("workspace-header-zeroed", lambda c: _corrupt(c, "zeroed-header"), errors.WorkspaceCorrupt,
         ("ws.duckdb",), ("move", "restore")),
    Case("workspace-from-newer-dfsync", _newer_schema, errors.WorkspaceError, ("newer",), ("upgrade",)),
    Case("destination-path-is-a-directory",
         lambda c: (os.mkdir("dir.duckdb"),
                    c.create(destination=dfsync.destinations.duckdb("dir.duckdb", table="t")).run(progress=False))[1],
         errors.DestinationError, ("dir.duckdb",), ("path", "check"), new_run=True),
    # ------------------------------------------------------------ not errors by design
    Case("mysql-uri-without-database",
         lambda c: c.create(destination=dfsync.destinations.mysql("mysql://app@127.0.0.1:3306", table="people")),
         errors.ConfigError, ("database",), ("mysql://user@host:3306/DATABASE",)),
    Case("mysql-password-env-not-set", lambda c: c.create(destination=dfsync.destinations.mysql(
        "mysql://app@127.0.0.1:1/crm", table="people", password="env:DFSYNC_BAD_INPUT_UNSET")).run(progress=False),
         errors.ConfigError, ("DFSYNC_BAD_INPUT_UNSET",), ("export",), new_run=True),
    Case("delta-partition-by-missing-column", lambda c: c.create(
        destination=dfsync.destinations.delta("lake/people", partition_by="region")),
         errors.ConfigError, ("region",), ("partition by one of",)),
    Case("delta-unsupported-type", lambda c: c.create(
        source=dfsync.sources.frame(people().with_columns(pl.col("seen_at").dt.time().alias("at"))),
        destination=dfsync.destinations.delta("lake/people")).run(progress=False),
         errors.SchemaMismatchError, ("time",), ("mapping",), new_run=True),
    Case("duration-nanoseconds-staging-would-cut", lambda c: c.create(source=dfsync.sources.frame(people().with_columns(
        took=(pl.col("id") * 1000 + 999).cast(pl.Duration("ns"))))).run(progress=False),
         errors.SchemaMismatchError, ("'took'", "1999 ns"), ("pl.Duration('us')",), new_run=True),
    Case("ok-huge-strings", lambda c: _ok_roundtrip(c, people(3, name=["x" * 2_000_000, "é" * 300_000, ""]))),
    Case("ok-nan-and-infinity",
         lambda c: _ok_roundtrip(c, people(4, score=[float("nan"), float("inf"), float("-inf"), None]))),
    Case("ok-unicode-and-emoji-keys",
         lambda c: _ok_roundtrip(c, pl.DataFrame({"k": ["🚀", "é", "e\u0301", "日本", "ß", " "], "v": list(range(6))}),
                                 key="k")),
    Case("ok-composite-key-with-emoji", lambda c: _ok_roundtrip(
        c, pl.DataFrame({"a": ["🙂", "🙂", "x"], "b": [1, 2, 1], "v": ["p", "q", "r"]}), key=["a", "b"])),
    Case("ok-sql-injection-table-name", _injection_table),
    Case("ok-sql-injection-column-names", _injection_column),
    Case("ok-sql-looking-key-values", _injection_key_values),
    Case("ok-aware-timestamps-other-zone", lambda c: _ok_roundtrip(c, pl.DataFrame({
        "id": [1, 2], "at": [datetime(2024, 5, 1, 12, tzinfo=timezone.utc)] * 2}).with_columns(
        pl.col("at").dt.convert_time_zone("Asia/Kolkata")))),
]


#: cases about the bytes of a workspace file (no file on PostgreSQL)
FILE_CASES = [c for c in CASES if c.act.__name__ == "<lambda>" and c.id.startswith("workspace-") and
              c.error is errors.WorkspaceCorrupt]
STORE_CASES = [c for c in CASES if c not in FILE_CASES]


@pytest.mark.parametrize("case", STORE_CASES, ids=[c.id for c in STORE_CASES])
def test_bad_input(case: Case, case_dir: tuple[str, str, str], monkeypatch) -> None:
    _check_case(case, *case_dir, monkeypatch)


@pytest.mark.workspaces("duckdb")
@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_damaged_workspace_file(case: Case, case_dir: tuple[str, str, str], monkeypatch) -> None:
    _check_case(case, *case_dir, monkeypatch)


def _check_case(case: Case, root: str, pristine: str, target: str, monkeypatch) -> None:
    shutil.rmtree(root)
    shutil.copytree(pristine, root)
    monkeypatch.chdir(root)
    ctx = Ctx(root, target)
    try:
        if case.error is None:
            case.act(ctx)
            return
        before = snapshot(ctx)
        caught: BaseException | None = None
        result = None
        try:
            result = case.act(ctx)
        except errors.DfsyncError as exc:
            caught = exc
        if caught is not None:
            assert isinstance(caught, case.error), f"{type(caught).__name__}: {caught}"
            message = str(caught)
            error_class = type(caught)
        else:
            assert isinstance(result, dfsync.SyncRun), f"expected {case.error.__name__}, got {result!r}"
            assert result.status == "failed", f"expected a failed run, got {result.status}"
            kind = result._row["error_kind"]
            error_class = getattr(errors, kind, None)
            assert error_class is not None and issubclass(error_class, case.error), \
                f"error_kind {kind}: {result.error}"
            message = result.error
        low = message.lower()
        for word in case.says:
            assert word.lower() in low, f"the message does not say {word!r}: {message}"
        assert any(w.lower() in low for w in case.todo), f"the message does not say what to do: {message}"
        if case.id.startswith("workspace-"):
            return  # the workspace file itself is the subject; _corrupt compared its bytes
        if not ctx.ws.store.memory:
            ctx.ws.close()
            ctx.ws = dfsync.Workspace(ctx.target)
        after = snapshot(ctx)
        if case.new_run or caught is None:
            failed_ids = {r["id"] for r in after["runs"]} - {r["id"] for r in before["runs"]}
            assert len(failed_ids) <= 1
            after["runs"] = [r for r in after["runs"] if r["id"] not in failed_ids]
            for s in (*before["syncs"], *after["syncs"]):
                s.pop("status")  # a failed run marks its sync failed (STATES.md)
            new_syncs = {s["name"] for s in after["syncs"]} - {s["name"] for s in before["syncs"]}
            after["syncs"] = [s for s in after["syncs"] if s["name"] not in new_syncs]
            after["batches"] = [b for b in after["batches"] if b["run_id"] not in failed_ids]
            for t in [t for t in after if t.startswith("rec_")]:  # a failed run keeps its invalid rows (STATES.md)
                after[t] = [r for r in after[t] if not (r["_run_id"] in failed_ids and r["_status"] == "invalid")]
            for t in [t for t in after if t.startswith(("rec_", "state_")) and t not in before]:
                assert not after.pop(t), f"{t} holds rows of a failed run"
        assert after == before, "the workspace or the destination changed"
        assert error_class is not None
    finally:
        ctx.ws.close()


def test_enough_cases():
    assert len(CASES) >= 30 and len(FILE_CASES) == 4
    assert len({c.id for c in CASES}) == len(CASES)


def test_text_that_is_not_utf8_gives_preview_and_validate_the_runs_error(tmp_path) -> None:
    """preview() and validate() raise the error a run records for a Latin-1 CSV file and a frame
    with invalid UTF-8 (file and line, column and row, what to do), and create nothing."""
    import pyarrow as pa
    csv = tmp_path / "latin1.csv"
    csv.write_bytes("id,name\n1,caf\u00e9\n".encode("latin-1"))
    names = pa.array([b"caf\xe9"], pa.binary()).view(pa.string())
    frame = dfsync.sources.frame(pl.from_arrow(pa.table({"id": [1], "name": names})))
    with dfsync.Workspace(str(tmp_path / "ws.duckdb")) as ws:
        for name, source, says in [("c", dfsync.sources.files(str(csv)), (str(csv), "line 2", "utf8-lossy")),
                                   ("f", frame, ("column 'name'", "row 0", "pl.Binary"))]:
            sync = ws.create_sync(name, source=source, primary_key="id", sensitive=["name"],
                                  destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table=name))
            errors_ = []
            for call in (sync.preview, sync.validate):
                with pytest.raises(errors.SourceError) as info:
                    call()
                errors_.append(str(info.value))
            run = sync.run(progress=False)
            assert run.status == "failed" and errors_ == [run.error, run.error]
            assert all(word in run.error for word in says) and "caf" not in run.error
    assert not (tmp_path / "d.duckdb").exists()


def test_a_read_error_while_staging_names_what_failed_not_the_key(tmp_path) -> None:
    """A value that fails a cast in the source's query, on a run after the first, was reported as
    "the source's primary key no longer matches the delivered state ... Recreate the sync under a
    new name": the key had not changed, and that advice throws the delivered state away."""
    pq = tmp_path / "src.parquet"
    pl.DataFrame({"id": [1, 2, 3], "v": ["1", "2", "3"]}).write_parquet(pq)
    with dfsync.Workspace(str(tmp_path / "ws.duckdb")) as ws:
        sync = ws.create_sync("q", source=dfsync.sources.duckdb_query(
            f"SELECT id, CAST(v AS INTEGER) AS v FROM read_parquet('{pq}')"), primary_key="id",
            destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
        assert sync.run(progress=False).status == "success"
        pl.DataFrame({"id": [1, 2, 3], "v": ["1", "abc", "3"]}).write_parquet(pq)
        run = sync.run(progress=False)
        assert run.status == "failed"
        assert "Could not convert string 'abc' to INT32" in run.error and "(column 'v')" in run.error
        assert "primary key" not in run.error and "Recreate" not in run.error
        assert "nothing was sent" in run.error
        # the key's type did change: said so, naming the column and both types
        df = pl.DataFrame({"id": [1, 2], "v": [1, 2]})
        keyed = ws.create_sync("k", source=dfsync.sources.frame(df), primary_key="id",
                               destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="k"))
        assert keyed.run(progress=False).status == "success"
        run = keyed.run(source=dfsync.sources.frame(df.with_columns(pl.col("id").cast(pl.String))), progress=False)
        assert run.status == "failed"
        assert "'id' is VARCHAR in the source, BIGINT in the delivered state" in run.error


@pytest.mark.parametrize("name", ["_action", "_fp", "_rid", "_status", "_dfsync_row"])
def test_a_field_named_as_dfsyncs_own_columns_is_refused_at_create_sync(tmp_path, name):
    """A record field with a name dfsync gives its own columns failed runs with a bare KeyError
    ('_fp', '_rid'), said the source had no rows ('_action'), or was dropped by the PostgreSQL
    destination without a word ('_dfsync_row'). create_sync (and a run's own source=) refuse it,
    naming the field and how to rename it; renamed in the mapping, it is sent."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    frame = pl.DataFrame({"id": [1, 2], name: ["x", "y"]})
    with pytest.raises(dfsync.ConfigError, match=f"field '{name}' has a name dfsync uses"):
        ws.create_sync("s", source=frame, destination=dest, primary_key="id")
    sync = ws.create_sync("s", source=frame.rename({name: "v"}), destination=dest, primary_key="id")
    with pytest.raises(dfsync.ConfigError, match=f"'{name}'"):
        sync.run(source=frame, progress=False)
    renamed = ws.create_sync("r", source=frame, destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="r"),
                             primary_key="id", mapping={"id": "id", "v": name})
    assert renamed.run(progress=False).status == "success"


def test_reader_options_polars_refuses_at_read_are_config_errors_at_sources_files(tmp_path) -> None:
    """encoding='latin1' (polars reads UTF-8 only), a two-character separator or a value outside an
    option's closed set failed only at create_sync, as a SourceError 'could not read the schema':
    now sources.files() refuses them, naming the option, the accepted values and what to do."""
    csv, pq = str(tmp_path / "x.csv"), str(tmp_path / "x.parquet")
    for path, options, says in [
            (csv, {"encoding": "latin1"}, ("encoding='latin1'", "'utf8', 'utf8-lossy'", "iconv -f latin1 -t utf-8")),
            (csv, {"separator": ";;"}, ("separator=';;'", "one-byte")),
            (csv, {"missing_columns": "skip"}, ("missing_columns='skip'", "'insert', 'raise'")),
            (pq, {"parallel": "rows"}, ("parallel='rows'", "'row_groups'"))]:
        with pytest.raises(errors.ConfigError) as info:
            dfsync.sources.files(path, **options)
        assert all(word in str(info.value) for word in says), str(info.value)
    for path, options in [(csv, {"encoding": "utf8-lossy", "separator": "\t", "quote_char": None}),
                          (csv, {"quote_char": "", "missing_columns": None}), (pq, {"parallel": "auto"})]:
        dfsync.sources.files(path, **options)  # accepted values still pass

"""Split reads of a partitioned run: a source cut into parts that workers read side by side.

The driver plans (:func:`plan`): it decides every choice a single read would make (the
schema) up front, and cuts the source into *splits* of plain data. A worker reads one split
(:func:`read_split`) exactly as the single read reads those rows, and writes them to a file
in the run's staging directory; the driver's staging then reads those files
(:class:`SplitSource`) instead of the source. The result is the single read's, row for row
and type for type:

* **Parquet** (read by DuckDB): one split per file, a large file cut into row-group ranges
  (from its footer). A worker reads ``read_parquet([first file, its file])`` keeping only its
  file's rows (``filename``, ``file_row_number``: DuckDB skips the other row groups), so the
  column names and types are bound by the first file, as the single read binds them for
  files of different schemas; it writes them as Parquet, which DuckDB reads back unchanged.
* **CSV / NDJSON** (read by polars): one split per file, each read with the schema polars
  infers for the whole set of files (the single read's), written as Arrow IPC. Files whose
  header differs from the first's are read on the driver (a single read refuses them).
* **Databases** (PostgreSQL, SQLite): key ranges of the primary key's source column (an
  integer: equal ranges between its min and max; rows with a null key in the first), or on
  PostgreSQL ``hashtext`` of the key for other types. On PostgreSQL every split reads in the
  driver's snapshot (``pg_export_snapshot()``/``SET TRANSACTION SNAPSHOT``): one consistent
  view, as the single query has. Batches are cast to the schema the driver read.

Anything else is read on the driver, as without splits, with the reason returned.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from .._ident import quote
from ..errors import DfsyncError, SourceError, redact
from ..mapping import Mapping
from .base import CursorFilter, Source

__all__ = ["Plan", "SplitSource", "plan", "read_split"]

_CSV_OPTIONS = {"separator", "quote_char", "null_values", "encoding", "schema_overrides", "schema",
                "infer_schema_length", "has_header", "comment_prefix", "decimal_comma", "truncate_ragged_lines",
                "ignore_errors", "missing_utf8_is_empty_string", "low_memory"}
_NDJSON_OPTIONS = {"schema", "schema_overrides", "infer_schema_length", "ignore_errors", "low_memory"}
_POLARS_PARQUET_OPTIONS = {"use_statistics", "low_memory", "rechunk", "cache", "parallel"}
_FILE_COL, _ROW_COL = "_dfsync_split_file", "file_row_number"


@dataclass
class Plan:
    """The splits of one read: ``tasks`` (plain data, one per split) and how to read their files."""

    how: str  # "parquet" (DuckDB), "ipc" (polars), "database" (an Arrow stream)
    tasks: list[dict[str, Any]]
    detail: str
    schema: Any = None  # database: the Arrow schema every split is cast to
    check: Any = None  # a callable: None when the source did not change while read, else why
    close: Any = None  # releases what the plan holds (PostgreSQL's exporting transaction)


def _cursor(cursor: CursorFilter | None) -> tuple[str, Any] | None:
    return None if cursor is None else (cursor.field, cursor.value)


def plan(source: Source, mapping: Mapping, cursor: CursorFilter | None, key: list[str], n: int,
         workdir: str) -> Plan | str:
    """The splits of ``source``, about ``n`` of them; or why it is read on the driver."""
    from ._database import DatabaseSource
    from ._files import FilesSource

    if isinstance(source, FilesSource):
        if source.format == "parquet":
            return _plan_parquet(source, mapping, cursor, n, workdir)
        return _plan_polars_files(source, mapping, cursor, workdir)
    if isinstance(source, DatabaseSource):
        return _plan_database(source, mapping, cursor, key, n, workdir)
    if source.session_only:
        return "an in-memory frame exists only in this process"
    return f"a {source.kind} source has no split read yet"


def _out(workdir: str, i: int, ext: str) -> str:
    return os.path.join(workdir, f"split-{i:05d}.{ext}")


def _plan_parquet(source: Any, mapping: Mapping, cursor: CursorFilter | None, n: int, workdir: str) -> Plan | str:
    import pyarrow.parquet as pq

    files = source.resolve()
    try:
        source.check_layout(files)
    except SourceError:
        return "the files' columns differ (the single read says how)"
    groups = []
    for f in files:
        try:
            meta = pq.read_metadata(f)
        except (OSError, pa.ArrowException):
            return f"{f} is not a readable Parquet file (the single read says why)"
        groups.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    by_polars = not source.read_by_duckdb(files) or mapping.sql_select() is None  # as staging reads it (FilesSource)
    if by_polars:
        if set(source.options) - _POLARS_PARQUET_OPTIONS:
            return f"reader options {sorted(set(source.options) - _POLARS_PARQUET_OPTIONS)} apply across files"
        try:
            schemas = {str(pl.read_parquet_schema(f)) for f in files}
        except (pl.exceptions.PolarsError, OSError):
            return "the files cannot be read together (the single read says why)"
        if len(schemas) > 1:
            return "the files have different schemas (polars reads them together only when they agree)"
        columns: list[str] = []
    else:
        import duckdb

        con = duckdb.connect()
        try:
            columns = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [files]).fetchall()]
        except duckdb.Error:
            return "the files cannot be read together (the single read says why)"
        finally:
            con.close()
        if {_FILE_COL, _ROW_COL} & set(columns):
            return f"a column is named {_ROW_COL!r} or {_FILE_COL!r}"
    total = sum(map(sum, groups))
    target = max(1, -(-total // max(1, n)))  # rows per split
    tasks = []
    for f, sizes in zip(files, groups, strict=True):
        start = 0
        bounds: list[tuple[int, int]] = []
        for size in sizes:
            if bounds and bounds[-1][1] - bounds[-1][0] < target:
                bounds[-1] = (bounds[-1][0], start + size)
            else:
                bounds.append((start, start + size))
            start += size
        for lo, hi in bounds if len(bounds) > 1 else [(None, None)]:
            tasks.append({"how": "parquet-polars" if by_polars else "parquet", "file": f,
                          "bind": [files[0], f] if f != files[0] else [f], "options": source.options,
                          "rows": None if lo is None else (lo, hi), "columns": columns, "cursor": _cursor(cursor),
                          "out": _out(workdir, len(tasks), "arrow" if by_polars else "parquet")})
    return Plan("ipc" if by_polars else "parquet", tasks, f"{len(tasks)} splits: {len(files)} Parquet file{'s' if len(files) != 1 else ''} by file "
                f"and row groups{', read by polars' if by_polars else ''}", check=_unchanged(source))


def _unchanged(source: Source) -> Any:
    before = source.snapshot()

    def check() -> str | None:
        return None if before is not None and source.snapshot() == before else "the files changed while read"
    return check


def _plan_polars_files(source: Any, mapping: Mapping, cursor: CursorFilter | None, workdir: str) -> Plan | str:
    allowed = _CSV_OPTIONS if source.format == "csv" else _NDJSON_OPTIONS
    if set(source.options) - allowed:
        return f"reader options {sorted(set(source.options) - allowed)} apply across files"
    files = source.resolve()
    if len(files) < 2:
        return "one file"
    try:
        schema = source.scan().collect_schema()  # the single read's inference, over every file
        if source.format == "csv":
            head = {k: v for k, v in source.options.items() if k not in ("schema", "schema_overrides")}
            names = list(schema.names())
            for f in files:
                if list(pl.scan_csv(f, **{**head, "infer_schema_length": 0}).collect_schema().names()) != names:
                    return f"{f} has other columns than {files[0]} (the single read refuses them)"
    except (pl.exceptions.PolarsError, OSError, SourceError):
        return "the files cannot be read together (the single read says why)"
    options = {k: v for k, v in source.options.items() if k not in ("schema", "schema_overrides",
                                                                    "infer_schema_length")}
    tasks = [{"how": source.format, "file": f, "schema": schema, "options": options, "cursor": _cursor(cursor),
              "out": _out(workdir, i, "arrow")} for i, f in enumerate(files)]
    return Plan("ipc", tasks, f"{len(tasks)} splits: one per {source.format.upper()} file, with the schema "
                f"inferred over all of them", check=_unchanged(source))


# ---------------------------------------------------------------------- databases
def _plan_database(source: Any, mapping: Mapping, cursor: CursorFilter | None, key: list[str], n: int,
                   workdir: str) -> Plan | str:
    if source.dialect == "mysql":
        return "a MySQL source has no split read yet (its single read is one InnoDB snapshot)"
    if source.literal_secret:
        return "the source's password is written literally (only env:NAME references travel to workers)"
    specs = [mapping.spec.get(k) if mapping.spec else k for k in key]
    for k, spec in zip(key, specs, strict=True):
        if not isinstance(spec, str):
            return f"the primary key {k!r} is not a source column"
    schema = source.arrow_schema(cursor)
    for spec in specs:
        if spec not in schema.names:
            return f"the primary key's source column {spec!r} is not among the query's columns"
    ints = [c for c in specs if pa.types.is_integer(schema.field(c).type)]
    if not ints and source.dialect != "postgres":
        return (f"the primary key's source column{'s' if len(specs) > 1 else ''} "
                f"{', '.join(map(repr, specs))} {'are' if len(specs) > 1 else 'is'} not an integer "
                "(no key ranges; no hash on SQLite)")
    sql, params = source.sql(cursor)
    con = source.connect()
    snapshot = None
    spans: dict[str, tuple[Any, Any]] = {}
    try:
        with con.cursor() as cur:
            if source.dialect == "postgres":
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                snapshot = cur.execute("SELECT pg_export_snapshot()").fetchall()[0][0]
            if ints:
                agg = ", ".join(f"min({quote(c)}), max({quote(c)})" for c in ints)
                got = cur.execute(f"SELECT {agg} FROM ({sql}) AS q", params or None).fetchall()[0]
                spans = {c: (got[2 * i], got[2 * i + 1]) for i, c in enumerate(ints)}
    except Exception as exc:
        con.close()
        raise SourceError(f"the source query failed on {source.uri}: {redact(str(exc))}") from exc
    if source.dialect != "postgres":
        con.close()
        con = None
    # ranges over the integer key column of the widest span (a composite key's first column may
    # hold one value); on PostgreSQL a hash of the whole key when no integer column has n values
    width = {c: (hi - lo + 1 if lo is not None else 0) for c, (lo, hi) in spans.items()}
    spec = max(ints, key=lambda c: width[c]) if ints else None
    hashed = source.dialect == "postgres" and (spec is None or (width[spec] < n and len(specs) > 1))
    splits: list[dict[str, Any]] = []
    if not hashed:
        assert spec is not None
        lo, hi = spans[spec]
        if lo is None:  # no row, or only null keys: one split
            splits.append({"nulls": True})
        else:
            parts = max(1, min(n, hi - lo + 1))
            edges = [lo + (hi - lo + 1) * i // parts for i in range(1, parts)]
            bounds = [None, *edges, None]
            splits = [{"lo": bounds[i], "hi": bounds[i + 1], "nulls": i == 0} for i in range(parts)]
        detail = f"{len(splits)} splits: key ranges of {spec!r} between {lo} and {hi}"
    else:
        spec = specs[0]
        splits = [{"hash": (i, n), "columns": specs, "nulls": i == 0 and len(specs) == 1} for i in range(n)]
        why = "not an integer" if not ints else "no integer key column with enough values"
        detail = f"{n} splits: by hashtext({', '.join(map(repr, specs))}) ({why}, so no key ranges)"
    if snapshot:
        detail += f", all in one PostgreSQL snapshot ({snapshot})"
    config = {"kind": source.kind, **source.config()}
    tasks = [{"how": "database", "source": config, "cursor": _cursor(cursor), "column": spec, "snapshot": snapshot,
              "schema": schema.serialize().to_pybytes(), "out": _out(workdir, i, "arrow"), **s}
             for i, s in enumerate(splits)]

    def close() -> None:
        if con is not None:
            try:
                con.rollback()
            finally:
                con.close()

    check = _sqlite_unchanged(source) if source.dialect == "sqlite" else None
    return Plan("database", tasks, detail, schema=schema, check=check, close=close)


def _sqlite_unchanged(source: Any) -> Any:
    """SQLite has no snapshot to share: the database file (and its WAL) must not change while read."""
    path = source.uri.split("sqlite://", 1)[1]
    path = path[1:] if path.startswith("/") else path

    def sig() -> list[tuple[int, int] | None]:
        out = []
        for p in (path, path + "-wal"):
            try:
                st = os.stat(p)
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return out

    before = sig()
    return lambda: None if sig() == before else "the SQLite database changed while read"


def _database_reader(task: dict[str, Any]) -> pa.RecordBatchReader:
    from .base import source_from_config

    source = source_from_config(dict(task["source"]))
    cursor = CursorFilter(*task["cursor"]) if task["cursor"] else None
    sql, params = source.sql(cursor)
    params = list(params)
    pg = source.dialect == "postgres"

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if pg else "?"

    col = quote(task["column"])
    conds = []
    if "hash" in task:
        i, n = task["hash"]
        cols = task.get("columns") or [task["column"]]
        text = f"CAST({col} AS text)" if len(cols) == 1 else f"CAST(ROW({', '.join(map(quote, cols))}) AS text)"
        conds.append(f"(hashtext({text}) & 2147483647) % {int(n)} = {int(i)}")
    else:
        if task.get("lo") is not None:
            conds.append(f"{col} >= {bind(task['lo'])}")
        if task.get("hi") is not None:
            conds.append(f"{col} < {bind(task['hi'])}")
    where = " AND ".join(conds) or "TRUE"
    if task["nulls"]:
        where = f"({where}) OR {col} IS NULL"
    con = source.connect()
    cur = con.cursor()
    try:
        if task["snapshot"]:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{task['snapshot']}'")
        split_sql = f"SELECT * FROM ({sql}) AS s WHERE {where}"
        cur.execute(split_sql, params or None)
        inner = cur.fetch_record_batch()
        source.refuse_flattened_arrays(split_sql, tuple(params), inner.schema)
        head: list[pa.RecordBatch] = []
        if not pg:  # SQLite: columns whose first rows are all NULL are typed (as in the single read)
            from ._sqlite_types import typed_reader

            cur, inner, head = typed_reader(con, cur, inner, split_sql, tuple(params))
    except Exception:
        con.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:  # as the single read gives them (PostgreSQL's infinities)
            yield from source.as_read(head)
            yield from source.as_read(inner)
        finally:
            cur.close()
            con.close()

    return pa.RecordBatchReader.from_batches(inner.schema, batches())


# ---------------------------------------------------------------------- a worker's read
def read_split(task: dict[str, Any]) -> int:
    """Read one split into ``task["out"]`` (written whole or not at all); returns its rows."""
    out, tmp = task["out"], task["out"] + ".tmp"
    try:
        rows = _read(task, tmp)
    except DfsyncError:
        raise
    except Exception as exc:  # the source's own error, as the single read would raise it
        where = task.get("file") or task.get("source", {}).get("uri", "the source")
        raise SourceError(f"could not read {where}: {redact(str(exc).splitlines()[0])}. Check that the source "
                          f"holds valid data, then run the sync again; nothing was sent.") from exc
    os.replace(tmp, out)
    return rows


def _read(task: dict[str, Any], tmp: str) -> int:
    how = task["how"]
    cursor = task["cursor"]
    if how == "parquet":
        import duckdb

        con = duckdb.connect(config={"preserve_insertion_order": "false"})
        try:
            rel = con.sql(f"SELECT * FROM read_parquet(?, filename='{_FILE_COL}', file_row_number=true)",
                          params=[task["bind"]])
            rel = rel.filter(duckdb.ColumnExpression(_FILE_COL) == duckdb.ConstantExpression(task["file"]))
            if task["rows"] is not None:
                lo, hi = task["rows"]
                rel = rel.filter(f"{_ROW_COL} >= {int(lo)} AND {_ROW_COL} < {int(hi)}")
            if cursor is not None:  # as the single read (FilesSource.duckdb_relation): null cursors too
                col = duckdb.ColumnExpression(cursor[0])
                rel = rel.filter((col >= duckdb.ConstantExpression(cursor[1])) | col.isnull())
            rel = rel.select(*[duckdb.ColumnExpression(c) for c in task["columns"]])
            rel.write_parquet(tmp)
            return con.execute("SELECT count(*) FROM read_parquet(?)", [tmp]).fetchall()[0][0]
        finally:
            con.close()
    if how in ("csv", "ndjson", "parquet-polars"):
        if how == "csv":
            lf = pl.scan_csv(task["file"], schema=task["schema"], try_parse_dates=True, **task["options"])
        elif how == "ndjson":
            lf = pl.scan_ndjson(task["file"], schema=task["schema"], **task["options"])
        else:
            lf = pl.scan_parquet(task["file"], **task["options"])
            if task["rows"] is not None:
                lf = lf.slice(task["rows"][0], task["rows"][1] - task["rows"][0])
        if cursor is not None:
            lf = CursorFilter(*cursor).apply(lf)
        lf.sink_ipc(tmp, compression=None)  # streamed: a large file never sits whole in a worker's memory
        reader = pa.ipc.open_file(pa.memory_map(tmp))
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    schema = pa.ipc.read_schema(pa.py_buffer(task["schema"]))
    rows = 0
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for rb in _database_reader(task):
            if rb.schema != schema:
                rb = _as_schema(rb, schema)
            writer.write_batch(rb)
            rows += rb.num_rows
    return rows


def _as_schema(rb: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A split's batch in the schema the driver read. SQLite's driver types a column from the first
    rows it reads, so a split may type a column the single read types otherwise: that is only
    taken when the column holds nothing but nulls there (no value could read differently)."""
    columns = []
    for name, field in zip(schema.names, schema, strict=True):
        col = rb.column(name)
        if col.type != field.type:
            if col.null_count != len(col):
                raise SourceError(
                    f"column {name!r} reads as {col.type} in one split of the source and as {field.type} in the "
                    f"query's first rows (a SQLite column holding values of several types); nothing was sent. "
                    f"Cast it in the query (CAST({name} AS ...)), or read without splits: DFSYNC_SPLIT_READS=0")
            col = pa.nulls(len(col), field.type)
        columns.append(col)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------------- the driver's read of the splits
class SplitSource(Source):
    """The files the workers wrote, read by the driver's staging in place of ``original``."""

    kind = "split"

    def __init__(self, original: Source, plan: Plan) -> None:
        self.original, self.plan = original, plan
        self.files = [t["out"] for t in plan.tasks]

    @property
    def counts_from_metadata(self) -> bool:  # type: ignore[override]
        return self.plan.how == "parquet"

    def snapshot(self) -> str | None:
        parts = [f"{f}\0{os.stat(f).st_size}\0{os.stat(f).st_mtime_ns}" for f in self.files]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        if self.plan.how == "parquet":
            return pl.scan_parquet(self.files)
        return pl.scan_ipc(self.files)

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        if self.plan.how == "parquet":
            return con.read_parquet(self.files)
        if self.plan.how == "database":
            files = self.files

            def batches() -> Iterator[pa.RecordBatch]:
                for f in files:
                    reader = pa.ipc.open_file(pa.memory_map(f))  # closed with its last batch
                    for i in range(reader.num_record_batches):
                        yield reader.get_batch(i)

            return pa.RecordBatchReader.from_batches(self.plan.schema, batches())
        return None

    def config(self) -> dict[str, Any]:
        return self.original.config()

    def describe(self) -> str:
        return self.original.describe()

"""What staging takes in: the source as an Arrow stream (counted as DuckDB pulls it) and the
delivered state as ``dlv``, with the memory sizes that bound both, and how a column is fingerprinted
(dfsync/staging.py uses them)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from ._arrow import refuse_struct_names
from ._ident import quote
from ._settings import memory_bytes
from .errors import ConfigError, SchemaMismatchError, SourceError
from .states import RECORD_META

if TYPE_CHECKING:
    from .mapping import Mapping
    from .sources.base import CursorFilter, Source

#: the delivered state kept as Arrow when no DuckDB memory size can be read (see load_state)
DEFAULT_STATE_BYTES = 512 << 20


#: names dfsync gives its own columns beside a record's fields (staged rows, batches, the SQL
#: destinations' stages, kept records); also any name starting ``_dfsync``
RESERVED = frozenset({*RECORD_META, "_fp", "_rid", "_present"})


def refuse_reserved(fields: Sequence[str]) -> list[str]:
    """The records' fields (after mapping), refused if one takes a name dfsync uses for its own
    columns (:data:`RESERVED`): a field '_fp' or '_rid' failed the run with a bare KeyError,
    '_action' said the source had no rows, and the PostgreSQL destination dropped a field
    '_dfsync_row' without a word. Returns ``fields``."""
    taken = [n for n in fields if n in RESERVED or n.startswith("_dfsync")]
    if taken:
        raise ConfigError(
            f"field {taken[0]!r} has a name dfsync uses for its own columns ({', '.join(sorted(RESERVED))} "
            f"and names starting with _dfsync); rename it in the source or in the sync's mapping "
            f"(mapping={{{taken[0].lstrip('_') + '_' if taken[0].lstrip('_') else 'field'!r}: {taken[0]!r}, "
            f"...}} with the other fields); nothing was sent.")
    return list(fields)


def no_case_clash(names: Sequence[str]) -> None:
    """Refuse column names staging would not keep: names that differ only in case (DuckDB
    (staging), MySQL, SQLite and DuckDB tables ignore case in names, so one of them would arrive
    renamed ('temp_1')), an empty name (DuckDB names it 'v1', and a real 'v1' beside it became
    'v1_1': its values went to the wrong column) and a name holding a NUL character."""
    seen: dict[str, str] = {}
    for i, name in enumerate(names):
        if name == "" or "\x00" in name:
            what = ("an empty name, which DuckDB, where dfsync stages rows, would replace by 'v1'" if name == ""
                    else f"the name {name!r}, which holds a NUL character DuckDB, where dfsync stages rows, cannot keep")
            raise ConfigError(
                f"a column of the source has {what}. Give it a name in the source, e.g. "
                f"df.rename({{{name!r}: 'value'}}), or in the sync's mapping ({{'value': {name!r}, ...}}); "
                f"nothing was sent.")
        if name in names[:i]:  # a query's 'SELECT a AS v, b AS v': DuckDB would send the second as 'v_1'
            raise ConfigError(f"column {name!r} appears more than once in the source; DuckDB, where dfsync "
                              f"stages rows, would send the second one as {name + '_1'!r}. Give each column a "
                              f"name of its own (in a query: ... AS {name + '_2'}); nothing was sent.")
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise ConfigError(
                f"columns {other!r} and {name!r} differ only in case; names that ignore case (DuckDB, "
                f"where dfsync stages rows, MySQL, SQLite) would keep one and rename the other. Rename "
                f"one of them in the source (e.g. df.rename(columns={{{name!r}: {name + '_2'!r}}})); "
                f"nothing was sent.")


def duckdb_renamed(names: Sequence[str]) -> bool:
    """Might DuckDB have renamed a column of what it read? It reads a name repeated in another
    case ('Temp', 'temp') as 'Temp', 'temp_1': true when a name is another one plus '_<n>'."""
    lower = {n.lower() for n in names}
    return any(base.lower() in lower for base, _, n in (name.rpartition("_") for name in names) if base and n.isdigit())


def fp_value(column: str, duckdb_type: str) -> str:
    """A column as the fingerprint hashes it. DuckDB's ``hash()`` of a list, struct or map loses
    their shape: ``[]`` hashes as NULL, ``{'a': NULL}`` as a NULL struct, ``[[]]`` as ``[NULL]``,
    and two list columns ``([1], [])`` as ``([], [1])``, so a row changing between them was
    counted unchanged and never sent. A nested value is hashed as its JSON text, which keeps
    every level (NULL stays NULL)."""
    if duckdb_type.endswith("]") or duckdb_type.startswith(("STRUCT", "MAP")):
        return f"to_json({quote(column)})"
    return quote(column)


def half_memory(limit: str) -> str:
    """Half of a DuckDB memory size ("2GB" -> "953MiB"); the same string if it cannot be read."""
    size = memory_bytes(limit)
    return limit if size is None else f"{max(64, size // 2 >> 20)}MiB"


class Counted:
    """An Arrow stream that counts the rows DuckDB pulls through it (free, exact, one pass).

    It also watches nanosecond durations: DuckDB's intervals keep microseconds, so staging
    would cut 1,999 ns to 1 us without a word; ``refuse_lossy()`` names the first such value."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.rows = 0
        self.done = False
        self.lossy: tuple[str, int] | None = None
        refuse_struct_names(reader.schema)
        inner = reader
        ns = [f.name for f in reader.schema if pa.types.is_duration(f.type) and f.type.unit == "ns"]

        def batches() -> Iterator[pa.RecordBatch]:
            for rb in inner:
                self.rows += rb.num_rows
                if ns and self.lossy is None:
                    self.lossy = _sub_microsecond(rb, ns)
                yield rb
            self.done = True

        self.reader = pa.RecordBatchReader.from_batches(reader.schema, batches())

    def refuse_lossy(self) -> None:
        if self.lossy is None:
            return
        name, ns = self.lossy
        raise SchemaMismatchError(
            f"column {name!r} holds durations with nanoseconds (e.g. {ns} ns), which would change: dfsync "
            f"stages rows in DuckDB, whose intervals keep microseconds. Truncate them in the sync's mapping "
            f"(mapping={{{name!r}: pl.col({name!r}).cast(pl.Duration('us'))}}) if that is acceptable, or send "
            f"the nanoseconds as an integer (pl.col({name!r}).dt.total_nanoseconds()). Nothing was sent.")


def _sub_microsecond(rb: pa.RecordBatch, names: Sequence[str]) -> tuple[str, int] | None:
    """The first (column, value) of a nanosecond duration that is not whole microseconds."""
    for name in names:
        a = rb.column(name)
        if not len(a) or a.null_count == len(a):
            continue
        values = np.frombuffer(a.buffers()[1], dtype=np.int64, count=len(a), offset=a.offset * 8)
        bad = values % 1000 != 0
        if a.null_count:
            bad &= a.is_valid().to_numpy(zero_copy_only=False)
        if bad.any():
            return name, int(values[int(np.argmax(bad))])
    return None


def _holds_objects(dtype: Any) -> bool:
    if isinstance(dtype, pl.Object):
        return True
    if isinstance(dtype, pl.Struct):
        return any(_holds_objects(f.dtype) for f in dtype.fields)
    inner = getattr(dtype, "inner", None)
    return inner is not None and _holds_objects(inner)


def refuse_objects(schema: Any) -> None:
    """A polars Object column (Python objects, e.g. from ``map_elements(..., return_dtype=pl.Object)``)
    has no column type: polars gives it to Arrow as 8 bytes of a memory address a value, which
    arrived as a BLOB of addresses while the run said success. Refused naming the column."""
    for name, dtype in schema.items():
        if _holds_objects(dtype):
            raise SchemaMismatchError(
                f"column {name!r} is a polars {dtype} column (Python objects), which has no column type: its "
                f"values would arrive as memory addresses. Give it a real type in the frame or the mapping, e.g. "
                f"pl.col({name!r}).map_elements(str, return_dtype=pl.String) for their text. Nothing was sent.")


def _without_float16(dtype: Any) -> Any:
    """``dtype`` with every Float16 in it (inside lists, arrays and structs too) as Float32."""
    if dtype == pl.Float16:
        return pl.Float32
    if isinstance(dtype, (pl.List, pl.Array)):
        inner = _without_float16(dtype.inner)
        return dtype if inner == dtype.inner else (pl.List(inner) if isinstance(dtype, pl.List)
                                                  else pl.Array(inner, dtype.shape))
    if isinstance(dtype, pl.Struct):
        fields = [pl.Field(f.name, _without_float16(f.dtype)) for f in dtype.fields]
        return dtype if all(a.dtype == b.dtype for a, b in zip(fields, dtype.fields, strict=True)) else pl.Struct(fields)
    return dtype


def arrow_stream(lf: pl.LazyFrame) -> pa.RecordBatchReader:
    """Stream a LazyFrame as Arrow record batches (bounded memory, no Python row loop). Half-precision
    floats (polars Float16, also a pandas float16 column) are sent as float32, which holds each value
    exactly: DuckDB, where rows are staged, has no such type (the run failed with 'Unsupported Internal
    Arrow Type e', naming no column)."""
    have = lf.collect_schema()
    widened = {c: w for c, t in have.items() if (w := _without_float16(t)) != t}
    if widened:
        lf = lf.with_columns(pl.col(c).cast(t) for c, t in widened.items())
        have = lf.collect_schema()
    refuse_objects(have)
    schema = pl.DataFrame(schema=have).to_arrow().schema

    def batches() -> Iterator[pa.RecordBatch]:
        for df in lf.collect_batches(chunk_size=100_000):
            tbl = df.to_arrow()
            if tbl.schema != schema:
                tbl = tbl.cast(schema)
            yield from tbl.to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def load_state(con: duckdb.DuckDBPyConnection, state: pa.RecordBatchReader | pa.Table | None,
               max_bytes: int | None) -> tuple[Any, int]:
    """Make the delivered state ``dlv`` on ``con``; return (what must stay alive while ``dlv`` is
    used, its row count). 0 rows: nothing delivered yet, and no ``dlv`` made.

    Up to ``max_bytes`` of state is scanned in place as Arrow: the diff reads it as fast as a
    DuckDB table, and the copy (0.1 s and 160 MB for 10M integer keys) is saved; a DuckDB
    workspace hands its state over already in memory. A larger stream is stored in a DuckDB
    table, which spills past staging's memory cap (Arrow memory cannot).
    """
    with contextlib.suppress(duckdb.Error):
        con.unregister("dlv")  # (a registered state of an earlier load)
    con.execute("DROP TABLE IF EXISTS dlv")
    if state is None:
        return None, 0
    if isinstance(state, pa.RecordBatchReader):
        held: list[pa.RecordBatch] = []
        size, cap = 0, DEFAULT_STATE_BYTES if max_bytes is None else max_bytes
        for rb in state:
            held.append(rb)
            size += rb.nbytes
            if size > cap:  # too large to keep as Arrow: into a table that can spill
                def rest(first: list[pa.RecordBatch] = held) -> Iterator[pa.RecordBatch]:
                    while first:
                        yield first.pop(0)
                    yield from state
                con.register("_dlv_in", pa.RecordBatchReader.from_batches(state.schema, rest()))
                con.execute("CREATE TABLE dlv AS SELECT * FROM _dlv_in")
                con.unregister("_dlv_in")
                delivered = con.execute("SELECT count(*) FROM dlv").fetchall()[0][0]
                if not delivered:
                    con.execute("DROP TABLE dlv")
                return None, delivered
        state = pa.Table.from_batches(held, schema=state.schema)
    if not state.num_rows:
        return None, 0
    con.register("dlv", state)
    return state, state.num_rows


@dataclass
class OpenedSource:
    """The source as the temporary view ``_src`` (mapped columns) of a DuckDB connection."""

    counter: Callable[[], int | None] | None  # how to count its rows for free (None: it would cost a read)
    rescannable: bool  # _src is a DuckDB relation that can be scanned again (files)
    counted: Counted | None  # the Arrow stream read (refuse_lossy() once it is read)
    snapshot: str | None  # the files' snapshot when _src was made (None: not known)
    columns: list[str]
    types: dict[str, str]
    fp_sql: str  # the fingerprint of a row of _src, as SQL


def open_source(con: duckdb.DuckDBPyConnection, source: Source, mapping: Mapping, cursor: CursorFilter | None,
                key: Sequence[str]) -> OpenedSource:
    """Make the source the temporary view ``_src`` (mapped columns) of ``con``: staging's
    connection, or the destination's for a fused first load (dfsync._fused), so both
    fingerprint a row alike. Only temporary views are made (``con`` may be a database file).

    The count is exact and free: rows counted as they stream through, or Parquet
    footers read after the scan when the files did not change meanwhile. None when
    counting would cost another read.
    """
    select = mapping.sql_select()
    counter: Callable[[], int | None] | None = None
    rescannable, counted, snapshot = False, None, None
    try:
        rel = source.duckdb_relation(con, cursor) if select is not None else None
        con.unregister("_src_raw")
        if isinstance(rel, pa.RecordBatchReader):
            no_case_clash(rel.schema.names)
            stream = counted = Counted(rel)
            con.register("_src_raw", stream.reader)
            counter = lambda: stream.rows if stream.done else None  # noqa: E731
        elif rel is not None:
            if duckdb_renamed(rel.columns):  # 'Temp' and 'temp' read as 'Temp' and 'temp_1'
                no_case_clash(source.schema().names())
            con.register("_src_raw", rel)  # a temporary view (create_view would make a lasting one)
            rescannable = True
            before = snapshot = source.snapshot() if cursor is None else None
            if before is not None and source.counts_from_metadata:
                def counter() -> int | None:
                    n = con.execute("SELECT count(*) FROM _src_raw").fetchall()[0][0]
                    return n if source.snapshot() == before else None
        else:
            stream = counted = Counted(arrow_stream(source.scan(cursor).select(mapping.polars_exprs())))
            no_case_clash(stream.reader.schema.names)
            con.register("_src_raw", stream.reader)
            counter = lambda: stream.rows if stream.done else None  # noqa: E731
            select = "*"
        con.execute(f"CREATE OR REPLACE TEMP VIEW _src AS SELECT {select} FROM _src_raw")
        desc = con.execute("DESCRIBE SELECT * FROM _src").fetchall()
    except SourceError:
        raise
    except (duckdb.Error, pl.exceptions.PolarsError, OSError) as exc:
        raise SourceError(f"could not read {source.describe()}: {str(exc).splitlines()[0]}. Check that the "
                          f"source exists and holds valid data, then run the sync again; nothing was "
                          f"sent.") from exc
    columns = refuse_reserved([r[0] for r in desc])
    types = {r[0]: r[1] for r in desc}
    missing = [k for k in key if k not in columns]
    if missing:
        raise ConfigError(f"primary key {missing} is not among the records' fields: {', '.join(columns)}")
    sig = hashlib.sha1("|".join(f"{c}:{t}" for c, t, *_ in desc).encode()).hexdigest()[:16]
    fp_sql = f"hash({', '.join(fp_value(c, types[c]) for c in columns)}, '{sig}')"
    return OpenedSource(counter, rescannable, counted, snapshot, columns, types, fp_sql)

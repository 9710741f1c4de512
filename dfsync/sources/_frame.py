"""In-memory frames: polars (eager or lazy), pandas, Arrow. Session-only by nature.

The source keeps the frame object, not a copy: every run (and preview) reads it as it is
then, through :meth:`FrameSource.read`, the one place a frame becomes a polars LazyFrame.
An in-place pandas edit (``df.loc[0:4, "dep_delay"] = 999``) is seen by the next run; polars
frames and Arrow tables are read without a copy.
"""

from __future__ import annotations

import io
import re
from typing import Any

import polars as pl

from .._arrow import is_uuid, uuid_text
from .._pandas import pandas_to_polars
from ..errors import ConfigError, SchemaMismatchError, SessionOnlyError
from .base import CursorFilter, Source, register_source


@register_source
class FrameSource(Source):
    kind = "frame"
    session_only = True

    def __init__(self, df: Any, *, name: str | None = None) -> None:
        self.name = name
        _check_frame(df)
        if type(df).__name__ == "RecordBatchReader":
            # a stream reads once: kept as it is, the first run consumed it and every later run read
            # no rows (a mirror run then deleted every row it had sent); it is read whole here
            df = df.read_all()
        self.frame = df

    def read(self) -> pl.LazyFrame:
        """The frame as it is now, as a polars LazyFrame (pandas is converted at each read)."""
        return _to_lazy(self.frame)

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        lf = self.read()
        if cursor is not None:
            lf = cursor.apply(lf)
        return lf

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Source:
        raise SessionOnlyError(
            "this sync reads an in-memory frame that only exists in the Python session that "
            "created it; run it from that session, or give it a files, duckdb_query or "
            "database source to run it from another process (CLI, scheduler)"
        )

    def describe(self) -> str:
        return f"frame({self.name or 'in-memory'})"

    def read_error(self, message: str) -> str:
        text = super().read_error(message)
        if not re.search(r"invalid unicode|invalid utf-?8", message, re.IGNORECASE):
            return text
        try:
            where = _invalid_utf8(self.read().collect())
        except Exception:  # noqa: BLE001 - the diagnosis only names the column; the read's error stands
            where = None
        column = f"column {where[0]!r} (first at row {where[1]}, 0-based)" if where else "a text column"
        return (f"{text}. {column} of the frame holds bytes that are not valid UTF-8 text (e.g. Latin-1 "
                f"decoded without checking); fix or re-decode those values in the frame, or cast the column to "
                f"binary (pl.Binary) to send it as bytes; nothing was sent")


#: what sources.frame() takes besides polars frames, by module: type name -> None, or what to pass instead
_OTHER = {"polars": {"Series": "a DataFrame: series.to_frame()"},
          "pandas": {"DataFrame": None, "Series": "a DataFrame: series.to_frame()",
                     "Index": "a DataFrame: index.to_frame(index=False)"},
          "pyarrow": {"Table": None, "RecordBatch": None, "RecordBatchReader": None,
                      "ChunkedArray": "an Arrow table: pa.table({'name': array})",
                      "Array": "an Arrow table: pa.table({'name': array})",
                      "Dataset": "an Arrow table (dataset.to_table()), or sources.files(...) for the files it reads"}}


def _check_frame(df: Any) -> None:
    if isinstance(df, (pl.LazyFrame, pl.DataFrame)):
        return
    kinds = _OTHER.get(type(df).__module__.split(".")[0])
    if kinds is not None:
        names = [t.__name__ for t in type(df).__mro__]
        known = next((n for n in names if n in kinds), "")
        if known and kinds[known] is None:
            return
        raise ConfigError(
            f"sources.frame() takes a polars DataFrame/LazyFrame, a pandas DataFrame or an Arrow table (or record "
            f"batch reader), not {type(df).__module__.split('.')[0]} {type(df).__name__}"
            + (f"; pass {kinds[known]}" if known else ""))
    raise ConfigError(
        f"sources.frame() takes a polars DataFrame/LazyFrame, a pandas DataFrame or an Arrow "
        f"table, not {type(df).__name__}; for files use sources.files(path)"
    )


#: a plan node that reads files (``Parquet SCAN [path]``, ``Csv SCAN``, ``Ipc SCAN``, ``NDJson SCAN``)
_FILE_SCAN = re.compile(r"\b\w+ SCAN \[")


def _fresh(lf: pl.LazyFrame) -> pl.LazyFrame:
    """``lf`` without what polars resolved the first time it ran it. A LazyFrame keeps its file
    scans' resolution (the files a glob matched, a Parquet file's footer) from its first collect: a
    file added to the glob between runs was never read, and a Parquet file rewritten with more rows
    read as its old row groups (or failed with 'Invalid thrift'), each run a success. A plan that
    reads files is rebuilt from its serialized form at each read, which resolves them again."""
    try:
        if not _FILE_SCAN.search(lf.explain(optimized=False)):
            return lf
        return pl.LazyFrame.deserialize(io.BytesIO(lf.serialize()))
    except Exception:  # noqa: BLE001 - a plan polars cannot serialize (or explain) is read as it is
        return lf


def _to_lazy(df: Any) -> pl.LazyFrame:
    if isinstance(df, pl.LazyFrame):
        return _fresh(df)
    if isinstance(df, pl.DataFrame):
        return df.lazy()
    mod = type(df).__module__.split(".")[0]
    if mod == "pyarrow":
        import pyarrow as pa

        if isinstance(df, pa.RecordBatch):
            df = pa.Table.from_batches([df])
        _refuse_arrow_types(df.schema)
        uuids = [f.name for f in df.schema if is_uuid(f.type)]
        out = pl.from_arrow(_dates_as_dates(df)).lazy()  # type: ignore[union-attr]
        return out.with_columns(uuid_text(pl.col(c)) for c in uuids) if uuids else out
    if mod == "pandas":
        return pandas_to_polars(df).lazy()
    _check_frame(df)
    raise AssertionError("unreachable")


def _arrow_type_problem(t: Any) -> str | None:
    """Why polars cannot take Arrow type ``t`` (anywhere inside a list/struct/map) and the exact
    cast that it can, or None."""
    import pyarrow as pa

    if is_uuid(t):  # a column of them is sent as text (_to_lazy); inside a list or struct it is not
        return ("UUIDs (pa.uuid()), which polars reads as 16 raw bytes; convert them to their text form "
                "(str(uuid.UUID(bytes=b)))")
    if pa.types.is_timestamp(t) and t.tz and re.fullmatch(r"[+-]\d\d:?\d\d", t.tz):
        return (f"timestamps whose time zone is a fixed offset ({t.tz}), which polars cannot read; cast it to "
                f"pa.timestamp({t.unit!r}, 'UTC') (the same instants)")
    if pa.types.is_float16(t):
        return "half-precision floats, which polars cannot read; cast it to pa.float32() (every value stays exact)"
    if pa.types.is_decimal(t):
        p, sc = t.precision, t.scale
        if sc < 0:
            return (f"decimals with a negative scale ({t}), which polars cannot read; cast it to "
                    f"pa.decimal128({p - sc}, 0) (exact)" if p - sc <= 38 else
                    f"decimals with a negative scale ({t}), which polars cannot read; cast it to pa.string()")
        if pa.types.is_decimal256(t) or p > 38:
            return (f"256-bit decimals ({t}), which polars cannot read; cast it to pa.decimal128({p}, {sc}) "
                    f"(exact)" if p <= 38 else f"decimals of {p} digits ({t}), more than the 38 dfsync "
                    f"stages; cast it to pa.string() to keep every digit")
    for i in range(getattr(t, "num_fields", 0)):
        why = _arrow_type_problem(t.field(i).type)
        if why is not None:
            return why if why.startswith("inside") else f"inside its {t}: {why}"
    return None


def _date32(t: Any) -> Any:
    """``t`` with every date64 in it (inside lists and structs too) as date32."""
    import pyarrow as pa

    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = t.value_field.with_type(_date32(t.value_type))
        return pa.list_(inner) if pa.types.is_list(t) else pa.large_list(inner)
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_date32(t.field(i).type)) for i in range(t.num_fields)])
    return t


def _dates_as_dates(table: Any) -> Any:
    """Arrow date64 columns (days as milliseconds) as date32: polars reads a date64 as a timestamp,
    so a column of dates arrived as timestamps at midnight. A date64 holding times of day (not
    whole days) keeps them, as polars' timestamp."""
    import pyarrow as pa

    columns = list(table.columns)
    for i, f in enumerate(table.schema):
        t = _date32(f.type)
        if t != f.type:
            try:
                columns[i] = columns[i].cast(t)  # safe: refuses a time of day
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return pa.Table.from_arrays(columns, names=table.column_names)


def _refuse_arrow_types(schema: Any) -> None:
    for f in schema:
        why = None if is_uuid(f.type) else _arrow_type_problem(f.type)
        if why is not None:
            raise SchemaMismatchError(f"column {f.name!r} of the Arrow table holds {why}, e.g. "
                                      f"table.cast(...) or table.set_column(...), before sources.frame(). "
                                      f"Nothing was sent.")


def _invalid_utf8(df: pl.DataFrame) -> tuple[str, int] | None:
    """The first text column of ``df`` holding invalid UTF-8, and its first such row (Arrow
    validates by halves: a cast per step, no Python per value)."""
    import pyarrow as pa

    def valid(a: Any) -> bool:
        try:
            a.cast(pa.large_string())
            return True
        except pa.ArrowInvalid:
            return False

    for name, dtype in df.schema.items():
        if dtype != pl.String:
            continue
        arr = df.get_column(name).to_arrow().cast(pa.large_binary())
        if valid(arr):
            continue
        lo, hi = 0, len(arr)  # the first bad row is in [lo, hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if not valid(arr.slice(lo, mid - lo)) else (mid, hi)
        return name, lo
    return None

"""Arrow values built without pyarrow's pandas probe.

``pa.array``, ``pa.scalar`` and compute calls given Python values ask pyarrow's pandas shim
whether the value is a pandas object, and the first such question imports pandas (0.3 s
per process, most of a small run). The run path builds its few constants and masks from
buffers instead; nothing else differs.

Also the Arrow type tests (``is_list``, ``is_nested``, ``is_interval``) and ``nested_to_json``
that the destinations, the schema checks and the PostgreSQL workspace store share.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ._ident import quote

if TYPE_CHECKING:
    import polars as pl


@lru_cache(maxsize=64)
def string_scalar(value: str) -> pa.Scalar:
    data = value.encode()
    offsets = pa.py_buffer(struct.pack("<ii", 0, len(data)))
    return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])[0]


def bool_array(mask: np.ndarray) -> pa.Array:
    """A boolean Arrow array from a numpy bool mask (no nulls)."""
    bits = np.packbits(np.asarray(mask, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(bits)])


def int_array(values: np.ndarray | Sequence[int], type: pa.DataType | None = None) -> pa.Array:  # noqa: A002
    """An integer Arrow array (int64 unless ``type`` says) from a numpy array or ints (no nulls)."""
    type = type or pa.int64()  # noqa: A001
    arr = np.ascontiguousarray(values, dtype=type.to_pandas_dtype())
    return pa.Array.from_buffers(type, len(arr), [None, pa.py_buffer(arr)])


def string_array(values: Sequence[str | None]) -> pa.Array:
    """A string Arrow array from a list of str or None."""
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def distinct_values(col: pa.ChunkedArray | pa.Array) -> set[str | None]:
    """The distinct values of a string column (None for a null). A dictionary-encoded column (a
    batch's actions) is read by its indices, not decoded: comparing the 10M actions of a first
    load to 'insert' decoded every one (0.3 CPU-s, on the run's critical path)."""
    import pyarrow.compute as pc

    out: set[str | None] = set()
    for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
        if pa.types.is_dictionary(chunk.type):
            used = pc.unique(chunk.indices).drop_null()
            out.update(chunk.dictionary.take(used).to_pylist())
            if chunk.null_count:
                out.add(None)
        else:
            out.update(pc.unique(chunk).to_pylist())
    return out


def int64_copy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy copy of a null-free int64 Arrow array (a slice would keep its whole batch alive)."""
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    parts = [np.frombuffer(c.buffers()[1], dtype=np.int64, count=len(c), offset=c.offset * 8) for c in chunks if len(c)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def is_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t))


def is_nested(t: pa.DataType) -> bool:
    """A list, struct or map (also dictionary-encoded)."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    return is_list(t) or pa.types.is_struct(t) or pa.types.is_map(t)


def holds(t: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """``test(t)``, or a list/struct/map (also dictionary-encoded) with a type inside that passes it."""
    t = t.value_type if pa.types.is_dictionary(t) else t
    if test(t):
        return True
    if is_list(t):
        return holds(t.value_type, test)
    if pa.types.is_struct(t):
        return any(holds(f.type, test) for f in t)
    if pa.types.is_map(t):
        return holds(t.key_type, test) or holds(t.item_type, test)
    return False


def is_uuid(t: pa.DataType) -> bool:
    """Arrow's ``uuid`` extension type (``pa.uuid()``): 16 bytes each, which polars reads as bytes."""
    return isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.uuid"


def uuid_text(col: pl.Expr) -> pl.Expr:
    """16-byte UUIDs as their canonical text (``'9ad1da64-9f55-4f6e-...'``), the form a DuckDB UUID
    and a PostgreSQL uuid arrive in too; polars has no UUID type and would send the raw bytes."""
    import polars as pl

    h = col.bin.encode("hex")
    parts = [h.str.slice(a, n) for a, n in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    return pl.concat_str(parts, separator="-")


def is_bytes(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_fixed_size_binary(t))


def is_interval(t: pa.DataType) -> bool:
    return t == pa.month_day_nano_interval() or pa.types.is_duration(t)


def nested_to_json(data: pa.Table, columns: list[str]) -> pa.Table:
    """Replace list / struct / map columns by their JSON text, and durations by DuckDB's
    interval text ("1 day 00:00:03.000005"); nulls stay null."""
    if not columns:
        return data
    import duckdb

    con = duckdb.connect()
    try:
        con.register("_data", data.select(columns))
        sel = ", ".join((f"{quote(c)}::VARCHAR" if is_interval(data.schema.field(c).type) else f"to_json({quote(c)})::VARCHAR")
                        + f" AS {quote(c)}" for c in columns)
        text = con.sql(f"SELECT {sel} FROM _data").to_arrow_table()
    finally:
        con.close()
    for c in columns:
        data = data.set_column(data.schema.get_field_index(c), c, text.column(c).cast(pa.large_string()))
    return data


#: one month_day_nano interval value as Arrow lays it out
_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])


def interval_as_duration(arr: pa.Array) -> pa.Array | None:
    """A month_day_nano interval array (DuckDB's INTERVAL, staged from a duration) as
    duration[us], exactly (DuckDB's intervals keep microseconds); None when a value has
    months, which have no fixed length."""
    total = arr.offset + len(arr)
    if arr.buffers()[1] is None or not len(arr):
        return pa.nulls(len(arr), pa.duration("us"))
    raw = np.frombuffer(arr.buffers()[1], dtype=_INTERVAL, count=total)
    months = raw["months"][arr.offset:]
    if arr.null_count:
        months = months[np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))]
    if months.any():
        return None
    us = raw["days"].astype(np.int64) * 86_400_000_000 + raw["nanos"] // 1000
    return pa.Array.from_buffers(pa.duration("us"), len(arr), [arr.buffers()[0], pa.py_buffer(us)],
                                 null_count=arr.null_count, offset=arr.offset)


def interval_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its interval fields as duration[us], the type ``without_intervals`` gives."""
    for i, f in enumerate(schema):
        if f.type == pa.month_day_nano_interval():
            schema = schema.set(i, f.with_type(pa.duration("us")))
    return schema


def without_intervals(data: pa.Table) -> pa.Table:
    """``data`` with its interval columns as durations (as text, DuckDB's, when a value has
    months): polars, which has no interval type, refuses to import them."""
    text = []
    for i, f in enumerate(data.schema):
        if f.type != pa.month_day_nano_interval():
            continue
        dur = interval_as_duration(data.column(i).combine_chunks())
        if dur is None:
            text.append(f.name)
        else:
            data = data.set_column(i, f.name, dur)
    return nested_to_json(data, text)


def to_polars(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """``pl.from_arrow`` for staged rows and query results, which may hold DuckDB intervals."""
    import polars as pl

    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    return pl.from_arrow(without_intervals(data))  # type: ignore[return-value]


def struct_name_problem(t: pa.DataType) -> str | None:
    """How a struct anywhere inside ``t`` has field names staging cannot keep (an empty name, a name
    twice), or None."""
    if pa.types.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        if "" in names:
            return "unnamed ('')"
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            return f"named twice ({', '.join(map(repr, twice))})"
        children = [t.field(i).type for i in range(t.num_fields)]
    elif pa.types.is_map(t):
        children = [t.key_type, t.item_type]
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        children = [t.value_type]
    else:
        return None
    for c in children:
        bad = struct_name_problem(c)
        if bad is not None:
            return bad
    return None


def refuse_struct_names(schema: pa.Schema, file: str | None = None) -> None:
    """Refuse a struct (anywhere in a column) with an unnamed field or a field name twice: DuckDB
    (staging, or its Parquet reader for ``file``) renames one ('' becomes 'element1'), so the
    value would not read back as sent."""
    from .errors import SchemaMismatchError

    for f in schema:
        bad = struct_name_problem(f.type)
        if bad is None:
            continue
        if file is None:
            raise SchemaMismatchError(
                f"column {f.name!r} ({f.type}) holds a struct whose fields are {bad}: staging would rename "
                f"one (an empty name becomes 'element1'), so the value would not read back as sent. Rename "
                f"the fields at the source, or send the column as JSON text (mapping={{{f.name!r}: "
                f"pl.col({f.name!r}).struct.json_encode()}}). Nothing was sent.")
        raise SchemaMismatchError(
            f"{file}: column {f.name!r} ({f.type}) holds a struct whose fields are {bad}; the reader would "
            f"rename one (an empty name becomes 'element1'), so it would not arrive as the file holds it. "
            f"Rename the struct's fields in the file (pl.read_parquet(...).with_columns(pl.col({f.name!r})"
            f".struct.rename_fields([...])), written again or passed as a frame source). Nothing was sent.")

"""Arrow -> PostgreSQL column types, one mapping for the PostgreSQL destination and the
PostgreSQL workspace store (both create tables from Arrow schemas and must agree)."""

from __future__ import annotations

import pyarrow as pa

from ._arrow import is_nested
from .errors import SchemaMismatchError

__all__ = ["arrow_to_pg"]


_SIMPLE = {
    pa.bool_(): "boolean", pa.int8(): "smallint", pa.int16(): "smallint", pa.uint8(): "smallint",
    pa.int32(): "integer", pa.uint16(): "integer", pa.int64(): "bigint", pa.uint32(): "bigint",
    pa.uint64(): "numeric(20,0)", pa.float16(): "real", pa.float32(): "real",
    pa.float64(): "double precision", pa.string(): "text", pa.large_string(): "text",
    pa.string_view(): "text", pa.binary(): "bytea", pa.large_binary(): "bytea",
    pa.date32(): "date", pa.date64(): "date", pa.null(): "text",
}


def arrow_to_pg(t: pa.DataType) -> str:
    """The PostgreSQL type dfsync creates for an Arrow type (the table in
    :mod:`dfsync.destinations._postgres`'s docstring).

    >>> arrow_to_pg(pa.timestamp("us", tz="UTC"))
    'timestamp with time zone'
    """
    if pa.types.is_dictionary(t):
        return arrow_to_pg(t.value_type)
    if t in _SIMPLE:
        return _SIMPLE[t]
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_fixed_size_binary(t):
        return "bytea"
    if pa.types.is_timestamp(t):
        return "timestamp with time zone" if t.tz else "timestamp without time zone"
    if pa.types.is_time(t):
        return "time without time zone"
    if pa.types.is_duration(t) or t == pa.month_day_nano_interval():
        return "interval"
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and not is_nested(t.value_type):
        return arrow_to_pg(t.value_type) + "[]"
    if is_nested(t):  # structs, maps, lists of nested values: JSON
        return "jsonb"
    raise SchemaMismatchError(
        f"Arrow type {t} has no PostgreSQL column type in dfsync; convert the column to a JSON "
        f"string (e.g. pl.col(c).struct.json_encode()) in the sync's mapping"
    )

"""Values a destination would store altered, refused before anything is sent (docs/SCHEMA.md).

The column types are settled by :mod:`dfsync._schema`; these checks look at the staged values
themselves: nanoseconds where a destination keeps microseconds, NaN and infinities where it has
none (JSON inside a list or struct too), infinite and out-of-range dates, NUL characters in
PostgreSQL text, unsigned integers above SQLite's range, durations too long to send, texts a
Delta partition stores as NULL.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ._arrow import holds, is_list, is_nested
from ._ident import quote
from ._schema import base_type, int_range, is_text
from .errors import SchemaMismatchError

__all__ = ["check_time_units", "check_values"]


def _holds_text(t: pa.DataType) -> bool:
    """A string, or a list/struct/map with a string anywhere inside."""
    return holds(t, is_text)


def _nonfinite_inside(expr: str, t: pa.DataType) -> str | None:
    """A DuckDB condition, true when a float anywhere inside ``expr`` (a list/struct/map of Arrow
    type ``t``) is NaN or infinite; None when ``t`` holds no float."""
    return _inside(expr, t, pa.types.is_floating, lambda x, _: f"(isnan({x}) OR isinf({x}))")


def _infinite_time_inside(expr: str, t: pa.DataType) -> str | None:
    """A DuckDB condition, true when a date or timestamp anywhere inside ``expr`` is infinite."""
    return _inside(expr, t, lambda u: pa.types.is_timestamp(u) or pa.types.is_date(u), isinf)


def isinf(x: str, t: pa.DataType) -> str:
    """DuckDB's ``isinf`` of a date or timestamp ``x`` of Arrow type ``t``. DuckDB has none for
    TIMESTAMPTZ_NS (time-zone-aware nanoseconds, as every pandas tz-aware column is): the run failed
    with a raw BinderException on every destination but DuckDB. It is cast to TIMESTAMPTZ first
    (an infinity stays one)."""
    return f"isinf(CAST({x} AS TIMESTAMPTZ))" if getattr(t, "tz", None) else f"isinf({x})"


def _inside(expr: str, t: pa.DataType, leaf: Any, cond: Any, depth: int = 0) -> str | None:
    """A DuckDB condition, true when ``cond(x, type)`` holds for a value of a type ``leaf`` accepts
    anywhere inside ``expr`` (of Arrow type ``t``); None when ``t`` holds none."""
    t = base_type(t)
    if leaf(t):
        return cond(expr, t)
    if is_list(t):
        x = f"_x{depth}"
        inner = _inside(x, t.value_type, leaf, cond, depth + 1)
        return inner and f"coalesce(list_bool_or(list_transform({expr}, lambda {x}: {inner})), false)"
    if pa.types.is_map(t):
        parts = [_inside(f"map_keys({expr})", pa.list_(t.key_type), leaf, cond, depth),
                 _inside(f"map_values({expr})", pa.list_(t.item_type), leaf, cond, depth)]
    elif pa.types.is_struct(t):
        parts = [_inside(f"struct_extract({expr}, '{f.name.replace(chr(39), chr(39) * 2)}')", f.type, leaf, cond,
                         depth) for f in t]
    else:
        return None
    return " OR ".join(f"coalesce({p}, false)" for p in parts if p) or None


def _first_value(con: Any, table: str, column: str, condition: str) -> str | None:
    """The first value of ``column`` (as text) in staged rows where ``condition`` holds, if any."""
    c = quote(column)
    bad = con.execute(f"SELECT {c}::VARCHAR FROM {table} WHERE {condition.format(c=c)} LIMIT 1").fetchall()
    return bad[0][0] if bad else None


def check_values(con: Any, table: str, records: pa.Schema, destination: Any, where: str) -> None:
    """Refuse (before anything is sent) values the destination would store altered.

    * ``time_unit``: PostgreSQL and MySQL keep microseconds: a nanosecond timestamp whose
      values are whole microseconds goes in exactly; one with a nanosecond part would be rounded.
    * ``nonfinite``: which of NaN / infinity the destination keeps ("nan,inf", "inf" for
      SQLite, which stores NaN as NULL, "" for JSON, which has neither).
    * ``writes_json(t)``: the destination writes a list/struct/map as JSON text (JSON, jsonb, an HTTP
      body), which has neither NaN nor infinity: a float inside with one is refused.
    * ``infinite_times``: True when the destination keeps DuckDB's 'infinity' and '-infinity'
      dates and timestamps (DuckDB only); elsewhere they are refused.
    * ``date_range`` / ``timestamp_range``: the dates and timestamps the destination stores, as
      (year, month, day) bounds [from, before) in proleptic Gregorian years (0 is 1 BC); a value
      outside (PostgreSQL's 4714 BC, a year SQLite's ISO text or Delta's readers cannot write) is refused.
    * ``largest_integer``: SQLite's integers are signed 64-bit: a larger uint64 is refused.
    * ``text_nul``: False when the destination's text cannot hold the NUL character (PostgreSQL's
      text, arrays and jsonb): a string with one, alone or inside a list/struct/map, is refused.
    """
    keeps = set(filter(None, str(getattr(destination, "nonfinite", "nan,inf")).split(",")))
    largest = getattr(destination, "largest_integer", None)
    for f in records:
        t, n = base_type(f.type), f.name
        if not getattr(destination, "text_nul", True) and _holds_text(t):
            # to_json writes a NUL as \u0000 (a backslash in the text itself is written \\)
            cond = ("contains({c}::VARCHAR, chr(0))" if is_text(t)
                    else "regexp_matches(to_json({c})::VARCHAR, '(^|[^\\\\])(\\\\\\\\)*\\\\u0000')")
            bad = _first_value(con, table, n, cond)
            if bad is not None:
                shown = repr(bad)[:80]
                drop = "str.replace_all(chr(0), '', literal=True)"
                fix = (f"mapping={{{n!r}: pl.col({n!r}).{drop}}}, or send the column as bytes "
                       f"(pl.col({n!r}).cast(pl.Binary))" if is_text(t) else
                       f"mapping={{{n!r}: pl.col({n!r}).list.eval(pl.element().{drop})}}"
                       if is_list(t) and is_text(base_type(t.value_type)) else "a mapping expression without it")
                raise SchemaMismatchError(
                    f"column {n!r} holds a text value with a NUL character (\\x00), e.g. {shown}, which "
                    f"{where} cannot store (PostgreSQL text, arrays and jsonb refuse it). Remove it with "
                    f"{fix}. Nothing was sent.")
        nulled = getattr(destination, "texts_read_as_null", None)
        lost = nulled(n) if nulled is not None and is_text(t) else ()
        if lost:
            bad = _first_value(con, table, n, "{c} IN (" + ", ".join("'" + x.replace("'", "''") + "'" for x in lost) + ")")
            if bad is not None:
                c = f"pl.col({n!r})"
                raise SchemaMismatchError(
                    f"column {n!r} holds the text {bad!r}, which {where} stores as NULL (a Delta table names its "
                    f"partitions by their values as text, and an empty text or {lost[-1]!r} names the null "
                    f"partition): it would read back as NULL. Give such values another text in the sync's "
                    f"mapping (mapping={{{n!r}: pl.when({c}.is_in({list(lost)!r})).then(pl.lit('(empty)'))"
                    f".otherwise({c})}}), or partition by another column. Nothing was sent.")
        inside = _nonfinite_inside(quote(n), t) if is_nested(t) and destination.writes_json(t) else None
        if inside is not None:
            bad = _first_value(con, table, n, inside.replace("{", "{{").replace("}", "}}"))
            if bad is not None:
                each = (f"pl.col({n!r}).list.eval(pl.element().fill_nan(None))" if is_list(t)
                        and pa.types.is_floating(base_type(t.value_type)) else "a mapping expression")
                raise SchemaMismatchError(
                    f"column {n!r} holds a NaN or infinite number inside a list/struct value, e.g. {bad[:80]}, "
                    f"which {where} writes as JSON, and JSON has neither (it would be refused, or read back "
                    f"as null). Replace them in the sync's mapping ({each}; infinities: "
                    f"pl.when(x.is_infinite()).then(None).otherwise(x)), or choose a destination that keeps "
                    f"them (DuckDB, Parquet, Delta Lake). Nothing was sent.")
        if pa.types.is_floating(t) and keeps != {"nan", "inf"}:
            conds = ([] if "nan" in keeps else ["isnan({c})"]) + ([] if "inf" in keeps else ["isinf({c})"])
            bad = _first_value(con, table, n, " OR ".join(conds))
            if bad is not None:
                raise SchemaMismatchError(
                    f"column {n!r} holds {bad}, which {where} cannot store as it is (it would read "
                    f"back as NULL). Send NULL for it with mapping={{{n!r}: pl.col({n!r}).fill_nan(None)}}"
                    f" (infinities: pl.when(pl.col({n!r}).is_infinite()).then(None).otherwise(pl.col({n!r})))"
                    f", or choose a destination that keeps it (DuckDB, Parquet, PostgreSQL). Nothing was sent.")
        if is_nested(t) and not getattr(destination, "infinite_times", False):
            inside = _infinite_time_inside(quote(n), t)  # a PostgreSQL timestamptz[] or date[], DuckDB's lists
            bad = _first_value(con, table, n, inside.replace("{", "{{").replace("}", "}}")) if inside else None
            if bad is not None:
                raise SchemaMismatchError(
                    f"column {n!r} holds an infinite date or timestamp inside a list/struct value, e.g. {bad[:80]} "
                    f"(PostgreSQL and DuckDB have them), which {where} cannot store. Send NULL for them in the "
                    f"source query or in the sync's mapping (e.g. mapping={{{n!r}: pl.col({n!r}).list.eval(pl."
                    f"when(pl.element().dt.year().is_between(-9999, 9999)).then(pl.element()))}}), or choose "
                    f"DuckDB. Nothing was sent.")
        if (pa.types.is_timestamp(t) or pa.types.is_date(t)) and not getattr(destination, "infinite_times", False):
            bad = _first_value(con, table, n, isinf("{c}", t))
            if bad is not None:
                c = f"pl.col({n!r})"
                raise SchemaMismatchError(
                    f"column {n!r} holds {bad} (PostgreSQL and DuckDB have infinite dates and timestamps), "
                    f"which {where} cannot store. Send NULL or a date of your choosing for it, in the source "
                    f"query (NULLIF({n}, '{bad}')) or in the sync's mapping (mapping={{{n!r}: "
                    f"pl.when({c}.dt.year().is_between(-9999, 9999)).then({c})}}), or choose DuckDB. "
                    f"Nothing was sent.")
        if pa.types.is_date(t) or pa.types.is_timestamp(t):
            _check_time_range(con, table, f, destination, where)
        if pa.types.is_interval(t):  # sent as Arrow months, days and nanoseconds: the last is 64-bit
            micros = "epoch_us({c} - to_days(datepart('day', {c})::INT) - to_months(datepart('month', {c})::INT " \
                     "+ 12 * datepart('year', {c})::INT))"
            bad = _first_value(con, table, n, f"abs({micros}) > {(2**63 - 1) // 1000}")
            if bad is not None:
                raise SchemaMismatchError(
                    f"column {n!r} holds the duration {bad}, more than the 292 years (2^63 nanoseconds) a "
                    f"duration is sent as: it would arrive as another value. Send it as a number, e.g. "
                    f"mapping={{{n!r}: pl.col({n!r}).dt.total_seconds()}} for a duration column (in a query: "
                    f"EXTRACT(EPOCH FROM {n})). Nothing was sent.")
        if largest is not None and pa.types.is_unsigned_integer(t) and int_range(t)[1] > largest:
            bad = _first_value(con, table, n, f"{{c}} > {int(largest)}")
            if bad is not None:
                raise SchemaMismatchError(
                    f"column {n!r} holds {bad}, above the largest integer {where} stores ({largest}). "
                    f"Send it as exact decimal text with mapping={{{n!r}: pl.col({n!r}).cast(pl.Decimal(20, 0))}}, "
                    f"or choose a destination with unsigned 64-bit integers (DuckDB, Parquet, PostgreSQL, "
                    f"MySQL). Nothing was sent.")
    check_time_units(con, table, records, getattr(destination, "time_unit", "ns"), where)


def _check_time_range(con: Any, table: str, f: pa.Field, destination: Any, where: str) -> None:
    """Refuse a date or timestamp outside the destination's ``date_range`` / ``timestamp_range``."""
    t, n = base_type(f.type), f.name
    bounds = getattr(destination, "date_range" if pa.types.is_date(t) else "timestamp_range", None)
    if bounds is None or (pa.types.is_timestamp(t) and t.unit == "ns"):  # 1677-2262 fits everywhere
        return
    sql_type = "DATE" if pa.types.is_date(t) else "TIMESTAMP"
    expr = "{c}" if getattr(t, "tz", None) is None else "timezone('UTC', {c})"
    fn = "pl.date" if sql_type == "DATE" else "pl.datetime"
    col = f"pl.col({n!r})" + (".dt.convert_time_zone('UTC').dt.replace_time_zone(None)" if expr != "{c}" else "")
    conds, keep = [], []
    for (y, m, d), op, ok in zip(bounds, ("<", ">="), (">=", "<"), strict=True):
        if y <= 294246 or sql_type == "DATE":  # no staged timestamp reaches a bound beyond DuckDB's
            conds.append(f"{expr} {op} {sql_type} '{1 - y if y <= 0 else y:04d}-{m:02d}-{d:02d}"
                         f"{' (BC)' if y <= 0 else ''}'")
            keep.append(f"({col}.dt.year() {ok} {y})" if (m, d) == (1, 1) else f"({col} {ok} {fn}({y}, {m}, {d}))")
    bad = _first_value(con, table, n, f"NOT isinf({{c}}) AND ({' OR '.join(conds)})")
    if bad is None:
        return
    (y0, m0, d0), (y1, m1, d1) = bounds
    raise SchemaMismatchError(
        f"column {n!r} holds {bad}, outside the {sql_type.lower()}s {where} stores ({fn}({y0}, {m0}, {d0}) up to "
        f"before {fn}({y1}, {m1}, {d1}), proleptic Gregorian years, 0 being 1 BC): it would be refused or read "
        f"back as another value. Send NULL for such values in the sync's mapping (mapping={{{n!r}: "
        f"pl.when({' & '.join(keep)}).then(pl.col({n!r}))}}), or choose a destination that keeps them (DuckDB, "
        f"Parquet). Nothing was sent.")


def check_time_units(con: Any, table: str, records: pa.Schema, unit: str, where: str) -> None:
    if unit == "ns":
        return
    for f in records:
        t = base_type(f.type)
        if not ((pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t)) and t.unit == "ns"):
            continue
        c = quote(f.name)
        ns = f"epoch_ns({c})" if pa.types.is_timestamp(t) or pa.types.is_time(t) \
            else f"(epoch_ns(TIMESTAMP '1970-01-01' + {c}))"  # a TIME_NS cannot be added to a timestamp
        bad = con.execute(f"SELECT {c}::VARCHAR FROM {table} WHERE {c} IS NOT NULL AND {ns} % 1000 <> 0 "
                          f"LIMIT 1").fetchall()
        if bad:
            col = f"pl.col({f.name!r})"
            cut = (f"{col}.dt.truncate('1us')" if pa.types.is_timestamp(t)  # polars truncates datetimes only
                   else f"{col}.cast(pl.Duration('us'))" if pa.types.is_duration(t)
                   else f"({col}.cast(pl.Int64) // 1000 * 1000).cast(pl.Time)")
            raise SchemaMismatchError(
                f"column {f.name!r} holds values with nanoseconds (e.g. {bad[0][0]}) but {where} keeps "
                f"{unit}: writing them would round them. Truncate them in the sync's mapping "
                f"(mapping={{{f.name!r}: {cut}}}) if that is acceptable. Nothing was sent.")

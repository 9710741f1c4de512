"""Schema changes between runs: what the destination holds, what the source now sends.

One rule on every destination (docs/SCHEMA.md): every value written reads back equal, or
the run says why before anything is sent. A sync remembers the fields it delivered (name,
Arrow type, nullable, key, still sent); each run compares the records it is about to send
with them, and ``schema=`` decides:

* ``"evolve"`` (default): a new field is added (nullable) and every row is sent once with
  its value; a field the source no longer sends is left as it is in existing rows (NULL in
  new ones); a type the destination column can hold, or widen to without loss, is used.
* ``"freeze"``: any added, dropped or retyped field fails the run, naming each.

Under both, a change that could lose or alter a value (a float into an integer column, a
timestamp into a date, tz-aware into naive, text into a number) raises
:class:`SchemaMismatchError` naming the column, both types and the ways out.
``destination_mode="replace"`` rewrites the table with the source's schema instead.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ._arrow import holds, is_bytes, is_list, is_nested
from ._ident import quote
from ._words import plural
from .errors import ConfigError, SchemaMismatchError

__all__ = ["POLICIES", "Change", "Plan", "fits", "plan", "type_name"]

POLICIES = ("evolve", "freeze")
_UNITS = {"s": 0, "ms": 1, "us": 2, "ns": 3}
#: a destination column declared as JSON (PostgreSQL json/jsonb): holds text and nested values
JSON = "json"


def check_policy(policy: Any) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"schema must be 'evolve' (add new columns, widen types without loss) or "
                          f"'freeze' (fail on any change of the source's columns), not {policy!r}")
    return str(policy)


def _base(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _holds_text(t: pa.DataType) -> bool:
    """A string, or a list/struct/map with a string anywhere inside."""
    return holds(t, _is_text)


def _nonfinite_inside(expr: str, t: pa.DataType, depth: int = 0) -> str | None:
    """A DuckDB condition, true when a float anywhere inside ``expr`` (a list/struct/map of Arrow
    type ``t``) is NaN or infinite; None when ``t`` holds no float."""
    t = _base(t)
    if pa.types.is_floating(t):
        return f"(isnan({expr}) OR isinf({expr}))"
    if is_list(t):
        x = f"_x{depth}"
        inner = _nonfinite_inside(x, t.value_type, depth + 1)
        return inner and f"coalesce(list_bool_or(list_transform({expr}, lambda {x}: {inner})), false)"
    if pa.types.is_map(t):
        parts = [_nonfinite_inside(f"map_keys({expr})", pa.list_(t.key_type), depth),
                 _nonfinite_inside(f"map_values({expr})", pa.list_(t.item_type), depth)]
    elif pa.types.is_struct(t):
        parts = [_nonfinite_inside(f"struct_extract({expr}, '{f.name.replace(chr(39), chr(39) * 2)}')", f.type, depth)
                 for f in t]
    else:
        return None
    return " OR ".join(f"coalesce({p}, false)" for p in parts if p) or None


def _int_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_signed_integer(t):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _digits(t: pa.DataType) -> int:
    lo, hi = _int_range(t)
    return len(str(max(abs(lo), hi)))


def fits(src: pa.DataType | str, dst: pa.DataType | str) -> bool:
    """Does every value of Arrow type ``src`` read back equal from a column of type ``dst``?

    >>> fits(pa.int32(), pa.int64()), fits(pa.float64(), pa.int64()), fits(pa.timestamp("us", "UTC"), pa.timestamp("us"))
    (True, False, False)
    """
    if isinstance(dst, str):  # JSON: text and nested values
        return isinstance(src, pa.DataType) and (_is_text(_base(src)) or is_nested(src) or pa.types.is_null(src))
    if isinstance(src, str):
        return False
    src, dst = _base(src), _base(dst)
    if src == dst or pa.types.is_null(src):
        return True
    if _is_text(src):
        return _is_text(dst)
    if is_bytes(src):
        return is_bytes(dst) and not pa.types.is_fixed_size_binary(dst)
    if pa.types.is_boolean(src):
        return pa.types.is_boolean(dst)
    if pa.types.is_integer(src):
        lo, hi = _int_range(src)
        if pa.types.is_integer(dst):
            dlo, dhi = _int_range(dst)
            return dlo <= lo and hi <= dhi
        if pa.types.is_decimal(dst):
            return _digits(src) <= dst.precision - dst.scale
        return False  # into a float: it reads back as a float, and large values round
    if pa.types.is_floating(src):
        return pa.types.is_floating(dst) and src.bit_width <= dst.bit_width
    if pa.types.is_decimal(src):
        return (pa.types.is_decimal(dst) and src.scale <= dst.scale
                and src.precision - src.scale <= dst.precision - dst.scale)
    if pa.types.is_date(src):
        return pa.types.is_date(dst)
    if pa.types.is_timestamp(src):
        return (pa.types.is_timestamp(dst) and (src.tz is None) == (dst.tz is None)
                and _UNITS[src.unit] <= _UNITS[dst.unit])
    if pa.types.is_time(src):
        return pa.types.is_time(dst) and _UNITS[src.unit] <= _UNITS[dst.unit]
    if pa.types.is_duration(src):
        return ((pa.types.is_duration(dst) and _UNITS[src.unit] <= _UNITS[dst.unit])
                or dst == pa.month_day_nano_interval())
    if is_list(src):
        return is_list(dst) and fits(src.value_type, dst.value_type)
    if pa.types.is_struct(src):
        if not pa.types.is_struct(dst):
            return False
        names = {dst.field(i).name: dst.field(i).type for i in range(dst.num_fields)}
        return all(src.field(i).name in names and fits(src.field(i).type, names[src.field(i).name])
                   for i in range(src.num_fields))
    if pa.types.is_map(src):
        return pa.types.is_map(dst) and fits(src.key_type, dst.key_type) and fits(src.item_type, dst.item_type)
    return False


def rejected_if_too_large(src: pa.DataType | str, dst: pa.DataType | str) -> bool:
    """Would a database refuse (not alter) a ``src`` value too large for a ``dst`` column?

    Integers out of an integer column's range and decimals with more digits than a
    column's precision (at the same or a smaller scale) fail with an error for that row;
    nothing is rounded or cut.
    """
    if isinstance(src, str) or isinstance(dst, str):
        return False
    src, dst = _base(src), _base(dst)
    if pa.types.is_integer(src):
        return pa.types.is_integer(dst) or pa.types.is_decimal(dst)
    if pa.types.is_decimal(src):
        return pa.types.is_decimal(dst) and src.scale <= dst.scale
    return False


def same(a: pa.DataType | str, b: pa.DataType | str) -> bool:
    """Do the two types hold exactly the same values (string vs large_string, say)?"""
    return fits(a, b) and fits(b, a)


def fraction_unit(digits: int) -> str:
    """The Arrow time unit a database column keeping ``digits`` decimal places of a second
    (``timestamp(3)``, ``DATETIME(0)``) holds exactly: a finer value would be rounded, so 1 or 2
    places take whole seconds and 4 or 5 milliseconds; 6 or more ``ns`` (finer values than the
    database keeps are refused by their values, :func:`check_time_units`)."""
    return "s" if digits < 3 else "ms" if digits < 6 else "ns"


def type_name(t: pa.DataType | str) -> str:
    """A short readable name of an Arrow type (``double``, ``timestamp[us, tz=UTC]``)."""
    return str(t)


def _fix(column: str, dst: pa.DataType | str, replace_ok: bool = True,
         src: pa.DataType | str | None = None, policy: str = "evolve") -> str:
    cast = ""
    if isinstance(dst, pa.DataType) and not pa.types.is_interval(dst):  # polars reads no Arrow interval
        try:
            import polars as pl

            dtype = pl.DataFrame(pa.table({column: pa.array([], type=dst)})).dtypes[0]
            expr = f"pl.col({column!r})"
            # polars cuts the fraction off a float cast to an integer without a word: the fix we
            # suggest must make the rounding the user's visible choice, not hide it again
            if isinstance(src, pa.DataType) and pa.types.is_floating(src) and pa.types.is_integer(dst):
                expr += ".round(0)"
            cast = f"mapping={{{column!r}: {expr}.cast(pl.{dtype!r})}}, "
        except Exception:
            cast = ""
    fix = f"cast it in the sync's mapping ({cast or 'a polars expression'}if every value converts exactly)"
    if cast and ".round(0)" in cast:
        fix = (f"round it in the sync's mapping ({cast}which rounds to the nearest whole number: "
               "choose the rounding you want)")
    if not replace_ok:  # an API has no table to rewrite (the http destination refuses 'replace')
        return fix
    # schema='freeze' holds the table's columns under 'replace' too
    return fix + (", or rewrite the table with the source's types with destination_mode='replace'"
                  + (" and schema='evolve'" if policy == "freeze" else ""))


def mismatch(column: str, src: pa.DataType | str, dst: pa.DataType | str, where: str, dst_name: str | None = None,
             replace_ok: bool = True, policy: str = "evolve") -> str:
    return (f"column {column!r} is {type_name(src)} in the source but {dst_name or type_name(dst)} in "
            f"{where}: writing it could lose or alter values; {_fix(column, dst, replace_ok, src, policy)}")


# ---------------------------------------------------------------------- the sync's recorded fields
@dataclass
class Field:
    name: str
    type: pa.DataType
    nullable: bool = True
    key: bool = False
    sent: bool = True  # False: the source no longer sends it (the destination keeps the column)


def dump(fields: Sequence[Field]) -> dict[str, Any]:
    schema = pa.schema([pa.field(f.name, f.type, f.nullable) for f in fields])
    return {"arrow": base64.b64encode(schema.serialize().to_pybytes()).decode(),
            "key": [f.name for f in fields if f.key], "not_sent": [f.name for f in fields if not f.sent]}


def load(data: dict[str, Any] | None) -> list[Field]:
    if not data:
        return []
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(data["arrow"])))
    key, gone = set(data.get("key") or ()), set(data.get("not_sent") or ())
    return [Field(f.name, f.type, f.nullable, f.name in key, f.name not in gone) for f in schema]


@dataclass
class Change:
    kind: str  # added | dropped | widened | narrower | restored; replace: added | removed | retyped
    column: str
    old: pa.DataType | None = None
    new: pa.DataType | None = None
    rewrite: bool = False  # destination_mode='replace': the table was rebuilt with the source's columns

    def describe(self, rows: int | None = None) -> str:
        c = self.column
        if self.rewrite:
            what = (f"added ({type_name(self.new)})" if self.kind == "added" else
                    "removed (no longer in the source)" if self.kind == "removed" else
                    f"changed type from {type_name(self.old)} to {type_name(self.new)}")
            return f"schema: column {c!r} {what}: the replaced table has the source's columns"
        if self.kind == "added":
            again = (f"; {plural(rows, 'row')} {'is' if rows == 1 else 'are'} sent once with its value"
                     if rows is not None else "")
            return f"schema: column {c!r} ({type_name(self.new)}) added to the destination (nullable){again}"
        if self.kind == "restored":
            return f"schema: column {c!r} ({type_name(self.new)}) is sent again"
        if self.kind == "dropped":
            return (f"schema: column {c!r} is no longer in the source: existing rows keep their values, "
                    f"new rows get NULL")
        if self.kind == "widened":
            return f"schema: column {c!r} widened from {type_name(self.old)} to {type_name(self.new)}"
        return (f"schema: column {c!r} is now {type_name(self.new)} in the source; the destination keeps "
                f"{type_name(self.old)}, which holds every value")

    def frozen(self) -> str:
        if self.kind in ("added", "restored"):
            return f"column {self.column!r} ({type_name(self.new)}) was added to the source"
        if self.kind in ("dropped", "removed"):
            return f"column {self.column!r} is no longer in the source"
        return f"column {self.column!r} changed type from {type_name(self.old)} to {type_name(self.new)}"


@dataclass
class Plan:
    changes: list[Change]
    fields: list[Field]  # what the destination holds after this run


def plan(recorded: Sequence[Field], incoming: pa.Schema, key: Sequence[str], policy: str,
         where: str, *, replace: bool = False, replace_ok: bool = True) -> Plan:
    """Compare the records about to be sent with the fields delivered before.

    Raises SchemaMismatchError (nothing sent) under ``freeze`` for any change, and under
    both policies for a type the destination's column cannot hold without loss.
    """
    new_fields = [Field(f.name, f.type, True, f.name in key) for f in incoming]
    if not recorded:
        return Plan([], new_fields)
    if replace:
        return _plan_rewrite(recorded, incoming, new_fields, policy, where)
    old = {f.name: f for f in recorded}
    changes: list[Change] = []
    lossy: list[str] = []
    result: list[Field] = []
    names = set(incoming.names)
    for f in recorded:
        if f.name in names:
            continue
        result.append(Field(f.name, f.type, f.nullable, f.key, sent=False))
        if f.sent:
            changes.append(Change("dropped", f.name, f.type))
    for f in incoming:
        was = old.get(f.name)
        if was is None:
            changes.append(Change("added", f.name, None, f.type))
            result.append(Field(f.name, f.type, True, f.name in key))
            continue
        field = Field(f.name, was.type, was.nullable, f.name in key)
        if not was.sent:
            changes.append(Change("restored", f.name, was.type, f.type))
        if same(f.type, was.type):
            pass
        elif fits(f.type, was.type):
            changes.append(Change("narrower", f.name, was.type, f.type))
        elif fits(was.type, f.type):
            changes.append(Change("widened", f.name, was.type, f.type))
            field.type = f.type
        else:
            lossy.append(mismatch(f.name, f.type, was.type, where, replace_ok=replace_ok, policy=policy))
        result.append(field)
    if lossy:
        raise SchemaMismatchError("; ".join(lossy) + ". Nothing was sent.")
    if policy == "freeze" and changes:
        raise SchemaMismatchError(
            "the source's columns changed and the sync has schema='freeze': "
            + "; ".join(c.frozen() for c in changes)
            + f". Nothing was sent to {where}. Change the source or the mapping back, or create the sync "
              "with schema='evolve' to apply the change"
            + (" (or with schema='evolve' and destination_mode='replace' to rewrite the table)." if replace_ok else ".")
        )
    order = {f.name: i for i, f in enumerate(recorded)}
    result.sort(key=lambda fl: order.get(fl.name, len(order)))
    return Plan(changes, result)


def _plan_rewrite(recorded: Sequence[Field], incoming: pa.Schema, new_fields: list[Field], policy: str,
                  where: str) -> Plan:
    """``replace``: the table is rebuilt with the source's columns and types. Under ``evolve`` each
    difference from the fields delivered before is an event; under ``freeze`` any difference fails
    the run before anything is sent (the rebuilt table would have other columns than the one the
    sync froze)."""
    old = {f.name: f for f in recorded}  # a field the source stopped sending is still a column of the table
    names = set(incoming.names)
    changes = [Change("removed", f.name, f.type) for f in recorded if f.name not in names]
    for f in incoming:
        was = old.get(f.name)
        if was is None:
            changes.append(Change("added", f.name, None, f.type))
        elif not same(f.type, was.type):
            changes.append(Change("retyped", f.name, was.type, f.type))
    if policy == "freeze" and changes:
        raise SchemaMismatchError(
            "the source's columns changed and the sync has schema='freeze': "
            + "; ".join(c.frozen() for c in changes)
            + f". Nothing was sent: {where} keeps its table as it was. Change the source or the mapping "
              "back, or create the sync with schema='evolve' to rewrite the table with the new columns.")
    return Plan([Change(c.kind, c.column, c.old, c.new, rewrite=True) for c in changes], new_fields)


# ---------------------------------------------------------------------- an existing table
@dataclass
class TablePlan:
    add: list[pa.Field]
    widen: list[tuple[str, pa.Field]]  # (existing column name, new field)


def plan_table(incoming: pa.Schema, existing: dict[str, tuple[str, Any]], *, policy: str,
               where: str, can_widen: bool = True, widen: Sequence[str] = ()) -> TablePlan:
    """Fit the records to an existing table: columns to add, columns to widen, or an error.

    ``existing`` maps each table column to (its declared type, the Arrow type it reads
    back as; None when dfsync does not know the declared type). Names match exactly, else
    case-insensitively (PostgreSQL folds unquoted names, SQLite ignores case). ``widen``
    names the columns whose source type widened since the sync last delivered: those are
    widened in place (where the database can). A column that is merely narrower than the
    source's type (a table made by hand, an INTEGER column for int64 values) is kept as it
    is when the database refuses a value too large for it row by row.
    """
    ci = {k.lower(): k for k in existing}
    problems: list[str] = []
    add: list[pa.Field] = []
    to_widen: list[tuple[str, pa.Field]] = []
    widen_ = set(widen)
    for f in incoming:
        name = f.name if f.name in existing else ci.get(f.name.lower())
        if name is None:
            if policy == "freeze":
                problems.append(f"column {f.name!r} ({type_name(f.type)}) is missing from the table "
                                f"(schema='freeze' does not add columns)")
            else:
                add.append(pa.field(f.name, f.type, True))
            continue
        declared, arrow = existing[name]
        if isinstance(arrow, list):  # the column holds either (MySQL DATETIME: naive, or tz-aware as UTC)
            arrow = next((a for a in arrow if fits(f.type, a)), arrow[0])
        if arrow is None:
            problems.append(f"column {f.name!r} is {type_name(f.type)} in the source but {declared} in {where}, "
                            f"a type dfsync cannot check; {_fix(f.name, f.type)}")
        elif fits(f.type, arrow):
            continue
        elif f.name in widen_ and fits(arrow, f.type) and policy == "evolve" and can_widen:
            to_widen.append((name, pa.field(name, f.type, True)))
        elif rejected_if_too_large(f.type, arrow):
            continue
        elif not isinstance(arrow, str) and fits(arrow, f.type):
            why = ("schema='freeze' does not widen columns" if policy == "freeze" else
                   f"the database cannot change a column's type in place; {_fix(f.name, arrow)}"
                   if f.name in widen_ and not can_widen else
                   f"dfsync widens a column only when the sync's own source type widened; {_fix(f.name, arrow)}")
            problems.append(f"column {f.name!r} is {type_name(f.type)} in the source but {declared} in {where} ({why})")
        else:
            problems.append(mismatch(f.name, f.type, arrow, where, declared, policy=policy))
    if problems:
        raise SchemaMismatchError(
            f"the records do not fit {where}: " + "; ".join(problems)
            + f". The table has: {', '.join(f'{k} {v[0]}' for k, v in existing.items())}. Nothing was sent.")
    return TablePlan(add, to_widen)


def check_destination_types(destination: Any, schema: Any) -> None:
    """At create_sync: refuse a field type the destination cannot hold, naming the column and the fix."""
    import polars as pl

    from ._stage_input import refuse_objects

    refuse_objects(schema)
    try:
        arrow = pl.DataFrame(schema=schema).to_arrow().schema
    except Exception:  # checked again before anything is sent (Runner.decide_schema)
        for name, dtype in schema.items():  # a polars type with no Arrow form (Int128) cannot be staged
            try:
                pl.DataFrame(schema={name: dtype}).to_arrow()
            except Exception as exc:
                raise SchemaMismatchError(
                    f"column {name!r} is polars {dtype}, which has no Arrow form to stage or send "
                    f"({type(exc).__name__}: {str(exc)[:120]}); cast it in the sync's mapping, e.g. "
                    f"mapping={{{name!r}: pl.col({name!r}).cast(pl.Decimal(38, 0))}} (exact up to 38 digits) "
                    f"or .cast(pl.String)") from None
        return
    destination.check_schema(arrow)


def fields_now(sync: Any) -> Any:
    """The records' fields (after mapping) as the sync's source gives them now (a polars Schema), for
    the columns of an empty answer; no fields when the source cannot be read here (a frame of
    another session, a file gone)."""
    import polars as pl

    try:
        return sync.mapping.validate(sync.source.schema())
    except Exception:  # only shapes an empty frame: never costs the caller an answer
        return pl.Schema()


def schema_frame(sync: Any) -> Any:
    """``sync.schema()``: the recorded fields, or what the source would send now."""
    import polars as pl

    fields = load(sync.workspace.store.sync_row(sync.name).get("dest_schema"))
    if not fields:
        mapped = sync.mapping.validate(sync.source.schema())
        arrow = pl.DataFrame(schema=mapped).to_arrow().schema
        fields = [Field(f.name, f.type, True, f.name in sync.primary_key) for f in arrow]
    return pl.DataFrame({
        "field": [f.name for f in fields], "type": [type_name(f.type) for f in fields],
        "nullable": [f.nullable and not f.key for f in fields], "key": [f.key for f in fields],
        "in_source": [f.sent for f in fields]}, schema={"field": pl.String, "type": pl.String,
                                                       "nullable": pl.Boolean, "key": pl.Boolean,
                                                       "in_source": pl.Boolean})


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
        t, n = _base(f.type), f.name
        if not getattr(destination, "text_nul", True) and _holds_text(t):
            # to_json writes a NUL as \u0000 (a backslash in the text itself is written \\)
            cond = ("contains({c}::VARCHAR, chr(0))" if _is_text(t)
                    else "regexp_matches(to_json({c})::VARCHAR, '(^|[^\\\\])(\\\\\\\\)*\\\\u0000')")
            bad = _first_value(con, table, n, cond)
            if bad is not None:
                shown = repr(bad)[:80]
                drop = "str.replace_all(chr(0), '', literal=True)"
                fix = (f"mapping={{{n!r}: pl.col({n!r}).{drop}}}, or send the column as bytes "
                       f"(pl.col({n!r}).cast(pl.Binary))" if _is_text(t) else
                       f"mapping={{{n!r}: pl.col({n!r}).list.eval(pl.element().{drop})}}"
                       if is_list(t) and _is_text(_base(t.value_type)) else "a mapping expression without it")
                raise SchemaMismatchError(
                    f"column {n!r} holds a text value with a NUL character (\\x00), e.g. {shown}, which "
                    f"{where} cannot store (PostgreSQL text, arrays and jsonb refuse it). Remove it with "
                    f"{fix}. Nothing was sent.")
        inside = _nonfinite_inside(quote(n), t) if is_nested(t) and destination.writes_json(t) else None
        if inside is not None:
            bad = _first_value(con, table, n, inside.replace("{", "{{").replace("}", "}}"))
            if bad is not None:
                each = (f"pl.col({n!r}).list.eval(pl.element().fill_nan(None))" if is_list(t)
                        and pa.types.is_floating(_base(t.value_type)) else "a mapping expression")
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
        if (pa.types.is_timestamp(t) or pa.types.is_date(t)) and not getattr(destination, "infinite_times", False):
            bad = _first_value(con, table, n, "isinf({c})")
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
        if largest is not None and pa.types.is_unsigned_integer(t) and _int_range(t)[1] > largest:
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
    t, n = _base(f.type), f.name
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
        t = _base(f.type)
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

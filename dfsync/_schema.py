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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as _dc_field
from typing import Any

import pyarrow as pa

from ._arrow import is_bytes, is_list, is_nested
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


def base_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def int_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_signed_integer(t):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _digits(t: pa.DataType) -> int:
    lo, hi = int_range(t)
    return len(str(max(abs(lo), hi)))


def fits(src: pa.DataType | str, dst: pa.DataType | str) -> bool:
    """Does every value of Arrow type ``src`` read back equal from a column of type ``dst``?

    >>> fits(pa.int32(), pa.int64()), fits(pa.float64(), pa.int64()), fits(pa.timestamp("us", "UTC"), pa.timestamp("us"))
    (True, False, False)
    """
    if isinstance(dst, str):  # JSON: text and nested values
        return isinstance(src, pa.DataType) and (is_text(base_type(src)) or is_nested(src) or pa.types.is_null(src))
    if isinstance(src, str):
        return False
    src, dst = base_type(src), base_type(dst)
    if src == dst or pa.types.is_null(src):
        return True
    if is_text(src):
        return is_text(dst)
    if is_bytes(src):
        return is_bytes(dst) and not pa.types.is_fixed_size_binary(dst)
    if pa.types.is_boolean(src):
        return pa.types.is_boolean(dst)
    if pa.types.is_integer(src):
        lo, hi = int_range(src)
        if pa.types.is_integer(dst):
            dlo, dhi = int_range(dst)
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
    src, dst = base_type(src), base_type(dst)
    if pa.types.is_integer(src):
        return pa.types.is_integer(dst) or pa.types.is_decimal(dst)
    if pa.types.is_decimal(src):
        return pa.types.is_decimal(dst) and src.scale <= dst.scale
    return False


def same(a: pa.DataType | str, b: pa.DataType | str) -> bool:
    """Do the two types hold exactly the same values (string vs large_string, say)?"""
    return fits(a, b) and fits(b, a)


def fill_nulls(old: pa.DataType | str, new: pa.DataType | str) -> pa.DataType | None:
    """The one rule for NULL types (docs/SCHEMA.md, a column that held only NULLs): ``new`` where
    each part of polars' Null type (a column of only NULLs, a list's elements, a struct's field or a
    map's values that held only NULLs) takes ``old``'s type there, and each such part of ``old``
    ``new``'s; None when the two differ anywhere else (a widening, a lossy change: not this rule's).

    >>> fill_nulls(pa.list_(pa.null()), pa.list_(pa.int64())), fill_nulls(pa.int64(), pa.null())
    (ListType(list<item: int64>), DataType(int64))
    """
    if isinstance(old, str) or isinstance(new, str):
        return new if old == new else None
    if pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    if is_list(old) and is_list(new) and not pa.types.is_fixed_size_list(new):
        value = fill_nulls(old.value_type, new.value_type)
        if value is None:
            return None
        return (pa.large_list if pa.types.is_large_list(new) else pa.list_)(new.value_field.with_type(value))
    if pa.types.is_struct(old) and pa.types.is_struct(new):
        if [old.field(i).name for i in range(old.num_fields)] != [new.field(i).name for i in range(new.num_fields)]:
            return None
        types = [fill_nulls(old.field(i).type, new.field(i).type) for i in range(new.num_fields)]
        if any(t is None for t in types):
            return None
        return pa.struct([new.field(i).with_type(t) for i, t in enumerate(types)])
    if pa.types.is_map(old) and pa.types.is_map(new):
        key, item = fill_nulls(old.key_type, new.key_type), fill_nulls(old.item_type, new.item_type)
        return pa.map_(key, item) if key is not None and item is not None else None
    return new if same(old, new) else None


def holds_values(column: pa.Array | pa.ChunkedArray, new: pa.DataType) -> bool:
    """Does ``column`` (a destination's, read back) hold a value other than NULL in a part whose type
    is not ``new``'s there? Such a part must hold only NULLs for the column to take ``new``
    (:func:`fill_nulls`): the column itself, or a list's elements, a struct's field."""
    if isinstance(column, pa.ChunkedArray):
        return any(holds_values(chunk, new) for chunk in column.chunks)
    t = column.type
    if same(t, new):
        return False
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_list(new):
        return holds_values(column.flatten(), new.value_type)
    if pa.types.is_struct(t) and pa.types.is_struct(new):
        kinds = {new.field(i).name: new.field(i).type for i in range(new.num_fields)}
        return any(holds_values(part, kinds[t.field(i).name]) if t.field(i).name in kinds else
                   part.null_count < len(part) for i, part in enumerate(column.flatten()))
    return column.null_count < len(column)


def fraction_unit(digits: int) -> str:
    """The Arrow time unit a database column keeping ``digits`` decimal places of a second
    (``timestamp(3)``, ``DATETIME(0)``) holds exactly: a finer value would be rounded, so 1 or 2
    places take whole seconds and 4 or 5 milliseconds; 6 or more ``ns`` (finer values than the
    database keeps are refused by their values, :func:`dfsync._schema_values.check_time_units`)."""
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
            if pl.Series([], dtype=dtype).to_arrow().type != dst and pa.types.is_temporal(dst):
                # timestamp[s] (MySQL DATETIME, PostgreSQL timestamp(0)), time32 (TIME(3)): polars has no
                # such type, and a cast to the nearest it has (ms, a time in ns) was refused again
                return (f"no polars type is {type_name(dst)} (polars' datetimes keep ms, us or ns, its times "
                        f"of day ns): make the table's column keep six fractional digits (MySQL DATETIME(6) or "
                        f"TIME(6), PostgreSQL timestamp(6) or time(6))"
                        + (", or rewrite the table with the source's types with destination_mode='replace'"
                           + (" and schema='evolve'" if policy == "freeze" else "") if replace_ok else ""))
            expr = f"pl.col({column!r})"
            # polars cuts the fraction off a float cast to an integer without a word: the fix we
            # suggest must make the rounding the user's visible choice, not hide it again
            if isinstance(src, pa.DataType) and pa.types.is_floating(src) and pa.types.is_integer(dst):
                expr += ".round(0)"
            cast = f"mapping={{{column!r}: {expr}.cast(pl.{dtype!r})}}, "
        except Exception:
            cast = ""
    # a mapping sends only the fields it names: a sync without one that takes {column: ...} literally
    # would stop sending every other column (NULL in new rows under schema='evolve')
    rest = "; a mapping sends only the fields it names, so name the sync's other fields in it too"
    fix = f"cast it in the sync's mapping ({cast or 'a polars expression'}if every value converts exactly{rest})"
    if cast and ".round(0)" in cast:
        fix = (f"round it in the sync's mapping ({cast}which rounds to the nearest whole number: "
               f"choose the rounding you want{rest})")
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
    kind: str  # added | dropped | widened | typed (from null) | narrower | restored; replace: added | removed | retyped
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
        if self.kind == "typed":
            what = "held only NULLs" if pa.types.is_null(self.old) else f"({type_name(self.old)}) held only NULLs in its nested values"
            return (f"schema: column {c!r} {what} so far and is now {type_name(self.new)} in the source: "
                    f"the destination's column takes that type")
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
    refuse_case_renames(recorded, incoming.names, where)
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
        filled = fill_nulls(was.type, f.type)
        if same(f.type, was.type) or (filled is not None and same(filled, was.type)):
            pass  # only NULLs where the column has a type (polars' Null, a list<null>): not a change of type
        elif filled is not None:
            # every value delivered so far was NULL (the column, or a list's elements, a struct's field):
            # the destination's column takes the type the source now gives them
            changes.append(Change("typed", f.name, was.type, filled))
            field.type = filled
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


def refuse_case_renames(recorded: Sequence[Field], names: Sequence[str], where: str) -> None:
    """Refuse a field named as a delivered one but for case ('Name' now 'name'): the run failed after writing."""
    delivered = {f.name.lower(): f.name for f in recorded}
    for name, old in ((n, delivered.get(n.lower())) for n in names):
        if old is not None and old != name and old not in names:
            raise SchemaMismatchError(
                f"column {name!r} differs only in case from the column {old!r} the sync delivered to {where}; "
                f"names that ignore case (DuckDB, where dfsync keeps the sync's records, MySQL, SQLite, Parquet, "
                f"Delta Lake) take the two as one column. Keep the delivered name in the sync's mapping "
                f"(mapping={{{old!r}: {name!r}, ...}}), or send it under another name. Nothing was sent.")


# ---------------------------------------------------------------------- an existing table
@dataclass
class TablePlan:
    add: list[pa.Field]
    widen: list[tuple[str, pa.Field]]  # (existing column name, new field)
    retype: list[tuple[str, pa.Field]] = _dc_field(default_factory=list)  # a column of only NULLs takes the new type


def plan_table(incoming: pa.Schema, existing: dict[str, tuple[str, Any]], *, policy: str,
               where: str, can_widen: bool = True, widen: Sequence[str] = (), exact_names: bool = False,
               fixed: Sequence[str] = (), typed: Sequence[str] = (),
               holds_values: Callable[[str], bool] | None = None) -> TablePlan:
    """Fit the records to an existing table: columns to add, columns to widen, or an error.

    ``existing`` maps each table column to (its declared type, the Arrow type it reads
    back as; None when dfsync does not know the declared type). Names match exactly, else
    case-insensitively unless ``exact_names`` (PostgreSQL, Delta, Parquet: 'name' into 'NAME' failed, on Delta was lost). ``widen``
    names the columns whose source type widened since the sync last delivered: those are
    widened in place (where the database can). A column that is merely narrower than the
    source's type (a table made by hand, an INTEGER column for int64 values) is kept as it
    is when the database refuses a value too large for it row by row. ``fixed`` names the
    columns the database cannot retype at all (DuckDB's primary key and unique columns): a
    widened one is kept as such a narrower column, or refused naming the ways out.

    ``typed`` names the columns the sync delivered only NULLs to so far (polars' Null type, which
    PostgreSQL, SQLite, MySQL and Delta Lake hold in a text column) and that now have a type: under
    ``evolve`` such a column that cannot hold the new type is retyped (``retype``), when
    ``holds_values(column)`` says it still holds nothing but NULLs; a value written there by
    someone else is never cast or dropped: the run is refused naming the column.
    """
    ci = {k.lower(): k for k in existing}
    problems: list[str] = []
    add: list[pa.Field] = []
    to_widen: list[tuple[str, pa.Field]] = []
    to_retype: list[tuple[str, pa.Field]] = []
    widen_, fixed_, typed_ = set(widen), set(fixed), set(typed)
    for f in incoming:
        name = f.name if f.name in existing else ci.get(f.name.lower())
        if name is not None and name != f.name and exact_names:
            problems.append(f"column {f.name!r} is {name!r} in the table, which tells names apart by case; name the "
                            f"field as the table does in the sync's mapping (mapping={{{name!r}: {f.name!r}, ...}})")
            continue
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
                            f"a type dfsync cannot check (it could keep a value other than the one sent); change "
                            f"the table's column to a type dfsync knows, send the field under another name in "
                            f"the sync's mapping, or rewrite the table with the source's types with "
                            f"destination_mode='replace'")
        elif fits(f.type, arrow):
            continue
        elif f.name in typed_ and policy == "evolve" and holds_values is not None and name not in fixed_:
            if holds_values(name):
                problems.append(
                    f"column {f.name!r} is {type_name(f.type)} in the source; the sync delivered only NULLs to it so "
                    f"far, but the column ({declared} in {where}) holds other values, which dfsync does not cast "
                    f"or drop; {_fix(f.name, arrow)}")
            else:
                to_retype.append((name, pa.field(name, f.type, True)))
        elif f.name in widen_ and fits(arrow, f.type) and policy == "evolve" and can_widen and name not in fixed_:
            to_widen.append((name, pa.field(name, f.type, True)))
        elif rejected_if_too_large(f.type, arrow):
            continue
        elif not isinstance(arrow, str) and fits(arrow, f.type):
            what = "a key column's" if name in fixed_ else "a column's"
            why = ("schema='freeze' does not widen columns" if policy == "freeze" else
                   f"the database cannot change {what} type in place; {_fix(f.name, arrow)}"
                   if f.name in widen_ and (not can_widen or name in fixed_) else
                   f"dfsync widens a column only when the sync's own source type widened; {_fix(f.name, arrow)}")
            problems.append(f"column {f.name!r} is {type_name(f.type)} in the source but {declared} in {where} ({why})")
        else:
            problems.append(mismatch(f.name, f.type, arrow, where, declared, policy=policy))
    if problems:
        raise SchemaMismatchError(
            f"the records do not fit {where}: " + "; ".join(problems)
            + f". The table has: {', '.join(f'{k} {v[0]}' for k, v in existing.items())}. Nothing was sent.")
    return TablePlan(add, to_widen, to_retype)


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

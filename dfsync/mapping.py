"""Column mappings: destination field <- source column, constant, or polars expression.

    mapping={"id": "customer_id",                                  # rename
             "full_name": pl.col("first") + " " + pl.col("last"),  # polars expression
             "origin": dfsync.static("crm")}                       # constant

A mapping is evaluated vectorised: plain renames and constants run inside DuckDB as a
SELECT list when the source can be read natively; anything with an expression runs in
polars before the rows reach DuckDB. ``None`` sends every source column as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from ._args import checked
from ._exprcode import load_expr, python_code
from ._ident import quote
from .errors import ConfigError

__all__ = ["Mapping", "Static", "static"]


@dataclass(frozen=True)
class Static:
    """A constant value sent in every record."""

    value: Any

    def __repr__(self) -> str:
        return f"static({self.value!r})"


@checked("dfsync.static")
def static(value: Any) -> Static:
    """A constant destination field: ``mapping={"origin": dfsync.static("crm")}``.

    >>> dfsync.static("crm")
    static('crm')
    """
    return Static(value)


def _sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int) and -(2**63) <= v < 2**63:
        return repr(v)  # INTEGER or BIGINT, as pl.lit() types it
    if isinstance(v, float):  # a bare 0.1 is a DECIMAL(1,1) to DuckDB, and nan / inf are column names
        return f"'{v!r}'::DOUBLE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    raise TypeError


# Expression steps that move values to other rows (polars' serialized names): a sort, a
# gather by index, a reversal, a shuffle or sample, the positions of a sort.
_REORDER_NODES = {"Sort": "sort", "SortBy": "sort_by", "Gather": "gather"}
_REORDER_FUNCTIONS = {"Reverse": "reverse", "Random": "shuffle or sample", "ArgSort": "arg_sort"}


def _reordering(expr: pl.Expr) -> str | None:
    """The step of ``expr`` that hands one row's value to another row (``pl.col('x').sort()``), or
    None. A step inside a part that gives one value for all rows (``pl.col('x').sort().first()``)
    does not count. Read from polars' serialized tree; a tree this cannot read finds nothing."""
    import io
    import json

    def scalar(node: dict[str, Any]) -> bool:
        try:
            return pl.Expr.deserialize(io.StringIO(json.dumps(node)), format="json").meta.is_scalar()
        except Exception:  # noqa: BLE001 - not an expression (an options dict): look inside
            return False

    def walk(node: Any) -> str | None:
        if isinstance(node, list):
            return next((found for found in map(walk, node) if found), None)
        if not isinstance(node, dict) or scalar(node):
            return None
        for key, value in node.items():
            if key in _REORDER_NODES:
                return _REORDER_NODES[key]
            if key == "Function" and isinstance(value, dict):
                fn = value.get("function")
                name = fn if isinstance(fn, str) else next(iter(fn), None) if isinstance(fn, dict) else None
                if name in _REORDER_FUNCTIONS:
                    return _REORDER_FUNCTIONS[name]
                value = value.get("input")  # the function's own options hold no rows (list.sort() is per row)
            elif key == "Eval" and isinstance(value, dict):
                value = value.get("expr")  # list.eval / arr.eval work inside each row's list
            found = walk(value)
            if found:
                return found
        return None

    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:  # noqa: BLE001 - an expression polars cannot serialize: nothing to read
        return None
    return walk(tree)


def _json_plain(v: Any) -> bool:
    """Text, numbers, booleans, None and lists / dicts of them: stored as JSON as they are."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return True
    if isinstance(v, list):
        return all(_json_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_plain(x) for k, x in v.items())
    return False


class Mapping:
    """A validated mapping for one source schema."""

    def __init__(self, spec: dict[str, Any] | None) -> None:
        if spec is not None and not isinstance(spec, dict):
            raise ConfigError("mapping= takes a dict {destination_field: source_column | dfsync.static(v) | polars expression} or None")
        self.spec = dict(spec) if spec else None
        seen: dict[str, str] = {}
        for field in self.spec or {}:
            other = seen.setdefault(field.lower(), field) if isinstance(field, str) else field
            if other != field:
                raise ConfigError(
                    f"mapping fields {other!r} and {field!r} differ only in case; DuckDB (where dfsync stages "
                    f"rows), MySQL and SQLite ignore case in names and would rename one. Rename one of them "
                    f"in the mapping")
        for field, value in (self.spec or {}).items():
            if not isinstance(field, str) or not field:
                raise ConfigError(f"mapping keys are destination field names (non-empty strings), not {field!r}")
            if not isinstance(value, (str, Static, pl.Expr)):
                raise ConfigError(
                    f"mapping[{field!r}] = {value!r} is not a source column name, dfsync.static(value) "
                    f"or a polars expression"
                )
            if isinstance(value, Static):
                try:
                    pl.lit(value.value)
                except (TypeError, ValueError, pl.exceptions.PolarsError):
                    raise ConfigError(
                        f"mapping[{field!r}] = dfsync.static({value.value!r}): a {type(value.value).__name__} "
                        f"cannot be a column value; give text, a number, a date or time, a decimal, "
                        f"bytes or a list") from None

    def fields(self, source_schema: pl.Schema) -> list[str]:
        return list(self.spec) if self.spec else list(source_schema.names())

    def validate(self, source_schema: pl.Schema) -> pl.Schema:
        """Check every referenced column exists; return the mapped schema."""
        names = list(source_schema.names())
        if self.spec:
            for field, value in self.spec.items():
                if isinstance(value, str) and value not in source_schema:
                    raise ConfigError(
                        f"mapping[{field!r}] refers to column {value!r}, which the source does not have; "
                        f"the source columns are: {', '.join(names)}"
                    )
        try:
            schema = pl.LazyFrame(schema=source_schema).select(self.polars_exprs()).collect_schema()
        except (pl.exceptions.ColumnNotFoundError, pl.exceptions.PolarsError) as exc:
            raise ConfigError(
                f"a mapping expression cannot be evaluated on the source: {str(exc).splitlines()[0]}; "
                f"the source columns are: {', '.join(names)}"
            ) from None
        try:  # three null rows: enough to see most expressions that change the number of rows
            rows = pl.DataFrame(schema=source_schema).clear(3)
        except Exception:  # noqa: BLE001 - a type without nulls to make: the run still checks
            return schema
        problem = self.row_change_error(rows)
        if problem is not None:
            raise problem
        problem = self.reorder_error()
        if problem is not None:
            raise problem
        return schema

    def reorder_error(self) -> ConfigError | None:
        """Refuse an expression that hands one row's value to another row (``pl.col('x').sort()``):
        each key would get another row's value. Checked at create_sync and again at the start of
        every run and preview, for a definition stored before this refusal existed."""
        for field, value in (self.spec or {}).items():
            step = _reordering(value) if isinstance(value, pl.Expr) and not python_code(value) else None
            if step is not None:
                return ConfigError(
                    f"mapping[{field!r}] = {value} reorders the values ({step}): each row would get a value "
                    f"computed from another row, and the other fields would not line up with it. A mapping "
                    f"expression works row by row (pl.col('x') + 1), or gives one value for all rows "
                    f"(pl.col('x').sort().first()). Order or rank the rows in the source instead (a query "
                    f"with ORDER BY, or the frame you pass). Nothing was sent.")
        return None

    def row_change_error(self, rows: pl.DataFrame) -> ConfigError | None:
        """Refuse an expression that does not give one value per row of ``rows`` (source rows) nor one
        value for all of them: ``pl.col('x').unique()`` (or a filter, head, drop_nulls, explode) gives
        other rows, which cannot line up with the others' (the read failed unnamed with polars'
        'zip node received non-equal length inputs', or, alone, sent other rows than the source's)."""
        for field, value in (self.spec or {}).items():
            if not isinstance(value, pl.Expr) or python_code(value):
                continue
            try:
                one = pl.LazyFrame(schema=rows.schema).select(value.alias(field)).collect_schema()[field]
                agg = pl.LazyFrame(schema=rows.schema).group_by(pl.lit(0).alias("\0k")).agg(
                    value.alias(field)).collect_schema()[field]
                if agg == one:  # an aggregate: one value, sent with every row
                    continue
                n = rows.lazy().select(value.alias(field)).collect().height
            except Exception:  # noqa: BLE001 - it does not run on these rows: the read says why
                continue
            if n != rows.height:
                return ConfigError(
                    f"mapping[{field!r}] = {value} gives {n} value{'s' if n != 1 else ''} for {rows.height} source "
                    f"rows: a mapping expression must give one value per source row (pl.col('x') + 1) or one "
                    f"for all of them (an aggregate, pl.col('x').sum()); this one changes the rows (as unique, "
                    f"filter, head, drop_nulls or explode do), so its values would not line up with the other "
                    f"fields'. Choose the rows in the source (a query, or the frame you pass) instead. Nothing "
                    f"was sent.")
        return None

    def source_column(self, field: str) -> str | None:
        """The source column a record field is taken from as it is (a rename, or ``pl.col(name)``),
        or None when the mapping computes it (an expression, a static value)."""
        if not self.spec:
            return field
        value = self.spec.get(field)
        if isinstance(value, str):
            return value
        if isinstance(value, pl.Expr):
            bare = value.meta.undo_aliases()
            if bare.meta.is_column():
                return bare.meta.output_name()
        return None

    def polars_exprs(self) -> list[pl.Expr]:
        if not self.spec:
            return [pl.all()]
        out = []
        for field, value in self.spec.items():
            if isinstance(value, str):
                out.append(pl.col(value).alias(field))
            elif isinstance(value, Static):
                out.append(pl.lit(value.value).alias(field))
            else:
                out.append(value.alias(field))
        return out

    def sql_select(self) -> str | None:
        """A DuckDB SELECT list, or None when the mapping needs polars."""
        if not self.spec:
            return "*"
        parts = []
        for field, value in self.spec.items():
            if isinstance(value, str):
                parts.append(f"{quote(value)} AS {quote(field)}")
            elif isinstance(value, Static):
                try:
                    parts.append(f"{_sql_literal(value.value)} AS {quote(field)}")
                except TypeError:
                    return None
            else:
                return None
        return ", ".join(parts)

    def config(self) -> dict[str, Any] | None:
        """JSON-safe form (polars expressions via their JSON serialisation)."""
        if not self.spec:
            return None
        out: dict[str, Any] = {}
        for field, value in self.spec.items():
            if isinstance(value, str):
                out[field] = {"column": value}
            elif isinstance(value, Static) and _json_plain(value.value):
                out[field] = {"static": value.value}
            elif isinstance(value, Static):  # a date, decimal, bytes ...: stored as the polars literal
                out[field] = {"expr": pl.lit(value.value).meta.serialize(format="json")}
            elif python_code(value):  # never stored: see dfsync/_exprcode.py
                out[field] = {"python": str(value)}
            else:
                out[field] = {"expr": value.meta.serialize(format="json")}
        return out

    @property
    def session_only(self) -> bool:
        """A field computed by a Python function (map_elements, ...), which is never stored."""
        return any(isinstance(v, pl.Expr) and python_code(v) for v in (self.spec or {}).values())

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Mapping:
        if not config:
            return cls(None)
        spec: dict[str, Any] = {}
        for field, value in config.items():
            if "column" in value:
                spec[field] = value["column"]
            elif "static" in value:
                spec[field] = Static(value["static"])
            elif "python" in value:
                raise ConfigError(
                    f"mapping field {field!r} runs a Python function ({value['python']}), which is not stored: the "
                    f"sync runs only in the Python session that created it")
            else:
                spec[field] = load_expr(value["expr"], f"mapping field {field!r}")
        return cls(spec)

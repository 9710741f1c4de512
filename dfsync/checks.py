"""Validation checks: one-line built-ins compiled to DuckDB SQL, and Great Expectations.

Checks run on the staged rows of a run (inserts and updates) before anything is sent.
Built-in checks follow Great Expectations' semantics so the two can be mixed freely:
value checks ignore missing values (NULL, and NaN in float columns, as pandas does),
``not_null`` fails them, and ``mostly=`` lets a fraction of rows fail.

>>> import dfsync.checks as dc
>>> checks = [dc.not_null("email"), dc.between("age", 0, 130), dc.unique("id")]
>>> [c.name for c in checks]
['email not_null', 'age between', 'id unique']

``evaluate(con, relation, checks)`` runs them set-based in DuckDB and returns an
:class:`Evaluation`: per-check results in GX's shape and a table of failing rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dfsync import gx
from dfsync._args import checked
from dfsync._check import ROW, TABLE, Check, Evaluation, ExpressionCheck
from dfsync._checks_eval import check_types, evaluate, validate_checks
from dfsync._checks_eval import dataset_columns as dataset_columns  # the runner's entry points
from dfsync._checks_eval import evaluate_staged as evaluate_staged
from dfsync._checks_sql import sql_aggregate, sql_columns, sql_compares_rows
from dfsync._regex import to_re2
from dfsync.errors import ConfigError

__all__ = [
    "Check",
    "Evaluation",
    "between",
    "check_types",
    "checks_from_config",
    "evaluate",
    "expression",
    "in_set",
    "length_between",
    "matches",
    "normalize_checks",
    "not_null",
    "row_count_between",
    "sql",
    "unique",
    "validate_checks",
]


# ----------------------------------------------------------------------------- built-ins


def _column(column: Any) -> str:
    if not isinstance(column, str) or not column:
        raise ConfigError(f"a check needs a column name (a non-empty string), got {column!r}")
    return column


def _plain(v: Any) -> Any:
    """A numpy scalar (``df["x"].quantile(0.9)``, ``df["m"].unique()``) as the Python value it holds."""
    return v.item() if type(v).__module__ == "numpy" and hasattr(v, "item") else v


def _bounds(what: str, lo: Any, hi: Any, *, allow_none: bool = False) -> None:
    for v in (lo, hi):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"{what} bounds must be numbers or None, got {v!r}")
    if lo is None and hi is None and not allow_none:
        raise ConfigError(f"{what} needs min, max or both")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{what}: min ({lo}) is greater than max ({hi})")


@checked("checks.not_null")
def not_null(column: str, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """Every value is present: NULL fails, and so does NaN in a float column (as in pandas/GX).

    >>> not_null("email", name="email required").name
    'email required'
    """
    return Check("not_null", _column(column), name=name, mostly=mostly)


@checked("checks.unique")
def unique(column_or_columns: str | Iterable[str], *, name: str | None = None, mostly: float = 1.0) -> Check:
    """No value (or combination of values) appears twice; every copy of a duplicate fails.

    Rows with a missing value in any of the columns are ignored (GX's compound uniqueness
    ignores only rows missing every value, so it can count more failing rows).

    >>> unique(["country", "vat_id"]).name
    'country, vat_id unique'
    """
    if isinstance(column_or_columns, str):
        return Check("unique", _column(column_or_columns), name=name, level=TABLE, mostly=mostly)
    cols = [_column(c) for c in column_or_columns]
    if not cols:
        raise ConfigError("unique() needs at least one column")
    if len(cols) == 1:
        return Check("unique", cols[0], name=name, level=TABLE, mostly=mostly)
    return Check("unique", None, name=name, level=TABLE, mostly=mostly, columns=cols)


@checked("checks.between")
def between(column: str, min: float | None = None, max: float | None = None, *,  # noqa: A002
            strict_min: bool = False, strict_max: bool = False, name: str | None = None,
            mostly: float = 1.0) -> Check:
    """Values lie within [min, max] (strict_*: exclusive); missing values are ignored.

    >>> between("age", 0, 130).params["max"]
    130
    """
    min, max = _plain(min), _plain(max)  # noqa: A001
    _bounds("between()", min, max)
    return Check("between", _column(column), name=name, mostly=mostly, min=min, max=max,
                 strict_min=bool(strict_min), strict_max=bool(strict_max))


@checked("checks.in_set")
def in_set(column: str, values: Iterable[Any], *, name: str | None = None, mostly: float = 1.0) -> Check:
    """Values are among ``values``; missing values are ignored.

    >>> in_set("status", ["active", "churned"]).params["values"]
    ['active', 'churned']
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"in_set() needs a list of allowed values, got {values!r}")
    vals = [_plain(v) for v in values]
    for v in vals:
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise ConfigError(f"in_set() values must be strings, numbers or booleans, got {v!r}")
    return Check("in_set", _column(column), name=name, mostly=mostly, values=vals)


@checked("checks.matches")
def matches(column: str, regex: str, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """Values contain a match of ``regex`` (Python ``re.search`` meaning; anchor with ^ and $).

    Lookarounds, back-references and ``\\b`` are not available (DuckDB runs RE2).

    >>> matches("email", r"^[^@]+@[^@]+$").kind
    'matches'
    """
    if not isinstance(regex, str):
        raise ConfigError(f"matches() needs a regex string, got {regex!r}")
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"matches(): invalid regex {regex!r}: {exc}") from exc
    if to_re2(regex) is None:
        raise ConfigError(
            f"matches(): regex {regex!r} uses a feature DuckDB's RE2 engine does not run the same way "
            "(lookaround, back-reference, \\b, possessive quantifier or an inline flag other than i/s); "
            "rewrite it, or use a Great Expectations expectation, which runs through GX")
    return Check("matches", _column(column), name=name, mostly=mostly, regex=regex)


@checked("checks.length_between")
def length_between(column: str, min: int | None = None, max: int | None = None, *,  # noqa: A002
                   strict_min: bool = False, strict_max: bool = False, name: str | None = None,
                   mostly: float = 1.0) -> Check:
    """Text lengths (in characters, i.e. code points) lie within [min, max].

    >>> length_between("zip", 5, 5).kind
    'length_between'
    """
    _bounds("length_between()", min, max)
    return Check("length_between", _column(column), name=name, mostly=mostly, min=min, max=max,
                 strict_min=bool(strict_min), strict_max=bool(strict_max))


@checked("checks.row_count_between")
def row_count_between(min: int | None = None, max: int | None = None, *,  # noqa: A002
                      strict_min: bool = False, strict_max: bool = False, name: str | None = None) -> Check:
    """The number of rows the run read lies within [min, max] (dataset-level: for a full refresh
    the whole source, unchanged rows included; for an incremental run the rows of its window).

    >>> row_count_between(1, 10).level
    'table'
    """
    _bounds("row_count_between()", min, max, allow_none=True)
    return Check("row_count_between", None, name=name, level=TABLE, min=min, max=max,
                 strict_min=bool(strict_min), strict_max=bool(strict_max))


@checked("checks.expression")
def expression(polars_expr: Any, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """A polars expression that must be true per row; false or null fails the row.

    An expression comparing a row with others (``pl.col("x") < pl.col("x").mean() * 5``,
    ``~pl.col("email").is_duplicated()``, ``over``, ``shift``, ``rank``) is dataset-level: it is
    evaluated on every row the run read, not on the changed rows alone.

    >>> import polars as pl
    >>> expression(pl.col("end") >= pl.col("start"), name="ends after start").columns()
    ['end', 'start']
    """
    return ExpressionCheck(polars_expr, name=name, mostly=mostly)


@checked("checks.sql")
def sql(predicate: str, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """A DuckDB SQL predicate that must be true per row; false or null fails the row.

    A predicate with a window function (``count(*) OVER (PARTITION BY email) = 1``) is
    dataset-level: evaluated on every row the run read, not on the changed rows alone.
    A struct's fields are read with a dot (``address.zip IS NOT NULL``), a list's items with
    DuckDB's list functions (``list_bool_and(list_transform(items, lambda x: x.qty > 0))``).

    >>> sql("price * quantity < 10000", name="order size").columns()
    ['price', 'quantity']
    >>> sql("address.zip IS NOT NULL").columns()
    ['address']
    """
    if not isinstance(predicate, str) or not predicate.strip():
        raise ConfigError(f"sql() needs a SQL predicate string, got {predicate!r}")
    agg = sql_aggregate(predicate)
    if agg:
        raise ConfigError(
            f"sql(): predicate {predicate!r} calls the aggregate {agg}() over no window: a predicate is true or "
            f"false for each row. Compare with the whole data set through a window ({agg}(...) OVER (), "
            f"or OVER (PARTITION BY col)), or use row_count_between / a Great Expectations aggregate expectation")
    cols = sql_columns(predicate)
    level = TABLE if sql_compares_rows(predicate) else ROW  # a window function reads other rows
    return Check("sql", None, name=name or predicate, mostly=mostly, predicate=predicate, columns=cols, level=level)


# ----------------------------------------------------------------------------- normalising


def normalize_checks(checks: Any) -> list[Check]:
    """Turn what a user passed as ``checks=`` into a list of :class:`Check` with unique names.

    Accepts None, one check, a list mixing dfsync checks and Great Expectations
    expectations, a GX ExpectationSuite, or a GX Checkpoint (its suites become checks and
    its actions run after each run's checks; bare GX ValidationActions in the list act
    on all the checks; see :mod:`dfsync.gx`).

    >>> [c.name for c in normalize_checks([not_null("a"), not_null("a")])]
    ['a not_null', 'a not_null (2)']
    """
    if checks is None:
        return []
    items = [checks] if isinstance(checks, Check) or gx.is_gx_object(checks) else checks
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
        raise ConfigError(
            f"checks must be a dfsync check, a list of checks, or a Great Expectations suite or checkpoint; "
            f"got {checks!r}")
    out: list[Check] = []
    for item in items:
        if isinstance(item, Check):
            out.append(item)
        elif gx.is_gx_object(item):
            out.extend(gx.from_gx(item))
        else:
            raise ConfigError(
                f"not a check: {item!r}. Use dfsync.checks.not_null(...), between(...), ... "
                "or a Great Expectations expectation / ExpectationSuite / Checkpoint / ValidationAction")
    return _dedupe(gx.bind_actions(out))


def _dedupe(checks: list[Check]) -> list[Check]:
    seen: dict[str, int] = {}
    explicit = [c.name for c in checks if c.explicit_name]
    dup = sorted({n for n in explicit if explicit.count(n) > 1})
    if dup:
        raise ConfigError(f"two checks share the name {dup[0]!r}; check names must be unique")
    taken = set(explicit)
    for c in checks:
        if c.explicit_name:
            continue
        base, k = c.name, seen.get(c.name, 0)
        while c.name in taken:
            k += 1
            c.name = f"{base} ({k + 1})" if k else base
            if k and c.name not in taken:
                break
        seen[base] = k
        taken.add(c.name)
    return checks




#: the level of each built-in kind, whatever a stored definition says: a sync stored by an earlier
#: version keeps the scope the kind has now (a sql() window predicate stored as row-level was
#: computed over the changed rows alone; see sql())
_LEVELS = {"not_null": ROW, "between": ROW, "in_set": ROW, "matches": ROW, "length_between": ROW,
           "unique": TABLE, "row_count_between": TABLE}


def checks_from_config(configs: list[dict]) -> list[Check]:
    """Rebuild checks from their :meth:`Check.config` (as stored with a sync definition).

    A check's level (rows about to be sent, or the whole data set) is decided again from
    its kind and arguments, as when it was made, never taken from the stored definition.

    >>> checks_from_config([not_null("email").config()])[0].name
    'email not_null'
    """
    out: list[Check] = []
    for cfg in configs or []:
        try:
            kind = cfg["kind"]
            if kind.startswith("gx:"):
                out.append(gx.check_from_config(cfg))
            elif kind == "expression":
                from ._exprcode import load_expr

                if cfg["params"].get("expr") is None:
                    raise ConfigError(
                        f"check {cfg['name']!r} runs a Python function ({cfg['params'].get('python')}), which is not "
                        f"stored: it runs only in the Python session that created the sync")
                expr = load_expr(cfg["params"]["expr"], f"check {cfg['name']!r}", fmt="binary")
                out.append(ExpressionCheck(expr, name=cfg["name"], mostly=cfg.get("mostly", 1.0)))
            elif kind == "sql":  # its level from the predicate, as sql() decides it now (see below)
                out.append(sql(cfg["params"]["predicate"], name=cfg["name"], mostly=cfg.get("mostly", 1.0)))
            else:
                params = dict(cfg.get("params") or {})
                c = Check(kind, cfg.get("column"), name=cfg["name"], level=_LEVELS.get(kind, cfg.get("level", ROW)),
                          mostly=cfg.get("mostly", 1.0), **params)
                out.append(c)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"stored check definition is unreadable: {cfg!r} ({exc})") from exc
    return out


# ----------------------------------------------------------------------------- evaluation

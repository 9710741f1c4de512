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

import base64
import difflib
import io
import math
import re
import uuid
from collections.abc import Iterable
from typing import Any

from dfsync._checks_sql import (
    PARTIAL,
    between_success,
    compile_check,
    jsonable,
    mostly_success,
    qualify,
    quote,
    sql_columns,
)
from dfsync._regex import to_re2
from dfsync.errors import ConfigError

__all__ = [
    "Check",
    "Evaluation",
    "between",
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

ROW, TABLE = "row", "table"


class Check:
    """One validation check; build it with the functions of this module.

    >>> not_null("email").config()["kind"]
    'not_null'
    """

    kind: str
    column: str | None
    level: str
    name: str

    def __init__(
        self,
        kind: str,
        column: str | None = None,
        *,
        name: str | None = None,
        level: str = ROW,
        mostly: float = 1.0,
        **params: Any,
    ) -> None:
        if not isinstance(mostly, (int, float)) or isinstance(mostly, bool) or not 0 <= mostly <= 1:
            raise ConfigError(f"mostly must be a number between 0 and 1, got {mostly!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigError(f"a check name must be a non-empty string, got {name!r}")
        self.kind = kind
        self.column = column
        self.level = level
        self.mostly = float(mostly)
        self.params = params
        self.explicit_name = name is not None
        self.name = name if name is not None else self.default_name()

    def default_name(self) -> str:
        cols = self.columns()
        return f"{', '.join(cols)} {self.kind}" if cols else self.kind

    def columns(self) -> list[str]:
        """The record columns this check reads."""
        if self.column is not None:
            return [self.column]
        return list(self.params.get("columns", []))

    def columns_read(self, record_cols: list[str]) -> list[str]:
        """The columns evaluating this check reads (some GX expectations need every column)."""
        return self.columns()

    def config(self) -> dict:
        """A JSON-safe description, for :func:`checks_from_config`."""
        return {"kind": self.kind, "name": self.name, "column": self.column, "level": self.level,
                "mostly": self.mostly, "params": jsonable(self.params)}

    def sql_form(self, types: dict[str, str]) -> Check | None:
        """The built-in check evaluating this one in SQL for these column types (None: cannot)."""
        return self

    def __repr__(self) -> str:
        args = [repr(self.column)] if self.column is not None else []
        args += [f"{k}={v!r}" for k, v in self.params.items() if v is not None]
        if self.mostly != 1.0:
            args.append(f"mostly={self.mostly}")
        return f"dfsync.checks.{self.kind}({', '.join(args)}, name={self.name!r})"


class ExpressionCheck(Check):
    """A polars expression that must be true for every row (false or null fails)."""

    def __init__(self, expr: Any, *, name: str | None = None, mostly: float = 1.0) -> None:
        import polars as pl

        if not isinstance(expr, pl.Expr):
            raise ConfigError(f"expression() needs a polars expression such as pl.col('age') > 0, got {expr!r}")
        self.expr = expr
        super().__init__("expression", None, name=name, mostly=mostly, columns=expr.meta.root_names())

    def config(self) -> dict:
        cfg = super().config()
        cfg["params"]["expr"] = base64.b64encode(self.expr.meta.serialize()).decode()
        return cfg

    def sql_form(self, types: dict[str, str]) -> Check | None:
        return None


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


def not_null(column: str, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """Every value is present: NULL fails, and so does NaN in a float column (as in pandas/GX).

    >>> not_null("email", name="email required").name
    'email required'
    """
    return Check("not_null", _column(column), name=name, mostly=mostly)


def unique(column_or_columns: str | Iterable[str], *, name: str | None = None, mostly: float = 1.0) -> Check:
    """No value (or combination of values) appears twice; every copy of a duplicate fails.

    Rows with a missing value in any of the columns are ignored, as GX does.

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


def row_count_between(min: int | None = None, max: int | None = None, *,  # noqa: A002
                      strict_min: bool = False, strict_max: bool = False, name: str | None = None) -> Check:
    """The number of rows about to be sent lies within [min, max] (a table-level check).

    >>> row_count_between(1, 10).level
    'table'
    """
    _bounds("row_count_between()", min, max, allow_none=True)
    return Check("row_count_between", None, name=name, level=TABLE, min=min, max=max,
                 strict_min=bool(strict_min), strict_max=bool(strict_max))


def expression(polars_expr: Any, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """A polars expression that must be true per row; false or null fails the row.

    >>> import polars as pl
    >>> expression(pl.col("end") >= pl.col("start"), name="ends after start").columns()
    ['end', 'start']
    """
    return ExpressionCheck(polars_expr, name=name, mostly=mostly)


def sql(predicate: str, *, name: str | None = None, mostly: float = 1.0) -> Check:
    """A DuckDB SQL predicate that must be true per row; false or null fails the row.

    >>> sql("price * quantity < 10000", name="order size").columns()
    ['price', 'quantity']
    """
    if not isinstance(predicate, str) or not predicate.strip():
        raise ConfigError(f"sql() needs a SQL predicate string, got {predicate!r}")
    cols = sql_columns(predicate)
    return Check("sql", None, name=name or predicate, mostly=mostly, predicate=predicate, columns=cols)


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
    from dfsync import gx

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


def validate_checks(checks: list[Check], columns: list[str]) -> None:
    """Raise ConfigError when a check reads a column the records do not have.

    >>> validate_checks([not_null("email")], ["id", "email"])
    """
    have = set(columns)
    for c in checks:
        missing = [col for col in c.columns() if col not in have]
        if missing:
            hint = difflib.get_close_matches(missing[0], columns, n=1)
            did = f" Did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"check {c.name!r} reads column {missing[0]!r}, which the records do not have.{did} "
                f"Columns: {', '.join(columns)}")


def checks_from_config(configs: list[dict]) -> list[Check]:
    """Rebuild checks from their :meth:`Check.config` (as stored with a sync definition).

    >>> checks_from_config([not_null("email").config()])[0].name
    'email not_null'
    """
    from dfsync import gx

    out: list[Check] = []
    for cfg in configs or []:
        try:
            kind = cfg["kind"]
            if kind.startswith("gx:"):
                out.append(gx.check_from_config(cfg))
            elif kind == "expression":
                import polars as pl

                expr = pl.Expr.deserialize(io.BytesIO(base64.b64decode(cfg["params"]["expr"])))
                out.append(ExpressionCheck(expr, name=cfg["name"], mostly=cfg.get("mostly", 1.0)))
            else:
                params = dict(cfg.get("params") or {})
                c = Check(kind, cfg.get("column"), name=cfg["name"], level=cfg.get("level", ROW),
                          mostly=cfg.get("mostly", 1.0), **params)
                out.append(c)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"stored check definition is unreadable: {cfg!r} ({exc})") from exc
    return out


# ----------------------------------------------------------------------------- evaluation


class Evaluation:
    """The outcome of :func:`evaluate`.

    ``failures_table`` names a temporary table on the connection with one row per
    (failing row, failed check): ``(_rid BIGINT, check_name VARCHAR)``. Only checks that
    failed overall list rows there (a check passing thanks to ``mostly`` lists none).
    ``results`` holds one GX-shaped dict per check, with its ``scope`` (rows / dataset).
    """

    def __init__(self, failures_table: str, results: list[dict]) -> None:
        self.failures_table = failures_table
        self.results = results
        #: failing rows of dataset-level checks, by their _rid in the dataset relation (None:
        #: evaluated on one relation, all in ``failures_table``)
        self.dataset_failures: str | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if not r["success"]]

    @property
    def success(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line naming each failed check and how many rows failed it."""
        failed = self.failed
        if not failed:
            return f"all {len(self.results)} checks passed"
        parts = []
        for r in failed:
            res = r["result"]
            if r["kind"].endswith("row_count_between"):
                lo, hi = res.get("expected_min"), res.get("expected_max")
                exp = f" (expected {'' if lo is None else lo}..{'' if hi is None else hi})"
                parts.append(f"{r['check_name']}: {res.get('observed_value')} rows{exp}")
            elif r["unexpected_count"] is not None:
                parts.append(f"{r['check_name']}: {r['unexpected_count']} rows")
            elif "exception_message" in res:
                parts.append(f"{r['check_name']}: error: {res['exception_message']}")
            else:
                parts.append(f"{r['check_name']}: observed {res.get('observed_value')!r}")
        word = "check" if len(failed) == 1 else "checks"
        return f"{len(failed)} {word} failed: " + "; ".join(parts)

    def __repr__(self) -> str:
        return f"<Evaluation {self.summary()}>"


def evaluate(con: Any, relation: str, checks: list[Check], *, failures_table: str | None = None) -> Evaluation:
    """Run ``checks`` on the rows of ``relation`` (a table/view on ``con`` with a BIGINT ``_rid``).

    All built-in checks and the common GX expectations run as one aggregate query (plus one
    GROUP BY per uniqueness check, and one more scan to list failing rows when a check
    failed); polars expressions fetch only the columns they read; other GX expectations run
    through GX on chunks of rows.

    >>> import duckdb
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE t AS SELECT range AS _rid, NULLIF(range, 2) AS x FROM range(5)")
    >>> evaluate(con, "t", [not_null("x")]).summary()
    '1 check failed: x not_null: 1 rows'
    """
    from dfsync import gx

    checks = [c for c in checks if c.level != gx.ACTIONS]  # checkpoint actions run later, on these results
    rel = qualify(relation)
    types = {r[0]: str(r[1]) for r in con.execute(f"DESCRIBE {rel}").fetchall()}
    if "_rid" not in types:
        raise ConfigError(f"relation {relation} has no _rid column")
    ft = failures_table or f"_dfsync_check_failures_{uuid.uuid4().hex[:12]}"
    _run(con, f"CREATE OR REPLACE TEMP TABLE {quote(ft)} (_rid BIGINT, check_name VARCHAR)")
    record_cols = [c for c in types if c != "_rid"]
    validate_checks(checks, record_cols)

    sql_checks: list[tuple[Check, Check]] = []  # (reported check, its SQL form)
    others: list[Check] = []
    for c in checks:
        form = c.sql_form(types)
        (sql_checks.append((c, form)) if form is not None else others.append(c))

    results: dict[str, dict] = {}
    temps: list[str] = []
    try:
        n = _run_sql_checks(con, rel, types, sql_checks, temps, results, ft)
        for c in others:
            if isinstance(c, ExpressionCheck):
                res, bad = _run_expression(con, rel, c, n)
            else:
                res, bad = gx.evaluate_gx(con, rel, c, record_cols)
            results[c.name] = res
            if bad is not None and len(bad) and not res["success"]:
                _insert_rids(con, ft, c.name, bad)
    finally:
        for t in temps:
            _run(con, f"DROP TABLE IF EXISTS {quote(t)}")
    return Evaluation(ft, [results[c.name] for c in checks])


ROWS_SCOPE, DATASET_SCOPE = "rows", "dataset"


def scope_of(check: Check) -> str:
    """``rows`` (a row-level check: the rows about to be sent) or ``dataset`` (every row read)."""
    return ROWS_SCOPE if check.level == ROW else DATASET_SCOPE


def dataset_columns(checks: list[Check], record_cols: list[str] | None) -> list[str] | None:
    """The columns the dataset-level checks read ([] without any; None: every column, when
    ``record_cols`` is not known yet and a check needs them all)."""
    out: list[str] = []
    for c in checks:
        if c.level != TABLE:
            continue
        cols = c.columns_read(record_cols if record_cols is not None else ["\0all"])
        if "\0all" in cols:
            return None
        out += cols
    return list(dict.fromkeys(out))


def evaluate_staged(staging: Any, checks: list[Check]) -> Evaluation:
    """Every check of a run on its staging: row-level ones on the rows about to be sent,
    dataset-level ones on every row the run read (:meth:`Staging.dataset_view`)."""
    rows = staging.to_check_view()
    cols = dataset_columns(checks, staging.columns)
    dataset = staging.dataset_view(cols) if any(c.level == TABLE for c in checks) else None
    ev = evaluate_scoped(staging.con, rows, dataset, checks)
    if dataset is not None and not staging.dataset_rids and any(
            r["scope"] == DATASET_SCOPE and r["unexpected_count"] for r in ev.results):
        # rows fail a dataset-level check: evaluate again where every row has its id
        ev = evaluate_scoped(staging.con, rows, staging.dataset_view(cols, exact_rids=True), checks)
    return ev


def evaluate_scoped(con: Any, rows: str, dataset: str | None, checks: list[Check]) -> Evaluation:
    """Row-level checks on ``rows`` (the rows about to be sent), dataset-level checks on
    ``dataset`` (every row the run read; both relations carry ``_rid``).

    The failures table lists failing rows of both; a dataset-level check's failing rows are
    listed with the ``_rid`` they have in ``dataset``, in ``Evaluation.dataset_failures``
    (the caller maps them to rows about to be sent). Results keep the order of ``checks``.
    """
    from dfsync import gx

    checks = [c for c in checks if c.level != gx.ACTIONS]
    whole = [c for c in checks if c.level != ROW]
    if dataset is None or not whole:
        return evaluate(con, rows, checks)
    ev = evaluate(con, rows, [c for c in checks if c.level == ROW])
    ds = evaluate(con, dataset, whole)
    by_name = {r["check_name"]: r for r in ev.results + ds.results}
    out = Evaluation(ev.failures_table, [by_name[c.name] for c in checks])
    out.dataset_failures = ds.failures_table
    return out


def _run(con: Any, statement: str, params: list | None = None) -> None:
    """Execute a statement that returns no rows and finish it (DuckDB 2 refuses new work on a
    connection while a result is unfinished)."""
    con.execute(statement, params) if params is not None else con.execute(statement)
    done = getattr(con, "complete", None)
    if callable(done):
        done()


def _esc(s: str) -> str:
    return s.replace("'", "''")


def _insert_rids(con: Any, ft: str, name: str, rids: Any) -> None:
    import pyarrow as pa

    tbl = pa.table({"_rid": pa.array(rids, type=pa.int64())})
    view = f"_dfsync_rids_{uuid.uuid4().hex[:8]}"
    con.register(view, tbl)
    try:
        _run(con, f"INSERT INTO {quote(ft)} SELECT _rid, ? FROM {quote(view)}", [name])
    finally:
        con.unregister(view)


def result_row(check: Check, *, success: bool, n: int, unexpected: int | None, missing: int | None,
               partial: list | None, extra: dict | None = None) -> dict:
    """One result in GX's shape (shared by the SQL, polars and GX paths)."""
    res: dict[str, Any] = {"element_count": n, "unexpected_count": unexpected}
    pct = None
    if unexpected is not None and n > 0:
        total = unexpected / n * 100
        if missing is None:
            pct = total
        else:
            nonmissing = n - missing
            pct = unexpected / nonmissing * 100 if nonmissing > 0 else None
            res.update(missing_count=missing, missing_percent=missing / n * 100,
                       unexpected_percent_total=total, unexpected_percent_nonmissing=pct)
    elif missing is not None:
        res.update(missing_count=missing, missing_percent=None, unexpected_percent_total=None,
                   unexpected_percent_nonmissing=None)
    res["unexpected_percent"] = pct
    if partial is not None:
        res["partial_unexpected_list"] = jsonable(partial[:PARTIAL])
    if extra:
        res.update(jsonable(extra))
    col = check.column if check.column is not None else (", ".join(check.columns()) or None)
    return {"check_name": check.name, "kind": check.kind, "column_name": col, "level": check.level,
            "scope": scope_of(check), "success": bool(success), "element_count": n, "unexpected_count": unexpected,
            "unexpected_percent": pct, "partial_unexpected_list": res.get("partial_unexpected_list", []),
            "result": res}


def _run_sql_checks(con: Any, rel: str, types: dict[str, str], pairs: list[tuple[Check, Check]],
                    temps: list[str], results: dict[str, dict], ft: str) -> int:
    """Evaluate SQL-form checks with each predicate computed once per row.

    Pass 1 keeps only failing rows (their _rid, failed check names and shown values) in a
    temp table: the one scan that evaluates every predicate, like a hand-written query.
    Pass 2 counts rows and missing values (cheap NULL tests). Counts and partial lists
    then come from the small table of failing rows.
    """
    compiled = []
    for c, form in pairs:
        dups = None
        if form.kind == "unique":
            dups = f"_dfsync_dups_{uuid.uuid4().hex[:12]}"
            temps.append(dups)
        comp = compile_check(form, types, rel, dups)
        if comp.setup:
            comp.prepare(con)
            if dups and not con.execute(f"SELECT count(*) FROM {quote(dups)}").fetchall()[0][0]:
                comp.fail = "false"  # no repeated value: no row fails (and no scan to look for them)
        compiled.append((c, comp))
    row_checks = [(i, c, comp) for i, (c, comp) in enumerate(compiled) if comp.fail and comp.fail != "false"]
    fails = f"_dfsync_fail_{uuid.uuid4().hex[:12]}"
    if row_checks:
        temps.append(fails)
        flags = ", ".join(f"coalesce({comp.fail}, false) AS f{i}" for i, _, comp in row_checks)
        where = " OR ".join(f"f{i}" for i, _, _ in row_checks)
        values = "".join(f", CASE WHEN f{i} THEN {comp.value} END AS v{i}" for i, _, comp in row_checks if comp.value)
        _run(con, f"CREATE TEMP TABLE {quote(fails)} AS SELECT * EXCLUDE (_row) FROM ("
                  f"SELECT _rid, {', '.join(f'f{i}' for i, _, _ in row_checks)}{values}, true AS _row "
                  f"FROM (SELECT *, {flags} FROM {rel}) WHERE {where})")
    miss_ids = [i for i, (_, comp) in enumerate(compiled) if comp.fail and comp.missing and comp.considered is None]
    agg_ids = [i for i, (_, comp) in enumerate(compiled) if comp.agg]
    select = ["count(*)"] + [f"count(*) FILTER (WHERE {compiled[i][1].missing})" for i in miss_ids] \
        + [compiled[i][1].agg for i in agg_ids]
    row = con.execute(f"SELECT {', '.join(select)} FROM {rel}").fetchall()[0]
    n = int(row[0])
    missing = dict(zip(miss_ids, row[1:1 + len(miss_ids)], strict=True))
    missing.update({i: n - comp.considered for i, (_, comp) in enumerate(compiled) if comp.considered is not None})
    observed = dict(zip(agg_ids, row[1 + len(miss_ids):], strict=True))
    counts: dict[int, tuple[int, list]] = {}
    if row_checks:
        agg = []
        for i, _, comp in row_checks:
            agg.append(f"count(*) FILTER (WHERE f{i})")
            agg.append(f"min_by(v{i}, _rid, {PARTIAL}) FILTER (WHERE f{i})" if comp.value else "NULL")
        out = con.execute(f"SELECT {', '.join(agg)} FROM {quote(fails)}").fetchall()[0]
        for k, (i, _, _) in enumerate(row_checks):
            counts[i] = (int(out[2 * k]), list(out[2 * k + 1] or []))
    failing = []
    for i, (c, comp) in enumerate(compiled):
        form = comp.check
        if not comp.fail:  # row_count_between, column aggregates: one observed value
            p = form.params
            value = observed[i] if comp.agg else n
            if isinstance(value, float) and math.isnan(value):
                value = None
            ok = between_success(value, p)
            extra = {"observed_value": value}
            if not comp.agg:
                extra.update(expected_min=p.get("min"), expected_max=p.get("max"))
            results[c.name] = result_row(c, success=ok, n=n, unexpected=None, missing=None, partial=None,
                                         extra=extra)
            results[c.name]["result"].pop("unexpected_count")
            results[c.name]["result"].pop("unexpected_percent")
            if comp.agg:
                results[c.name]["result"].pop("element_count")
                results[c.name]["element_count"] = None
            continue
        u, part = counts.get(i, (0, []))  # not scanned: nothing can fail it
        m = None if i not in missing else int(missing[i])
        if comp.value is None:  # not_null: the unexpected values are the nulls themselves
            part = [None] * min(u, PARTIAL)
        considered = n if m is None else n - m
        ok = mostly_success(considered, u, form.mostly)
        results[c.name] = result_row(c, success=ok, n=n, unexpected=u, missing=m, partial=part)
        if not ok and u:
            failing.append(f"SELECT _rid, '{_esc(c.name)}' FROM {quote(fails)} WHERE f{i}")
    if failing:
        _run(con, f"INSERT INTO {quote(ft)} " + " UNION ALL ".join(failing))
    return n


def _run_expression(con: Any, rel: str, c: ExpressionCheck, n: int) -> tuple[dict, Any]:
    import polars as pl

    cols = ", ".join(quote(x) for x in [*c.columns(), "_rid"])
    df = pl.from_arrow(con.sql(f"SELECT {cols} FROM {rel}").to_arrow_table())
    try:
        ok = df.select(c.expr.alias("__ok")).to_series()
    except Exception as exc:  # polars raises many kinds; the user's expression is at fault
        raise ConfigError(f"check {c.name!r}: the polars expression failed: {exc}") from exc
    if ok.dtype != pl.Boolean or len(ok) != len(df):
        raise ConfigError(f"check {c.name!r}: the expression must give one true/false per row, "
                          f"got {ok.dtype} of length {len(ok)} for {len(df)} rows")
    bad = df.filter(~ok.fill_null(False)).sort("_rid")
    u = bad.height
    shown = bad.head(PARTIAL).drop("_rid")
    partial = shown.to_dicts() if shown.width > 1 else shown.to_series().to_list() if shown.width else []
    res = result_row(c, success=mostly_success(n, u, c.mostly), n=n, unexpected=u, missing=None,
                     partial=partial)
    return res, bad["_rid"].to_arrow()


"""The check model: :class:`Check` and its results, shared by the built-in checks
(:mod:`dfsync.checks`), the SQL and polars evaluation (:mod:`dfsync._checks_eval`) and the
Great Expectations adapter (:mod:`dfsync.gx`).

A check is ``row``-level (each row passes or fails on its own: evaluated on the rows about
to be sent) or ``table``-level (dataset-level: evaluated on every row the run read);
``actions`` marks a GX checkpoint-actions entry, run after the checks and never evaluated.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import polars as pl

from dfsync._checks_sql import PARTIAL, jsonable
from dfsync.errors import ConfigError

from ._words import plural

ROW, TABLE = "row", "table"
ACTIONS = "actions"  # Check.level of a checkpoint-actions entry: run after the checks, never evaluated
ROWS_SCOPE, DATASET_SCOPE = "rows", "dataset"


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
        level = TABLE if compares_rows(expr) else ROW
        super().__init__("expression", None, name=name, mostly=mostly, level=level,
                         columns=list(dict.fromkeys(expr.meta.root_names())))

    @property
    def session_only(self) -> bool:
        """It runs a Python function (map_elements, map_batches, fold ...), which is never stored."""
        from ._exprcode import python_code

        return python_code(self.expr)

    def config(self) -> dict:
        cfg = super().config()
        code = self.session_only  # stored without it: see dfsync/_exprcode.py
        cfg["params"]["expr"] = None if code else base64.b64encode(self.expr.meta.serialize()).decode()
        if code:
            cfg["params"]["python"] = str(self.expr)
        return cfg

    def sql_form(self, types: dict[str, str]) -> Check | None:
        return None


# Nodes of a polars expression whose value for a row depends on other rows: an expression
# holding one is evaluated on every row the run read (dataset-level), not on the changed rows
# alone, where `pl.col("x") < pl.col("x").mean() * 5` would compare a row with 3 others.
_CROSS_ROW_NODES = {"Agg", "Over", "Window", "Rolling", "Len", "Slice", "Gather", "Filter", "Sort", "SortBy",
                    "Explode", "AnonymousFunction"}
_CROSS_ROW_FUNCTIONS = {
    "Shift", "ShiftAndFill", "Rank", "CumSum", "CumProd", "CumMin", "CumMax", "CumCount", "CumReduce",
    "CumFold", "Diff", "PctChange", "IsDuplicated", "IsUnique", "IsFirstDistinct", "IsLastDistinct",
    "Unique", "UniqueCounts", "ValueCounts", "RollingExpr", "RollingExprBy", "Interpolate", "InterpolateBy",
    "EwmMean", "EwmMeanBy", "EwmStd", "EwmVar", "Reverse", "Mode", "ArgUnique", "ArgMin", "ArgMax",
    "ArgSort", "PeakMin", "PeakMax", "Repeat", "Hist", "Rle", "RleId", "Cut", "QCut", "Entropy",
    "FillNullWithStrategy", "ForwardFill", "BackwardFill", "NullCount", "Skew", "Kurtosis", "Quantile",
    "Bitwise", "ApproxNUnique", "Sample", "Shuffle", "GatherEvery", "TopK", "TopKBy",
    "Extend", "ExtendConstant", "DropNulls", "DropNans", "SetSortedFlag", "UpperBound", "LowerBound",
    "IndexOf", "Search", "SearchSorted", "ArgWhere", "Mean", "Median", "Std", "Var", "Sum", "Min", "Max",
    "First", "Last", "NUnique", "Count", "Product", "Implode", "ConcatExpr", "AggGroups",
    "MinBy", "MaxBy", "RLEID", "Random", "Correlation", "Range",
}
_CROSS_ROW_BOOLEAN = {"IsDuplicated", "IsUnique", "IsFirstDistinct", "IsLastDistinct", "Any", "All", "HasNulls",
                      "IsSorted"}
# Eval variants evaluating over each row's own list or array (Cumulative: over the rows before)
_PER_ROW_EVALS = {"List", "ListAgg"}
_BITWISE_PER_VALUE = {"CountOnes", "CountZeros", "LeadingOnes", "LeadingZeros", "TrailingOnes", "TrailingZeros"}
# functions whose inputs after the first are a table of values (old -> new): read from a column, the
# table is the whole column, not the row's value
_TABLE_INPUT_FUNCTIONS = {"Replace", "ReplaceStrict"}
_ELEMENTWISE_FAMILIES = {"StringExpr", "TemporalExpr", "Boolean", "ListExpr", "ArrayExpr", "StructExpr",
                         "BinaryExpr", "CategoricalExpr", "Trigonometry", "Round", "Clip", "Pow"}


def compares_rows(expr: Any) -> bool:
    """True when the polars expression's value for a row may depend on other rows (an aggregate,
    a window, shift, rank, is_duplicated, a Python function over the column...), from its tree."""
    try:
        tree = json.loads(expr.meta.serialize(format="json"))
    except Exception:  # a polars without JSON serialisation: judge by its own flag
        return not expr.meta.is_row_separable()

    def walk(node: Any, family: str | None = None) -> bool:
        if isinstance(node, str):
            return node in _CROSS_ROW_NODES
        if isinstance(node, list):
            return any(walk(x) for x in node)
        if not isinstance(node, dict):
            return False
        for k, v in node.items():
            if k in _CROSS_ROW_NODES:
                return True
            variant = v.get("variant") if k == "Eval" and isinstance(v, dict) else None
            if isinstance(variant, str) and variant in _PER_ROW_EVALS or isinstance(variant, dict) and "Array" in variant:
                if walk(v.get("expr")):  # list.eval / list.agg / arr.eval: over each row's own list
                    return True
                continue
            if k == "function" and isinstance(v, dict) and v.get("Bitwise") in _BITWISE_PER_VALUE:
                continue  # bitwise_count_ones, ...: per value (And / Or / Xor are aggregates)
            if k == "function":  # a Function node: its name (or family) and its inputs
                if isinstance(v, str) and v in _CROSS_ROW_FUNCTIONS:
                    return True
                fname = v if isinstance(v, str) else next(iter(v), None) if isinstance(v, dict) else None
                if fname in _TABLE_INPUT_FUNCTIONS and '"Column"' in json.dumps(node.get("input", [])[1:3]):
                    return True  # x.replace(pl.col("old"), pl.col("new")): a mapping from whole columns
                if isinstance(v, dict):
                    name = next(iter(v), None)
                    if name in _CROSS_ROW_FUNCTIONS:
                        return True
                    inner = v[name]
                    if name == "Boolean" and (inner if isinstance(inner, str) else next(iter(inner or {}), None)) \
                            in _CROSS_ROW_BOOLEAN:
                        return True
                    if name in _ELEMENTWISE_FAMILIES and isinstance(v[name], str):
                        continue  # e.g. {"StringExpr": "StartsWith"}: one row's value from that row
                    if walk(v, name):
                        return True
                continue
            if k == "Literal":
                continue
            if walk(v, family):
                return True
        return False

    return walk(tree)


def scope_of(check: Check) -> str:
    """``rows`` (a row-level check: the rows about to be sent) or ``dataset`` (every row read)."""
    return ROWS_SCOPE if check.level == ROW else DATASET_SCOPE


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
        #: by check name, what each uniqueness test that proved its values distinct by their hashes'
        #: digest keeps for later runs: ``{"sha256", "values", "sorted"}`` (``sorted`` False: the digest
        #: of an earlier proof held, ``from_run`` naming its run; None: this process's)
        self.proofs: dict[str, dict] = {}

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
            return "the check passed" if len(self.results) == 1 else f"all {len(self.results)} checks passed"
        parts = []
        for r in failed:
            res = r["result"]
            if r["kind"].endswith("row_count_between"):
                lo, hi = res.get("expected_min"), res.get("expected_max")
                exp = f" (expected {'' if lo is None else lo}..{'' if hi is None else hi})"
                parts.append(f"{r['check_name']}: {plural(res.get('observed_value'), 'row')}{exp}")
            elif r["unexpected_count"] is not None:
                parts.append(f"{r['check_name']}: {plural(r['unexpected_count'], 'row')}")
            elif "exception_message" in res:
                parts.append(f"{r['check_name']}: error: {res['exception_message']}")
            else:
                parts.append(f"{r['check_name']}: observed {res.get('observed_value')!r}")
        word = "check" if len(failed) == 1 else "checks"
        return f"{len(failed)} {word} failed: " + "; ".join(parts)

    def __repr__(self) -> str:
        return f"<Evaluation {self.summary()}>"


#: the columns of a check-results frame (``validate().checks``, ``run.validation()``), also when empty
RESULT_SCHEMA = {"check_name": pl.String, "kind": pl.String, "column_name": pl.String, "level": pl.String,
                 "scope": pl.String, "success": pl.Boolean, "element_count": pl.Int64,
                 "unexpected_count": pl.Int64, "unexpected_percent": pl.Float64,
                 "partial_unexpected_list": pl.String, "result": pl.String}


def results_frame(results: list[dict[str, Any]]) -> pl.DataFrame:
    """Check results as a frame; lists and result dicts as JSON text (their types vary by check).
    No results: an empty frame with the same columns. A column whose values are all null (no
    percentage over an empty source, no column for a row count) keeps its type."""
    if not results:
        return pl.DataFrame(schema=RESULT_SCHEMA)
    rows = [{**r, "partial_unexpected_list": json.dumps(r.get("partial_unexpected_list"), default=str),
             "result": json.dumps(r.get("result"), default=str)} for r in results]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    return frame.with_columns(pl.col(c).cast(t) for c, t in RESULT_SCHEMA.items() if c in frame.columns)

"""Great Expectations 1.x adapter: expectations become dfsync checks.

The common column expectations are evaluated as DuckDB SQL with the same results as
GX's pandas engine (see ``_checks_sql``); every other expectation runs through GX itself
on the staged rows, chunk by chunk where the expectation is row-wise, so memory stays
bounded. ``great_expectations`` is imported only here and only when needed: it costs
seconds to import.

>>> import great_expectations.expectations as gxe                # doctest: +SKIP
>>> [c.kind for c in from_gx(gxe.ExpectColumnValuesToNotBeNull(column="email"))]  # doctest: +SKIP
['gx:expect_column_values_to_not_be_null']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dfsync import _gx_actions
from dfsync._check import ACTIONS, ROW, TABLE, Check, result_row
from dfsync._checks_sql import (
    comparable,
    is_numeric,
    is_scalar,
    is_text,
    jsonable,
    mostly_success,
    regex_ok,
)
from dfsync._gx_context import batch_definition, gx_available, import_gx
from dfsync._ident import quote
from dfsync.errors import ConfigError, MissingDependencyError

CHUNK_ROWS = 250_000  # rows per pandas chunk handed to GX

# Map metrics whose outcome for a row depends on the other rows: a map expectation on one of
# them (or on a subclass, which inherits its metric) is a dataset-level check.
_CROSS_ROW_METRICS = {
    "column_values.unique", "compound_columns.unique", "multicolumn_values.unique",
    "column_values.increasing", "column_values.decreasing", "column_values.z_score.under_threshold",
    "column_values.not_outliers",
}
# keyword arguments that never change an expectation's result
_NEUTRAL_KWARGS = {"catch_exceptions", "meta", "notes", "description", "id", "rendered_content"}
# per compiled expectation type: the arguments its SQL form reproduces exactly; any other
# argument given (result_format, windows, parse_strings_as_datetimes, ...) goes to GX itself
_COMPILED_KWARGS = {
    "expect_column_values_to_not_be_null": {"column", "mostly"},
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max", "mostly"},
    "expect_column_values_to_be_in_set": {"column", "value_set", "mostly"},
    "expect_column_values_to_match_regex": {"column", "regex", "mostly"},
    "expect_column_value_lengths_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max",
                                                  "mostly"},
    "expect_column_values_to_be_unique": {"column", "mostly"},
    "expect_table_row_count_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
}
# column aggregate expectations compiled to one DuckDB aggregate each (see _checks_sql.AGGREGATES)
_AGGREGATE_TYPES = {
    "expect_column_mean_to_be_between": "mean", "expect_column_min_to_be_between": "min",
    "expect_column_max_to_be_between": "max", "expect_column_sum_to_be_between": "sum",
    "expect_column_median_to_be_between": "median", "expect_column_stdev_to_be_between": "stdev",
    "expect_column_unique_value_count_to_be_between": "distinct",
}
for _t in _AGGREGATE_TYPES:
    _COMPILED_KWARGS[_t] = {"column", "min_value", "max_value", "strict_min", "strict_max"}


def expectation_class(etype: str) -> Any:
    """GX's registered class for an expectation type (a user subclass registers itself when defined)."""
    import_gx()
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        return get_expectation_impl(etype)
    except Exception as exc:  # ExpectationNotFoundError
        raise ConfigError(f"Great Expectations does not know the expectation {etype!r}: import the module "
                          "that defines it before using the sync") from exc


def level_of(cls: type) -> tuple[str, bool]:
    """(level, is_map) of an expectation class, from GX's class hierarchy, never its name.

    Column, column-pair and multicolumn map expectations are row-level, unless their map
    metric compares rows with each other (uniqueness, ordering, z-scores): those, and every
    table or column-aggregate expectation, are dataset-level.
    """
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    if issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
        return (TABLE if getattr(cls, "map_metric", None) in _CROSS_ROW_METRICS else ROW), True
    return TABLE, False


def is_gx_object(obj: Any) -> bool:
    """True for Great Expectations objects (and subclasses, e.g. custom actions), without importing GX."""
    return any(t.__module__.startswith("great_expectations") for t in type(obj).__mro__)


class GXCheck(Check):
    """A Great Expectations expectation, evaluated in SQL when possible, else through GX."""

    def __init__(self, gx_config: dict, *, name: str | None = None, level: str | None = None,
                 is_map: bool | None = None) -> None:
        etype = gx_config["type"]
        kw = dict(gx_config.get("kwargs") or {})
        self.gx_config = {"type": etype, "kwargs": kw, "meta": gx_config.get("meta") or {}}
        cols = kw.get("column_list") or [c for c in (kw.get("column_A"), kw.get("column_B")) if c]
        if level is None or is_map is None:
            level, is_map = level_of(expectation_class(etype))
        self.is_map = bool(is_map)
        mostly = kw.get("mostly", 1.0)
        super().__init__(f"gx:{etype}", kw.get("column"), name=name, level=level,
                         mostly=mostly if isinstance(mostly, (int, float)) else 1.0,
                         **({"columns": list(cols)} if cols else {}))

    def default_name(self) -> str:
        cols = self.columns()
        etype = self.kind[3:]
        return f"{', '.join(cols)} {etype}" if cols else etype

    def config(self) -> dict:
        return {"kind": self.kind, "name": self.name, "expectation": jsonable(self.gx_config),
                "level": self.level, "map": self.is_map}

    def columns_read(self, record_cols: list[str]) -> list[str]:
        """The columns GX is given: the expectation's own, or every column when it names none
        or has a row_condition (which may name any column, in either condition parser)."""
        kw = self.gx_config["kwargs"]
        if kw.get("row_condition") or not self.columns():
            return list(record_cols)
        return self.columns()

    def sql_form(self, types: dict[str, str]) -> Check | None:
        """The built-in check with identical results for these column types, if there is one."""
        kw = self.gx_config["kwargs"]
        etype, col = self.kind[3:], kw.get("column")
        allowed = _COMPILED_KWARGS.get(etype)
        if allowed is None or any(k not in allowed and k not in _NEUTRAL_KWARGS for k in kw):
            return None  # row_condition, result_format, windows, ...: GX decides
        if any(isinstance(v, dict) for v in kw.values()):
            return None  # suite parameters: GX decides
        t = types.get(col, "") if col else ""
        mostly = self.mostly
        lo, hi = kw.get("min_value"), kw.get("max_value")
        strict = {"strict_min": bool(kw.get("strict_min")), "strict_max": bool(kw.get("strict_max"))}

        def num(v: Any) -> bool:
            return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)

        if etype == "expect_column_values_to_not_be_null" and col:
            return Check("not_null", col, mostly=mostly)
        if etype == "expect_column_values_to_be_between" and is_numeric(t) and num(lo) and num(hi) \
                and (lo is not None or hi is not None):
            return Check("between", col, mostly=mostly, min=lo, max=hi, **strict)
        if etype == "expect_column_values_to_be_in_set" and t and isinstance(kw.get("value_set"), list):
            vs = kw["value_set"]
            if all(comparable(v, t) for v in vs) and (is_numeric(t) or is_text(t) or t == "BOOLEAN"):
                return Check("in_set", col, mostly=mostly, values=vs)
        if etype == "expect_column_values_to_match_regex" and is_text(t) and isinstance(kw.get("regex"), str) \
                and regex_ok(kw["regex"]) is not None:
            return Check("matches", col, mostly=mostly, regex=kw["regex"])
        if etype == "expect_column_value_lengths_to_be_between" and is_text(t) and num(lo) and num(hi) \
                and (lo is not None or hi is not None):
            return Check("length_between", col, mostly=mostly, min=lo, max=hi, **strict)
        if etype == "expect_column_values_to_be_unique" and t and is_scalar(t):
            return Check("unique", col, level=TABLE, mostly=mostly)
        if etype == "expect_table_row_count_to_be_between" and num(lo) and num(hi):
            return Check("row_count_between", None, level=TABLE, min=lo, max=hi, **strict)
        fn = _AGGREGATE_TYPES.get(etype)
        if fn and num(lo) and num(hi) and (is_numeric(t) or fn == "distinct" and (is_text(t) or t == "BOOLEAN")):
            return Check("aggregate", col, level=TABLE, fn=fn, min=lo, max=hi, **strict)
        return None


def from_gx(obj: Any) -> list[Check]:
    """Checks for a GX ExpectationSuite, a single expectation, a Checkpoint or a ValidationAction.

    A Checkpoint gives its suites' expectations plus a :class:`CheckpointActions` entry;
    a ValidationAction gives a bare entry that :func:`bind_actions` completes.
    """
    cls = type(obj).__name__
    if cls == "ExpectationSuite":
        checks = [c for e in obj.expectations for c in from_gx(e)]
        for c in checks:
            c.gx_suite = obj.name  # type: ignore[attr-defined]  # groups bare actions' results by suite
        return checks
    if cls == "Checkpoint":
        return _gx_actions.checks_from_checkpoint(obj, from_gx)
    from great_expectations.checkpoint.actions import ValidationAction  # a GX object: GX is loaded

    if isinstance(obj, ValidationAction):
        return [_gx_actions.bare_action(obj)]
    conf = getattr(obj, "configuration", None)
    if conf is not None and hasattr(conf, "to_json_dict"):
        level, is_map = level_of(type(obj))
        return [GXCheck(conf.to_json_dict(), level=level, is_map=is_map)]
    raise ConfigError(f"{cls} is not supported as a check; pass GX expectations, an ExpectationSuite, "
                      "a Checkpoint or ValidationActions")


def check_from_config(cfg: dict) -> Check:
    """Rebuild a stored GX check; checks that GX is installed, without importing it."""
    if not gx_available():
        raise MissingDependencyError("great_expectations", "validation", f"the stored check {cfg.get('name')!r}")
    if cfg["kind"] == "gx:checkpoint":
        return _gx_actions.CheckpointActions.from_config(cfg)
    return GXCheck(cfg["expectation"], name=cfg.get("name"), level=cfg.get("level"), is_map=cfg.get("map"))


# ----------------------------------------------------------------------------- GX engine


def expectation(check: GXCheck) -> Any:
    import_gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    return ExpectationConfiguration(**check.gx_config).to_domain_obj()


def evaluate_gx(con: Any, rel: str, check: GXCheck, record_cols: list[str]) -> tuple[dict, list | None]:
    """Run one expectation through GX's pandas engine on the staged rows.

    Row-wise expectations see ``CHUNK_ROWS`` rows at a time and their counts are added up;
    others see the whole of the columns they read at once. Returns the result and the
    ``_rid`` of failing rows (row-wise expectations only).
    """
    exp = expectation(check)
    bd = batch_definition()
    cols = check.columns_read(record_cols)
    sel = ", ".join(quote(c) for c in [*cols, "_rid"])
    reader = con.sql(f"SELECT {sel} FROM {rel} ORDER BY _rid").to_arrow_reader(CHUNK_ROWS)
    chunked = check.level == ROW  # a row's outcome depends on that row only: bounded chunks
    fmt = {"result_format": "COMPLETE" if check.is_map else "SUMMARY"}
    if not chunked:
        import pyarrow as pa

        batches = [reader.read_all()]
        if batches[0].num_rows == 0:
            batches = [pa.Table.from_batches([], schema=reader.schema)]
    else:
        batches = reader
    n = u = m = 0
    has_missing = False
    whole_ok: bool | None = None  # a map expectation GX answers for the whole column (of type, in type list)
    partial: list = []
    rids: list = []
    last: dict = {}
    for batch in batches:
        df = batch.to_pandas().set_index("_rid")
        res = bd.get_batch(batch_parameters={"dataframe": df}).validate(exp, result_format=fmt)
        err = _gx_error(res)
        if err:
            raise ConfigError(f"check {check.name!r}: Great Expectations failed: {err}")
        r = dict(res.result or {})
        last = r
        if not chunked:
            ok = bool(res.success)
            break
        if "unexpected_count" not in r:  # no per-row answer: GX's verdict on the chunk is the answer
            whole_ok = bool(res.success) and whole_ok is not False
            continue
        n += int(r.get("element_count") or 0)
        u += int(r.get("unexpected_count") or 0)
        if "missing_count" in r:
            has_missing = True
            m += int(r.get("missing_count") or 0)
        if len(partial) < 20:
            partial.extend(r.get("partial_unexpected_list") or [])
        for d in r.get("unexpected_index_list") or []:
            rids.append(d["_rid"] if isinstance(d, dict) else d)
        rids = [x for x in rids if x is not None and x == x]  # rows without an id (NaN) cannot be listed
    else:
        ok = True
    if not chunked:
        if "unexpected_count" in last:
            extra = _extra(last)
            bad = [d["_rid"] if isinstance(d, dict) else d for d in last.get("unexpected_index_list") or []]
            bad = [x for x in bad if x is not None and x == x]  # rows without an id (NaN) cannot be listed
            res_row = result_row(check, success=ok, n=int(last.get("element_count") or 0),
                                 unexpected=int(last["unexpected_count"]), missing=last.get("missing_count"),
                                 partial=list(last.get("partial_unexpected_list") or []), extra=extra)
            return res_row, bad
        return _observed_row(check, ok, last), None
    if whole_ok is not None:
        return _observed_row(check, whole_ok, last), None
    considered = n - m if has_missing else n
    ok = mostly_success(considered, u, check.mostly)
    out = result_row(check, success=ok, n=n, unexpected=u, missing=m if has_missing else None,
                     partial=partial)
    return out, rids


def _extra(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("unexpected_index") and k != "unexpected_list"}


def _observed_row(check: GXCheck, ok: bool, r: dict) -> dict:
    """The result of an expectation GX answered as a whole (an observed value, no failing rows)."""
    out = result_row(check, success=ok, n=0, unexpected=None, missing=None, partial=None, extra=_extra(r))
    out["element_count"] = None
    for k in ("element_count", "unexpected_count", "unexpected_percent"):
        out["result"].pop(k, None)
    return out


def _gx_error(res: Any) -> str | None:
    """The message of an exception GX caught while validating, if any."""
    info = res.exception_info or {}
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    return next((v.get("exception_message") for v in info.values()
                 if isinstance(v, dict) and v.get("raised_exception")), None)


def check_arguments(checks: list[Check], empty: Any) -> None:
    """Reject, at create_sync, expectations whose arguments GX itself rejects (min_value above
    max_value, an unknown condition parser, ...): GX validates each map expectation on
    ``empty``, a zero-row pandas frame of the records' columns and types, and its reason
    becomes a ConfigError. (Aggregate expectations are not tried: on no rows their observed
    value is missing, and GX may fail comparing it where real data would pass.)"""
    gx_checks = [c for c in checks if isinstance(c, GXCheck) and c.is_map]
    if not gx_checks:
        return
    bd = batch_definition()
    for c in gx_checks:
        try:
            exp = expectation(c)
            res = bd.get_batch(batch_parameters={"dataframe": empty}).validate(exp)
            err = _gx_error(res)
        except Exception as exc:  # GX raises many kinds for bad arguments
            err = f"{type(exc).__name__}: {exc}"
        if err:
            raise ConfigError(f"check {c.name!r}: Great Expectations rejects its arguments: {err}")


# ----------------------------------------------------------------------------- checkpoint actions
# (the machinery is in dfsync._gx_actions, which imports GX only when a checkpoint is given or run)

def bind_actions(checks: list[Check]) -> list[Check]:
    """Merge bare GX ValidationActions of a checks list into one entry reporting on every check.

    Each ExpectationSuite given becomes one validation result; the other checks one more,
    named ``dfsync``. A Checkpoint's own entry reports on its validation definitions only.

    >>> [c.name for c in bind_actions([Check("not_null", "x")])]
    ['x not_null']
    """
    if not any(c.level == ACTIONS for c in checks):
        return checks
    return _gx_actions.bind(checks)


def run_checkpoint_actions(checks: list[Check], results: list[dict], *, sync_name: str, run_id: int,
                           note: Callable[[str], Any]) -> None:
    """Run the GX checkpoint actions among ``checks`` on this run's check ``results``.

    Called by the runner after every evaluation, passing or failing; GX actions decide
    themselves whether to act (``notify_on=``). Nothing here raises: problems become
    ``note`` calls (run events). Without a checkpoint among the checks, GX is not imported.

    >>> run_checkpoint_actions([], [], sync_name="s", run_id=1, note=print)
    """
    for hook in checks:
        if hook.level != ACTIONS:
            continue
        try:
            hook.run(checks, results, sync_name=sync_name, run_id=run_id, note=note)  # type: ignore[attr-defined]
        except Exception as exc:
            note(f"GX checkpoint {hook.checkpoint_name!r}: actions not run: "  # type: ignore[attr-defined]
                 f"{type(exc).__name__}: {exc}")

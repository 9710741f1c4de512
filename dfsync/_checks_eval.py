"""Evaluating checks on staged rows: built-ins (and the GX expectations with an exact SQL
form) as set-based DuckDB SQL, polars expressions on the columns they read, every other GX
expectation through :mod:`dfsync.gx`. The public entry points are re-exported by
:mod:`dfsync.checks`.
"""

from __future__ import annotations

import difflib
import math
import uuid
from typing import Any

import duckdb

from dfsync import gx
from dfsync._arrow import to_polars
from dfsync._check import (
    ACTIONS,
    DATASET_SCOPE,
    ROW,
    TABLE,
    Check,
    Evaluation,
    ExpressionCheck,
    result_row,
)
from dfsync._checks_sql import (
    PARTIAL,
    between_success,
    compile_check,
    key_proves_unique,
    mostly_success,
    qualify,
)
from dfsync._ident import quote
from dfsync.errors import ConfigError, DfsyncError

from ._words import plural


def validate_checks(checks: list[Check], columns: list[str]) -> None:
    """Raise ConfigError when a check reads a column the records do not have.

    >>> validate_checks([Check("not_null", "email")], ["id", "email"])
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


#: DuckDB errors a check itself causes (its SQL, or its kind on a column of another type: between() on
#: text, in_set() of text on a date), not the machine (out of memory, an interrupt)
_CHECK_FAULTS = (duckdb.ProgrammingError, duckdb.DataError)


def check_types(checks: list[Check], schema: Any) -> None:
    """Raise ConfigError when a check cannot run on the records' column types (``schema``: the
    mapped records' polars schema), as create_sync learns them, instead of every run failing
    after the read with the engine's bare error: the built-in checks and the SQL forms of GX
    expectations run on one row of nulls, a polars expression is typed on no rows.

    >>> import polars as pl
    >>> from dfsync.checks import between
    >>> check_types([between("name", 0, 1)], pl.Schema({"name": pl.String}))
    Traceback (most recent call last):
    ...
    dfsync.errors.ConfigError: check 'name between' cannot run on column name (VARCHAR): Binder Error: ...
    """
    import polars as pl

    empty = pl.DataFrame(schema=schema)
    for c in checks:
        if isinstance(c, ExpressionCheck):
            try:
                out = empty.select(c.expr)
                gives = out.dtypes[0]
            except pl.exceptions.PolarsError as exc:
                raise ConfigError(f"check {c.name!r}: the polars expression cannot run on "
                                  f"{_typed(c, {k: str(v) for k, v in schema.items()})}: {_first_line(exc)}") from None
            if gives != pl.Boolean:  # a run refuses it after reading the source (_run_expression)
                raise ConfigError(f"check {c.name!r}: the expression must give one true/false per row, not "
                                  f"{gives} (compare it: {c.name.removesuffix(' expression')} > 0, .is_not_null(), ...)")
            if out.height:  # an aggregate (pl.col('x').sum() > 0) or a literal: one value for all the rows
                raise ConfigError(f"check {c.name!r}: the expression must give one true/false per row, not one "
                                  f"for all of them; compare each row with the aggregate (pl.col('x') < "
                                  f"pl.col('x').mean() * 2), or use checks.row_count_between / checks.sql")
    try:  # one row of nulls (a constant such as in_set's 'x' for a date column is cast only for a row)
        con = duckdb.connect()
        row = empty.clear(1).with_row_index("_rid").with_columns(pl.col("_rid").cast(pl.Int64)).to_arrow()
        con.register("_probe_src", row)
        con.execute("CREATE TABLE probe AS SELECT * FROM _probe_src")
        types = {r[0]: str(r[1]) for r in con.execute("DESCRIBE probe").fetchall()}
    except Exception:  # a column this probe cannot hold in DuckDB: the run's staging says what is wrong with it
        return
    try:
        forms = [(c, c.sql_form(types)) for c in checks if c.level != ACTIONS and not isinstance(c, ExpressionCheck)]
        # GX itself runs those without a SQL form (on pandas); not_null, unique and a row count run on any type
        probed = [c for c, form in forms if form is not None and form.kind not in ("not_null", "unique", "row_count_between")]
        if probed:
            evaluate(con, "probe", probed)
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _typed(c: Check, types: dict[str, str]) -> str:
    cols = [col for col in c.columns() if col in types]
    return ", ".join(f"column {col} ({types[col]})" for col in cols) or "these records"


def _check_at_fault(con: Any, relation: str, checks: list[Check], types: dict[str, str],
                    exc: BaseException) -> ConfigError:
    """The error naming the check among ``checks`` that made DuckDB fail with ``exc``."""
    if len(checks) > 1:
        for c in checks:
            evaluate(con, relation, [c])  # the one at fault raises, naming itself
    named = checks[0] if len(checks) == 1 else None
    what = f"check {named.name!r} cannot run on {_typed(named, types)}" if named else \
        f"the checks {', '.join(repr(c.name) for c in checks)} cannot run"
    return ConfigError(f"{what}: {_first_line(exc)}. Change the check (its kind, bounds, values or SQL) to fit "
                       f"the column's type, or cast the column in the mapping")


def evaluate(con: Any, relation: str, checks: list[Check], *, failures_table: str | None = None,
             distinct_key: list[str] | None = None, proofs: dict[str, Any] | None = None) -> Evaluation:
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

    ``distinct_key``: columns known never null and distinct over the relation (a run's primary key
    once staging found no null or repeated key among the rows it read): a uniqueness check of
    columns that include them is answered without reading the values.

    ``proofs``: by check name, the digest of the hashes an earlier run's uniqueness test of that
    check proved distinct (plain data the run read from its workspace); a test whose hashes digest
    the same needs no sort (:class:`~dfsync._checks_sql.DistinctTest`). The digests this
    evaluation's tests proved are in ``Evaluation.proofs``.
    """
    checks = [c for c in checks if c.level != ACTIONS]  # checkpoint actions run later, on these results
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
    known = dict(proofs or {})  # the digests known by check name
    proved: dict[str, dict] = {}
    try:
        try:
            n = _run_sql_checks(con, rel, types, sql_checks, temps, results, ft, distinct_key or [], (known, proved))
        except _CHECK_FAULTS as exc:
            raise _check_at_fault(con, relation, [c for c, _ in sql_checks], types, exc) from exc
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
    ev = Evaluation(ft, [results[c.name] for c in checks])
    ev.proofs = proved
    return ev


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


def evaluate_staged(staging: Any, checks: list[Check], proofs: dict[str, Any] | None = None,
                    scrub: Any = None) -> Evaluation:
    """Every check of a run on its staging: row-level ones on the rows about to be sent,
    dataset-level ones on every row the run read (:meth:`Staging.dataset_view`).
    ``proofs``: as in :func:`evaluate` (a run's come from ``Store.check_proofs``).

    ``scrub(con, relations, text)``: the text of a check that could not run with the values of
    the sync's sensitive fields hidden (an engine's message quotes values: "could not convert
    string 'ann@example.com'"); see :func:`dfsync._sensitive.scrubber`."""
    rels: list[str] = []
    try:
        return _evaluate_staged(staging, checks, proofs, rels)
    except DfsyncError as exc:
        clean = str(exc) if scrub is None else scrub(staging.con, rels, str(exc))
        if clean == str(exc):
            raise
        raise type(exc)(clean) from None  # not chained: the engine's own error quotes the values too


def _evaluate_staged(staging: Any, checks: list[Check], proofs: dict[str, Any] | None, rels: list[str]) -> Evaluation:
    rows = staging.to_check_view()
    rels.append(rows)
    cols = dataset_columns(checks, staging.columns)
    dataset = staging.dataset_view(cols) if any(c.level == TABLE for c in checks) else None
    rels += [dataset] if dataset else []
    key = staging.key if getattr(staging, "key_distinct", False) else None  # the key gate passed every row read
    ev = evaluate_scoped(staging.con, rows, dataset, checks, key, proofs)
    if dataset is not None and not staging.dataset_rids and any(
            r["scope"] == DATASET_SCOPE and r["unexpected_count"] for r in ev.results):
        # rows fail a dataset-level check: evaluate again where every row has its id
        dataset = staging.dataset_view(cols, exact_rids=True)
        key = key if staging.key_distinct else None
        ev = evaluate_scoped(staging.con, rows, dataset, checks, key, proofs)
    return ev


def evaluate_scoped(con: Any, rows: str, dataset: str | None, checks: list[Check],
                    distinct_key: list[str] | None = None, proofs: dict[str, Any] | None = None) -> Evaluation:
    """Row-level checks on ``rows`` (the rows about to be sent), dataset-level checks on
    ``dataset`` (every row the run read; both relations carry ``_rid``).

    The failures table lists failing rows of both; a dataset-level check's failing rows are
    listed with the ``_rid`` they have in ``dataset``, in ``Evaluation.dataset_failures``
    (the caller maps them to rows about to be sent). Results keep the order of ``checks``.
    ``distinct_key``, ``proofs``: as in :func:`evaluate`, for ``dataset``.
    """
    checks = [c for c in checks if c.level != ACTIONS]
    whole = [c for c in checks if c.level != ROW]
    if dataset is None or not whole:
        return evaluate(con, rows, checks, proofs=proofs)
    ev = evaluate(con, rows, [c for c in checks if c.level == ROW])
    ds = evaluate(con, dataset, whole, distinct_key=distinct_key, proofs=proofs)
    by_name = {r["check_name"]: r for r in ev.results + ds.results}
    out = Evaluation(ev.failures_table, [by_name[c.name] for c in checks])
    out.dataset_failures = ds.failures_table
    out.proofs = ds.proofs
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


def _run_sql_checks(con: Any, rel: str, types: dict[str, str], pairs: list[tuple[Check, Check]],
                    temps: list[str], results: dict[str, dict], ft: str, distinct_key: list[str],
                    proofs: tuple[dict[str, dict], dict[str, dict]]) -> int:
    """Evaluate SQL-form checks with each predicate computed once per row.

    A uniqueness check reads its hashes first and sorts them on other threads while one scan
    counts rows and missing values (cheap NULL tests) and computes the aggregates; then its
    table of repeated values is made (empty when the hashes prove there are none). One scan
    keeps only failing rows (their _rid, failed check names and shown values) in a temp
    table: it evaluates every predicate, like a hand-written query. Counts and partial lists
    then come from the small table of failing rows. A uniqueness check of columns that include
    ``distinct_key`` has no failing row and reads no values (its missing values are counted).
    ``proofs``: (the digests known, by check name; where to put those this evaluation proves).
    """
    compiled = []
    repeated: dict[int, str] = {}  # uniqueness checks: their table of repeated values
    for c, form in pairs:
        dups = None
        if form.kind == "unique":
            dups = f"_dfsync_dups_{uuid.uuid4().hex[:12]}"
            temps.append(dups)
        comp = compile_check(form, types, rel, dups)
        if dups and key_proves_unique(form.params.get("columns") or [form.column], distinct_key, types):
            comp.setup, comp.distinct, comp.fail, dups = None, None, "false", None  # the key gate answered it
        if comp.distinct is not None and proofs[0].get(c.name):
            comp.distinct.known = [proofs[0][c.name]]
        comp.begin(con)  # a uniqueness check's hashes are sorted on other threads meanwhile
        compiled.append((c, comp))
        if dups:
            repeated[len(compiled) - 1] = dups
    n, missing, observed = _scan_counts(con, rel, compiled)
    for i, dups in repeated.items():
        comp = compiled[i][1]
        comp.prepare(con)
        if comp.distinct is not None and comp.distinct.proof is not None:
            proofs[1][compiled[i][0].name] = comp.distinct.proof
        if not con.execute(f"SELECT count(*) FROM {quote(dups)}").fetchall()[0][0]:
            comp.fail = "false"  # no repeated value: no row fails (and no scan to look for them)
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


def _scan_counts(con: Any, rel: str, compiled: list) -> tuple[int, dict, dict]:
    """The rows, each check's missing values and the aggregates' observed values: one scan
    (plus one apart for the aggregates in ALONE)."""
    miss_ids = [i for i, (_, comp) in enumerate(compiled) if comp.fail and comp.missing and comp.considered is None]
    agg_ids = [i for i, (_, comp) in enumerate(compiled) if comp.agg and not comp.agg_alone]
    alone_ids = [i for i, (_, comp) in enumerate(compiled) if comp.agg and comp.agg_alone]
    select = ["count(*)"] + [f"count(*) FILTER (WHERE {compiled[i][1].missing})" for i in miss_ids] \
        + [compiled[i][1].agg for i in agg_ids]
    row = con.execute(f"SELECT {', '.join(select)} FROM {rel}").fetchall()[0]
    n = int(row[0])
    missing = dict(zip(miss_ids, row[1:1 + len(miss_ids)], strict=True))
    missing.update({i: n - comp.considered for i, (_, comp) in enumerate(compiled) if comp.considered is not None})
    observed = dict(zip(agg_ids, row[1 + len(miss_ids):], strict=True))
    if alone_ids:
        alone = con.execute(f"SELECT {', '.join(str(compiled[i][1].agg) for i in alone_ids)} FROM {rel}").fetchall()[0]
        observed.update(zip(alone_ids, alone, strict=True))
    return n, missing, observed


def _run_expression(con: Any, rel: str, c: ExpressionCheck, n: int) -> tuple[dict, Any]:
    import polars as pl

    cols = ", ".join(quote(x) for x in [*c.columns(), "_rid"])
    df = to_polars(con.sql(f"SELECT {cols} FROM {rel}").to_arrow_table())
    try:
        ok = df.select(c.expr.alias("__ok")).to_series()
    except Exception as exc:  # polars raises many kinds; the user's expression is at fault
        raise ConfigError(f"check {c.name!r}: the polars expression failed: {exc}") from exc
    if ok.dtype != pl.Boolean or len(ok) != len(df):
        raise ConfigError(f"check {c.name!r}: the expression must give one true/false per row, "
                          f"got {ok.dtype} of length {len(ok)} for {plural(len(df), 'row')}")
    bad = df.filter(~ok.fill_null(False)).sort("_rid")
    u = bad.height
    shown = bad.head(PARTIAL).drop("_rid")
    partial = shown.to_dicts() if shown.width > 1 else shown.to_series().to_list() if shown.width else []
    res = result_row(c, success=mostly_success(n, u, c.mostly), n=n, unexpected=u, missing=None,
                     partial=partial)
    return res, bad["_rid"].to_arrow()

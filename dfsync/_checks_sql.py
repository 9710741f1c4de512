"""SQL for the built-in checks (private; see :mod:`dfsync.checks`).

Each row-level check compiles to three DuckDB expressions over one row: ``fail`` (true
when the row fails), ``missing`` (true when GX would ignore the value: NULL, or NaN in a
float column, because pandas reads both as missing) and ``value`` (shown in
partial_unexpected_list). Keeping these identical to GX's pandas engine is what the
equivalence tests check.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dfsync._ident import quote
from dfsync._regex import to_re2
from dfsync.errors import ConfigError

PARTIAL = 20  # GX's default partial_unexpected_count

_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL"}
_FLOAT = {"FLOAT", "DOUBLE", "REAL"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")



def qualify(relation: str) -> str:
    """A relation name as given (schema.table) when plain, else quoted."""
    return relation if _IDENT.fullmatch(relation) else quote(relation)


def is_numeric(t: str) -> bool:
    return t in _NUMERIC or t.startswith("DECIMAL")


def is_text(t: str) -> bool:
    return t == "VARCHAR"


#: key types whose equality is the same in every DuckDB operator (joins, GROUP BY, hash): a key of these
#: the staging gate found distinct answers a uniqueness check on it (floats are not among them: 0.0 and
#: -0.0, NaN)
EXACT_KEY = re.compile(r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DECIMAL\(\d+,\d+\)|VARCHAR|UUID|DATE|BOOLEAN"
                       r"|TIMESTAMP( WITH TIME ZONE|_S|_MS|_NS)?|TIME)")


def key_proves_unique(columns: list[str], key: list[str], types: dict[str, str]) -> bool:
    """Whether a uniqueness check of ``columns`` is answered by ``key`` being distinct and never
    null over the same rows: the columns include the whole key (rows that differ in the key
    differ in the columns), and the key's types compare alike everywhere."""
    return bool(key) and set(key) <= set(columns) and all(EXACT_KEY.fullmatch(types.get(k, "")) for k in key)


def is_scalar(t: str) -> bool:
    return not any(x in t for x in ("[]", "STRUCT", "MAP", "UNION")) and not t.endswith("]")


def literal(v: Any) -> str:
    """A SQL literal for a value from a check's parameters."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "'nan'::DOUBLE"
        if math.isinf(v):
            return "'inf'::DOUBLE" if v > 0 else "'-inf'::DOUBLE"
        return repr(v) + "::DOUBLE"
    if isinstance(v, decimal.Decimal):
        return f"'{v}'::DOUBLE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, dt.datetime):
        return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    if isinstance(v, dt.date):
        return f"DATE '{v.isoformat()}'"
    raise ConfigError(f"cannot use {v!r} ({type(v).__name__}) in a check")


def mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    """GX's rule: vacuously true on no rows, else the passing share must reach ``mostly``."""
    if considered == 0:
        return True
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def jsonable(v: Any) -> Any:
    """Make a value JSON-safe (NaN/inf become None: JSON has no such numbers)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return float(v) if v.is_finite() else None
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    iso = getattr(v, "isoformat", None)  # pandas Timestamp
    if callable(iso):
        return iso()
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return str(v)


_parse_lock = threading.Lock()
_parse_con: Any = None


def _parser() -> Any:
    global _parse_con
    if _parse_con is None:
        import duckdb

        _parse_con = duckdb.connect()
    return _parse_con


def sql_compares_rows(predicate: str) -> bool:
    """True when the predicate's value for a row depends on other rows (a window function:
    ``x < avg(x) OVER ()``, ``count(*) OVER (PARTITION BY email) = 1``)."""
    return any(node.get("class") == "WINDOW" for node in _nodes(_parse(predicate)))


_aggregates: set[str] | None = None


def sql_aggregate(predicate: str) -> str | None:
    """The first aggregate function a predicate calls outside a window and a subquery
    (``x < avg(x)``), or None: such a predicate has no value per row (DuckDB refuses it only
    when the run evaluates it, naming a GROUP BY)."""
    global _aggregates
    with _parse_lock:
        if _aggregates is None:
            rows = _parser().execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate' "
                "AND function_name NOT IN (SELECT function_name FROM duckdb_functions() "
                "WHERE function_type <> 'aggregate')").fetchall()
            _aggregates = {r[0].lower() for r in rows} | {"count_star"}

    def walk(node: Any) -> str | None:
        if isinstance(node, list):
            return next((f for x in node if (f := walk(x))), None)
        if not isinstance(node, dict) or node.get("class") in ("SUBQUERY", "WINDOW"):
            return None  # a subquery's or a window's aggregate has a value per row
        name = str(node.get("function_name") or "").lower()
        if node.get("class") == "FUNCTION" and name in _aggregates and not node.get("schema"):
            return "count" if name == "count_star" else name
        return next((f for x in node.values() if (f := walk(x))), None)

    return walk(_parse(predicate))


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every node of a parse tree (DuckDB's JSON form), parents before their children."""
    if isinstance(node, dict):
        yield node
        for x in node.values():
            yield from _nodes(x)
    elif isinstance(node, list):
        for x in node:
            yield from _nodes(x)


def _parse(predicate: str) -> Any:
    """The select list of ``SELECT (predicate)`` as DuckDB's parser gives it (JSON)."""
    with _parse_lock:
        try:
            raw = _parser().execute("SELECT json_serialize_sql(?)", [f"SELECT ({predicate})"]).fetchall()[0][0]
        except Exception as exc:  # duckdb.Error: a parse error
            raise ConfigError(f"sql(): cannot parse predicate {predicate!r}: {exc}") from exc
    tree = json.loads(raw)
    if tree.get("error"):
        raise ConfigError(f"sql(): cannot parse predicate {predicate!r}: {tree.get('error_message')}")
    stmts = tree.get("statements", [])
    if len(stmts) != 1:
        raise ConfigError(f"sql(): {predicate!r} must be one predicate, not several statements")
    return stmts[0]["node"].get("select_list")


def sql_columns(predicate: str) -> list[str]:
    """Column names a SQL predicate reads (parsed by DuckDB; lambda parameters excluded).

    >>> sql_columns("s.a > 0 AND list_all(l, lambda x: x.b) AND v IS NOT NULL")
    ['s', 'l', 'v']
    """
    cols: list[str] = []
    lambdas: set[str] = set()
    for node in _nodes(_parse(predicate)):
        if node.get("class") == "LAMBDA":
            lhs = node.get("lhs") or {}
            for sub in lhs.get("children", [lhs]):
                lambdas.update(sub.get("column_names", [])[-1:])
        if node.get("class") == "COLUMN_REF":
            # a check reads no table: ``s.a`` (``s.a.b``) is field ``a`` of the struct column ``s``,
            # as DuckDB binds it over the staged rows; a lambda's ``x.a`` is a field of its parameter
            name = node["column_names"][0]
            if name not in cols:
                cols.append(name)
    return [c for c in cols if c not in lambdas]


def regex_ok(pattern: str) -> str | None:
    """The RE2 form of a Python regex when DuckDB accepts it, else None."""
    re2 = to_re2(pattern)
    if re2 is None:
        return None
    with _parse_lock:
        try:
            _parser().execute("SELECT regexp_matches('', ?)", [re2]).fetchall()
        except Exception:  # duckdb.InvalidInputException: RE2 refused it
            return None
    return re2


@dataclass
class Compiled:
    check: Any
    fail: str | None  # None: a table-level check without rows (row_count_between)
    missing: str | None
    value: str | None
    setup: str | None = None
    agg: str | None = None  # an aggregate's SQL (column aggregate checks: the observed value)
    agg_alone: bool = False  # ``agg`` runs in a query apart from the other aggregates (see ALONE)
    distinct: DistinctTest | None = None  # unique: the hash test that can spare ``setup``'s GROUP BY

    def begin(self, con: Any) -> None:
        """Start the hash test of a uniqueness check (its sort goes on in the background while
        the caller scans for the aggregates; :meth:`prepare` waits for it)."""
        if self.setup and self.distinct is not None:
            self.distinct.start(con)

    def prepare(self, con: Any) -> None:
        """Run ``setup`` (a uniqueness check's table of repeated values), unless the hash test
        proves there are none: then the table is created empty."""
        if not self.setup:
            return
        if self.distinct is not None and self.distinct.all_distinct(con):
            _run(con, self.distinct.empty)
        else:
            _run(con, self.setup)

    @property
    def considered(self) -> int | None:
        """How many rows have no missing value, when ``prepare`` counted them (so the scan of
        counts need not read the column again: a string column's NULL test decodes it)."""
        return None if self.distinct is None else self.distinct.values


#: rows up to which a uniqueness check sorts 64-bit hashes in memory (about 17 bytes a row while
#: sorting: the hashes as read, their sorted copy, the comparison) before it groups the values themselves
HASH_ROWS = 100_000_000


@dataclass
class DistinctTest:
    """Whether every non-missing value (tuple) of a relation is distinct, from a 64-bit hash
    of each: as many distinct hashes as values proves it (equal values hash equal, so distinct
    hashes are distinct values); fewer (a repeated value, or two values sharing a hash) says
    nothing, and the exact GROUP BY runs. The answer is exact either way.

    DuckDB's hash aggregate over 10M distinct strings (or their hashes) costs 2-3 CPU-seconds;
    numpy (2 and later) sorts 10M 64-bit integers in place in about 0.08 (a vectorised sort;
    polars took 0.19, in two halves on two threads 0.2 CPU-s plus 0.06 to split them), and equal
    neighbours in the sorted hashes are the repeats. The sort runs on a
    thread of its own (numpy lets go of the GIL) while the caller scans for the aggregates
    (bench/RESULTS.md, issue 17).

    A proof outlives the sort: the hashes, in the relation's order, are digested (SHA-256, on
    the same thread while the next batch is read) and a test that proves them distinct keeps the
    digest (:attr:`proof`; the run stores it with the check's result). A later test, in this
    process (:data:`PROOFS`) or in a later run given the digests as ``known``, whose hashes
    digest the same holds the same hashes in the same order (SHA-256 resists collisions; the
    diff already trusts 64-bit fingerprints for "unchanged"): they are pairwise distinct, so its
    values are, with no sort. That holds whatever the check, the relation or the process: the
    digest only ever stands for a sequence some test proved distinct. Other hashes (one value
    changed, a row added, the rows in another order) are sorted as before."""

    hashes: str  # SELECT of one UBIGINT column, one row per non-missing value
    empty: str  # CREATE of the (empty) table of repeated values
    values: int | None = None  # rows with no missing value, once counted
    #: digests of hash sequences earlier runs proved distinct (plain data from the workspace:
    #: ``{"sha256": hex, "values": n, "run_id": id}``), any of which proves a test with the same digest
    known: list | None = None
    #: once proved distinct: ``{"sha256", "values", "sorted"}`` (``sorted`` False: a kept proof held;
    #: then ``from_run``: the run whose proof it was, None for this process's)
    proof: dict | None = None
    _sorting: Any = None  # the background sort, once started
    _digest: Any = None  # (SHA-256 hex digest, count) of the hashes as read, until the test ends

    def start(self, con: Any) -> None:
        """Read the hashes (in the relation's order) and digest them; unless the digest is one a
        test proved distinct before, start sorting a copy of them on another thread."""
        import hashlib
        from concurrent.futures import ThreadPoolExecutor

        parts: list = []
        fed: list = []  # each batch's digest update (its error, if any, must not go unseen)
        n = 0
        digest = hashlib.sha256()  # lets go of the GIL: digests batch k while DuckDB reads batch k+1
        pool = ThreadPoolExecutor(1, thread_name_prefix="dfsync-unique")
        ordered = _setting(con, "preserve_insertion_order")
        if ordered is False:  # the same rows give the same hashes in the same order (see PROOFS)
            _run(con, "SET preserve_insertion_order = true")
        try:
            reader = con.sql(self.hashes).to_arrow_reader(1_000_000)
            for rb in reader:
                n += rb.num_rows
                if n > HASH_ROWS:  # past the memory the hashes may take: group the values instead
                    reader.close()
                    self._sorting = []  # values stays None: not proved
                    return
                parts.append(_uint64s(rb.column(0)))
                fed.append(pool.submit(digest.update, parts[-1]))  # one thread: in the order read
            for f in fed:
                f.result()
            done = digest.hexdigest()
        finally:
            pool.shutdown(wait=False)
            if ordered is False:
                _run(con, "SET preserve_insertion_order = false")
        self.values = n
        self._digest = (done, n)
        held = PROOFS.holds(done, n)
        earlier = next((k for k in self.known or () if k.get("sha256") == done and k.get("values") == n), None)
        if held or earlier is not None:
            self._sorting = []  # the hashes some test proved distinct: nothing to sort
            self.proof = {"sha256": done, "values": n, "sorted": False,
                          "from_run": None if held or earlier is None else earlier.get("run_id")}
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="dfsync-unique")
        self._sorting = [pool.submit(_repeats, parts)]
        pool.shutdown(wait=False)  # the thread ends with its sort

    def all_distinct(self, con: Any) -> bool:
        if self._sorting is None:
            self.start(con)
        sorting, self._sorting = self._sorting, None
        repeats = [f.result() for f in sorting]  # the sort ends before this returns
        digest, self._digest = self._digest, None
        distinct = self.values is not None and not any(repeats)
        if distinct and digest is not None:
            PROOFS.keep(*digest)
            if self.proof is None:
                self.proof = {"sha256": digest[0], "values": digest[1], "sorted": True}
        return distinct


class Proofs:
    """The digests (and counts) of the hash sequences this process's uniqueness tests proved
    distinct, the last ``limit`` of them (least recently used first out). A digest stands for
    its sequence whatever test made it (:class:`DistinctTest`), so they are kept by digest alone.
    A re-sync whose checked column did not change (the 1% that changed were other columns) then
    skips the sort of its hashes (bench/RESULTS.md, issue 17)."""

    def __init__(self, limit: int) -> None:
        from collections import OrderedDict

        self.limit = limit
        self._kept: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, digest: str, values: int) -> bool:
        with self._lock:
            if (digest, values) in self._kept:
                self._kept.move_to_end((digest, values))
                return True
        return False

    def keep(self, digest: str, values: int) -> None:
        with self._lock:
            self._kept[(digest, values)] = True
            self._kept.move_to_end((digest, values))
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)


#: the proofs a process keeps (a digest and a count each: a few dozen bytes)
PROOFS = Proofs(1024)


def _uint64s(a: Any) -> Any:
    """A numpy view of an Arrow array of 64-bit hashes (never null), on Arrow's own buffer.
    (pyarrow's ``to_numpy`` took 0.13 CPU-s more for 10M hashes in a re-sync's process.)"""
    import numpy as np
    import pyarrow as pa

    if a.type == pa.uint64() and not a.null_count:
        return np.frombuffer(a.buffers()[1], dtype=np.uint64, count=len(a), offset=8 * a.offset)
    return np.ascontiguousarray(a.cast(pa.uint64()).to_numpy(zero_copy_only=False))


def _setting(con: Any, name: str) -> Any:
    return con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0]


def _repeats(parts: list) -> bool:
    """Whether a value repeats among the 64-bit integers of ``parts`` (numpy arrays, left as
    they are: a copy of them is sorted in place)."""
    import numpy as np

    if not parts:
        return False
    ordered = np.concatenate(parts)
    if int(np.__version__.split(".")[0]) >= 2:
        ordered.sort()  # in place: no second array of fresh memory
    else:  # numpy 1's sort of 64-bit integers is not vectorised: 0.6 s for 10M, polars 0.2
        import polars as pl

        ordered = pl.Series(ordered).sort(multithreaded=False).to_numpy()
    return len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any())


def _run(con: Any, statement: str) -> None:
    con.execute(statement)
    done = getattr(con, "complete", None)
    if callable(done):
        done()


def missing_expr(col: str, t: str) -> str:
    q = quote(col)
    return f"({q} IS NULL OR isnan({q}))" if t in _FLOAT else f"({q} IS NULL)"


def compile_check(check: Any, types: dict[str, str], rel: str, dups: str | None) -> Compiled:
    """SQL expressions evaluating one built-in check (its kind decides the shape)."""
    kind, col, p = check.kind, check.column, check.params
    t = types.get(col, "") if col else ""
    q = quote(col) if col else ""
    if kind == "row_count_between":
        return Compiled(check, None, None, None)
    if kind == "aggregate":
        return Compiled(check, None, None, None, agg=aggregate_sql(p["fn"], col, t), agg_alone=p["fn"] in ALONE)
    if kind == "sql":
        pred = p["predicate"]
        cols = [c for c in p.get("columns", []) if c in types]
        value = ("{" + ", ".join(f"{_lit_key(c)}: {quote(c)}" for c in cols) + "}") if cols else "_rid"
        return Compiled(check, f"(NOT coalesce(({pred}), false))", None, value)
    if kind == "not_null":
        return Compiled(check, missing_expr(col, t), None, None)
    if kind == "unique":
        cols = p.get("columns") or [col]
        miss = " OR ".join(missing_expr(c, types.get(c, "")) for c in cols)
        qcols = ", ".join(quote(c) for c in cols)
        setup = (f"CREATE OR REPLACE TEMP TABLE {quote(dups)} AS SELECT {qcols} FROM {rel} "
                 f"WHERE NOT ({miss}) GROUP BY ALL HAVING count(*) > 1")
        test = DistinctTest(f"SELECT hash({qcols}) FROM {rel} WHERE NOT ({miss})",
                            f"CREATE OR REPLACE TEMP TABLE {quote(dups)} AS SELECT {qcols} FROM {rel} LIMIT 0")
        if len(cols) == 1:
            key = q
            value = q
        else:
            key = "{" + ", ".join(f"{_lit_key(c)}: {quote(c)}" for c in cols) + "}"
            value = key
        fail = f"(NOT ({miss}) AND {key} IN (SELECT {key} FROM {quote(dups)}))"
        return Compiled(check, fail, f"({miss})", value, setup, distinct=test)
    miss = missing_expr(col, t)
    if kind in ("length_between", "matches") and not is_scalar(t):  # a list's text would be judged: '[1, 2]'
        raise ConfigError(
            f"check {check.name!r}: {kind}() reads text, and column {col!r} is {t}, whose text it would judge; "
            f"judge its parts in an expression check instead ("
            + (f"pl.col({col!r}).list.len().is_between(1, 3))" if t.endswith("]") else
               f"pl.col({col!r}).struct.field('name').str.len_chars() < 10)"))
    if kind == "between":
        cond = _range(q, p)
        return Compiled(check, f"(NOT {miss} AND ({cond}))", miss, q)
    if kind == "length_between":
        text = q if is_text(t) else f"CAST({q} AS VARCHAR)"
        cond = _range(f"length({text})", p)
        return Compiled(check, f"(NOT {miss} AND ({cond}))", miss, q)
    if kind == "in_set":
        vals = [v for v in p["values"] if comparable(v, t)]
        if not vals:
            return Compiled(check, f"(NOT {miss})", miss, q)
        lits = ", ".join(literal(v) for v in vals)
        # NULL NOT IN (...) is NULL, which fails no row: only a float's NaN needs the missing test, and
        # without it a value DuckDB cannot cast to the column's type fails create_sync's probe (a null row)
        test = f"(NOT {miss} AND {q} NOT IN ({lits}))" if t in _FLOAT else f"({q} NOT IN ({lits}))"
        return Compiled(check, test, miss, q)
    if kind == "matches":
        re2 = regex_ok(p["regex"])
        if re2 is None:
            raise ConfigError(f"check {check.name!r}: regex {p['regex']!r} cannot run in DuckDB (RE2)")
        text = q if is_text(t) else f"CAST({q} AS VARCHAR)"
        return Compiled(check, f"(NOT {miss} AND NOT regexp_matches({text}, {literal(re2)}))", miss, q)
    raise ConfigError(f"unknown check kind {kind!r}")


#: GX column-aggregate metrics as DuckDB aggregates over the values pandas does not treat as
#: missing (NULL, and NaN in float columns); sum of no values is 0 as in pandas
AGGREGATES = {"mean": "avg({x})", "min": "min({x})", "max": "max({x})", "sum": "coalesce(sum({x}), 0)",
              "median": "median({x})", "stdev": "stddev_samp({x})", "distinct": "count(DISTINCT {x})"}


#: aggregates that run in a query apart from the others: next to other aggregates, count(DISTINCT) of a
#: string column costs DuckDB 0.14 CPU-s on 10M rows, alone 0.01-0.02 (bench/RESULTS.md, issue 17)
ALONE = {"distinct"}


def aggregate_sql(fn: str, col: str, t: str) -> str:
    q = quote(col)
    x = f"CASE WHEN NOT isnan({q}) THEN {q} END" if t in _FLOAT else q
    return AGGREGATES[fn].format(x=x)


def between_success(observed: Any, p: dict) -> bool:
    """GX's rule for a metric between min and max (strict_*: exclusive); no value fails."""
    if observed is None or isinstance(observed, float) and math.isnan(observed):
        return False
    lo, hi = p.get("min"), p.get("max")
    return (lo is None or (observed > lo if p.get("strict_min") else observed >= lo)) and \
        (hi is None or (observed < hi if p.get("strict_max") else observed <= hi))


def _lit_key(c: str) -> str:
    return "'" + c.replace("'", "''") + "'"


def comparable(v: Any, t: str) -> bool:
    """Whether ``v`` can equal a value of column type ``t`` (pandas' isin never matches across types).

    Leaving the others out of the SQL list keeps DuckDB from casting (and failing on) them.
    """
    if v is None or isinstance(v, float) and math.isnan(v):
        return False  # missing values are ignored anyway
    if t == "BOOLEAN":
        return isinstance(v, bool)
    if is_numeric(t):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if is_text(t):
        return isinstance(v, str)
    return True


def _range(x: str, p: dict) -> str:
    parts = []
    if p.get("min") is not None:
        parts.append(f"{x} {'<=' if p.get('strict_min') else '<'} {literal(p['min'])}")
    if p.get("max") is not None:
        parts.append(f"{x} {'>=' if p.get('strict_max') else '>'} {literal(p['max'])}")
    return " OR ".join(parts) or "false"

"""Built-in checks on real DuckDB data (nulls, NaN, empty strings, Unicode), their config
round trip, the errors users see, and the validation gate end to end through a workspace."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap
from datetime import date, datetime, timezone

import duckdb
import numpy as np
import polars as pl
import pytest

import dfsync
from dfsync import checks as dc
from dfsync.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]

DATA = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6, 7, 8],
        "email": ["a@x.io", None, "", "ü@x.io", "b@x", "a@x.io", "日本@例え.jp", "c@x.io"],
        "age": [30.0, None, math.nan, -1.0, 200.0, 45.0, 0.0, 130.0],
        "status": ["active", "churned", None, "Active", "active", "", "churned", "😀"],
        "zip": ["12345", "1234", None, "e\u0301e\u0301e\u0301e\u0301e", "123456", "", "12 45", "98765"],
    },
    schema={"id": pl.Int64, "email": pl.String, "age": pl.Float64, "status": pl.String, "zip": pl.String},
)


def staged(df: pl.DataFrame = DATA) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("src", df.with_columns(_rid=pl.col("id") * 10).to_arrow())
    con.execute("CREATE TABLE rows AS SELECT * FROM src")
    con.complete()
    return con


def run(*checks: dc.Check, df: pl.DataFrame = DATA) -> tuple[dict[str, dict], dict[str, list[int]], dc.Evaluation]:
    con = staged(df)
    ev = dc.evaluate(con, "rows", dc.normalize_checks(list(checks)))
    failing: dict[str, list[int]] = {}
    for rid, name in con.execute(f"SELECT _rid, check_name FROM {ev.failures_table} ORDER BY _rid").fetchall():
        failing.setdefault(name, []).append(rid // 10)
    return {r["check_name"]: r for r in ev.results}, failing, ev


def test_not_null_fails_null_and_nan_but_not_empty_string():
    res, failing, _ = run(dc.not_null("email"), dc.not_null("age"))
    assert failing == {"email not_null": [2], "age not_null": [2, 3]}
    assert res["age not_null"]["unexpected_count"] == 2
    assert res["age not_null"]["partial_unexpected_list"] == [None, None]
    assert res["email not_null"]["unexpected_percent"] == pytest.approx(12.5)


def test_between_ignores_missing_and_honours_strictness():
    res, failing, _ = run(dc.between("age", 0, 130), dc.between("age", 0, 130, strict_min=True, strict_max=True,
                                                                   name="age strictly"))
    assert failing["age between"] == [4, 5]
    assert failing["age strictly"] == [4, 5, 7, 8]
    r = res["age between"]
    assert (r["element_count"], r["result"]["missing_count"]) == (8, 2)
    assert r["unexpected_percent"] == pytest.approx(2 / 6 * 100)
    assert sorted(r["partial_unexpected_list"]) == [-1.0, 200.0]


def test_in_set_is_exact_and_case_sensitive():
    _, failing, _ = run(dc.in_set("status", ["active", "churned", "😀"]))
    assert failing["status in_set"] == [4, 6]  # "Active" and "" fail; None is ignored


def test_matches_is_a_python_style_search_on_unicode():
    _, failing, _ = run(dc.matches("email", r"^[^@\s]+@[^@\s]+\.\w+$"))
    # "" and "b@x" fail; "日本@例え.jp" passes because \w is Unicode as in Python; NULL ignored
    assert failing["email matches"] == [3, 5]


def test_length_between_counts_code_points():
    res, failing, _ = run(dc.length_between("zip", 5, 5))
    # "e\u0301" x4 + "e" is 9 code points (5 graphemes): it fails, as len() says
    assert failing["zip length_between"] == [2, 4, 5, 6]
    assert res["zip length_between"]["result"]["missing_count"] == 1


def test_unique_marks_every_copy_and_is_table_level():
    res, failing, _ = run(dc.unique("email"), dc.unique(["email", "status"]))
    assert failing["email unique"] == [1, 6]
    assert res["email unique"]["level"] == "table"
    assert "email, status unique" not in failing  # a@x.io/active vs a@x.io/"" differ
    assert res["email, status unique"]["success"] is True


def test_row_count_between():
    res, failing, ev = run(dc.row_count_between(1, 5), dc.row_count_between(min=1, name="some rows"))
    assert res["row_count_between"]["success"] is False
    assert res["row_count_between"]["result"]["observed_value"] == 8
    assert res["some rows"]["success"] is True
    assert failing == {}
    assert ev.summary() == "1 check failed: row_count_between: 8 rows (expected 1..5)"


def test_sql_and_expression_checks_fail_false_and_null():
    res, failing, _ = run(dc.sql("age >= 18", name="adult"), dc.expression(pl.col("age") >= 18, name="adult pl"))
    # -1 and 0 fail; NULL fails (must be true); polars and DuckDB both order NaN above every number
    assert failing["adult pl"] == [2, 4, 7]
    assert failing["adult"] == [2, 4, 7]
    assert res["adult"]["column_name"] == "age"
    assert res["adult"]["partial_unexpected_list"][0] == {"age": None}


def test_mostly_lets_a_share_fail_and_lists_no_rows():
    res, failing, _ = run(dc.not_null("email", mostly=0.8), dc.not_null("email", mostly=0.9, name="strict"))
    assert res["email not_null"]["success"] is True and "email not_null" not in failing
    assert res["strict"]["success"] is False and failing["strict"] == [2]


def test_all_pass_summary_and_empty_relation():
    res, failing, ev = run(dc.not_null("id"), dc.unique("id"), df=DATA)
    assert ev.failed == [] and failing == {}
    res, failing, ev = run(dc.not_null("email"), dc.between("age", 0, 1), dc.row_count_between(max=0),
                           df=DATA.head(0))
    assert all(r["success"] for r in ev.results)
    assert res["email not_null"]["element_count"] == 0


def test_summary_names_failed_checks_and_counts():
    _, _, ev = run(dc.not_null("email"), dc.between("age", 0, 130), dc.not_null("id"))
    assert ev.summary() == "2 checks failed: email not_null: 1 row; age between: 2 rows"
    json.dumps(ev.results)  # JSON-safe, to be stored


def test_config_round_trip_for_every_kind():
    checks = dc.normalize_checks([
        dc.not_null("email"), dc.unique(["email", "status"]), dc.between("age", 0, 130, strict_max=True),
        dc.in_set("status", ["active", 1, True]), dc.matches("email", "@"), dc.length_between("zip", 5),
        dc.row_count_between(1), dc.expression(pl.col("age") > 0, name="pos"), dc.sql("age > 0", mostly=0.5),
    ])
    configs = json.loads(json.dumps([c.config() for c in checks]))
    rebuilt = dc.checks_from_config(configs)
    assert [c.config() for c in rebuilt] == [c.config() for c in checks]
    con = staged()
    a = dc.evaluate(con, "rows", checks).results
    b = dc.evaluate(con, "rows", rebuilt).results
    assert a == b


UNIQUE_DATA = pl.DataFrame({
    "id": list(range(12)),
    "x": [0.0, -0.0, math.nan, None, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5],  # 0.0 and -0.0 are one value
    "s": ["a", "b", None, "", "é", "e\u0301", "日本", "d", "a", "f", "g", "h"],
    "t": ["k", "k", "k", "k", "k", "k", "k", "k", "l", "k", "k", "k"],
})
UNIQUE_CHECKS = (dc.unique("id"), dc.unique("x"), dc.unique("s"), dc.unique(["s", "t"]), dc.unique(["x", "t"]))


def unique_outcome() -> tuple[dict, dict]:
    res, failing, _ = run(*UNIQUE_CHECKS, df=UNIQUE_DATA)
    return {k: (r["success"], r["unexpected_count"], r["result"].get("missing_count"), r["partial_unexpected_list"])
            for k, r in res.items()}, failing


def test_unique_is_exact_whether_hashes_prove_it_collide_or_are_not_counted(monkeypatch):
    """Uniqueness is first tested on one 64-bit hash per value; when the hashes are not all
    distinct (a repeated value or a collision) or too many to count in memory, the values
    themselves are grouped. Every way gives the same results and failing rows."""
    from dfsync import _checks_sql

    fast = unique_outcome()
    assert fast[0]["id unique"] == (True, 0, 0, [])
    assert fast[0]["x unique"][:3] == (False, 2, 2)  # 0.0 = -0.0; NaN and NULL are missing
    assert fast[1]["x unique"] == [0, 1]
    assert fast[1]["s unique"] == [0, 8] and fast[0]["s unique"][2] == 1  # é composed vs not: distinct
    assert fast[0]["s, t unique"][:2] == (True, 0) and fast[0]["x, t unique"][:2] == (False, 2)
    monkeypatch.setattr(_checks_sql, "HASH_ROWS", 3)  # too many rows to count hashes: group values
    assert unique_outcome() == fast
    monkeypatch.setattr(_checks_sql, "HASH_ROWS", 100)
    start, proved = _checks_sql.DistinctTest.start, _checks_sql.DistinctTest.all_distinct
    seen = []

    def answer(self, con):
        seen.append(proved(self, con))
        return seen[-1]

    monkeypatch.setattr(_checks_sql.DistinctTest, "all_distinct", answer)
    # every value hashes to one of two (sorted in the low half, in the high half, or one in each):
    # the hash test proves nothing and the values are grouped
    for forced in ("hash({}) % 2", "hash({}) % 2 + 9223372036854775808", "hash({}) % 2 * 9223372036854775808"):
        def colliding(self, con, forced=forced):
            cols = self.hashes[len("SELECT hash("):self.hashes.index(") FROM ")]
            self.hashes = f"SELECT {forced.format(cols)}::UBIGINT" + self.hashes[self.hashes.index(" FROM "):]
            start(self, con)

        monkeypatch.setattr(_checks_sql.DistinctTest, "start", colliding)
        seen.clear()
        assert unique_outcome() == fast
        assert len(seen) == len(UNIQUE_CHECKS) and not any(seen)


@pytest.mark.parametrize("hashes, distinct", [
    ([], True), ([5], True), ([0, 2**63 - 1, 2**63, 2**64 - 1], True),
    ([2**63 - 1, 3, 2**63 - 1], False), ([2**63, 2**64 - 1, 7, 2**63], False),
    (list(range(0, 2**64 - 2**50, 2**50)) + [2**64 - 2**50 - 2**50], False),
])
@pytest.mark.parametrize("numpy_version", [np.__version__, "1.26.4"])
def test_hash_test_finds_a_repeat_in_either_half(hashes, distinct, numpy_version, monkeypatch):
    """A repeat is found wherever it lies among the hashes (the highest and lowest 64-bit
    values included); neighbours that differ are not taken for one. Under numpy 1 the hashes
    are sorted by polars."""
    import duckdb

    from dfsync import _checks_sql

    monkeypatch.setattr(np, "__version__", numpy_version)

    con = duckdb.connect()
    con.execute("CREATE TABLE h AS SELECT unnest(?::UBIGINT[]) AS h", [hashes])
    test = _checks_sql.DistinctTest("SELECT h FROM h", "")
    assert test.all_distinct(con) is distinct
    assert test.values == len(hashes)


def test_a_proof_of_distinct_hashes_is_reused_only_for_the_same_hashes_in_the_same_order(monkeypatch):
    """A uniqueness test whose hashes equal, value for value and in order, hashes this process
    proved distinct before needs no sort; any other hashes (a value changed into a repeat or a
    new value, a row added, rows in another order) are tested in full, and the results stay exact."""
    from dfsync import _checks_sql

    monkeypatch.setattr(_checks_sql, "PROOFS", _checks_sql.Proofs(1 << 20))
    sorts = []
    repeats = _checks_sql._repeats
    monkeypatch.setattr(_checks_sql, "_repeats", lambda parts: sorts.append(1) or repeats(parts))
    con = duckdb.connect(config={"preserve_insertion_order": "false"})  # as staging's connection
    con.execute("CREATE TABLE t AS SELECT range AS _rid, 'v' || range AS v FROM range(3000)")
    con.execute("CREATE VIEW rows AS SELECT * FROM t")

    def outcome() -> tuple:
        sorts.clear()
        ev = dc.evaluate(con, "rows", [dc.unique("v")])
        r = ev.results[0]
        failing = [x[0] for x in con.execute(f"SELECT _rid FROM {ev.failures_table} ORDER BY 1").fetchall()]
        return r["success"], r["unexpected_count"], failing, bool(sorts)

    assert outcome() == (True, 0, [], True)  # proved by sorting
    assert outcome() == (True, 0, [], False)  # the same hashes: the proof holds
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0] is False
    con.execute("UPDATE t SET v = 'v7' WHERE _rid = 2000")  # a repeat where a distinct value was
    assert outcome() == (False, 2, [7, 2000], True)
    con.execute("UPDATE t SET v = 'new' WHERE _rid = 2000")  # a value no other row has
    assert outcome() == (True, 0, [], True)
    assert outcome() == (True, 0, [], False)
    con.execute("INSERT INTO t VALUES (3000, 'v5')")  # the same hashes and one more: a repeat
    assert outcome() == (False, 2, [5, 3000], True)
    con.execute("DELETE FROM t WHERE _rid = 3000")
    assert outcome() == (True, 0, [], False)  # the kept proof is the last one made
    con.execute("CREATE OR REPLACE VIEW rows AS SELECT * FROM t ORDER BY _rid DESC")  # other order, other views
    assert outcome() == (True, 0, [], True)


def test_proofs_keep_the_last_digests_and_drop_the_least_recently_used():
    from dfsync import _checks_sql

    proofs = _checks_sql.Proofs(2)
    proofs.keep("a" * 64, 10)
    proofs.keep("b" * 64, 10)
    assert proofs.holds("a" * 64, 10) and not proofs.holds("a" * 64, 11) and not proofs.holds("c" * 64, 10)
    proofs.keep("c" * 64, 10)  # a third: "b" (least recently used) goes
    assert proofs.holds("a" * 64, 10) and proofs.holds("c" * 64, 10) and not proofs.holds("b" * 64, 10)


def test_a_digest_of_hashes_does_not_depend_on_where_duckdb_cut_its_batches(monkeypatch):
    """The same hashes in the same order digest the same however the relation is stored and
    read (one table, many inserts, a view over a union); one value more, or another order, not."""
    import duckdb

    from dfsync import _checks_sql

    con = duckdb.connect()
    con.execute("CREATE TABLE one AS SELECT range AS _rid, range * 7 AS v FROM range(300000)")
    con.execute("CREATE TABLE many (_rid BIGINT, v BIGINT)")
    for lo in range(0, 300000, 70001):
        con.execute(f"INSERT INTO many SELECT range, range * 7 FROM range({lo}, {min(lo + 70001, 300000)})")
    con.execute("CREATE VIEW parts AS SELECT * FROM (SELECT * FROM one WHERE _rid < 5 ORDER BY _rid) "
                "UNION ALL SELECT * FROM (SELECT * FROM one WHERE _rid >= 5 ORDER BY _rid)")
    con.execute("CREATE VIEW more AS SELECT * FROM one UNION ALL SELECT 300000, 1")
    con.execute("CREATE VIEW other_order AS SELECT * FROM one ORDER BY _rid DESC")

    def digest(rel: str) -> tuple:
        monkeypatch.setattr(_checks_sql, "PROOFS", _checks_sql.Proofs(8))
        ev = dc.evaluate(con, rel, [dc.unique("v")])
        return ev.proofs["v unique"]["sha256"], ev.proofs["v unique"]["values"]

    base = digest("one")
    assert digest("many") == base == digest("parts")
    assert digest("more")[0] != base[0] and digest("other_order")[0] != base[0]


def test_default_names_are_made_unique_and_explicit_duplicates_refused():
    names = [c.name for c in dc.normalize_checks([dc.not_null("a"), dc.not_null("a"), dc.not_null("a")])]
    assert names == ["a not_null", "a not_null (2)", "a not_null (3)"]
    with pytest.raises(ConfigError, match="share the name 'x'"):
        dc.normalize_checks([dc.not_null("a", name="x"), dc.unique("b", name="x")])


def test_unknown_column_lists_the_columns_that_exist():
    with pytest.raises(ConfigError, match="'emial'.*Did you mean 'email'.*Columns: id, email"):
        dc.validate_checks([dc.not_null("emial")], ["id", "email"])
    with pytest.raises(ConfigError, match="'agee'"):
        dc.validate_checks([dc.sql("agee > 1 AND list_filter([1], x -> x > 0) = [1]")], ["age"])
    dc.validate_checks([dc.sql("age > 1 AND list_filter([1], x -> x > 0) = [1]")], ["age"])  # lambda param ok


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: dc.between("a"), "needs min, max or both"),
        (lambda: dc.between("a", 5, 1), "greater than max"),
        (lambda: dc.between("a", "x", 1), "must be numbers"),
        (lambda: dc.in_set("a", "abc"), "list of allowed values"),
        (lambda: dc.matches("a", "("), "invalid regex"),
        (lambda: dc.matches("a", r"(?<=x)y"), "RE2"),
        (lambda: dc.not_null(""), "column name"),
        (lambda: dc.not_null("a", mostly=2), "mostly"),
        (lambda: dc.sql("a >"), "cannot parse"),
        # an aggregate over no window has no value per row: the run failed on DuckDB's GROUP BY error
        (lambda: dc.sql("x < avg(x) * 2"), r"aggregate avg\(\) over no window.*avg\(\.\.\.\) OVER \(\)"),
        (lambda: dc.sql("x > 0 AND COUNT(*) = 1"), r"aggregate count\(\)"),
        (lambda: dc.expression("a > 1"), "polars expression"),
        (lambda: dc.normalize_checks(["not_null"]), "not a check"),
        (lambda: dc.normalize_checks(42), "checks must be"),
    ],
)
def test_bad_checks_say_what_to_do(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_sql_aggregates_in_a_window_or_a_subquery_and_list_functions_are_taken():
    assert dc.sql("x < avg(x) OVER () * 2").level == "table"
    assert dc.sql("s IN (SELECT max(a) FROM range(3) t(a))").level == "row"
    assert dc.sql("list_aggregate([x, 2], 'sum') > 0 AND greatest(x, 1) > 0").level == "row"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_import_and_builtin_checks_do_not_import_great_expectations():
    out = _python("""
        import sys, duckdb, dfsync
        import dfsync.checks as dc
        con = duckdb.connect()
        con.execute("CREATE TABLE t AS SELECT range AS _rid, range AS x FROM range(3)").complete()
        assert dc.evaluate(con, "t", [dc.not_null("x"), dc.matches("x", "1")]).results
        print("great_expectations" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_missing_validation_extra_names_the_pip_command():
    stored = {"kind": "gx:expect_column_values_to_not_be_null", "name": "x not null",
              "expectation": {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "x"}}}
    out = _python(f"""
        import sys
        sys.modules["great_expectations"] = None   # as if the extra were not installed
        import dfsync.checks as dc
        assert dc.not_null("x")                    # built-ins still work
        try:
            dc.checks_from_config([{stored!r}])
        except dfsync.MissingDependencyError as exc:
            print(exc)
        else:
            print("no error")
    """.replace("import dfsync.checks as dc", "import dfsync, dfsync.checks as dc"))
    assert out.returncode == 0, out.stderr
    assert "pip install 'dfsync[validation]'" in out.stdout


# ----------------------------------------------------------------------------- end to end


def _sync(tmp_path, df, on_invalid, checks, name="people"):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    dest = tmp_path / "dest.duckdb"
    sync = ws.create_sync(name, source=dfsync.sources.frame(df),
                          destination=dfsync.destinations.duckdb(str(dest), table="people"),
                          primary_key="id", checks=checks, on_invalid=on_invalid)
    return ws, sync, dest


def _sent(dest) -> list[int]:
    if not dest.exists():
        return []
    con = duckdb.connect(str(dest), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT id FROM people").fetchall())
    except duckdb.CatalogException:
        return []
    finally:
        con.close()


def test_e2e_fail_sends_nothing_and_says_why(tmp_path):
    ws, sync, dest = _sync(tmp_path, DATA, "fail", [dc.not_null("email"), dc.between("age", 0, 130)])
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED
    assert "2 checks failed: email not_null: 1 row; age between: 2 rows" in run.error
    assert _sent(dest) == []
    v = run.validation()
    assert isinstance(v, pl.DataFrame)
    assert v.sort("check_name")["unexpected_count"].to_list() == [2, 1]


def test_e2e_skip_quarantines_failing_rows_and_sends_the_rest(tmp_path):
    ws, sync, dest = _sync(tmp_path, DATA, "skip", [dc.not_null("email"), dc.between("age", 0, 130),
                                                    dc.unique("email")])
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS, run.error
    # id 2 (null email), 4 (age -1), 5 (age 200); 1 and 6 share an email (unique marks both)
    assert run.counts["invalid"] == 5
    invalid = run.records(status="invalid").sort("id")
    assert invalid["id"].to_list() == [1, 2, 4, 5, 6]
    failed = dict(zip(invalid["id"].to_list(), invalid["_checks"].to_list(), strict=True))
    assert sorted(failed[2]) == ["email not_null"]
    assert sorted(failed[5]) == ["age between"]
    assert sorted(failed[1]) == ["email unique"]
    assert _sent(dest) == [3, 7, 8]


def test_e2e_warn_sends_everything_and_records_failures(tmp_path):
    ws, sync, dest = _sync(tmp_path, DATA, "warn", [dc.not_null("email")])
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS, run.error
    assert _sent(dest) == list(range(1, 9))
    v = run.validation()
    assert v["success"].to_list() == [False] and v["unexpected_count"].to_list() == [1]


def _gate(run) -> str:
    """The detail of the run's queued -> in_progress event."""
    return run.events().filter(pl.col("to_status") == "in_progress")["detail"].item()


@pytest.mark.parametrize(("on_invalid", "checks", "df", "said"), [
    ("skip", [dc.between("age", 0, 130)], DATA,
     "2 invalid rows quarantined and skipped (on_invalid='skip'; run.records(status='invalid')); "
     "1 check failed: age between: 2 rows"),
    ("skip", [], pl.concat([DATA, DATA.head(1)]),
     "2 invalid rows quarantined and skipped (on_invalid='skip'; run.records(status='invalid')): "
     "null or repeated primary keys"),
    ("warn", [dc.not_null("email")], DATA,
     "checks failed, the rows are sent anyway (on_invalid='warn'): 1 check failed: email not_null: 1 row"),
    ("skip", [dc.row_count_between(100, 200)], DATA, "checks failed, no row to quarantine (on_invalid='skip'): "
     "1 check failed: row_count_between: 8 rows (expected 100..200)"),
    ("skip", [dc.between("age", -10, 300)], DATA, "checks passed"),
], ids=["skip-checks", "skip-keys", "warn", "skip-dataset", "passed"])
def test_e2e_the_checks_event_says_what_was_quarantined(tmp_path, on_invalid, checks, df, said):
    """The run's event was "checks passed" even when rows had been quarantined and skipped."""
    ws, sync, dest = _sync(tmp_path, df, on_invalid, checks)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS, run.error
    assert _gate(run) == said


def test_e2e_quarantined_row_is_rechecked_and_sent_once_it_passes(tmp_path):
    ws, sync, dest = _sync(tmp_path, DATA, "skip", [dc.between("age", 0, 130)])
    sync.run(progress=False)
    assert 5 not in _sent(dest)
    fixed = DATA.with_columns(age=pl.when(pl.col("id").is_in([4, 5])).then(50.0).otherwise(pl.col("age")))
    ws2, sync2, _ = _sync(tmp_path, fixed, "skip", [dc.between("age", 0, 130)])
    run = sync2.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS, run.error
    assert _sent(dest) == list(range(1, 9))
    assert run.counts["invalid"] == 0


def test_e2e_preview_includes_check_results(tmp_path):
    ws, sync, dest = _sync(tmp_path, DATA, "skip", [dc.not_null("email"), dc.row_count_between(1, 100)])
    p = sync.preview()
    assert p.validation is not None
    assert p.validation.sort("check_name")["success"].to_list() == [False, True]
    assert _sent(dest) == []


def test_hashes_are_read_as_numpy_views_of_arrow_buffers_at_their_offset():
    import pyarrow as pa

    from dfsync import _checks_sql

    a = pa.array([1, 2**64 - 1, 3, 2**63], type=pa.uint64()).slice(1, 2)
    view = _checks_sql._uint64s(a)
    assert view.dtype == np.uint64 and view.tolist() == [2**64 - 1, 3]
    assert _checks_sql._uint64s(pa.array([5, 7], type=pa.int64())).tolist() == [5, 7]  # another type: cast


TYPED = pl.DataFrame({"id": [1, 2], "name": ["ann", "bo"], "born": [date(1960, 1, 1), date(1990, 5, 6)],
                      "seen": [datetime(2020, 1, 1, tzinfo=timezone.utc)] * 2, "tags": [[1], [2, 3]],
                      "code": ["12", "x7"]})


@pytest.mark.parametrize(("check", "said"), [
    (lambda: dc.between("name", 0, 10), r"check 'name between' cannot run on column name \(VARCHAR\): Binder Error"),
    (lambda: dc.between("born", 0, 10), r"column born \(DATE\)"),
    (lambda: dc.between("tags", 0, 10), r"column tags \(BIGINT\[\]\)"),
    (lambda: dc.in_set("born", ["1960-01-01", "soon"]), r"'born in_set' .*\(DATE\): Conversion Error.*\"soon\""),
    (lambda: dc.in_set("seen", [1]), r"'seen in_set' .*\(TIMESTAMP WITH TIME ZONE\)"),
    (lambda: dc.sql("name >>> 1"), r"check 'name >>> 1' cannot run on column name \(VARCHAR\)"),
    (lambda: dc.expression(pl.col("name") > 1), r"check 'name expression': .* column name \(String\)"),
    # judged on the list's text ('[2, 3]' has 6 characters), where GX counts its elements
    (lambda: dc.length_between("tags", 1, 2), r"length_between\(\) reads text.*'tags' is BIGINT\[\].*list.len\(\)"),
    (lambda: dc.matches("tags", "^2"), r"matches\(\) reads text.*'tags' is BIGINT\[\]"),
])
def test_a_check_that_cannot_run_on_its_columns_type_is_refused_by_create_sync(tmp_path, check, said):
    """Taken by create_sync, these failed every run after the read with DuckDB's bare error
    ('BinderException: Binder Error: Cannot compare values of type VARCHAR and ...'), naming no check."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    with pytest.raises(ConfigError, match=said):
        ws.create_sync("s", source=dfsync.sources.frame(TYPED), destination=dest, primary_key="id",
                       checks=[dc.not_null("name"), check()])
    assert ws.syncs().height == 0
    fine = [dc.in_set("born", ["1960-01-01"]), dc.between("id", 0, 10), dc.in_set("name", [1, "ann"]),
            dc.sql("CAST(code AS INTEGER) > 0")]
    sync = ws.create_sync("s", source=dfsync.sources.frame(TYPED), destination=dest, primary_key="id",
                          checks=fine, on_invalid="skip")
    run = sync.run(progress=False)  # 'x7' does not cast: the row's values decide, at run time
    assert run.status == dfsync.RunStatus.FAILED and run.counts["sent"] == 0
    assert run.error.startswith("check 'CAST(code AS INTEGER) > 0' cannot run on column code (VARCHAR): "
                                "Conversion Error: Could not convert string 'x7' to INT32"), run.error
    ok = sync.run(source=TYPED.with_columns(code=pl.lit("12")), progress=False)
    assert ok.status == dfsync.RunStatus.SUCCESS and ok.counts["invalid"] == 1  # born 1990 is not in the set


def test_an_expression_not_giving_one_true_false_per_row_is_refused_at_create_sync(ws, tmp_path):
    # checks.expression(pl.col('amount') + 1) (a number), or pl.col('amount').sum() > 0 (one value for
    # all the rows) was taken by create_sync and every run failed after reading the source
    import decimal

    df = pl.DataFrame({"id": [1, 2], "name": ["a", "bb"], "amount": [decimal.Decimal("1.5"), None]})
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    for expr, says in [(pl.col("amount") + 1, r"one true/false per row, not Decimal"),
                       (pl.col("amount").sum() > 0, "not one for all of them"),
                       (pl.lit(True), "not one for all of them")]:
        with pytest.raises(ConfigError, match=says):
            ws.create_sync("s", source=df, destination=dest, primary_key="id", checks=[dc.expression(expr)])
    assert ws.syncs().is_empty()
    sync = ws.create_sync("s", source=df, destination=dest, primary_key="id", on_invalid="skip",
                          checks=[dc.expression(pl.col("name").str.len_chars() < 2),
                                  dc.expression(pl.col("amount").fill_null(0) < pl.col("amount").mean() * 2)])
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["invalid"] == 1 and run.counts["inserted"] == 1


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_e2e_replace_writes_only_the_valid_rows_and_says_so(tmp_path, kind):
    """replace + on_invalid='skip': a row quarantined by the checks was gone from the rewritten table
    (its earlier, valid version too) and nothing but `invalid=1` hinted at it. A replace run writes
    exactly its valid rows; its event and the invalid records say the row is not in the destination;
    fixed, the next run writes it again."""
    import sqlite3

    path = str(tmp_path / f"wh.{kind}")
    dest = (dfsync.destinations.duckdb(path, table="t") if kind == "duckdb"
            else dfsync.destinations.sqlite(path, table="t"))

    def rows() -> list[tuple]:
        con = duckdb.connect(path, read_only=True) if kind == "duckdb" else sqlite3.connect(path)
        try:
            return sorted(con.execute("SELECT id, a FROM t").fetchall())
        finally:
            con.close()

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2, 3], "a": [1, 2, 3]}), destination=dest,
                          primary_key="id", destination_mode="replace", checks=[dc.between("a", 0, 10)],
                          on_invalid="skip")
    assert sync.run(progress=False).status == "success"
    bad = pl.DataFrame({"id": [1, 2, 3], "a": [1, 20, 3]})
    assert sync.preview(source=bad).counts["invalid"] == 1
    run = sync.run(source=bad, progress=False)
    assert run.status == "success", run.error
    assert rows() == [(1, 1), (3, 3)]  # exactly the valid rows of this run
    c = run.counts
    assert (c["queried"], c["invalid"], c["sent"], c["succeeded"]) == (3, 1, 2, 2)
    assert "1 invalid row quarantined and skipped, not in the destination (destination_mode='replace'" in _gate(run)
    invalid = run.records(status="invalid")
    assert invalid["id"].to_list() == [2] and invalid["_checks"].to_list() == [["a between"]]
    assert invalid["_error"].item().startswith("not in the destination: destination_mode='replace'")
    # the other modes keep the delivered version, and their records say nothing of the kind
    up = ws.create_sync("u", source=pl.DataFrame({"id": [1, 2], "a": [1, 2]}), destination=dfsync.destinations.duckdb(
        str(tmp_path / "up.duckdb"), table="t"), primary_key="id", checks=[dc.between("a", 0, 10)], on_invalid="skip")
    up.run(progress=False)
    kept = up.run(source=pl.DataFrame({"id": [1, 2], "a": [1, 20]}), progress=False)
    assert kept.records(status="invalid")["_error"].to_list() == [None]
    assert "not in the destination" not in _gate(kept)
    # fixed, the row is written again
    run = sync.run(source=pl.DataFrame({"id": [1, 2, 3], "a": [1, 5, 3]}), progress=False)
    assert run.status == "success" and rows() == [(1, 1), (2, 5), (3, 3)]


def test_e2e_sql_reads_struct_fields_with_a_dot(tmp_path):
    """checks.sql("s.a > 0") was refused at create_sync ("reads column 'a', which the records do not
    have"): the dotted name was taken for table.column. A check reads no table: DuckDB binds ``s.a``
    to field a of the struct column s (a lambda's ``x.a`` to its parameter's field), and so does the
    column check; a field the struct lacks is refused naming the struct's type."""
    df = pl.DataFrame({"id": [1, 2, 3], "s": [{"a": 1, "b": "x"}, {"a": -1, "b": "x"}, {"a": 5, "b": "y"}],
                       "l": [[{"q": 1}], [{"q": 2}], [{"q": -3}]]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    checks = [dc.sql("s.a > 0 AND s.b = 'x'", name="s ok"), dc.sql("list_bool_and(list_transform(l, lambda x: x.q > 0))",
                                                                   name="l ok")]
    assert checks[0].columns() == ["s"] and checks[1].columns() == ["l"]
    sync = ws.create_sync("s", source=df, destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t"),
                          primary_key="id", checks=checks, on_invalid="skip")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    bad = run.records(status="invalid").sort("id")
    assert bad["id"].to_list() == [2, 3] and bad["_checks"].to_list() == [["s ok"], ["l ok", "s ok"]]
    with pytest.raises(ConfigError, match=r"s.nope.*STRUCT\(a BIGINT, b VARCHAR\)"):
        ws.create_sync("n", source=df, destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="n"),
                       primary_key="id", checks=[dc.sql("s.nope > 0")]).preview()


def test_e2e_a_replace_that_would_quarantine_every_row_fails_instead_of_emptying_the_table(tmp_path):
    """replace + on_invalid='skip' with every row failing a check (a bad upstream day, a check
    with a wrong bound) wrote an empty table and said success, where an empty source is refused
    (EmptySourceError) so that a full refresh never wipes a table by accident. It fails before
    anything is sent, keeping the rows as invalid records, and its preview says so; allow_empty=True
    lets it through."""
    path = str(tmp_path / "wh.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))

    def make(allow_empty: bool = False):
        return ws.create_sync("s", source=pl.DataFrame({"id": [1, 2], "a": [1, 2]}), primary_key="id",
                              destination=dfsync.destinations.duckdb(path, table="t"), destination_mode="replace",
                              checks=[dc.between("a", 0, 10)], on_invalid="skip", allow_empty=allow_empty)

    sync = make()
    assert sync.run(progress=False).status == "success"
    bad = pl.DataFrame({"id": [1, 2, 3], "a": [101, 202, 303]})
    assert any("would leave the table empty" in p for p in sync.preview(source=bad).problems)
    run = sync.run(source=bad, progress=False)
    assert run.status == "failed" and "would leave the table empty" in run.error and "allow_empty=True" in run.error
    assert ws.store.run_row(run.id)["error_kind"] == "ValidationFailed"
    assert run.counts["invalid"] == 3 and run.counts["sent"] == 0
    assert sorted(run.records(status="invalid")["id"].to_list()) == [1, 2, 3]
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT id, a FROM t ORDER BY id").fetchall() == [(1, 1), (2, 2)]
    # one valid row is a table of one row, as before; allow_empty=True takes the empty table
    assert sync.run(source=bad.with_columns(a=pl.Series([1, 202, 303])), progress=False).status == "success"
    run = make(allow_empty=True).run(source=bad, progress=False)
    assert run.status == "success", run.error
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]

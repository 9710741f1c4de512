"""dfsync's SQL evaluation of GX expectations gives what GX's own pandas engine gives.

Same data (nulls, NaN, infinities, -0.0, empty strings, Unicode, newlines) through
Great Expectations' pandas engine (ephemeral context, pandas data source, validate the
batch) and through dfsync.checks.evaluate on DuckDB: same success flag, same unexpected
count, same missing count.
"""

from __future__ import annotations

import math
import os

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
gx = pytest.importorskip("great_expectations") if not os.environ.get("CI") else __import__("great_expectations")
import great_expectations.expectations as gxe  # noqa: E402

from dfsync import checks as dc  # noqa: E402
from dfsync import gx as dgx  # noqa: E402

FLOATS = [None, math.nan, 0.0, -0.0, 1.0, 2.0, 3.5, 10.0, -1.0, math.inf, -math.inf, 1e300, 5.0]
INTS = [None, -7, -5, 0, 1, 2, 3, 5, 6, 2**40]
TEXT_ALPHABET = ["a", "A", "b", "z", "é", "e\u0301", "٣", "1", "9", " ", "\n", "\t", "\u00a0", "_", "-",
                 "😀", "ß", "Ω", "\u2028", "x"]
TEXTS = st.one_of(st.none(), st.just(""), st.lists(st.sampled_from(TEXT_ALPHABET), max_size=5).map("".join))

REGEXES = [r"^a", r"\d", r"^\w+$", r"\s", r"é$", r"(?i)^a", r"[^a-z]", r"^$", r"a|b", r"^.{2,3}$",
           r"[\w-]+", r"\S\s", r"x$", r"^\D+$", r"[ß-ʯ]", "\\u00e9"]


def expectations() -> list:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="f"),
        gxe.ExpectColumnValuesToNotBeNull(column="f", mostly=0.6),
        gxe.ExpectColumnValuesToNotBeNull(column="s"),
        gxe.ExpectColumnValuesToNotBeNull(column="i"),
        gxe.ExpectColumnValuesToBeBetween(column="f", min_value=0, max_value=10),
        gxe.ExpectColumnValuesToBeBetween(column="f", min_value=0, max_value=10, strict_min=True, strict_max=True),
        gxe.ExpectColumnValuesToBeBetween(column="f", min_value=1.0),
        gxe.ExpectColumnValuesToBeBetween(column="f", max_value=3.5, mostly=0.5),
        gxe.ExpectColumnValuesToBeBetween(column="i", min_value=-5, max_value=5),
        gxe.ExpectColumnValuesToBeInSet(column="f", value_set=[1.0, 2, 3.5, -0.0]),
        gxe.ExpectColumnValuesToBeInSet(column="i", value_set=[1, 2, 3]),
        gxe.ExpectColumnValuesToBeInSet(column="s", value_set=["a", "é", "", "e\u0301"]),
        gxe.ExpectColumnValuesToBeInSet(column="s", value_set=["a"], mostly=0.3),
        *[gxe.ExpectColumnValuesToMatchRegex(column="s", regex=r) for r in REGEXES],
        gxe.ExpectColumnValueLengthsToBeBetween(column="s", min_value=1, max_value=3),
        gxe.ExpectColumnValueLengthsToBeBetween(column="s", min_value=2),
        gxe.ExpectColumnValueLengthsToBeBetween(column="s", min_value=0, max_value=2, strict_min=True),
        gxe.ExpectColumnValuesToBeUnique(column="f"),
        gxe.ExpectColumnValuesToBeUnique(column="i"),
        gxe.ExpectColumnValuesToBeUnique(column="s"),
        gxe.ExpectColumnValuesToBeUnique(column="s", mostly=0.5),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=5),
        gxe.ExpectTableRowCountToBeBetween(min_value=3),
        gxe.ExpectTableRowCountToBeBetween(max_value=2, strict_max=True),
        # column aggregates (dataset-level), compiled to one DuckDB aggregate each
        *[cls(column=col, min_value=lo, max_value=hi, **strict)
          for cls in (gxe.ExpectColumnMeanToBeBetween, gxe.ExpectColumnMinToBeBetween,
                      gxe.ExpectColumnMaxToBeBetween, gxe.ExpectColumnSumToBeBetween,
                      gxe.ExpectColumnMedianToBeBetween, gxe.ExpectColumnStdevToBeBetween)
          for col in ("f", "i")
          for lo, hi, strict in ((0, 10, {}), (1, None, {"strict_min": True}), (None, 3.5, {"strict_max": True}))],
        *[gxe.ExpectColumnUniqueValueCountToBeBetween(column=col, min_value=lo, max_value=hi)
          for col in ("f", "i", "s") for lo, hi in ((0, 3), (4, None))],
    ]


_BD = None


def gx_batch(df: pl.DataFrame):
    global _BD
    if _BD is None:
        ctx = gx.get_context(mode="ephemeral")
        _BD = ctx.data_sources.add_pandas("eq").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    return _BD.get_batch(batch_parameters={"dataframe": df.to_pandas()})


def staged(df: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("src", df.with_row_index("_rid").with_columns(pl.col("_rid").cast(pl.Int64)).to_arrow())
    con.execute("CREATE TABLE rows AS SELECT * FROM src")
    con.complete()
    return con


def norm(v) -> str:
    """Partial-list values compared across engines: pandas turns ints with nulls into floats,
    and dfsync stores non-finite floats as None (JSON has no NaN)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = float(v)
        return repr(v if math.isfinite(v) else None)
    return repr(v)


def compare(df: pl.DataFrame) -> None:
    exps = expectations()
    checks = dc.normalize_checks(exps)
    con = staged(df)
    types = {r[0]: str(r[1]) for r in con.execute("DESCRIBE rows").fetchall()}
    # every expectation here must run in SQL (that is what we compare), not through GX
    assert all(c.sql_form(types) is not None for c in checks), [c.name for c in checks if not c.sql_form(types)]
    ev = dc.evaluate(con, "rows", checks)
    batch = gx_batch(df)
    for exp, ours in zip(exps, ev.results, strict=True):
        theirs = batch.validate(exp)
        assert not (theirs.exception_info or {}).get("raised_exception"), theirs.exception_info
        res = theirs.result
        ctx = f"{ours['check_name']} on {df.to_dicts()}: gx={res} dfsync={ours['result']}"
        assert ours["success"] == theirs.success, ctx
        if "unexpected_count" in res:
            assert ours["unexpected_count"] == res["unexpected_count"], ctx
            assert ours["result"].get("missing_count") == res.get("missing_count"), ctx
            assert sorted(map(norm, ours["partial_unexpected_list"])) == sorted(
                map(norm, res["partial_unexpected_list"])
            ) or len(res["partial_unexpected_list"]) == 20, ctx
        else:
            want = res["observed_value"]
            want = None if isinstance(want, float) and not math.isfinite(want) else want  # JSON: no NaN/inf
            got = ours["result"]["observed_value"]
            assert got == pytest.approx(want, rel=1e-9, nan_ok=True) if want is not None else got is None, ctx


FIXED = pl.DataFrame(
    {
        "f": [None, math.nan, 0.0, -0.0, 1.0, 1.0, 3.5, 11.0, math.inf, -1.0],
        "i": [None, 1, 2, 2, 3, 6, -7, None, 5, 2**40],
        "s": ["a", "", None, "é", "e\u0301", "é", "٣1", "a\n", "x y\u00a0", "😀ß"],
    },
    schema={"f": pl.Float64, "i": pl.Int64, "s": pl.String},
)


def test_fixed_table_matches_gx():
    compare(FIXED)


def test_empty_and_all_missing_match_gx():
    compare(FIXED.head(0))
    compare(pl.DataFrame({"f": [None, math.nan], "i": [None, None], "s": [None, None]},
                         schema={"f": pl.Float64, "i": pl.Int64, "s": pl.String}))


# a handful of random tables in the default suite; DFSYNC_HYPOTHESIS_EXAMPLES raises it (e.g. 200)
@settings(max_examples=int(os.environ.get("DFSYNC_HYPOTHESIS_EXAMPLES", "10")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_tables_match_gx(data):
    n = data.draw(st.integers(1, 12))
    df = pl.DataFrame(
        {
            "f": data.draw(st.lists(st.sampled_from(FLOATS), min_size=n, max_size=n)),
            "i": data.draw(st.lists(st.sampled_from(INTS), min_size=n, max_size=n)),
            "s": data.draw(st.lists(TEXTS, min_size=n, max_size=n)),
        },
        schema={"f": pl.Float64, "i": pl.Int64, "s": pl.String},
    )
    compare(df)


def test_gx_only_expectation_runs_through_gx_in_chunks(monkeypatch):
    monkeypatch.setattr(dgx, "CHUNK_ROWS", 3)
    exp = gxe.ExpectColumnValuesToNotBeInSet(column="s", value_set=["a", "é"], mostly=0.9)
    [check] = dc.normalize_checks([exp])
    con = staged(FIXED)
    types = {r[0]: str(r[1]) for r in con.execute("DESCRIBE rows").fetchall()}
    assert check.sql_form(types) is None  # not one dfsync compiles: GX runs it
    ev = dc.evaluate(con, "rows", [check])
    [ours] = ev.results
    theirs = gx_batch(FIXED).validate(exp)
    assert ours["success"] == theirs.success is False
    assert ours["unexpected_count"] == theirs.result["unexpected_count"] == 3
    assert ours["result"]["missing_count"] == theirs.result["missing_count"] == 1
    # the failing rows (by _rid) are listed: "a" at 0, "é" at 3 and 5
    rids = sorted(r[0] for r in con.execute(f"SELECT _rid FROM {ev.failures_table}").fetchall())
    assert rids == [0, 3, 5]


def test_gx_aggregate_expectation_runs_whole():
    exp = gxe.ExpectColumnMeanToBeBetween(column="i", min_value=0, max_value=10)
    con = staged(FIXED)
    ev = dc.evaluate(con, "rows", dc.normalize_checks(exp))
    [ours] = ev.results
    theirs = gx_batch(FIXED).validate(exp)
    assert ours["success"] == theirs.success is False
    assert ours["result"]["observed_value"] == pytest.approx(theirs.result["observed_value"])
    assert ours["level"] == "table"
    assert con.execute(f"SELECT count(*) FROM {ev.failures_table}").fetchone()[0] == 0
    assert "observed" in ev.summary()


def test_regex_that_re2_cannot_run_falls_back_to_gx():
    exp = gxe.ExpectColumnValuesToMatchRegex(column="s", regex=r"^(?!a)")  # lookahead: not in RE2
    [check] = dc.normalize_checks(exp)
    assert check.sql_form({"s": "VARCHAR"}) is None
    con = staged(FIXED)
    [ours] = dc.evaluate(con, "rows", [check]).results
    theirs = gx_batch(FIXED).validate(exp)
    assert (ours["success"], ours["unexpected_count"]) == (theirs.success, theirs.result["unexpected_count"])
    assert ours["unexpected_count"] == 2  # "a" and "a\n"


def test_suite_and_mixed_list():
    suite = gx.ExpectationSuite(name="people", expectations=[
        gxe.ExpectColumnValuesToNotBeNull(column="s"), gxe.ExpectColumnValuesToBeUnique(column="i")])
    checks = dc.normalize_checks([dc.not_null("f"), suite])
    assert [c.kind for c in checks] == ["not_null", "gx:expect_column_values_to_not_be_null",
                                        "gx:expect_column_values_to_be_unique"]
    assert [c.level for c in checks] == ["row", "row", "table"]
    rebuilt = dc.checks_from_config([c.config() for c in checks])
    assert [c.config() for c in rebuilt] == [c.config() for c in checks]
    ev = dc.evaluate(staged(FIXED), "rows", rebuilt)
    assert [r["unexpected_count"] for r in ev.results] == [2, 1, 2]


def test_regex_translation_matches_python_on_every_code_point():
    """\\d, \\w, \\s rewritten for RE2 mean what Python's re means, code point by code point.

    Only code points this Python's Unicode database knows count: RE2 may ship a newer
    Unicode version (e.g. digits added in Unicode 15) than the running Python.
    """
    import re
    import unicodedata

    from dfsync._regex import to_re2

    con = duckdb.connect()
    chars = [chr(c) for c in range(0x30000)
             if not 0xD800 <= c < 0xE000 and unicodedata.category(chr(c)) != "Cn"]
    con.register("cp", pl.DataFrame({"c": chars}).to_arrow())
    for pat in (r"\d", r"\w", r"\s", r"[\w]", r"[\s]", r"\D", r"\W", r"\S", r"^.$"):
        got = [r[0] for r in con.execute("SELECT regexp_matches(c, ?) FROM cp", [to_re2(pat)]).fetchall()]
        rx = re.compile(pat)
        want = [rx.search(c) is not None for c in chars]
        diff = [hex(ord(c)) for c, g, w in zip(chars, got, want, strict=True) if g != w]
        assert not diff, f"{pat}: {diff[:10]}"

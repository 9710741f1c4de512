"""Great Expectations checks as GX means them: row-level or not from the class hierarchy (a
user's subclass of a map expectation quarantines exactly its failing rows), GX's own
argument rules at create_sync, row_condition naming other columns, and the arguments dfsync
does not compile going to GX itself."""

from __future__ import annotations

import math
import os

import duckdb
import polars as pl
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
gx = pytest.importorskip("great_expectations") if not os.environ.get("CI") else __import__("great_expectations")
import great_expectations.expectations as gxe  # noqa: E402

import dfsync  # noqa: E402
from dfsync import checks as dc  # noqa: E402
from dfsync.errors import ConfigError  # noqa: E402


# GX's own parameterized-expectation pattern: a subclass that fixes an argument
class ExpectColumnValuesAsStringToBePositiveInteger(gxe.ExpectColumnValuesToMatchRegex):
    regex: str = r"^\d+$"


class ExpectStartBeforeEnd(gxe.ExpectColumnPairValuesAToBeGreaterThanB):
    column_A: str = "end"
    column_B: str = "start"


class ExpectTotalsOfThree(gxe.ExpectMulticolumnSumToEqual):
    column_list: list = ["a", "b", "c"]
    sum_total: int = 3


DATA = pl.DataFrame({
    "id": [1, 2, 3, 4, 5, 6],
    "code": ["12", "x1", None, "", "٣", "7"],
    "start": [1, 5, 2, 3, None, 0],
    "end": [2, 4, 2, 9, 1, 1],
    "a": [1, 1, 0, 3, 1, 1], "b": [1, 1, 0, 0, 1, 2], "c": [1, 2, 3, 0, 1, 0],
    "z": [math.nan, 1.0, 50.0, -3.0, 7.0, None],
    "x": [1, 1, 2, 1, 2, 1],
})


def _run(tmp_path, checks, on_invalid="skip"):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(DATA),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id", checks=checks, on_invalid=on_invalid)
    return sync.run(progress=False)


def _sent(tmp_path) -> list[int]:
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT id FROM t").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize(("expectation", "bad"), [
    (ExpectColumnValuesAsStringToBePositiveInteger(column="code"), [2, 4, 5]),  # "x1", "", "٣" (\d is ASCII in GX? no: pandas)
    (ExpectStartBeforeEnd(), [2, 3, 5]),  # GX judges a pair with one missing value (ignore_row_if)
    (ExpectTotalsOfThree(), [2]),
], ids=["column-map", "column-pair-map", "multicolumn-map"])
def test_user_subclass_of_each_map_family_quarantines_exactly_its_failing_rows(tmp_path, expectation, bad):
    [check] = dc.normalize_checks([expectation])
    assert check.level == "row" and not check.kind.endswith(("regex", "b", "equal"))
    # what GX itself says fails
    ctx = gx.get_context(mode="ephemeral")
    bd = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    res = bd.get_batch(batch_parameters={"dataframe": DATA.to_pandas()}).validate(
        expectation, result_format="COMPLETE")
    want = sorted(DATA["id"][i] for i in res.result["unexpected_index_list"])
    if expectation.__class__ is ExpectColumnValuesAsStringToBePositiveInteger:
        bad = want  # Python's \d matches "٣": whatever GX says is the truth
    assert want == bad
    run = _run(tmp_path, [expectation])
    assert run.status == "success", run.error
    assert sorted(run.records(status="invalid")["id"].to_list()) == bad
    assert _sent(tmp_path) == sorted(set(DATA["id"].to_list()) - set(bad))
    c = run.counts
    assert c["queried"] == c["inserted"] + c["invalid"] == 6


def test_uniqueness_is_dataset_level_whatever_the_name(tmp_path):
    class ExpectIdsOnce(gxe.ExpectColumnValuesToBeUnique):
        pass

    [check] = dc.normalize_checks([ExpectIdsOnce(column="x")])
    assert check.level == "table"  # its map metric compares rows with each other
    [pair] = dc.normalize_checks([gxe.ExpectSelectColumnValuesToBeUniqueWithinRecord(column_list=["a", "b"])])
    assert pair.level == "row"  # within one record: row-level, though "unique" is in its name


def test_arguments_gx_rejects_are_rejected_at_create_sync(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    with pytest.raises(ConfigError, match="min_value cannot be greater than max_value"):
        ws.create_sync("s", source=dfsync.sources.frame(DATA),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                       primary_key="id",
                       checks=[gxe.ExpectColumnValuesToBeBetween(column="z", min_value=10, max_value=0)])
    assert ws.syncs().is_empty()


@pytest.mark.parametrize("condition", [
    dict(row_condition='x == 1', condition_parser="pandas"),
    dict(row_condition='col("x")==1', condition_parser="great_expectations"),
])
def test_row_condition_naming_another_column(tmp_path, condition):
    exp = gxe.ExpectColumnValuesToBeBetween(column="z", min_value=0, max_value=10, **condition)
    run = _run(tmp_path, [exp])
    assert run.status == "success", run.error
    # x == 1 rows: 1 (NaN: missing), 2 (1.0), 4 (-3.0: fails), 6 (None); rows with x == 2 are not judged
    assert run.records(status="invalid")["id"].to_list() == [4]


def _gx_result(exp, df):
    ctx = gx.get_context(mode="ephemeral")
    bd = ctx.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    return bd.get_batch(batch_parameters={"dataframe": df.to_pandas()}).validate(exp)


@pytest.mark.parametrize("exp", [
    gxe.ExpectColumnValuesToBeBetween(column="z", min_value=0, max_value=10, result_format="COMPLETE"),
    gxe.ExpectColumnValuesToBeBetween(column="z", min_value=0, max_value=10, mostly=0.5, result_format="BOOLEAN_ONLY"),
    gxe.ExpectColumnValuesToBeBetween(column="z", min_value=1, max_value=7, strict_min=True, strict_max=True,
                                      mostly=0.4, row_condition='x == 1', condition_parser="pandas"),
    gxe.ExpectColumnValuesToBeInSet(column="code", value_set=["12", "", "٣"], mostly=0.5,
                                    row_condition='col("x")==1', condition_parser="great_expectations"),
    gxe.ExpectColumnMeanToBeBetween(column="z", min_value=0, max_value=20, strict_max=True,
                                    row_condition='x == 1', condition_parser="pandas"),
    gxe.ExpectColumnMeanToBeBetween(column="z", min_value=0, max_value=20, result_format="COMPLETE"),
    # map expectations GX answers for the whole column (no per-row result): its verdict, not "0 of 0 failed"
    gxe.ExpectColumnValuesToBeOfType(column="z", type_="int64"),
    gxe.ExpectColumnValuesToBeOfType(column="z", type_="float64"),
    gxe.ExpectColumnValuesToBeInTypeList(column="x", type_list=["float32", "float64"]),
])
def test_arguments_not_compiled_go_to_gx_and_give_its_result(exp):
    from dfsync import gx as dgx

    [check] = dc.normalize_checks([exp])
    assert check.sql_form({"z": "DOUBLE", "code": "VARCHAR"}) is None  # GX decides, never a different answer
    con = duckdb.connect()
    con.register("src", DATA.with_row_index("_rid").with_columns(pl.col("_rid").cast(pl.Int64)).to_arrow())
    con.execute("CREATE TABLE rows AS SELECT * FROM src")
    [ours] = dc.evaluate(con, "rows", [check]).results
    theirs = _gx_result(exp, DATA)
    assert ours["success"] == theirs.success
    if "unexpected_count" in theirs.result:
        assert ours["unexpected_count"] == theirs.result["unexpected_count"]
    else:
        assert ours["result"]["observed_value"] == pytest.approx(theirs.result["observed_value"])
    assert isinstance(check, dgx.GXCheck)


def test_aggregate_expectations_on_dates_are_not_rejected_for_want_of_rows(tmp_path):
    from datetime import datetime

    df = pl.DataFrame({"id": [1, 2], "t": [datetime(2021, 1, 1), datetime(2022, 1, 1)]})
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(df),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id", on_invalid="fail",
                          checks=[gxe.ExpectColumnMaxToBeBetween(column="t", min_value=datetime(2020, 1, 1))])
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.validation()["scope"].to_list() == ["dataset"]


def test_a_type_expectation_that_gx_fails_fails_the_run(tmp_path):
    # GX answers it for the whole column, with no failing rows: it passed as "0 of 0 rows failed"
    run = _run(tmp_path, [gxe.ExpectColumnValuesToBeOfType(column="z", type_="int64")], on_invalid="fail")
    assert run.status == "failed"
    assert "observed 'float64'" in run.error
    v = run.validation()
    assert v["success"].to_list() == [False]
    assert run.counts["sent"] == 0 and not (tmp_path / "d.duckdb").exists()

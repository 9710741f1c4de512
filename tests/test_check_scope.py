"""Checks that mean what they say: counters that add up under every on_invalid policy, the
rows a run failing on its keys found, and (below) the scope of dataset-level checks."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync import checks as dc

CARRIERS = ["UA", "AA", "DL", "B6", "EV", "WN"]


def _flights(n: int = 1000) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "carrier": [CARRIERS[i * 7 % 6] for i in range(n)],
                         "delay": [float(i % 60 - 10) for i in range(n)]})


def _sync(tmp_path, df, *, on_invalid="skip", checks=None, mode="upsert", **kw):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=dfsync.sources.frame(df),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                          primary_key="id", checks=checks, on_invalid=on_invalid, destination_mode=mode, **kw)
    return ws, sync


def _sums(c: dict) -> None:
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"], c
    assert c["sent"] == c["succeeded"] + c["failed"] + c["skipped"], c


def _dest(tmp_path) -> list[int]:
    con = duckdb.connect(str(tmp_path / "dest.duckdb"), read_only=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT id FROM t").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("policy", ["skip", "warn", "fail"])
def test_counters_add_up_under_every_policy_in_runs_and_preview(tmp_path, policy):
    df = _flights()
    bad = df.filter(~pl.col("carrier").is_in(["UA", "AA", "DL"])).height
    ws, sync = _sync(tmp_path, df, on_invalid=policy, checks=[dc.in_set("carrier", ["UA", "AA", "DL"])])
    p = sync.preview().counts
    quarantined = 0 if policy == "warn" else bad
    assert p["insert"] + p["update"] + p["unchanged"] + p["invalid"] == 1000, p
    assert p["invalid"] == quarantined and p["insert"] == 1000 - quarantined
    run = sync.run(progress=False)
    c = run.counts
    _sums(c)
    assert c["queried"] == 1000 and c["invalid"] == quarantined, c
    if policy == "fail":
        assert run.status == "failed" and c["sent"] == 0 and c["inserted"] == 1000 - bad
        assert run.records(status="invalid").height == bad
        return
    assert c["inserted"] == 1000 - quarantined == c["sent"], c
    again = sync.run(progress=False).counts  # quarantined rows are checked again, never counted twice
    _sums(again)
    assert again["queried"] == 1000 and again["invalid"] == quarantined and again["sent"] == 0, again
    assert again["unchanged"] == 1000 - quarantined


def test_insert_mode_counts_skipped_updates_as_handed_over(tmp_path):
    df = _flights(10)
    ws, sync = _sync(tmp_path, df, mode="insert")
    sync.run(progress=False)
    ws, sync = _sync(tmp_path, df.with_columns(delay=pl.col("delay") + 1), mode="insert")
    c = sync.run(progress=False).counts
    _sums(c)
    assert c["updated"] == 10 and c["skipped"] == 10 and c["succeeded"] == 0


@pytest.mark.parametrize("problem", ["duplicate", "null"])
def test_a_run_failing_on_its_keys_records_what_it_read_and_the_offending_rows(tmp_path, problem):
    ids = [1, 2, 3, 3, 4, 5, 5, 5] if problem == "duplicate" else [1, 2, None, 4, None, 6, 7, 8]
    df = pl.DataFrame({"id": ids, "v": list("abcdefgh")}, schema={"id": pl.Int64, "v": pl.String})
    ws, sync = _sync(tmp_path, df, on_invalid="fail")
    run = sync.run(progress=False)
    assert run.status == "failed" and "primary key" in run.error
    c = run.counts
    _sums(c)
    assert c["queried"] == 8 and c["invalid"] == 5 - (problem == "null") * 3 and c["sent"] == 0, c
    inv = run.records(status="invalid").sort("v")
    want = ["c", "d", "f", "g", "h"] if problem == "duplicate" else ["c", "e"]
    assert inv["v"].to_list() == want
    reason = "primary_key unique" if problem == "duplicate" else "primary_key not_null"
    assert all(chk == [reason] for chk in inv["_checks"].to_list())
    assert "run.records(status='invalid')" in run.error


# ----------------------------------------------------------------------------- scope

def _big(n: int = 20_000) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "code": [f"c{i}" for i in range(n)],
                         "delay": [float(i % 41 - 8) for i in range(n)]})  # mean 12.0


def _gx_or_builtin(kind: str) -> list:
    if kind == "builtin":
        return [dc.row_count_between(10_000), dc.unique("code")]
    gx = pytest.importorskip("great_expectations") if not _ci() else __import__("great_expectations")
    gxe = gx.expectations
    return [gxe.ExpectColumnMeanToBeBetween(column="delay", min_value=0, max_value=30),
            gxe.ExpectTableRowCountToBeBetween(min_value=10_000),
            gxe.ExpectColumnValuesToBeUnique(column="code"),
            gxe.ExpectColumnUniqueValueCountToBeBetween(column="code", min_value=10_000)]


def _ci() -> bool:
    import os

    return os.environ.get("CI") == "true"


@pytest.mark.parametrize("kind", ["builtin", "gx"])
def test_dataset_checks_see_the_whole_source_on_a_full_refresh(tmp_path, kind):
    df = _big()
    ws, sync = _sync(tmp_path, df, on_invalid="fail", checks=_gx_or_builtin(kind), mode="mirror")
    first = sync.run(progress=False)
    assert first.status == "success", first.error
    v = first.validation()
    assert set(v["scope"].to_list()) == {"dataset"}
    # three rows edited, to values far from the mean: the whole source still passes
    edit = df.with_columns(delay=pl.when(pl.col("id") < 3).then(-500.0).otherwise(pl.col("delay")))
    ws, sync = _sync(tmp_path, edit, on_invalid="fail", checks=_gx_or_builtin(kind), mode="mirror")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["updated"] == 3 and run.counts["unchanged"] == 19_997 and run.counts["sent"] == 3
    v = run.validation()
    counts = [json.loads(r).get("observed_value") for r in v["result"].to_list()] + v["element_count"].to_list()
    assert 20_000 in counts and 3 not in counts  # the whole source's rows, not the 3 changed ones
    # now the whole data set breaks them: one code repeated, and (gx) the mean far out
    broken = edit.with_columns(code=pl.when(pl.col("id") == 5).then(pl.lit("c6")).otherwise(pl.col("code")),
                               delay=pl.col("delay") + (100.0 if kind == "gx" else 0.0))
    ws, sync = _sync(tmp_path, broken, on_invalid="fail", checks=_gx_or_builtin(kind), mode="mirror")
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0
    failed = run.validation().filter(~pl.col("success"))["check_name"].to_list()
    assert any("unique" in n for n in failed), failed
    if kind == "gx":
        assert any("mean" in n for n in failed), failed
    # the duplicate row about to be sent is the invalid one; the delivered row 6 is not re-judged
    assert 5 in run.records(status="invalid")["id"].to_list()


def test_dataset_checks_on_an_incremental_run_see_the_rows_it_read(tmp_path):
    from datetime import datetime, timedelta

    t0 = datetime(2024, 1, 1)
    df = _big(5000).with_columns(ts=pl.lit(t0) + pl.duration(seconds=pl.col("id")))
    checks = lambda: [dc.row_count_between(1), dc.unique("code")]  # noqa: E731
    kw = dict(sync_mode="incremental", cursor_field="ts")
    ws, sync = _sync(tmp_path, df, on_invalid="skip", checks=checks(), **kw)
    assert sync.run(progress=False).status == "success"
    later = t0 + timedelta(days=1)
    edit = df.with_columns(delay=pl.when(pl.col("id") < 3).then(99.0).otherwise(pl.col("delay")),
                           ts=pl.when(pl.col("id") < 3).then(pl.lit(later)).otherwise(pl.col("ts")))
    ws, sync = _sync(tmp_path, edit, on_invalid="skip", checks=checks(), **kw)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    rc = run.validation().filter(pl.col("kind") == "row_count_between")
    read = run.counts["queried"]
    assert read < 10 and json.loads(rc["result"].item())["observed_value"] == read  # the rows this run read
    # a changed row now repeats a code of a row this run read: quarantined (skip), the rest sent
    dup = edit.with_columns(code=pl.when(pl.col("id") == 1).then(pl.lit("c0")).otherwise(pl.col("code")),
                            ts=pl.when(pl.col("id") < 3).then(pl.lit(later + timedelta(hours=1)))
                            .otherwise(pl.col("ts")))
    ws, sync = _sync(tmp_path, dup, on_invalid="skip", checks=checks(), **kw)
    run = sync.run(progress=False)
    _sums(run.counts)
    assert sorted(run.records(status="invalid")["id"].to_list()) == [0, 1]
    assert run.counts["sent"] == 1


def test_validate_checks_the_whole_current_source_and_changes_nothing(tmp_path):
    df = _flights(200)
    ws, sync = _sync(tmp_path, df, on_invalid="skip")
    assert sync.run(progress=False).status == "success"
    ws, sync = _sync(tmp_path, df, on_invalid="skip",
                     checks=[dc.in_set("carrier", ["UA", "AA", "DL"]), dc.row_count_between(1, 100)])
    runs_before = ws.sql("SELECT count(*) AS n FROM runs")["n"][0]
    result = sync.validate()
    assert not result.ok
    bad = df.filter(~pl.col("carrier").is_in(["UA", "AA", "DL"]))
    assert sorted(result.invalid["id"].to_list()) == sorted(bad["id"].to_list())
    checks = result.checks.sort("check_name")
    assert checks["scope"].to_list() == ["rows", "dataset"]
    assert checks["success"].to_list() == [False, False]
    assert ws.sql("SELECT count(*) AS n FROM runs")["n"][0] == runs_before
    assert _dest(tmp_path) == list(range(200))
    assert sync.preview().counts["unchanged"] + sync.preview().counts["invalid"] == 200


def test_cli_shows_each_checks_scope(tmp_path, dfsync_cli):
    src = tmp_path / "flights.parquet"
    _flights(100).write_parquet(src)
    ws_path = str(tmp_path / "ws.duckdb")
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("f", source=dfsync.sources.files(str(src)),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                       primary_key="id", on_invalid="skip",
                       checks=[dc.in_set("carrier", ["UA", "AA", "DL"]), dc.row_count_between(1, 1000)])
    res = dfsync_cli("validate", "f", "-w", ws_path, "--json")
    assert res.code == 1, res.err
    out = json.loads(res.out)
    # validate sends nothing: its row-level checks judged each row, not "rows sent"
    assert [(c["scope"], c["success"]) for c in out["checks"]] == [("each row", False), ("whole data set", True)]
    assert out["rows"] == 100 and not out["ok"]
    assert "[each row]: FAILED" in dfsync_cli("validate", "f", "-w", ws_path).out
    res = dfsync_cli("run", "f", "-w", ws_path)
    assert res.code == 0, res.err
    assert "[rows sent]: FAILED" in res.out


def test_a_run_skipping_unchanged_files_reuses_the_check_results_and_says_so(tmp_path):
    src = tmp_path / "flights.parquet"
    _flights(300).write_parquet(src)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("f", source=dfsync.sources.files(str(src), skip_unchanged=True),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                          primary_key="id", on_invalid="warn", destination_mode="mirror",
                          checks=[dc.row_count_between(100), dc.unique("carrier")])
    first = sync.run(progress=False)
    assert first.status == "success", first.error
    again = sync.run(progress=False)
    assert again.status == "success" and again.counts["queried"] == again.counts["unchanged"] == 300
    assert "not read again" in " ".join(again.events()["detail"].drop_nulls().to_list())
    assert any(f"run {first.id} checked" in d for d in again.events()["detail"].drop_nulls().to_list())
    cols = ["check_name", "scope", "success", "element_count", "unexpected_count", "result"]
    assert again.validation().select(cols).equals(first.validation().select(cols))
    assert json.loads(again.validation()["result"][0])["observed_value"] == 300  # not 0: the files' rows


def test_dataset_checks_read_a_file_source_in_place_and_still_name_failing_rows(tmp_path, monkeypatch):
    from dfsync import _checks_sql

    sorts: list[int] = []
    repeats = _checks_sql._repeats
    monkeypatch.setattr(_checks_sql, "_repeats", lambda parts: sorts.append(1) or repeats(parts))
    src = tmp_path / "big.parquet"
    df = _big(5000)
    df.write_parquet(src)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    kw = dict(source=dfsync.sources.files(str(src), skip_unchanged=False),
              destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
              primary_key="id", on_invalid="skip", destination_mode="mirror",
              checks=[dc.row_count_between(4000), dc.unique("code")])
    sync = ws.create_sync("f", **kw)
    assert sync.run(progress=False).status == "success"
    df.with_columns(delay=pl.when(pl.col("id") < 3).then(1.0).otherwise(pl.col("delay"))).write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["updated"] == 3 and run.counts["sent"] == 3
    assert json.loads(run.validation()["result"][0])["observed_value"] == 5000
    # only other columns changed again: the codes' hashes are those the last run proved distinct
    df.with_columns(delay=pl.when(pl.col("id") < 3).then(2.0).otherwise(pl.col("delay"))).write_parquet(src)
    sorts.clear()
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["updated"] == 3 and not sorts
    # row 5 (changed) now repeats the code of row 6 (delivered, unchanged): row 5 is quarantined
    df.with_columns(code=pl.when(pl.col("id") == 5).then(pl.lit("c6")).otherwise(pl.col("code"))).write_parquet(src)
    run = sync.run(progress=False)
    _sums(run.counts)
    assert sorts  # other hashes: tested in full
    assert run.records(status="invalid")["id"].to_list() == [5]
    assert run.validation().filter(pl.col("kind") == "unique")["unexpected_count"].item() == 2


def test_a_file_re_sync_with_row_failures_and_passing_dataset_checks(tmp_path):
    """Dataset checks read a file in place (no row ids) and pass while a row-level check fails:
    the failing rows are quarantined, the rows that passed every check before stay unchanged
    (this failed with a catalog error on the second run)."""
    src = tmp_path / "a.parquet"
    df = pl.DataFrame({"id": range(1000), "v": [i % 7 for i in range(1000)]})
    df.write_parquet(src)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("f", source=dfsync.sources.files(str(src)), primary_key="id", on_invalid="skip",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                          destination_mode="mirror", checks=[dc.unique("id"), dc.between("v", 0, 5)])
    first = sync.run(progress=False)
    assert first.status == "success" and first.counts["invalid"] == 142
    df.with_columns(v=pl.when(pl.col("id") < 3).then(9).otherwise(pl.col("v"))).write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    _sums(run.counts)
    assert (run.counts["invalid"], run.counts["unchanged"], run.counts["sent"]) == (145, 855, 0)
    assert {0, 1, 2} <= set(run.records(status="invalid")["id"].to_list())
    assert len(_dest(tmp_path)) == 858


def test_unique_on_the_primary_key_is_answered_by_the_key_gate_and_only_then(tmp_path, monkeypatch):
    """A uniqueness check of columns that include the primary key needs no hash of the values when
    staging found no null or repeated key among every row read (first load, changed-only
    re-sync of a file). Not when the columns leave out part of the key, and not when the key
    repeats (quarantined under skip): then the check itself finds the rows."""
    from dfsync import _checks_sql

    read: list[str] = []
    start = _checks_sql.DistinctTest.start
    monkeypatch.setattr(_checks_sql.DistinctTest, "start", lambda self, con: read.append(self.hashes) or start(self, con))
    src = tmp_path / "k.parquet"
    df = _big(3000).with_columns(note=pl.when(pl.col("id") % 10 == 0).then(None).otherwise(pl.col("code")))
    df.write_parquet(src)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    checks = [dc.unique("id"), dc.unique(["note", "id"]), dc.unique("code")]
    sync = ws.create_sync("k", source=dfsync.sources.files(str(src), skip_unchanged=False), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                          destination_mode="mirror", on_invalid="skip", checks=checks)

    def outcome(run) -> dict:
        v = run.validation()
        return {r["check_name"]: (r["success"], r["unexpected_count"], json.loads(r["result"]).get("missing_count"))
                for r in v.iter_rows(named=True)}

    first = sync.run(progress=False)
    assert first.status == "success"
    assert outcome(first) == {"id unique": (True, 0, 0), "note, id unique": (True, 0, 300), "code unique": (True, 0, 0)}
    assert len(read) == 1 and '"code"' in read[0]  # only the column outside the key was hashed
    df.with_columns(delay=pl.when(pl.col("id") < 5).then(99.0).otherwise(pl.col("delay"))).write_parquet(src)
    read.clear()
    run = sync.run(progress=False)  # a changed-only re-sync: the dataset is the file read again
    assert run.status == "success" and run.counts["updated"] == 5
    assert outcome(run) == outcome(first) and len(read) == 1
    # two rows share id 7: the gate quarantines them, and unique("id") finds them itself
    pl.concat([df, df.filter(pl.col("id") == 7).with_columns(code=pl.lit("x"))]).write_parquet(src)
    read.clear()
    run = sync.run(progress=False)
    _sums(run.counts)
    assert outcome(run)["id unique"] == (False, 2, 0) and outcome(run)["note, id unique"] == (False, 2, 300)
    assert len(read) == 3
    assert sorted(run.records(status="invalid")["id"].to_list()) == [7, 7]


def test_the_key_gate_answers_unique_only_for_keys_that_compare_alike_everywhere():
    from dfsync._checks_sql import key_proves_unique

    types = {"id": "BIGINT", "s": "VARCHAR", "x": "DOUBLE", "d": "DECIMAL(18,3)", "ts": "TIMESTAMP WITH TIME ZONE"}
    assert key_proves_unique(["id"], ["id"], types) and key_proves_unique(["s", "id", "x"], ["id", "s"], types)
    assert key_proves_unique(["d", "ts"], ["d", "ts"], types)
    assert not key_proves_unique(["id"], ["id", "s"], types)  # part of a composite key repeats freely
    assert not key_proves_unique(["x"], ["x"], types)  # 0.0 and -0.0, NaN: not taken on trust
    assert not key_proves_unique(["id"], [], types)


def test_an_expression_comparing_rows_sees_the_whole_source_on_a_re_sync(tmp_path):
    # a polars expression whose verdict for a row depends on other rows (an aggregate, is_duplicated)
    # was judged on the changed rows alone: the re-sync compared a row with 1 other and sent a
    # duplicate e-mail; both are dataset-level now, and an expression naming a column twice no
    # longer fails the run with polars' DuplicateError
    df = pl.DataFrame({"id": [1, 2, 3, 4, 5], "email": ["a@x", "b@x", "c@x", "d@x", "e@x"],
                       "x": [10.0, 10.0, 10.0, 10.0, 100.0]})
    checks = [dc.expression(~pl.col("email").is_duplicated(), name="email distinct"),
              dc.expression(pl.col("x") < pl.col("x").mean() * 2, name="x below twice the mean")]
    assert [c.level for c in checks] == ["table", "table"]
    assert dc.expression(pl.col("x").abs() < pl.col("x") + 1).level == "row"
    ws, sync = _sync(tmp_path, df, checks=checks)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["invalid"] == 1 and _dest(tmp_path) == [1, 2, 3, 4]  # 100 >= 2 * 28
    assert run.validation()["scope"].to_list() == ["dataset", "dataset"]
    edited = df.with_columns(email=pl.when(pl.col("id") == 4).then(pl.lit("a@x")).otherwise(pl.col("email")),
                             x=pl.when(pl.col("id") == 3).then(pl.lit(12.0)).otherwise(pl.col("x")))
    run = sync.run(progress=False, source=edited)
    _sums(run.counts)
    bad = run.records(status="invalid").sort("id")
    assert bad["id"].to_list() == [4, 5]  # 4 repeats a delivered e-mail; 5 is still above twice the mean
    assert run.counts["updated"] == 1  # row 3 (12 < 2 * 28.4)
    con = duckdb.connect(str(tmp_path / "dest.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT email FROM t WHERE id = 4").fetchone() == ("d@x",)
    finally:
        con.close()
    ws.close()



@pytest.mark.parametrize("expr", [
    pl.col("price") >= pl.col("price").min_by("day"), pl.col("price") <= pl.col("price").max_by("day"),
    pl.col("day").rle_id() < 3, pl.col("price").shuffle(seed=1) > 0, pl.col("price").sample(n=4, seed=1) > 0,
    pl.corr("price", "day") > 0, pl.col("day") == pl.int_range(1, 5),
    pl.lit(True) & pl.col("day").is_sorted(), pl.lit(True) & ~pl.col("price").has_nulls(),
    pl.col("code").replace(pl.col("old_code"), pl.lit("retired")) != "retired",
    pl.col("code").replace_strict(pl.col("old_code"), pl.lit("retired"), default=pl.col("code")) != "retired",
], ids=["min_by", "max_by", "rle_id", "shuffle", "sample", "corr", "int_range", "is_sorted", "has_nulls", "replace",
        "replace_strict"])
def test_every_expression_whose_row_verdict_reads_other_rows_is_dataset_level(expr):
    # these were taken for row-level and judged on the changed rows alone
    assert dc.expression(expr).level == "table"


def test_row_level_expressions_stay_row_level():
    for expr in [pl.col("code").replace("a", "b") != "c", pl.col("code").replace_strict({"a": "b"}, default="z") != "c",
                 pl.col("price").round(1) > 0, pl.max_horizontal("price", "day") > 0]:
        assert dc.expression(expr).level == "row", expr


def test_expressions_over_each_rows_own_list_are_row_level(tmp_path):
    # list.eval / list.agg / arr.eval and bitwise_count_ones were taken for dataset-level (their tree
    # holds rank, all, sum...): a re-sync judged every row it read, so under on_invalid="fail" a
    # delivered, unchanged row failed a run that sent only good rows
    each_list = dc.expression(pl.col("tags").list.eval(pl.element() > 0).list.all(), name="tags positive")
    assert each_list.level == "row"
    assert dc.expression(pl.col("tags").list.eval(pl.element().rank()).list.first() > 0).level == "row"
    assert dc.expression(pl.col("tags").list.agg(pl.element().sum()) > 0).level == "row"
    assert dc.expression(pl.col("id").bitwise_count_ones() > 0).level == "row"
    for cross in [pl.col("tags").list.len() > pl.col("id").mean(), pl.col("id").bitwise_and() == 0,
                  pl.col("id") >= pl.col("id").cumulative_eval(pl.element().max()),
                  pl.col("tags").shift(1).list.eval(pl.element()).list.len() > 0]:
        assert dc.expression(cross).level == "table", cross
    df = pl.DataFrame({"id": [1, 2, 3], "tags": [[1, 2], [3], [4, 5]]})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.frame(df), primary_key="id", checks=[each_list],
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                          on_invalid="skip")
    assert sync.run(progress=False).counts["inserted"] == 3
    run = sync.run(progress=False, source=df.with_columns(
        tags=pl.when(pl.col("id") == 3).then(pl.lit([7], dtype=pl.List(pl.Int64))).otherwise(pl.col("tags"))))
    assert run.status == "success" and run.counts["updated"] == 1 and run.counts["unchanged"] == 2
    v = run.validation()
    assert v["scope"].to_list() == ["rows"] and v["element_count"].to_list() == [1]  # the row about to be sent
    ws.close()


def test_min_by_sees_the_whole_source_on_a_re_sync(tmp_path):
    # no price below the first day's: re-syncing row 4 at 5 compared it with itself alone and sent it
    df = pl.DataFrame({"id": [1, 2, 3, 4], "day": [1, 2, 3, 4], "price": [10.0, 11.0, 12.0, 13.0]})
    ws, sync = _sync(tmp_path, df, checks=[dc.expression(pl.col("price") >= pl.col("price").min_by("day"),
                                                         name="not below day 1")])
    assert sync.run(progress=False).counts["inserted"] == 4
    run = sync.run(progress=False, source=df.with_columns(
        price=pl.when(pl.col("id") == 4).then(pl.lit(5.0)).otherwise(pl.col("price"))))
    _sums(run.counts)
    assert run.records(status="invalid")["id"].to_list() == [4] and run.counts["sent"] == 0
    ws.close()

def test_a_sql_predicate_with_a_window_function_sees_the_whole_source(tmp_path):
    # count(*) OVER (PARTITION BY email) was computed over the changed rows alone: a re-sync that
    # gave row 4 a delivered row's e-mail found it alone in its partition and sent it
    df = pl.DataFrame({"id": [1, 2, 3, 4], "email": ["a@x", "b@x", "c@x", "d@x"]})
    check = dc.sql("count(*) OVER (PARTITION BY email) = 1", name="email once")
    assert check.level == "table" and dc.sql("length(email) > 2").level == "row"
    ws, sync = _sync(tmp_path, df, checks=[check])
    assert sync.run(progress=False).counts["inserted"] == 4
    run = sync.run(progress=False, source=df.with_columns(
        email=pl.when(pl.col("id") == 4).then(pl.lit("a@x")).otherwise(pl.col("email"))))
    _sums(run.counts)
    assert run.records(status="invalid")["id"].to_list() == [4]
    assert run.counts["sent"] == 0 and run.validation()["scope"].to_list() == ["dataset"]
    ws.close()



def test_a_stored_check_takes_the_level_its_kind_has_now(tmp_path, dfsync_cli):
    # a sync stored before sql() window predicates became dataset-level kept level 'row' in its
    # definition, and a process reading it back computed count(*) OVER (PARTITION BY email) over
    # the changed rows alone: a re-sync giving row 4 a delivered row's e-mail sent it
    src, ws_path = tmp_path / "people.parquet", str(tmp_path / "ws.duckdb")
    df = pl.DataFrame({"id": [1, 2, 3, 4], "email": ["a@x", "b@x", "c@x", "d@x"]})
    df.write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.create_sync("s", source=dfsync.sources.files(str(src)),
                              destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="t"),
                              primary_key="id", on_invalid="skip",
                              checks=[dc.sql("count(*) OVER (PARTITION BY email) = 1", name="email once"),
                                      dc.unique("email", name="email unique")])
        assert sync.run(progress=False).counts["inserted"] == 4
    con = duckdb.connect(ws_path)  # as an earlier version stored it
    (raw,) = con.execute("SELECT definition FROM syncs WHERE name = 's'").fetchone()
    old = json.loads(raw)
    for c in old["checks"]:
        c["level"] = "row"
    con.execute("UPDATE syncs SET definition = ? WHERE name = 's'", [json.dumps(old)])
    con.close()
    df.with_columns(email=pl.when(pl.col("id") == 4).then(pl.lit("a@x")).otherwise(pl.col("email"))) \
        .write_parquet(src)
    res = dfsync_cli("run", "s", "-w", ws_path, "--json")  # another process: the stored definition
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["counts"]["invalid"] == 1 and out["counts"]["sent"] == 0, out
    assert [c["scope"] for c in out["checks"]] == ["whole data set", "whole data set"], out["checks"]
    assert _dest(tmp_path) == [1, 2, 3, 4]
    con = duckdb.connect(str(tmp_path / "dest.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT email FROM t WHERE id = 4").fetchone() == ("d@x",)
    finally:
        con.close()

"""Checks that mean what they say: counters that add up under every on_invalid policy, the
rows a run failing on its keys found, and (below) the scope of dataset-level checks."""

from __future__ import annotations

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

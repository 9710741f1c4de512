"""``sync.preview()`` runs the run's own query and check code in a dry run: its counts are the
run's, in every destination mode, and it changes nothing on the way."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

import dfsync
import dfsync.checks as dc

CODES = ["a", "b", "c"]


def _frame(ids: list[int], version: int = 1, bad: tuple[int, ...] = ()) -> pl.DataFrame:
    return pl.DataFrame({
        "id": ids,
        "code": ["x" if i in bad else CODES[i % 3] for i in ids],
        "v": [i * 10 + (version if i % 4 == 0 else 0) for i in ids],  # every fourth row changes in v2
    })


def _as_preview(counts: dict[str, int]) -> dict[str, int]:
    return {"insert": counts["inserted"], "update": counts["updated"], "delete": counts["deleted"],
            "unchanged": counts["unchanged"], "invalid": counts["invalid"]}


@pytest.mark.parametrize("mode", ["insert", "upsert", "update", "mirror", "replace"])
def test_preview_and_run_agree_on_counts_in_every_mode(tmp_path, mode):
    if mode == "update":  # changes only rows that exist: the new ones fail
        con = duckdb.connect(str(tmp_path / "d.duckdb"))
        con.execute("CREATE TABLE t AS SELECT range AS id, 'a' AS code, 0 AS v FROM range(40)")
        con.close()
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    sync = ws.create_sync("s", source=dfsync.sources.frame(_frame(list(range(40)), bad=(3,))), destination=dest,
                          primary_key="id", destination_mode=mode, on_invalid="skip", max_failed_rows=10,
                          checks=[dc.in_set("code", CODES)])
    first = sync.preview()
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert first.counts == _as_preview(run.counts)
    # then: 5 rows gone, 5 new, every fourth changed, one delivered row and one new row failing the check
    v2 = _frame(list(range(5, 45)), version=2, bad=(7, 42))
    events, runs, state = ws.store.events_frame(sync_id=sync.id).height, sync.runs().height, sync.delivered()
    p = sync.preview(source=v2)
    assert (ws.store.events_frame(sync_id=sync.id).height, sync.runs().height) == (events, runs)
    assert sync.delivered().equals(state)  # the preview changed nothing
    run = sync.run(progress=False, source=v2)
    assert run.status == "success", run.error
    c = run.counts
    assert p.counts == _as_preview(c), (p.counts, c)
    assert p.counts["invalid"] == 2 and p.counts["insert"] >= 4 and p.counts["update"] >= 8
    status = p.records["_status"].value_counts().to_dicts()
    status = {d["_status"]: d["count"] for d in status}
    rewritten_away = c["deleted"] if mode == "replace" else 0  # gone with the rewrite, not sent
    assert status.get("pending", 0) + status.get("skipped", 0) == c["sent"] + rewritten_away
    if mode == "insert":  # skipped by the mode (update mode: the destination skips rows it lacks)
        assert status["skipped"] == c["skipped"] == c["updated"]
    assert status.get("invalid", 0) == c["invalid"]
    ws.close()


def test_preview_counts_the_rows_a_run_retries(tmp_path):
    """An incremental run sends again the rows the destination rejected last time, although the
    source's new rows do not include them: the preview says so too."""
    con = duckdb.connect(str(tmp_path / "d.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, ts BIGINT, email VARCHAR NOT NULL)")
    con.close()
    df = pl.DataFrame({"id": [1, 2, 3, 4], "ts": [1, 2, 3, 4], "email": ["a", None, "c", None]})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("r", source=dfsync.sources.frame(df), primary_key="id", max_failed_rows=2,
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          sync_mode="incremental", cursor_field="ts")
    assert sync.run(progress=False).counts["failed"] == 2
    more = pl.concat([df, pl.DataFrame({"id": [5], "ts": [5], "email": ["e"]})])
    p = sync.preview(source=more)
    run = sync.run(progress=False, source=more)
    assert run.counts["retried"] == 2 and run.counts["sent"] == 3
    assert p.counts == _as_preview(run.counts)
    assert sorted(p.records.filter(pl.col("_status") == "pending")["id"].to_list()) == [2, 4, 5]
    ws.close()


def test_the_dry_run_store_reads_and_refuses_every_write(tmp_path):
    from dfsync._dryrun import DryRunStore

    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    dry = DryRunStore(ws.store)
    assert dry.sync_row(sync_id=sync.id)["id"] == sync.id  # reads pass through
    dry.set_counters(0, queried=2)
    dry.note(sync.id, 0, "kept")
    assert dry.counters == {"queried": 2} and dry.notes == ["kept"]
    for write in ("transition_run", "create_run", "write_ahead", "confirm_batch", "discard", "transaction"):
        with pytest.raises(AttributeError, match="writes nothing"):
            getattr(dry, write)
    assert sync.runs().height == 0 and ws.store.events_frame(sync_id=sync.id).height == 1  # only its creation
    ws.close()


def test_durations_and_intervals_read_back_as_polars_durations(tmp_path):
    """A duration column was staged as a DuckDB INTERVAL, which polars cannot import:
    preview(), validate(), a polars check, run.records() and the run's repr all failed with a
    bare ComputeError (the run itself failed), and a duckdb_query source with an INTERVAL
    column was refused at create_sync. They read back as durations (an interval with months,
    which has no fixed length, as its text)."""
    from datetime import timedelta

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    took = [timedelta(days=1, microseconds=5), None, timedelta(hours=-3)]
    df = pl.DataFrame({"id": [1, 2, 3], "took": took})
    sync = ws.create_sync("d", source=df, destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), "t"),
                          primary_key="id", on_invalid="skip",
                          checks=[dc.expression(pl.col("took") > pl.duration(seconds=0), name="positive")])
    assert sync.preview().records.sort("id")["took"].to_list() == took
    assert sync.validate().invalid.sort("id")["took"].to_list() == took[1:]
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["succeeded"] == 1 and run.counts["invalid"] == 2
    assert run.records(status="invalid").sort("id")["took"].to_list() == took[1:]
    assert "invalid by check: positive 2" in repr(run) and "dfsync-run-panel" in run._repr_html_()
    got = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True).sql("SELECT took FROM t").fetchall()
    assert got == [(took[0],)]

    query = "SELECT 1 AS id, INTERVAL '2 days 5 microseconds' AS i, INTERVAL '1 month 2 days' AS m"
    q = ws.create_sync("q", source=dfsync.sources.duckdb_query(query),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), "q"), primary_key="id")
    row = q.preview().records.row(0, named=True)
    assert row["i"] == timedelta(days=2, microseconds=5) and row["m"] == "1 month 2 days"
    assert q.run(progress=False).status == "success"
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    assert con.sql("SELECT i::VARCHAR, m::VARCHAR FROM q").fetchall() == [("2 days 00:00:00.000005", "1 month 2 days")]


def test_a_run_failing_on_its_keys_counts_the_rows_its_checks_fail_as_the_preview_does(tmp_path):
    # on_invalid='fail', repeated keys and a row failing a check: the preview said 7 invalid rows, the
    # failed run recorded 6 (the checks never ran, the failing row counted as an update)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2, 3, 4, 5], "v": [0, 1, 2, 3, 4]}), destination=dest,
                          primary_key="id", checks=[dc.between("v", 0, 100)])
    assert sync.run(progress=False).status == "success"
    v2 = pl.DataFrame({"id": [1, 2, 2, 3, 4, 4, 6, 6], "v": [0, 1, 9, 200, 3, 3, 7, 8]})
    p = sync.preview(source=v2)
    run = sync.run(progress=False, source=v2)
    assert run.status == "failed"
    assert "appear more than once" in run.error and "v between: 1 row" in run.error, run.error
    assert p.counts == _as_preview(run.counts) == {"insert": 0, "update": 0, "delete": 0, "unchanged": 1,
                                                    "invalid": 7}, (p.counts, run.counts)
    assert run.counts["queried"] == 8 and run.counts["sent"] == 0
    invalid = run.records(status="invalid")
    assert invalid.height == 7 and invalid.filter(pl.col("id") == 3)["_checks"].to_list() == [["v between"]]
    assert run.validation().filter(pl.col("check_name") == "v between")["unexpected_count"].to_list() == [1]
    ws.close()


def test_preview_says_a_run_would_fail_on_a_refused_schema_change(tmp_path):
    """A preview of rows whose column type would alter delivered values (a float into the int64
    column the sync delivered), or of a new column under schema='freeze', listed the updates as if
    they would be sent and no problem, while the run fails before sending anything."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t")
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1, 2], "a": [1, 2]}), destination=dest, primary_key="id")
    assert sync.run(progress=False).status == "success"
    floats = pl.DataFrame({"id": [1, 2], "a": [1.5, 2.0]})
    p = sync.preview(source=floats)
    assert p.counts["update"] == 2
    (problem,) = p.problems
    assert problem.startswith("a run would fail:") and "'a'" in problem and "int64" in problem
    assert "a run would fail" in p._repr_html_()
    run = sync.run(source=floats, progress=False)
    assert run.status == "failed" and run.error in problem
    frozen = ws.create_sync("f", source=pl.DataFrame({"id": [1]}), primary_key="id", schema="freeze",
                            destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="f"))
    frozen.run(progress=False)
    (problem,) = frozen.preview(source=pl.DataFrame({"id": [1], "b": ["x"]})).problems
    assert problem.startswith("a run would fail:") and "'b'" in problem
    assert sync.preview().problems == [] and ws.run(2).status == "failed"  # nothing recorded by the previews
    assert [r for r in sync.runs()["run_id"]] == [2, 1]
    ws.close()

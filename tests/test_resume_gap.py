"""STATES.md's resume gap: a run resumed from ``paused`` that is interrupted while it reads or
checks again goes back to ``paused`` (never ``failed``), so the batches it applied stay its own.

The SIGKILL side of it is in ``tests/test_crash_matrix.py`` (slow suite); here the in-process
interruptions: Ctrl-C while the resumed run reads its source, on a destination that applies a
run only at its end (Parquet) in insert mode, where failing the run used to discard batches.
"""

from __future__ import annotations

import os
import time

import duckdb
import polars as pl
import pytest

import dfsync
import dfsync._registry
from dfsync.sources._frame import FrameSource
from tests.faulty import FaultyDestination


class InterruptingFrame(FrameSource):
    """A frame source whose next read is interrupted (Ctrl-C) when ``armed``."""

    armed = False

    def scan(self, cursor=None):  # type: ignore[no-untyped-def]
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return super().scan(cursor)


def test_ctrl_c_while_a_resumed_run_queries_pauses_it_again(tmp_path):
    data = pl.DataFrame({"id": list(range(60)), "v": [f"row {i}" for i in range(60)]})
    src = InterruptingFrame(data)
    lake = tmp_path / "lake"
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = FaultyDestination(dfsync.destinations.parquet(str(lake)), interrupt_after=3)
    sync = ws.create_sync("p", source=src, destination=dest, primary_key="id", destination_mode="insert",
                          batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    paused = sync.last_run()
    assert paused.status == "paused" and "interrupted" in paused.error
    dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
    src.armed = True
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    again = sync.last_run()
    assert again.id == paused.id and again.status == "paused", again.error
    statuses = again.events().filter(kind="run")["to_status"].to_list()
    assert statuses[-2:] == ["querying", "paused"]
    # its batches were never discarded: the next run finishes it with every row exactly once
    run = sync.run(progress=False)
    assert run.id == paused.id and run.status == "success", run.error
    got = pl.read_parquet(lake / "data.parquet").sort("id")
    assert got.equals(data)
    assert run.error is None
    assert sync.run(progress=False).counts["sent"] == 0


def test_ctrl_c_while_a_fresh_run_queries_still_fails_it(tmp_path):
    src = InterruptingFrame(pl.DataFrame({"id": [1, 2]}))
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("p", source=src, destination=dfsync.destinations.parquet(str(tmp_path / "lake")),
                          primary_key="id")
    src.armed = True
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    assert run.status == "failed" and "interrupted before anything was sent" in run.error


def test_an_error_after_parquets_final_swap_keeps_the_run_delivered(tmp_path, monkeypatch):
    """The run is applied (data.parquet swapped) and then the workspace write that records it
    fails: the failed run's batches are not discarded, so the next run does not append them again."""
    data = pl.DataFrame({"id": list(range(30)), "v": [f"row {i}" for i in range(30)]})
    lake = tmp_path / "lake"
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("p", source=dfsync.sources.frame(data), destination=dfsync.destinations.parquet(str(lake)),
                          primary_key="id", destination_mode="insert", batch_size=10)
    store_cls = type(ws.store)
    original = store_cls._save_cursor  # inside the transaction that records the run's end

    def broken(self, *args):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(store_cls, "_save_cursor", original)
        raise OSError("disk full while recording the run")

    monkeypatch.setattr(store_cls, "_save_cursor", broken)
    failed = sync.run(progress=False)
    assert failed.status == "failed" and "disk full" in failed.error
    assert pl.read_parquet(lake / "data.parquet").height == 30  # applied before the error
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["sent"] == 0, (run.counts, run.error)
    got = pl.read_parquet(lake / "data.parquet")
    assert got.height == 30 and got["id"].n_unique() == 30
    assert "stay delivered" in " ".join(sync.events()["detail"].to_list())


def test_a_process_that_exits_with_a_paused_run_leaves_no_staging_behind(tmp_path):
    import subprocess
    import sys

    from tests.faulty import env_with_repo

    code = f"""
import time
import polars as pl, dfsync, tests.faulty
from tests.faulty import FaultyDestination
ws = dfsync.Workspace({str(tmp_path / 'ws.duckdb')!r})
sync = ws.create_sync("p", source=dfsync.sources.frame(pl.DataFrame({{"id": list(range(50))}})), primary_key="id",
    destination=FaultyDestination(dfsync.destinations.duckdb({str(tmp_path / 'd.duckdb')!r}, table="t"),
                                  sleep=0.05), batch_size=10)
run = sync.run(progress=False, background=True)
for _ in range(3000):
    if run.status == "in_progress":
        break
    time.sleep(0.01)
run.pause()
run.wait()
print(run.status)
"""
    out = subprocess.run([sys.executable, "-c", code], env=env_with_repo(), capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "paused", out.stderr
    staging = tmp_path / "staging"
    assert not staging.exists() or not os.listdir(staging), os.listdir(staging)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    run = ws.sync("p").run(progress=False, source=pl.DataFrame({"id": list(range(50))}))  # a frame: given again
    assert run.status == "success" and run.id == 1  # resumed: the rest read again and sent
    assert run.counts["inserted"] == run.counts["sent"] == 50 and run.counts["unchanged"] == 0  # the whole run's
    import duckdb

    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(50, 50)]
    assert ws.sync("p").run(progress=False, source=pl.DataFrame({"id": list(range(50))})).counts["sent"] == 0


@pytest.mark.parametrize("staged_rows_lost", [False, True])
def test_a_resumed_incremental_run_keeps_the_cursor_its_earlier_batches_reached(tmp_path, staged_rows_lost):
    """A run's cursor is the greatest cursor its confirmed batches delivered. A run resumed from
    ``paused`` counted only the batches sent after the pause: its first batch delivered cursors
    1000..991, the resumed part 990..901, and the sync's cursor ended at 990, below what was
    delivered. Its batches from before the pause count too."""
    data = pl.DataFrame({"id": list(range(100)), "c": [1000 - i for i in range(100)]})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), interrupt_after=2)
    sync = ws.create_sync("inc", source=dfsync.sources.frame(data), destination=dest, primary_key="id",
                          sync_mode="incremental", cursor_field="c", batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.last_run().status == "paused" and sync.cursor is None
    if staged_rows_lost:
        dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["succeeded"] == 100, run.error
    assert sync.cursor == 1000
    again = sync.run(progress=False)
    assert again.counts["queried"] == 1 and again.counts["sent"] == 0  # only the row at the cursor


@pytest.mark.parametrize("staged_rows_lost", [False, True])
def test_a_resumed_run_counts_what_its_earlier_batches_sent_whether_or_not_it_read_again(tmp_path, staged_rows_lost):
    """A paused run whose staged rows were lost (its process died) reads its source again and
    diffs it with the delivered state, which holds its own earlier batches: it counted the rows it
    had itself inserted (updated) as ``unchanged`` and forgot the deletes it had sent, so a first
    load of 40 rows ended inserted=20, unchanged=20, sent=40. The counters are now the same
    whether or not the staged rows survived the pause."""
    src = tmp_path / "src.parquet"

    def pausing_run(data: pl.DataFrame) -> dict[str, int]:
        data.write_parquet(src)
        dest.interrupt_after = 2
        with pytest.raises(KeyboardInterrupt):
            sync.run(progress=False)
        assert sync.last_run().status == "paused"
        if staged_rows_lost:
            dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
        run = sync.run(progress=False)
        assert run.status == "success", run.error
        c = run.counts
        assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"]
        assert c["sent"] == c["succeeded"] == c["inserted"] + c["updated"] + c["deleted"]
        return c

    data = pl.DataFrame({"id": list(range(40)), "v": [f"v{i}" for i in range(40)]})
    data.write_parquet(src)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    sync = ws.create_sync("m", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="mirror", batch_size=5)
    first = pausing_run(data)
    assert (first["inserted"], first["unchanged"], first["sent"]) == (40, 0, 40)
    changed = data.filter(pl.col("id") >= 10).with_columns(
        pl.when(pl.col("id") < 20).then(pl.lit("new")).otherwise(pl.col("v")).alias("v"))
    second = pausing_run(changed)
    assert {k: second[k] for k in ("queried", "updated", "deleted", "unchanged", "sent")} == \
        {"queried": 30, "updated": 10, "deleted": 10, "unchanged": 20, "sent": 20}
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT id, v FROM t ORDER BY id").pl().equals(changed)
    finally:
        con.close()


@pytest.mark.parametrize("staged_rows_lost", [False, True])
def test_a_resumed_insert_mode_run_counts_and_records_the_changed_rows_it_skips_once(tmp_path, staged_rows_lost,
                                                                                     ws_target):
    """Insert mode skips changed rows (records ``skipped``). A paused run resumed with its staged
    rows marked them skipped a second time: ``skipped`` and ``sent`` counted them twice and
    run.records() held each twice. One whose staged rows were lost read them again as
    ``unchanged`` (the skip had been noted), so it ended ``updated=0`` beside ``skipped=5``."""
    src = tmp_path / "src.parquet"
    data = pl.DataFrame({"id": list(range(20)), "v": [f"v{i}" for i in range(20)]})
    data.write_parquet(src)
    ws = dfsync.Workspace(ws_target)
    dest = FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    sync = ws.create_sync("i", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="insert", batch_size=5)
    sync.run(progress=False)
    changed = pl.concat([data.with_columns(pl.when(pl.col("id") < 5).then(pl.lit("new")).otherwise(pl.col("v")).alias("v")),
                         pl.DataFrame({"id": list(range(20, 40)), "v": ["added"] * 20})])
    changed.write_parquet(src)
    dest.interrupt_after = 2
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    if staged_rows_lost:
        dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert {k: c[k] for k in ("queried", "inserted", "updated", "unchanged", "sent", "succeeded", "skipped")} == \
        {"queried": 40, "inserted": 20, "updated": 5, "unchanged": 15, "sent": 25, "succeeded": 20, "skipped": 5}
    assert sorted(run.records(status="skipped")["id"].to_list()) == list(range(5))


def test_a_resumed_replace_run_that_starts_its_rewrite_over_counts_and_records_only_the_new_table(tmp_path, ws_target):
    """A paused ``replace`` run whose staged rows were lost abandons the batches it wrote and
    rewrites the table from the start, but kept counting them: 20 rows ended sent=succeeded=30 and
    run.records() held the abandoned batches' rows as succeeded, with the values read before the
    pause, beside the rows really delivered."""
    src = tmp_path / "src.parquet"
    data = pl.DataFrame({"id": list(range(20)), "v": ["old"] * 20})
    data.write_parquet(src)
    ws = dfsync.Workspace(ws_target)
    dest = FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), interrupt_after=2)
    sync = ws.create_sync("r", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="replace", batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.last_run().counts["sent"] > 0
    dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
    data.with_columns(v=pl.lit("new")).write_parquet(src)
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["queried"], c["inserted"], c["sent"], c["succeeded"]) == (20, 20, 20, 20), c
    records = run.records()
    assert sorted(records["id"].to_list()) == list(range(20)) and set(records["v"]) == {"new"}
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), min(v), max(v) FROM t").fetchall() == [(20, "new", "new")]


def test_a_paused_replace_resync_resumed_with_its_staged_rows_sends_each_row_once(tmp_path):
    """A replace run sends every row as an insert into the new table, its unchanged rows too. A
    re-sync paused by Ctrl-C and resumed in the same process did not recognise the rows of a batch
    in flight at the pause (settled as landed) that were unchanged ones, by the action they were
    staged with: it sent them again, and the rewrite failed 'could not declare the primary key ...
    Data contains duplicates', leaving the sync failed."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    data = pl.DataFrame({"id": list(range(20)), "v": ["same"] * 10 + ["new"] * 10})
    sync = ws.create_sync("r", source=dfsync.sources.frame(data.head(10)), destination=dest, primary_key="id",
                          destination_mode="replace", batch_size=5)
    sync.run(progress=False)
    sync = ws.create_sync("r", source=dfsync.sources.frame(data), destination=dest, primary_key="id",
                          destination_mode="replace", batch_size=5)
    dest.interrupt_after = 2
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.run(progress=False)  # in the same process: its staged rows are resumed
    assert run.status == "success", run.error
    assert "resumed" in run.events()["detail"].to_list()
    c = run.counts
    assert (c["queried"], c["inserted"], c["unchanged"], c["sent"], c["succeeded"]) == (20, 10, 10, 20, 20), c
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(20, 20)]


def test_aborting_a_paused_run_removes_its_staged_rows(tmp_path):
    """run.abort() of a run paused in this process closed its kept staged rows but left their
    directory (rows spilled to disk: as large as the source) behind, for good: the process no
    longer knew of it, so not even its exit removed it."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("p", source=dfsync.sources.frame(pl.DataFrame({"id": list(range(30))})), primary_key="id",
                          destination=FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                                                        interrupt_after=1), batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert os.listdir(tmp_path / "staging")  # kept for the resume
    sync.last_run().abort()
    assert sync.last_run().status == "failed"
    assert not os.listdir(tmp_path / "staging")


def test_deleting_a_sync_is_refused_while_its_run_is_paused(tmp_path):
    """ws.delete_sync() refused a running run but took a paused one: a paused replace run's rewrite
    stayed in the destination as a table of its own ('t__dfsync_replace_1') that nothing would ever
    remove, and its staged rows stayed on disk. It is refused as sync.reset() is: abort it first."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    dest = str(tmp_path / "d.duckdb")
    sync = ws.create_sync("r", source=dfsync.sources.frame(pl.DataFrame({"id": list(range(30))})), primary_key="id",
                          destination=FaultyDestination(dfsync.destinations.duckdb(dest, table="t"), interrupt_after=1),
                          batch_size=10, destination_mode="replace")
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    with pytest.raises(dfsync.SyncAlreadyRunning, match=f"run {run.id} .* paused.*abort"):
        ws.delete_sync("r")
    run.abort()
    ws.delete_sync("r")
    with duckdb.connect(dest, read_only=True) as con:
        assert not [t for (t,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall()
                    if t.startswith("t__dfsync")]
    assert not os.listdir(tmp_path / "staging")


def test_deleting_a_sync_is_refused_while_its_run_is_running(tmp_path):
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("r", source=dfsync.sources.frame(pl.DataFrame({"id": list(range(30))})), primary_key="id",
                          destination=FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), "t"),
                                                        sleep=0.2), batch_size=10)
    run = sync.run(progress=False, background=True)
    while run.status.value not in ("in_progress", "success"):
        time.sleep(0.01)
    with pytest.raises(dfsync.SyncAlreadyRunning, match="'r' is running; abort or wait"):
        ws.delete_sync("r")
    run.wait()
    ws.delete_sync("r")
    assert ws.syncs().height == 0


@pytest.mark.parametrize("kind", ["duckdb", "parquet"])
def test_a_resumed_run_that_fails_its_checks_tells_and_counts_what_its_earlier_batches_left(tmp_path, kind):
    """A paused run that read its source again and failed its checks said "Nothing was sent" while the
    30 rows its batches delivered before the pause stayed in the DuckDB table. On Parquet, which applies a
    run only at its end, those batches are thrown away, but the run kept counting them sent and succeeded."""
    data = pl.DataFrame({"id": list(range(60)), "v": list(range(60))})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    inner = (dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t") if kind == "duckdb"
             else dfsync.destinations.parquet(str(tmp_path / "lake")))
    sync = ws.create_sync("p", source=dfsync.sources.frame(data), primary_key="id", batch_size=10,
                          destination=FaultyDestination(inner, interrupt_after=3),
                          checks=[dfsync.checks.between("v", 0, 100)])
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.last_run().status == "paused"
    dfsync._registry.drop_live_staging()  # as if the process had died: the resume reads the source again
    run = sync.run(progress=False, source=data.with_columns(v=pl.when(pl.col("id") == 55).then(1000).otherwise("v")))
    assert run.status == "failed" and "v between" in run.error
    c = run.counts
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"] == 60
    assert c["sent"] == c["succeeded"] + c["failed"] + c["skipped"]
    held = 0
    if kind == "duckdb":
        with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
            held = con.sql("SELECT count(*) FROM t").fetchall()[0][0]
        assert held == c["succeeded"] == 30
        assert "Nothing was sent" not in run.error and "Nothing more was sent" in run.error
    else:
        assert not (tmp_path / "lake" / "data.parquet").exists()
        assert c["sent"] == c["succeeded"] == 0 and "Nothing was sent" in run.error
    run = sync.run(progress=False)  # the rows the destination holds are not sent again
    assert run.status == "success" and run.counts["sent"] == 60 - held

"""One workspace, several real processes (see docs/CONCURRENCY.md for the policy).

The long sync here is 200,000 rows in batches of 1,000, so a run has 200 batch boundaries
at which the process running it hands the workspace file to others that are waiting. The
tests on ``big`` run on a workspace file and (``-m slow``) on a PostgreSQL workspace, where
nobody waits for a hand-over at all.
"""

from __future__ import annotations

import glob
import json
import pathlib
import threading
import time

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.errors import SyncAlreadyRunning, WorkspaceBusy

ROWS = 200_000
ACTIVE = ("started", "querying", "queued", "in_progress")
WORKSPACE_STORES = ("duckdb", "postgres")
SLOW_WORKSPACE_STORES = ("postgres",)  # 200,000 rows of delivered state on the server each


@pytest.fixture
def big(tmp_path, ws_target):
    """A scheduled files -> DuckDB sync with many small batches; returns (workspace path, warehouse)."""
    src = tmp_path / "events.parquet"
    pl.DataFrame({"id": range(ROWS), "payload": [f"event-{i}" for i in range(ROWS)]}).write_parquet(src)
    ws_path = ws_target if ws_target.startswith("postgresql://") else str(tmp_path / ".dfsync" / "workspace.duckdb")
    warehouse = tmp_path / "warehouse.duckdb"
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("big", source=dfsync.sources.files(str(src)), primary_key="id", batch_size=1000,
                       destination=dfsync.destinations.duckdb(str(warehouse), table="events"),
                       schedule="every 1 hours")
    return ws_path, warehouse


def _run_in_child(spawn, ws_path: str, hold: str | None = None):
    """Another Python process (a second notebook, a script) running the sync.

    ``hold``: a file; once the run has sent rows it waits (at most 120 s) until the file exists, so
    the test's other process surely meets it running (only on a PostgreSQL workspace, where a run
    holds no lease on the workspace, and its 200,000 rows may otherwise be sent within seconds).
    """
    if hold is None or not ws_path.startswith("postgresql://"):
        code = (f"import dfsync; run = dfsync.Workspace({ws_path!r}).sync('big').run(progress=False); "
                f"print(run.status.value, flush=True)")
        return spawn(code=code)
    code = (f"import os, time, dfsync\n"
            f"def hold(status, row):\n"
            f"    if status == 'in_progress' and row.get('sent'):\n"
            f"        end = time.monotonic() + 120\n"
            f"        while not os.path.exists({hold!r}) and time.monotonic() < end:\n"
            f"            time.sleep(0.02)\n"
            f"run = dfsync.Workspace({ws_path!r}).sync('big').run(progress=hold)\n"
            f"print(run.status.value, flush=True)\n")
    return spawn(code=code)


def _wait_for(ws: dfsync.Workspace, status: tuple[str, ...], proc, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = ws.sync("big").runs()
        if runs.height and runs["status"][0] in status and (runs["status"][0] != "in_progress" or runs["sent"][0] > 0):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"the run never reached {status}")


def _warehouse_rows(warehouse) -> int:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql("SELECT count(*), count(DISTINCT id) FROM events").fetchall()[0]
    finally:
        con.close()


def test_a_notebook_watches_a_scheduler_run_in_another_process(big, spawn) -> None:
    """`dfsync scheduler` runs the sync; this process polls runs() and counts like a status panel."""
    ws_path, warehouse = big
    ws = dfsync.Workspace(ws_path, busy_timeout=10)
    sync = ws.sync("big")
    ws.store.set_sync_fields(sync.id, next_run_at=sync.next_run_at.replace(year=2000))  # due now
    proc = spawn("scheduler", "--once", "-w", ws_path, "--json")
    seen: list[tuple[str, int]] = []
    # every call below must answer: a raw duckdb lock error or WorkspaceBusy fails the test
    while proc.poll() is None:
        runs = sync.runs()
        run = sync.last_run()
        if runs.height:
            seen.append((runs["status"][0], runs["sent"][0]))
            assert run is not None and run.counts["sent"] >= runs["sent"][0]
        time.sleep(0.3)  # a status panel's refresh rate
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert [r["status"] for r in json.loads(out)] == ["success"]
    mid_run = [sent for status, sent in seen if status == "in_progress" and 0 < sent < ROWS]
    assert mid_run, f"never saw the run between its first and last batch: {seen[:5]}...{seen[-5:]}"
    sent = [s for _, s in seen]
    assert sent == sorted(sent)  # counters only grow
    assert sync.last_run().counts["sent"] == ROWS
    assert _warehouse_rows(warehouse) == (ROWS, ROWS)
    assert not glob.glob(ws_path + ".wait-*")  # no hand-over marker left behind
    ws.close()


def test_cli_runs_while_another_process_runs_the_sync(big, spawn, dfsync_cli) -> None:
    ws_path, _ = big
    ws = dfsync.Workspace(ws_path)
    writer = _run_in_child(spawn, ws_path)
    _wait_for(ws, ("in_progress",), writer)
    res = dfsync_cli("runs", "big", "-w", ws_path, "--json")
    still_running = writer.poll() is None
    assert res.code == 0, res.err
    assert "Traceback" not in res.err
    runs = json.loads(res.out)
    assert len(runs) == 1
    if still_running:  # the writer outlived the CLI call, so the CLI saw it mid-run
        assert runs[0]["status"] == "in_progress"
    text = dfsync_cli("syncs", "-w", ws_path)
    assert text.code == 0 and "big" in text.out
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0 and out.strip() == "success", err
    ws.close()


def test_a_second_run_from_another_process_is_refused_and_changes_nothing(big, spawn, dfsync_cli) -> None:
    ws_path, warehouse = big
    ws = dfsync.Workspace(ws_path)
    release = str(pathlib.Path(warehouse).parent / "release")
    writer = _run_in_child(spawn, ws_path, hold=release)
    _wait_for(ws, ("in_progress",), writer)
    events_before = ws.sync("big").events().filter(pl.col("detail").str.starts_with("run created")).height
    res = dfsync_cli("run", "big", "-w", ws_path)
    assert res.code == 1
    assert "Traceback" not in res.err
    assert f"in process {writer.pid}" in res.err and "wait for it" in res.err
    # a script using the library directly gets the exception
    code = (f"import dfsync\ntry:\n    r = dfsync.Workspace({ws_path!r}).sync('big').run(progress=False)\n"
            f"except dfsync.errors.SyncAlreadyRunning as e:\n    print('refused', e)\n"
            f"else:\n    print('not refused: run', r.id, r.status.value, r.error)\n")
    second = spawn(code=code)
    out, err = second.communicate(timeout=300)
    assert out.startswith("refused"), (out, err)
    pathlib.Path(release).write_text("")
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0 and out.strip() == "success", err
    sync = ws.sync("big")
    assert sync.runs().height == 1
    assert sync.events().filter(pl.col("detail").str.starts_with("run created")).height == events_before == 1
    assert _warehouse_rows(warehouse) == (ROWS, ROWS)
    ws.close()


def test_a_second_run_from_another_thread_is_refused(big) -> None:
    ws_path, warehouse = big
    ws = dfsync.Workspace(ws_path)
    sync = ws.sync("big")
    first = sync.run(progress=False, background=True)
    try:
        with pytest.raises(SyncAlreadyRunning):
            sync.run(progress=False)
        # another Workspace object on the same file in this process: the same answer
        other = dfsync.Workspace(ws_path)
        with pytest.raises(SyncAlreadyRunning):
            other.sync("big").run(progress=False)
        assert sync.runs().height == 1
    finally:
        first.wait(300)
    assert first.status.value == "success"
    assert sync.runs().height == 1
    assert _warehouse_rows(warehouse) == (ROWS, ROWS)
    ws.close()


def test_busy_workspace_names_the_process_holding_it(tmp_path, spawn, dfsync_cli) -> None:
    ws_path = str(tmp_path / "ws.duckdb")
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("s", source=dfsync.sources.files(str(_small_file(tmp_path))), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"))
    # a process (a user's notebook, a DuckDB shell) holds the file open and does not let go
    holder = spawn(code=f"import duckdb, time; con = duckdb.connect({ws_path!r}); print('ready', flush=True); "
                        f"time.sleep(120)")
    assert holder.stdout.readline().strip() == "ready"
    with pytest.raises(WorkspaceBusy) as ei:
        dfsync.Workspace(ws_path, busy_timeout=0.5)
    msg = str(ei.value)
    assert msg.startswith("workspace busy") and f"process {holder.pid}" in msg
    res = dfsync_cli("syncs", "-w", ws_path, DFSYNC_BUSY_TIMEOUT="0.5")
    assert res.code == 1
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "workspace busy" in lines[0] and f"process {holder.pid}" in lines[0]
    assert not glob.glob(ws_path + ".wait-*")
    holder.kill()
    holder.communicate()
    with dfsync.Workspace(ws_path) as ws:  # nothing was damaged
        assert ws.syncs()["name"].to_list() == ["s"]


def test_another_process_opens_the_workspace_while_a_run_reads_its_source(tmp_path, spawn) -> None:
    """A run lets go of the file while it reads its source (after RELEASE_GRACE, or at once when a
    process announces that it waits): here the read is held until the other process has read the
    workspace, so that process would wait out its busy_timeout and fail if the run kept the file."""
    from tests.faulty import FaultySource

    entered, gate = threading.Event(), threading.Event()

    class HeldSource(FaultySource):  # this session's object: the run reads through it
        def scan(self, cursor=None):  # type: ignore[no-untyped-def]
            entered.set()
            assert gate.wait(120)
            return super().scan(cursor)

        def duckdb_relation(self, con, cursor=None):  # type: ignore[no-untyped-def]
            entered.set()
            assert gate.wait(120)
            return super().duckdb_relation(con, cursor)

    ws_path = str(tmp_path / "ws.duckdb")
    ws = dfsync.Workspace(ws_path)
    sync = ws.create_sync("s", source=HeldSource(dfsync.sources.files(str(_small_file(tmp_path)))), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"))
    runs: list[dfsync.SyncRun] = []  # a blocking run in a thread of its own: that thread holds the lease
    runner = threading.Thread(target=lambda: runs.append(sync.run(progress=False)))
    runner.start()
    try:
        assert entered.wait(60), "the run never started reading its source"
        reader = spawn(code=f"import dfsync; print(dfsync.Workspace({ws_path!r}, busy_timeout=20).syncs().height)")
        out, err = reader.communicate(timeout=120)
    finally:
        gate.set()
        runner.join(120)
    assert reader.returncode == 0 and out.strip() == "1", err
    assert runs[0].status == "success" and runs[0].counts["inserted"] == 3
    ws.close()


def _small_file(tmp_path):
    f = tmp_path / "small.parquet"
    pl.DataFrame({"id": [1, 2, 3]}).write_parquet(f)
    return f

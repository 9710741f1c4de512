"""on_success / on_failure / on_paused callbacks and the failed-rows alert (issue 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest

import dfsync
from tests import faulty
from tests.faulty import FaultyDestination, env_with_repo


def dest(tmp_path):
    return dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")


def test_success_and_failure_callbacks_receive_the_run(ws, tmp_path):
    seen = []
    df = pl.DataFrame({"id": [1, 2]})
    s = ws.create_sync("n", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                       on_success=lambda r: seen.append(("ok", r.id, r.status, r.counts["inserted"])),
                       on_failure=lambda r: seen.append(("fail", r.id, r.status, r.error)))
    run = s.run(progress=False)
    assert seen == [("ok", run.id, "success", 2)]
    bad = pl.DataFrame({"id": [1, 1]})
    s = ws.create_sync("n", source=dfsync.sources.frame(bad), destination=dest(tmp_path), primary_key="id",
                       on_success=lambda r: seen.append(("ok", r.id)),
                       on_failure=lambda r: seen.append(("fail", r.id, r.status, r.error)))
    run2 = s.run(progress=False)
    assert seen[-1][:3] == ("fail", run2.id, "failed") and "more than once" in seen[-1][3]


def test_paused_callback(ws, tmp_path):
    seen = []
    df = pl.DataFrame({"id": list(range(30))})
    s = ws.create_sync("p", source=dfsync.sources.frame(df), primary_key="id", batch_size=10,
                       destination=FaultyDestination(dest(tmp_path), interrupt_before=2),
                       on_paused=lambda r: seen.append(r.status))
    with pytest.raises(KeyboardInterrupt):
        s.run(progress=False)
    assert seen == ["paused"]


def test_aborting_a_paused_run_calls_on_failure(ws, tmp_path):
    """run.abort() of a running run ends it failed and on_failure fires; aborting a paused run
    (turning the sync failed) fired nothing, so an alert on failures missed it."""
    seen = []
    df = pl.DataFrame({"id": list(range(30))})
    s = ws.create_sync("p", source=dfsync.sources.frame(df), primary_key="id", batch_size=10,
                       destination=FaultyDestination(dest(tmp_path), interrupt_before=2),
                       on_paused=lambda r: seen.append(("paused", r.id)),
                       on_failure=lambda r: seen.append(("failed", r.id, r.status, r.error)))
    with pytest.raises(KeyboardInterrupt):
        s.run(progress=False)
    run = s.last_run()
    run.abort()
    assert seen == [("paused", run.id), ("failed", run.id, "failed", "aborted by the user")]
    assert s.status == "failed"


def test_raising_callback_never_changes_the_outcome(ws, tmp_path, caplog):
    """A callback that raised (the alert that was to be sent did not go) was only an event of the
    run: a script or the scheduler's log had no word of it. It is also one warning now."""
    import logging

    caplog.set_level(logging.WARNING, logger="dfsync")

    def boom(run):
        raise RuntimeError("slack is down")

    s = ws.create_sync("r", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})), destination=dest(tmp_path),
                       primary_key="id", on_success=boom)
    run = s.run(progress=False)
    assert run.status == "success"
    notes = run.events().filter(kind="note")["detail"].to_list()
    assert any("on_success raised RuntimeError: slack is down" in n for n in notes)
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("dfsync") and r.levelno == logging.WARNING]
    assert warned == [f"sync 'r', run {run.id}: callback on_success raised RuntimeError: slack is down "
                      "(the run's outcome is unchanged)"], warned


def test_failed_rows_alert_calls_on_failure_within_threshold(ws, tmp_path):
    con = duckdb.connect(str(tmp_path / "d.duckdb"))
    con.execute("CREATE TABLE t (id BIGINT, email VARCHAR NOT NULL)")
    con.close()
    alerts = []
    df = pl.DataFrame({"id": list(range(10)), "email": ["x"] * 8 + [None, None]})
    s = ws.create_sync("a", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                       max_failed_rows=5, failed_rows_alert=0.1, on_failure=lambda r: alerts.append(r.counts["failed"]))
    run = s.run(progress=False)
    assert run.status == "success" and alerts == [2]
    s = ws.create_sync("b", source=dfsync.sources.frame(df), destination=dest(tmp_path), primary_key="id",
                       max_failed_rows=5, failed_rows_alert=3, on_failure=lambda r: alerts.append("b"))
    assert s.run(progress=False).status == "success" and alerts == [2]  # 2 failed <= 3: no alert


def test_callback_by_reference_works_in_another_process(ws, tmp_path):
    hook = tmp_path / "hook.jsonl"
    src = tmp_path / "src.parquet"
    pl.DataFrame({"id": [1, 2, 3]}).write_parquet(src)
    with pytest.warns(UserWarning, match="hosts that run this sync must allow it"):  # not allowed here
        ws.create_sync("ref", source=dfsync.sources.files(str(src)), destination=dest(tmp_path), primary_key="id",
                       on_success="tests.notify_hooks:record")
    ws.close()
    env = env_with_repo() | {"DFSYNC_TEST_HOOK_FILE": str(hook), "DFSYNC_ALLOWED_CALLBACKS": "tests.notify_hooks"}
    code = "import sys, dfsync; dfsync.Workspace(sys.argv[1]).sync('ref').run(progress=False)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws.duckdb")], env=env, check=True)
    lines = [json.loads(x) for x in hook.read_text().splitlines()]
    assert lines == [{"run": 1, "status": "success", "failed": 0}]
    with pytest.raises(dfsync.ConfigError, match="cannot be imported"):
        dfsync.Workspace(tmp_path / "ws2.duckdb", allowed_callbacks=["tests"]).create_sync(
            "x", source=dfsync.sources.files(str(src)), destination=dest(tmp_path), primary_key="id",
            on_failure="tests.nope:missing")


def test_the_callback_comes_once_the_destination_is_closed(ws, tmp_path):
    """A run's end closes its destination on a thread beside the workspace's checkpoint
    (dfsync._settle.close_session), and joins it before the callbacks: a callback (or a process it
    starts) finds the DuckDB destination closed, its journal written into the file, even when the
    close is slow (held 0.3 s here)."""
    seen = []
    wal = str(tmp_path / "d.duckdb") + ".wal"
    s = ws.create_sync("c", source=dfsync.sources.frame(pl.DataFrame({"id": list(range(10))})), primary_key="id",
                       destination=FaultyDestination(dest(tmp_path)),
                       on_success=lambda r: seen.append((r.status, os.path.exists(wal))))
    faulty.FAULTS.update(phase="close", marker=str(tmp_path / "closing"), hold=0.3)
    try:
        run = s.run(progress=False)
    finally:
        faulty.FAULTS.clear()
    assert (tmp_path / "closing").exists()  # the slow close happened
    assert run.status == "success" and seen == [("success", False)]
    assert duckdb.connect(str(tmp_path / "d.duckdb")).execute("SELECT count(*) FROM t").fetchall() == [(10,)]

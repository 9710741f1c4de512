"""Ctrl-C (SIGINT) that arrives while DuckDB runs a statement, in a real child process.

DuckDB's Python client catches the KeyboardInterrupt there and raises
RuntimeError('Query interrupted') instead: a run interrupted while it read its source failed as
an internal error and ``sync.run()`` returned (the script went on), and one interrupted while a
workspace statement ran mid-transfer failed instead of pausing (docs/STATES.md: an interruption
before anything was sent fails the run "interrupted", one during the transfer pauses it).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import polars as pl
import pytest

import dfsync
from tests.plugins.processes import child_env

# a DuckDB statement that runs for minutes: the signal always arrives while it runs
LONG_QUERY = "SELECT i AS id, 'x' AS v FROM range(1000000000) t(i) WHERE md5(i::VARCHAR) = 'never' UNION ALL SELECT 1, 'x'"

CHILD = textwrap.dedent("""
    import os, signal, sys, threading
    import duckdb, polars as pl
    import dfsync

    def ctrl_c_soon():  # as a terminal does on Ctrl-C, once the statement is under way
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    ws_path, dest, where = sys.argv[1:4]
    ws = dfsync.Workspace(ws_path)
    if where == "querying":
        source = dfsync.sources.duckdb_query({long!r})
        import dfsync.staging as staging
        load = staging.Staging.load
        def slow_load(self, *a, **kw):
            ctrl_c_soon()
            return load(self, *a, **kw)
        staging.Staging.load = slow_load
    else:  # mid-transfer: Ctrl-C while the main thread is in a workspace statement before batch 3
        src = os.path.join(os.path.dirname(ws_path), "src.parquet")
        pl.DataFrame({{"id": list(range(50)), "v": ["x"] * 50}}).write_parquet(src)
        source = dfsync.sources.files(src)
        from dfsync.store._delivery import DeliveryOps as cls  # the DuckDB file store's batch bookkeeping
        original = cls.write_ahead
        def slow_write_ahead(self, sync_id, run_id, batch_no, *a, **kw):
            if batch_no == 3:
                ctrl_c_soon()
                # seconds long (DuckDB may notice the signal in it, or the handler raises right after it)
                duckdb.connect().execute("SELECT count(*) FROM range(30000000) t(i) WHERE md5(i::VARCHAR) = 'never'")
            return original(self, sync_id, run_id, batch_no, *a, **kw)
        cls.write_ahead = slow_write_ahead
    sync = ws.create_sync("s", source=source, primary_key="id", batch_size=10,
                          destination=dfsync.destinations.duckdb(dest, table="t"))
    try:
        run = sync.run(progress=False)
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
        sys.exit(0)
    print("returned", run.status.value, run.error)
""").format(long=LONG_QUERY)


def run_child(tmp_path, where: str) -> str:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "ws.duckdb"), str(tmp_path / "d.duckdb"), where],
                          env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_ctrl_c_while_the_source_query_runs_fails_the_run_interrupted_and_stops_the_caller(tmp_path):
    assert run_child(tmp_path, "querying") == "KeyboardInterrupt"  # the script does not go on
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    run = ws.sync("s").last_run()
    assert run.status == "failed"
    assert run.error.startswith("interrupted before anything was sent"), run.error
    assert ws.sql("SELECT error_kind FROM runs").item() == "interrupted"
    assert ws.sync("s").status == "failed"


def test_ctrl_c_in_a_duckdb_statement_mid_transfer_pauses_and_the_next_run_resumes_exactly(tmp_path):
    assert run_child(tmp_path, "transfer") == "KeyboardInterrupt"
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.sync("s")
    run = sync.last_run()
    assert run.status == "paused", run.error
    assert "KeyboardInterrupt" in run.error and "resumes" in run.error
    assert run.counts["sent"] < 50  # batches 1-2 may still be in flight (settled by the resume)
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success", again.error
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        got = con.sql("SELECT id FROM t ORDER BY id").pl()
    assert got["id"].to_list() == list(range(50))
    assert sync.run(progress=False).counts["sent"] == 0


def test_outside_a_run_ctrl_c_is_untouched():
    """The guard is scoped: the SIGINT handler is Python's own again after a run and a preview."""
    import signal

    ws = dfsync.Workspace(":memory:")
    sync = ws.create_sync("m", source=pl.DataFrame({"id": [1]}), primary_key="id",
                          destination=dfsync.destinations.parquet(str(__import__("tempfile").mkdtemp())))
    sync.preview()
    sync.run(progress=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_create_sync_learns_a_duckdb_querys_columns_without_running_it(tmp_path):
    """create_sync ran the whole query (and held its result in memory) to learn its columns: a
    query over a large table took as long as a run before the sync even existed."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    query = "SELECT i AS id, error('the query ran') AS v FROM range(3) t(i)"  # fails only when executed
    sync = ws.create_sync("q", source=dfsync.sources.duckdb_query(query), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)  # the run executes it, and says so
    assert run.status == "failed" and "the query ran" in run.error



def test_ctrl_c_while_waiting_for_a_background_run_pauses_it_and_stops_the_wait(tmp_path):
    """run.wait() joined the run's thread, which Ctrl-C does not interrupt (Python 3.11): the key
    press did nothing until the whole run had succeeded, and then raised KeyboardInterrupt anyway.
    Now Ctrl-C while waiting pauses the run at its next batch boundary, as it does a foreground
    run, and reaches the caller once the run has stopped; the next sync.run() resumes it."""
    import _thread
    import threading
    import time

    from tests.faulty import FaultyDestination

    dest = str(tmp_path / "d.duckdb")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    sync = ws.create_sync("s", source=pl.DataFrame({"id": list(range(20))}), primary_key="id", batch_size=5,
                          destination=FaultyDestination(dfsync.destinations.duckdb(dest, table="t"), sleep=0.05))
    run = sync.run(progress=False, background=True)

    def press() -> None:  # Ctrl-C once a batch is delivered, while the main thread waits
        while run.counts["sent"] == 0:
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=press, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run.wait()
    assert run.status == "paused", (run.status, run.counts)
    assert 0 < run.counts["sent"] < 20
    resumed = sync.run(progress=False)
    assert resumed.id == run.id and resumed.status == "success", resumed.error
    with duckdb.connect(dest, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(20, 20)]


SCHEDULER_CHILD = textwrap.dedent("""
    import datetime, os, signal, sys, threading
    import duckdb, polars as pl
    import dfsync

    ws_path, dest = sys.argv[1:3]
    src = os.path.join(os.path.dirname(ws_path), "src.parquet")
    pl.DataFrame({"id": list(range(50)), "v": ["x"] * 50}).write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.create_sync("s", source=dfsync.sources.files(src), primary_key="id", batch_size=10,
                              schedule="every 1 hour", destination=dfsync.destinations.duckdb(dest, table="t"))
        ws.store.set_sync_fields(sync.id, next_run_at=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
    from dfsync.store._delivery import DeliveryOps as cls
    original = cls.write_ahead
    def slow_write_ahead(self, sync_id, run_id, batch_no, *a, **kw):
        if batch_no == 3:  # SIGTERM (a service manager stopping it) while a DuckDB statement runs
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            duckdb.connect().execute("SELECT count(*) FROM range(20000000) t(i) WHERE md5(i::VARCHAR) = 'never'")  # ~2 s: outlasts the 0.3 s timer
        return original(self, sync_id, run_id, batch_no, *a, **kw)
    cls.write_ahead = slow_write_ahead
    from dfsync.cli import main
    sys.argv = ["dfsync", "scheduler", "--poll", "0.2", "-w", ws_path]
    main()
""")


@pytest.mark.slow  # a child process: seconds
def test_sigterm_to_the_scheduler_inside_a_duckdb_statement_pauses_the_run_and_stops_it(tmp_path):
    """`dfsync scheduler` turned SIGTERM into a KeyboardInterrupt raised by its own handler, which
    DuckDB made RuntimeError('Query interrupted') when it came inside a statement: the run failed as
    an internal error (the sync failed) and the scheduler, seeing no interruption, went on polling
    after the SIGTERM. SIGTERM now acts as Ctrl-C: the run pauses and the scheduler stops."""
    script = tmp_path / "child.py"
    script.write_text(SCHEDULER_CHILD)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "ws.duckdb"), str(tmp_path / "d.duckdb")],
                          env=child_env(), capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and "scheduler: stopped" in proc.stderr, proc.stderr[-3000:]
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    run = ws.sync("s").last_run()
    assert run.status == "paused", run.error
    assert "KeyboardInterrupt" in run.error and ws.sync("s").status == "pending"

"""Fencing, heartbeats and takeovers of runs on a PostgreSQL workspace (issue 20, points 5 and 7).

An owner that was only stopped (SIGSTOP, a partition) and comes back after another process took
its run over must change nothing: its workspace writes are refused by the run's owner epoch, and
its batches by the epoch fence in the SQL destination's ledger. Real server, real processes.
"""

from __future__ import annotations

import time
import uuid

import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync.destinations.base import DestinationContext, WriteBatch
from dfsync.errors import RunTakenOver
from dfsync.states import DestinationMode, RunStatus

pytestmark = pytest.mark.postgres


def _schema() -> str:
    return "w_" + uuid.uuid4().hex[:12]


def _wait(cond, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _state(ws, rid: int) -> tuple:
    """Everything a run's owner could have written: the run row, its events, batches, check results."""
    row = ws.sql(f"SELECT * FROM runs WHERE id = {rid}").drop("heartbeat_at").to_dicts()
    events = ws.sql(f"SELECT id, kind, to_status, detail FROM events WHERE run_id = {rid} ORDER BY id").rows()
    batches = ws.sql(f"SELECT batch_no, status FROM batches WHERE run_id = {rid} ORDER BY 1").rows()
    checks = ws.sql(f"SELECT count(*) FROM checks WHERE run_id = {rid}").item()
    syncs = ws.sql("SELECT * FROM syncs").to_dicts()
    return row, events, batches, checks, syncs


def test_an_owner_taken_over_after_its_heartbeat_stopped_writes_nothing(pg_uri, tmp_path, monkeypatch):
    """The owner's session still holds the sync lock (a stopped process), but its heartbeat is older than
    DFSYNC_HEARTBEAT_TTL: another handle ends that session, pauses the run (epoch +1) and resumes it
    (epoch +1); every write the old owner then tries is RunTakenOver and changes nothing."""
    monkeypatch.setenv("DFSYNC_HEARTBEAT_TTL", "1")
    target = f"{pg_uri}?schema={_schema()}"
    old = dfsync.Workspace(target)
    sync = old.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2, 3]})), primary_key="id",
                           destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    store = old.store
    rid = store.create_run(sync.id, 1, "manual")
    for to in (RunStatus.QUERYING, RunStatus.QUEUED, RunStatus.IN_PROGRESS):
        store.transition_run(rid, to)
    store.ensure_state_table(sync.id, {"id": "BIGINT"})
    assert store.owner_epoch(rid) == 1
    # the other handle plays another process (its runs are judged by lock and heartbeat, not by
    # this process's registry)
    monkeypatch.setattr("dfsync.store._postgres.owner_token", lambda: "elsewhere:1:1")
    other = dfsync.Workspace(target)
    assert other.recover() == []  # its heart beats (a thread, every ttl/4): alive, left alone
    time.sleep(1.5)
    assert other.recover() == []
    store._beats[rid].set()  # as if the process were stopped: no more heartbeats
    _wait(lambda: other.recover() == [(rid, "in_progress", "paused")], 30, "the takeover")
    assert other.run(rid).status == "paused"
    other.store.claim_run(rid, sync.id)
    assert other.store.owner_epoch(rid) == 3  # created 1, recovered 2, claimed 3
    before = _state(other, rid)
    rows = pa.table({"id": pa.array([1], pa.int64()), "_fp": pa.array([7], pa.uint64()), "_action": ["insert"]})
    attempts = [
        lambda: store.write_ahead(sync.id, rid, 1, rows, ["id"], "_action"),
        lambda: store.confirm_batch(sync.id, rid, 1, ["id"], [], False, {"sent": 1, "succeeded": 1}),
        lambda: store.add_counters(rid, sent=5),
        lambda: store.set_counters(rid, queried=9),
        lambda: store.set_run_fields(rid, error="x"),
        lambda: store.note(sync.id, rid, "a note"),
        lambda: store.store_checks(rid, [{"check_name": "c", "success": True}]),
        lambda: store.set_sync_fields(sync.id, key_types={"id": "VARCHAR"}),
        lambda: store.transition_run(rid, RunStatus.PAUSED, "pause"),
        lambda: store.fail_run(sync.id, rid, "e", "k", "d", None),
        lambda: store.finish_run(sync.id, rid, ["id"], replace=False, fp_algo="x", source_snapshot=None,
                                 merge_cursor=None, problem=None),
    ]
    for attempt in attempts:
        with pytest.raises(RunTakenOver, match=f"run {rid} was taken over by another process"):
            attempt()
    assert _state(other, rid) == before
    assert other.sync("s").delivered().height == 0
    # the new owner goes on as usual
    other.store.add_counters(rid, sent=1)
    other.store.transition_run(rid, RunStatus.FAILED, "done", error="done")
    assert other.run(rid).status == "failed"
    # the process that lost the run runs the sync again later as usual (its stale epoch is forgotten)
    assert old.sync("s").run(progress=False).status == "success"
    other.close()
    old.close()


def _ctx(epoch: int, run_id: int = 7) -> DestinationContext:
    return DestinationContext(sync_id=1, sync_name="s", run_id=run_id, mode=DestinationMode.INSERT,
                              primary_key=("id",), workspace_id="w", owner_epoch=epoch)


def _batch(n: int, ids: range) -> WriteBatch:
    return WriteBatch(n, pa.table({"id": pa.array(list(ids), pa.int64()),
                                   "v": pa.array([f"v{i}" for i in ids], pa.string()),
                                   "_action": pa.array(["insert"] * len(ids), pa.string())}))


@pytest.mark.parametrize("kind", ["duckdb", "sqlite", "postgres", pytest.param("mysql", marks=pytest.mark.slow)])
def test_a_sql_destination_refuses_the_batches_of_an_owner_taken_over(kind, request, tmp_path):
    """The new owner raises the run's fence in the ledger when its session opens; the old owner's
    next batch is rolled back with RunTakenOver (table and ledger unchanged), the new owner's lands."""
    from tests.plugins.targets import TARGETS

    target = TARGETS[kind](request, tmp_path)
    dest = target.make("t")
    schema = _batch(1, range(0)).data.schema
    stale = dest.open(_ctx(1))
    stale.prepare(schema)
    assert stale.write(_batch(1, range(0, 10))).failed == {}
    new = dest.open(_ctx(3))  # the new owner's session: fence raised to 3, then the ledger read
    assert set(new.committed_batches()) == {1}
    new.close()
    with pytest.raises(RunTakenOver, match="was taken over by another process"):
        stale.write(_batch(2, range(10, 20)))  # the old owner's session, opened before, commits now
    stale.close()
    with pytest.raises(RunTakenOver, match="was taken over by another process"):
        dest.open(_ctx(1))  # an old owner opening a session again is refused at once
    new = dest.open(_ctx(3))
    assert set(new.committed_batches()) == {1}
    new.prepare(schema)
    assert new.write(_batch(2, range(10, 30))).failed == {}
    assert set(new.committed_batches()) == {1, 2}
    new.close()
    assert sorted(target.read("t")["id"].to_list()) == list(range(30))
    # a run of a store without epochs (the DuckDB workspace) is not fenced at all
    free = dest.open(_ctx(None, run_id=8))  # type: ignore[arg-type]
    free.prepare(schema)
    assert free.write(_batch(1, range(100, 101))).failed == {}
    free.close()


OWNER = r"""
import sys
import dfsync
import tests.faulty  # noqa: F401  (registers the faulty destination)
run = dfsync.Workspace(sys.argv[1]).sync("s").run(progress=False)
print(run.id, run.status.value, flush=True)
"""

TAKER = r"""
import sys, time
import dfsync
import tests.faulty  # noqa: F401
ws = dfsync.Workspace(sys.argv[1])
deadline = time.monotonic() + 120
while not ws.sql("SELECT count(*) FROM runs WHERE status = 'paused'").item():
    assert time.monotonic() < deadline, "the stopped owner's run was never taken over"
    time.sleep(0.2)
    ws.recover()
run = ws.sync("s").run(progress=False)
print(run.id, run.status.value, run.counts["sent"], flush=True)
"""


def _snapshot(ws, dest_uri: str, pg_server) -> tuple:
    """The workspace (runs but their heartbeats, events, batches, delivered state) and the
    destination (rows, ledger)."""
    runs = ws.sql("SELECT * FROM runs ORDER BY id").drop("heartbeat_at").rows()
    events = ws.sql("SELECT id, run_id, kind, from_status, to_status, detail FROM events ORDER BY id").rows()
    batches = ws.sql("SELECT run_id, batch_no, status, rows FROM batches ORDER BY 1, 2").rows()
    state = ws.sql("SELECT count(*) AS n, count(DISTINCT id) AS k, sum(CASE WHEN _ok THEN 1 ELSE 0 END) AS ok "
                   "FROM state_1").rows()
    rows = pg_server.read(dest_uri, "SELECT id, v FROM t ORDER BY id").rows()
    ledger = pg_server.read(dest_uri, "SELECT run_key, batch_no, rows FROM _dfsync_batches ORDER BY 1, 2").rows()
    return runs, events, batches, state, rows, ledger


@pytest.mark.slow
def test_a_stopped_owner_that_comes_back_after_a_takeover_changes_nothing(pg_server, pg_uri, tmp_path):
    """Insert mode into PostgreSQL: the owner is SIGSTOPped mid-transfer (a destination write of it
    waiting to commit), another process on another host name finds its heartbeat stale, takes the run
    over and finishes it; then the first one is SIGCONTed: its pending commit is refused by the ledger
    fence and its workspace writes by the epoch. Every row is in the destination exactly once, the
    old owner changed nothing anywhere, and the next run sends nothing."""
    import os
    import signal
    import subprocess
    import sys

    from tests.faulty import FaultyDestination
    from tests.plugins.processes import child_env

    n = 8000
    pl.DataFrame({"id": list(range(n)), "v": [f"v{i}" for i in range(n)]}).write_parquet(tmp_path / "src.parquet")
    dest_uri = pg_server.new_database()
    # a transaction left open by a stopped process must not hold its locks for ever
    pg_server.execute(f'ALTER DATABASE "{dest_uri.rsplit("/", 1)[1]}" SET idle_in_transaction_session_timeout = "3s"')
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    marker = tmp_path / "committed"
    ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")), primary_key="id",
                   destination_mode="insert", batch_size=400,
                   destination=FaultyDestination(dfsync.destinations.postgres(dest_uri, table="t"), sleep=0.3,
                                                 marker=str(marker), marker_after=4))
    env = dict(DFSYNC_HEARTBEAT_TTL="2")
    owner = subprocess.Popen([sys.executable, "-c", OWNER, target], env=child_env(DFSYNC_HOSTNAME="host-a", **env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: marker.exists() or owner.poll() is not None, 120, "the owner's fourth batch")
        os.kill(owner.pid, signal.SIGSTOP)  # its other writer sleeps before a commit, the main thread goes on
        assert owner.poll() is None, owner.communicate()
        marker.unlink()
        taker = subprocess.run([sys.executable, "-c", TAKER, target], env=child_env(DFSYNC_HOSTNAME="host-b", **env),
                               capture_output=True, text=True, timeout=300)
        assert taker.returncode == 0, taker.stderr
        rid, status, sent = taker.stdout.split()
        assert status == "success" and int(sent) == n  # the run's counters: the old owner's batches and its own
        before = _snapshot(ws, dest_uri, pg_server)
        os.kill(owner.pid, signal.SIGCONT)
        out, err = owner.communicate(timeout=120)
    finally:
        if owner.poll() is None:
            os.kill(owner.pid, signal.SIGCONT)
            owner.kill()
            owner.communicate()
    assert owner.returncode == 0, err
    assert out.split() == [rid, "success"]  # the run as the workspace tells it: finished by the other process
    assert "Traceback" not in err
    after = _snapshot(ws, dest_uri, pg_server)
    assert after == before  # the old owner wrote nothing, to the workspace or to the destination
    rows = pg_server.read(dest_uri, "SELECT id FROM t")["id"]
    assert rows.len() == n and rows.n_unique() == n and sorted(rows.to_list()) == list(range(n))
    run = ws.run(int(rid))
    c = run.counts
    assert c["sent"] == c["succeeded"] == n and c["failed"] == 0, c
    events = run.events()
    assert events.filter(pl.col("detail") == "owner process gone").height == 1
    assert ws.sql(f"SELECT owner_host FROM runs WHERE id = {rid}").item() == "host-b"
    again = ws.sync("s").run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 0
    ws.close()


SCHEDULER = r"""
import sys
import tests.faulty  # noqa: F401  (registers the faulty destination)
from dfsync.cli import main
sys.argv = ["dfsync", "scheduler", "--workspace", sys.argv[1], "--poll", "0.2"]
main()
"""

RESUMER = r"""
import sys
import dfsync
import tests.faulty  # noqa: F401
ws = dfsync.Workspace(sys.argv[1])  # finds the dead scheduler's run (its session is gone) and pauses it
run = ws.sync("s").run(progress=False)
print(run.id, run.status.value, flush=True)
"""


@pytest.mark.slow
def test_a_scheduler_killed_mid_transfer_is_taken_over_under_another_host_name(pg_server, pg_uri, tmp_path):
    """`dfsync scheduler` on host "sched-1" is SIGKILLed mid-transfer; a process on host "host-b" opens
    the workspace, finds the run's owner gone, and resumes it: the destination equals the source with
    no duplicate keys, and the next run sends 0."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import datetime, timedelta, timezone

    from tests.faulty import FaultyDestination
    from tests.plugins.processes import child_env

    n = 3000
    src = pl.DataFrame({"id": list(range(n)), "v": [f"v{i}" for i in range(n)]})
    src.write_parquet(tmp_path / "src.parquet")
    dest_uri = pg_server.new_database()
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    marker = tmp_path / "committed"
    sync = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")), primary_key="id",
                          destination_mode="insert", batch_size=200, schedule="every 1 hour",
                          destination=FaultyDestination(dfsync.destinations.postgres(dest_uri, table="t"),
                                                        sleep=0.1, marker=str(marker), marker_after=3))
    ws.store.set_sync_fields(sync.id, next_run_at=datetime.now(timezone.utc) - timedelta(minutes=1))  # due now
    sched = subprocess.Popen([sys.executable, "-c", SCHEDULER, target], env=child_env(DFSYNC_HOSTNAME="sched-1"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: marker.exists() or sched.poll() is not None, 120, "the scheduler's third batch")
        os.kill(sched.pid, signal.SIGKILL)
        sched.communicate(timeout=60)
    finally:
        if sched.poll() is None:
            sched.kill()
            sched.communicate()
    killed = ws.sql("SELECT id, status, owner_host, trigger FROM runs").rows()
    assert [r[1:] for r in killed] == [("in_progress", "sched-1", "schedule")]
    res = subprocess.run([sys.executable, "-c", RESUMER, target], env=child_env(DFSYNC_HOSTNAME="host-b"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(killed[0][0]), "success"]  # the same run, resumed
    run = ws.run(killed[0][0])
    assert ws.sql(f"SELECT owner_host FROM runs WHERE id = {run.id}").item() == "host-b"
    assert run.events().filter(pl.col("detail") == "owner process gone")["to_status"].to_list() == ["paused"]
    got = pg_server.read(dest_uri, "SELECT id, v FROM t ORDER BY id")
    assert got.height == n and got["id"].n_unique() == n
    assert got.equals(src)
    again = ws.sync("s").run(progress=False)
    assert again.status == "success" and again.counts["sent"] == 0
    ws.close()


RUN_THROUGH_OUTAGE = r"""
import sys
import dfsync
import tests.faulty  # noqa: F401
run = dfsync.Workspace(sys.argv[1], busy_timeout=float(sys.argv[2])).sync("s").run(progress=False)
print(run.id, run.status.value, flush=True)
"""


@pytest.mark.slow
def test_a_workspace_server_gone_mid_run_pauses_the_run_and_readers_get_workspace_busy(tmp_path, dfsync_cli):
    """A cluster of its own (the session's server stays up for the other tests): it is stopped while a
    run transfers. Readers (ws.syncs(), sync.runs(), run.counts, the CLI) get WorkspaceBusy with a clear
    message; the run pauses once the server is back (its connection is replaced), and the next run
    resumes it exactly: the destination equals the source, no duplicates, then a run sends 0. Then the
    server stays away longer than the run's busy_timeout: the run's process gives up (WorkspaceBusy),
    the next process to open the workspace finds the run paused (its owner's session is gone) and
    resumes it exactly."""
    import subprocess
    import sys

    from tests.faulty import FaultyDestination
    from tests.plugins.postgres import throwaway_server
    from tests.plugins.processes import child_env

    n = 4000
    src = pl.DataFrame({"id": list(range(n)), "v": [f"v{i}" for i in range(n)]})
    src.write_parquet(tmp_path / "src.parquet")
    with throwaway_server() as server:
        target = f"{server.new_database()}?schema=ws"
        ws = dfsync.Workspace(target, busy_timeout=1)
        marker = tmp_path / "committed"
        sync = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")), primary_key="id",
                              destination_mode="insert", batch_size=200,
                              destination=FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"),
                                                                                       table="t"),
                                                            sleep=0.1, marker=str(marker), marker_after=3))
        panel = dfsync.widgets.SyncPanel(sync)

        def outage(busy_timeout: str, while_away, ends_while_away: bool) -> tuple[int, str, str]:
            """Run the sync in a child, stop the server after its third batch, call ``while_away``,
            start the server again (after the child ended, with ``ends_while_away``)."""
            marker.unlink(missing_ok=True)
            proc = subprocess.Popen([sys.executable, "-c", RUN_THROUGH_OUTAGE, target, busy_timeout],
                                    env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _wait(lambda: marker.exists() or proc.poll() is not None, 120, "the third batch")
                server.stop()
                try:
                    while_away()
                    if ends_while_away:
                        out, err = proc.communicate(timeout=120)
                finally:
                    server.start()
                if not ends_while_away:
                    out, err = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            return proc.returncode, out, err

        def readers_are_told() -> None:
            for read in (ws.syncs, sync.runs, lambda: ws.run(1).counts, panel.refresh):
                with pytest.raises(dfsync.errors.WorkspaceBusy, match="workspace server unreachable"):
                    read()
            res = dfsync_cli("runs", "s", "--workspace", target, DFSYNC_BUSY_TIMEOUT="1")
            assert res.code == 1 and "workspace server unreachable" in res.err, res
            assert "Traceback" not in res.err

        def delivered() -> pl.DataFrame:
            import duckdb

            con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
            try:
                return pl.from_arrow(con.sql("SELECT id, v FROM t ORDER BY id").to_arrow_table())
            finally:
                con.close()

        code, out, err = outage("60", readers_are_told, ends_while_away=False)
        assert code == 0, err
        rid, status = out.split()
        # a call broken by the outage pauses the run; a call made while the server was away waits for it
        # (busy_timeout) and the run rides the outage out: either way it ends exact
        assert status in ("paused", "success"), err
        run = ws.run(int(rid))
        if status == "paused":
            assert "workspace unavailable" in (run.error or ""), run.error
            assert 0 < run.counts["sent"] < n
            resumed = sync.run(progress=False)
            assert resumed.id == run.id and resumed.status == "success", resumed.error
        assert ws.run(int(rid)).counts["sent"] == ws.run(int(rid)).counts["succeeded"] == n
        got = delivered()
        assert got.height == n and got["id"].n_unique() == n and got.equals(src)
        again = sync.run(progress=False)
        assert again.status == "success" and again.counts["sent"] == 0
        panel.close()

        # the server stays away longer than the run waits: the next open pauses the run
        src = pl.DataFrame({"id": list(range(2 * n)), "v": [f"v{i}" for i in range(2 * n)]})  # insert mode: new rows
        src.write_parquet(tmp_path / "src.parquet")
        code, out, err = outage("2", lambda: None, ends_while_away=True)
        assert code == 1 and "WorkspaceBusy" in err and "workspace server unreachable" in err, err
        left = ws.sql("SELECT id, status FROM runs ORDER BY id DESC LIMIT 1").row(0)
        assert left[1] == "in_progress"  # the pause could not be written
        opened = dfsync.Workspace(target)
        assert opened.run(left[0]).status == "paused"  # found by the next open: its owner's session is gone
        resumed = opened.sync("s").run(progress=False)
        assert resumed.id == left[0] and resumed.status == "success", resumed.error
        got = delivered()
        assert got.height == 2 * n and got["id"].n_unique() == 2 * n and got.equals(src)
        assert opened.sync("s").run(progress=False).counts["sent"] == 0
        opened.close()
        ws.close()


def test_a_scheduler_pass_finds_a_dead_owners_run_of_a_sync_not_due(pg_uri, tmp_path):
    """A scheduler's periodic check moves a run whose owner died after the scheduler opened the
    workspace, though no due sync starts (so the bound does not depend on schedules)."""
    import subprocess
    import sys

    from tests.plugins.processes import child_env

    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2, 3]})), primary_key="id",
                   destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    from dfsync.schedule import Scheduler

    sched = Scheduler(ws)  # not started: one pass below
    code = ("import sys, os, dfsync\nfrom dfsync.states import RunStatus\n"
            "ws = dfsync.Workspace(sys.argv[1])\nrid = ws.store.create_run(ws.sync('s').id, 1, 'manual')\n"
            "for to in (RunStatus.QUERYING, RunStatus.QUEUED, RunStatus.IN_PROGRESS):\n"
            "    ws.store.transition_run(rid, to)\nprint(rid, flush=True)\nos._exit(0)\n")
    p = subprocess.run([sys.executable, "-c", code, target], capture_output=True, text=True, timeout=120,
                       env=child_env(DFSYNC_HOSTNAME="gone-host"))
    assert p.returncode == 0, p.stderr
    rid = int(p.stdout.split()[0])
    assert ws.run(rid).status == "in_progress"
    assert sched.run_pending() == []  # nothing due (no schedule): no run started
    assert ws.run(rid).status == "paused"
    ws.close()

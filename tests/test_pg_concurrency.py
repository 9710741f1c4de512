"""Two processes run different 2M-row syncs at once on one PostgreSQL workspace, and neither waits on the other.

Issue 20 ("many writers at once"): two processes, each with its own workspace handle, run two
different syncs of 2,000,000 rows into their own destinations at the same time. Both runs are
``in_progress`` at once (each process holds at its first ``in_progress`` report until the other
got there too, so the batches of both runs are written while the other's are), their events
interleave in the workspace's event log, and their counters are exact.

"No store call slower than 100 ms because of the other" is not measured by the clock (the
machine is shared): the test runs a cluster of its own with ``log_lock_waits = on`` and
``deadlock_timeout = 100ms``, so the server logs every lock wait that lasts 100 ms or longer
("... still waiting for ...", with the session holding the lock), and asserts there is no such
wait between the two processes (each process's sessions carry its name: ``PGAPPNAME``, logged
with every line); it also samples ``pg_locks`` every 20 ms while the runs go and asserts that no
lock request of one process stays blocked by the other over 100 ms of samples. A deliberate
0.5 s row-lock wait between two sessions before the runs shows that both checks see waits. (Waits
between two sessions of one process, such as a run's heartbeat waiting for its own batch's
transaction, are not the other sync's doing; they are listed in the failure message of neither
check, only counted.)
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import pytest

from tests.plugins.postgres import throwaway_server
from tests.plugins.processes import child_env

pytestmark = pytest.mark.slow

ROWS = 2_000_000
WAIT_LINE = "still waiting for"

RUN = r"""
import json, os, sys, time
import dfsync

uri, name, mine, other = sys.argv[1:5]
ws = dfsync.Workspace(uri)
held = []

def progress(status, row):
    # hold at the first in_progress report until the other run is transferring too (60 s at most)
    if status == "in_progress" and not held:
        held.append(1)
        open(mine, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(other) and time.monotonic() < deadline:
            time.sleep(0.01)

run = ws.sync(name).run(progress=progress)
print("RESULT " + json.dumps({"id": run.id, "status": run.status.value, "error": run.error, "counts": run.counts}))
"""


def _source(path: pathlib.Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pl.DataFrame({
        "id": np.arange(ROWS, dtype=np.int64) + seed * 10 * ROWS,
        "qty": rng.integers(0, 1_000_000, ROWS),
        "price": rng.random(ROWS) * 100,
        "name": pl.Series(rng.integers(0, 2**40, ROWS)).cast(pl.String),
    }).write_parquet(path)


@pytest.fixture(scope="module")
def watched_server():
    """A cluster of this module's own whose log reports every lock wait of 100 ms or more."""
    with throwaway_server() as server:
        server.execute("ALTER SYSTEM SET log_lock_waits = on")
        server.execute("ALTER SYSTEM SET deadlock_timeout = '100ms'")
        server.execute("ALTER SYSTEM SET log_connections = on")
        server.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a '")
        server.execute("SELECT pg_reload_conf()")
        yield server


def _log_tail(server, offset: int) -> str:
    with open(server.log, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _cross_waits(log: str) -> tuple[list[str], int]:
    """Lock waits of 100 ms+ in the log whose waiter and holder are sessions of different
    applications (with the lines after them), and how many waits were within one application."""
    lines = log.splitlines()
    app = {int(m.group(1)): m.group(2) for m in map(re.compile(r"\[(\d+)\] app=(\S*) ").search, lines) if m}
    # a session's first lines come before its name is known: its "connection authorized" line names it
    app.update({int(m.group(1)): m.group(2) for m in map(
        re.compile(r"\[(\d+)\] .*connection authorized: .*application_name=(\S+)").search, lines) if m})
    cross, within = [], 0
    for i, ln in enumerate(lines):
        if WAIT_LINE not in ln:
            continue
        waiter = int(re.search(r"process (\d+) still waiting", ln).group(1))
        detail = next((x for x in lines[i + 1:i + 3] if "holding the lock" in x), "")
        holders = [int(p) for p in re.findall(r"\d+", detail.split("holding the lock:", 1)[-1].split(".")[0])]
        if holders and all(app.get(h) == app.get(waiter) for h in holders):
            within += 1
        else:
            cross.append("\n".join(lines[i:i + 4]))
    return cross, within


class _LockSampler(threading.Thread):
    """Samples ungranted lock requests every 20 ms; ``held_long`` lists those seen over >= 100 ms."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.stop, self.samples = uri, threading.Event(), 0
        self.first_seen: dict[tuple, float] = {}
        self.held_long: list[tuple] = []

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as con:
            while not self.stop.is_set():
                now = time.monotonic()
                # an ungranted request with a blocking session of another application
                rows = con.execute(
                    "SELECT l.pid, l.locktype, l.relation::regclass::text, l.transactionid::text, l.classid, "
                    "l.objid, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND l.pid <> pg_backend_pid() AND EXISTS (SELECT 1 FROM pg_stat_activity b "
                    "WHERE b.pid = ANY(pg_blocking_pids(l.pid)) AND b.application_name <> a.application_name)"
                ).fetchall()
                self.samples += 1
                seen = {tuple(r) for r in rows}
                self.first_seen = {k: self.first_seen.get(k, now) for k in seen}
                self.held_long += [k for k, t in self.first_seen.items() if now - t >= 0.1 and k not in self.held_long]
                self.stop.wait(0.02)


def _provoke_wait(server, seconds: float) -> None:
    """Hold a row lock for ``seconds`` while another session waits for it."""
    import psycopg

    server.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY, n int)")
    server.execute("INSERT INTO lock_probe VALUES (1, 0) ON CONFLICT DO NOTHING")
    with psycopg.connect(server.uri, application_name="probe") as holder:
        holder.execute("UPDATE lock_probe SET n = n + 1 WHERE id = 1")
        waiter = threading.Thread(target=server.execute, args=("UPDATE lock_probe SET n = n + 1 WHERE id = 1",))
        waiter.start()
        time.sleep(seconds)
        holder.commit()
    waiter.join(30)


def test_two_processes_run_two_2m_row_syncs_at_once_without_lock_waits(watched_server, tmp_path):
    import dfsync

    server = watched_server
    uri = server.new_database() + "?schema=shared"
    ws = dfsync.Workspace(uri)
    for i, name in enumerate(("alpha", "beta")):
        src = tmp_path / f"{name}.parquet"
        _source(src, i)
        ws.create_sync(name, source=dfsync.sources.files(str(src)),
                       destination=dfsync.destinations.duckdb(str(tmp_path / f"{name}.duckdb"), table="t"),
                       primary_key="id", batch_size=100_000)
    ws.close()

    # both checks see a wait when there is one (else "no wait seen" would prove nothing)
    offset = os.path.getsize(server.log)
    probe = _LockSampler(server.uri)
    probe.start()
    _provoke_wait(server, 0.5)
    probe.stop.set()
    probe.join(10)
    probe_log = _log_tail(server, offset)
    assert _cross_waits(probe_log)[0], f"log_lock_waits did not log a 0.5 s wait:\n{probe_log[-3000:]}"
    assert probe.held_long, "pg_locks sampling did not see a 0.5 s wait"

    offset = os.path.getsize(server.log)
    sampler = _LockSampler(server.uri)
    sampler.start()
    marks = {n: str(tmp_path / f"{n}.in_progress") for n in ("alpha", "beta")}
    procs = {n: subprocess.Popen([sys.executable, "-c", RUN, uri, n, marks[n], marks[o]], env=child_env(PGAPPNAME=n),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, o in (("alpha", "beta"), ("beta", "alpha"))}
    results = {}
    try:
        for name, p in procs.items():
            out, err = p.communicate(timeout=1500)
            lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
            assert p.returncode == 0 and lines, f"{name}: exit {p.returncode}\n{out}\n{err[-3000:]}"
            results[name] = json.loads(lines[-1][7:])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=60)
        sampler.stop.set()
        sampler.join(10)

    for name, r in results.items():
        assert r["status"] == "success", f"{name}: {r['error']}"
        c = r["counts"]
        assert (c["queried"], c["inserted"], c["sent"], c["succeeded"]) == (ROWS,) * 4, (name, c)
        assert (c["updated"], c["deleted"], c["failed"], c["skipped"], c["invalid"]) == (0,) * 5, (name, c)
        import duckdb

        with contextlib.closing(duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True)) as con:
            assert con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(ROWS, ROWS)]

    # both in_progress at once: each run's transfer began before the other's ended, and the
    # event log interleaves them
    ws = dfsync.Workspace(uri)
    try:
        ev = ws.sql(f"SELECT id, run_id, to_status FROM events WHERE run_id IN "
                    f"({int(results['alpha']['id'])}, {int(results['beta']['id'])}) ORDER BY id")
        assert ws.sync("alpha").delivered().height == ROWS and ws.sync("beta").delivered().height == ROWS
    finally:
        ws.close()
    span = {}
    for name in ("alpha", "beta"):
        rid = results[name]["id"]
        mine = ev.filter(pl.col("run_id") == rid)
        start = mine.filter(pl.col("to_status") == "in_progress")["id"].min()
        end = mine.filter(pl.col("to_status") == "success")["id"].max()
        assert start is not None and end is not None, mine
        span[name] = (start, end)
    (a0, a1), (b0, b1) = span["alpha"], span["beta"]
    assert a0 < b1 and b0 < a1, f"the runs were not in_progress at the same time: {span}"
    runs = ev["run_id"].to_list()
    switches = sum(1 for x, y in zip(runs, runs[1:], strict=False) if x != y)
    assert switches >= 2, f"the events did not interleave: {runs}"

    # neither waited on the other: no lock wait of 100 ms or more, in the server's log or in pg_locks
    waits, _within = _cross_waits(_log_tail(server, offset))
    assert not waits, "lock waits of one run's sessions on the other's:\n" + "\n".join(waits[:10])
    assert sampler.samples > 10, sampler.samples
    assert not sampler.held_long, f"lock requests ungranted for 100 ms or more: {sampler.held_long[:10]}"

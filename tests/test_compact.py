"""After an erasure (``sync.forget``, a retention purge by a run or by ``ws.purge``) the DuckDB
workspace file is rewritten, so the erased values leave its bytes, not only its query results;
ids go on, another process waiting for the file gets in afterwards, and a crash during the
rewrite leaves the old file or the new one, whole (dfsync/store/_compact.py)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import duckdb
import polars as pl
import pytest

import dfsync
from tests.faulty import env_with_repo

KEY = "cust-QX7Z-9h4k-erasable"  # a distinctive key: in a failed record and in events
EMAIL = "zelda.unique.erasable@example.org"  # the failed row's e-mail (no sensitive=: stored plain)


def people(tmp_path) -> dfsync.destinations.base.Destination:
    os.makedirs(tmp_path, exist_ok=True)
    path = str(tmp_path / "d.duckdb")
    con = duckdb.connect(path)
    con.execute("CREATE TABLE IF NOT EXISTS people (id VARCHAR PRIMARY KEY, email VARCHAR, age INTEGER CHECK (age < 150))")
    con.close()
    return dfsync.destinations.duckdb(path, table="people")


def source(with_key=True) -> pl.DataFrame:
    rows = {"id": ["a", "b"], "email": ["a@x.org", "b@x.org"], "age": [1, 2]}
    if with_key:  # age 200 breaks the destination's CHECK: a failed record holding the e-mail
        rows = {"id": [KEY, *rows["id"]], "email": [EMAIL, *rows["email"]], "age": [200, *rows["age"]]}
    return pl.DataFrame(rows)


def file_bytes(ws_path) -> dict[str, bytes]:
    """Every file of the (closed) workspace's directory: the file, its journal, anything left beside."""
    folder = os.path.dirname(ws_path)
    return {f: pathlib.Path(d, f).read_bytes() for d, _, fs in os.walk(folder) for f in fs}


def holding(blobs: dict[str, bytes], *values: str) -> list[str]:
    return [f"{v} in {name}" for name, b in blobs.items() for v in values if v.encode() in b]


def syncs_in_subprocess(ws_path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import dfsync
        ws = dfsync.Workspace({str(ws_path)!r})
        print(sorted(ws.syncs()["name"].to_list()), flush=True)
        ws.close()
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env_with_repo())


def first_run(tmp_path):
    """A closed workspace whose first run left a failed record of KEY (with EMAIL) and an event naming KEY."""
    path = tmp_path / "w" / "ws.duckdb"
    ws = dfsync.Workspace(path)
    sync = ws.create_sync("people", source=dfsync.sources.frame(source()), destination=people(tmp_path),
                          primary_key="id", max_failed_rows=10)
    run = sync.run(progress=False)
    assert run.counts["failed"] == 1 and run.records("failed")["id"].to_list() == [KEY]
    ws.store.note(sync.id, run.id, f"support ticket about {KEY}")
    ws.close()
    assert len(holding(file_bytes(path), KEY, EMAIL)) >= 2  # the test could fail: the values are in the file
    return path, run.id


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # the usual umask: what DuckDB alone would create readable by all
    yield
    os.umask(old)


def test_forget_leaves_no_byte_of_the_key_and_ids_go_on(tmp_path, umask_022):
    path, run_id = first_run(tmp_path)
    ws = dfsync.Workspace(path)
    sync, run = ws.sync("people"), ws.run(run_id)
    last_event = ws.sql("SELECT max(id) AS n FROM events")["n"][0]
    with ws.store.lease():  # another process comes to read while this one holds the file
        waiter = syncs_in_subprocess(path)
        while not any(".wait-" in f for f in os.listdir(path.parent)) and waiter.poll() is None:
            time.sleep(0.01)  # until it announces that it waits for the file
        counts = sync.forget([KEY])
    out, err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, err
    assert out.strip() == "['people']"
    assert counts == {"records": 1, "delivered": 0, "checks": 0, "texts": 1}
    # the workspace reads as before, and ids go on from where they were
    assert ws.sql("SELECT min(id) AS n FROM events WHERE detail LIKE '%forgotten on request%'")["n"][0] == last_event + 1
    assert ws.sql("SELECT max(version) AS v FROM dfsync_schema")["v"][0] == ws.store.schema_version()
    assert run.records("failed").height == 0 and run.records().height == 2 and sorted(sync.delivered()["id"].to_list()) == ["a", "b"]
    assert "[forgotten key]" in str(run.events().to_dicts())
    other = ws.create_sync("other", source=dfsync.sources.frame(source(False)), destination=people(tmp_path),
                           primary_key="id")
    assert other.id == sync.id + 1
    again = sync.run(source=source(False), progress=False)
    assert again.id == run.id + 1 and again.status == "success" and again.counts["unchanged"] == 2
    assert sorted(ws.syncs()["name"].to_list()) == ["other", "people"] and sync.runs().height == 2
    ws.close()
    blobs = file_bytes(path)
    assert not holding(blobs, KEY, EMAIL)
    assert sorted(blobs) == ["ws.duckdb"]  # no journal, no copy left beside it
    assert os.stat(path).st_mode & 0o777 == 0o600


def _age_runs(ws, sync, days):
    for run_id in sync.runs()["run_id"].to_list():
        ws.store.set_run_fields(run_id, finished_at=ws.run(run_id).finished_at - timedelta(days=days))


def test_a_retention_purge_by_a_run_or_by_ws_purge_leaves_no_byte_of_the_records(tmp_path):
    path = tmp_path / "w" / "ws.duckdb"
    ws = dfsync.Workspace(path)
    by_run = ws.create_sync("by_run", source=dfsync.sources.frame(source()), destination=people(tmp_path),
                            primary_key="id", max_failed_rows=10, record_retention="30 days")
    assert by_run.run(progress=False).counts["failed"] == 1
    _age_runs(ws, by_run, 31)
    ws.close()
    assert holding(file_bytes(path), EMAIL)
    ws = dfsync.Workspace(path)
    by_run = ws.sync("by_run")
    run = by_run.run(source=source(False), progress=False)  # purges the old run's records first
    assert run.status == "success" and any("3 records of runs" in d for d in run.events()["detail"].to_list())
    ws.close()
    assert not holding(file_bytes(path), EMAIL)

    # ws.purge (dfsync purge): one rewrite for every sync that lost records
    ws = dfsync.Workspace(path)
    other = ws.create_sync("other", source=dfsync.sources.frame(source().with_columns(
        pl.col("email").str.replace("zelda", "yves"))), destination=people(tmp_path / "d2"), primary_key="id",
        max_failed_rows=10)
    assert other.run(progress=False).counts["failed"] == 1
    _age_runs(ws, other, 3)
    assert ws.purge(older_than="2 days") == {"by_run": 0, "other": 3}
    ws.close()
    assert not holding(file_bytes(path), "yves.unique.erasable")


CRASH = """
import os, sys
import dfsync
from dfsync.store import _compact
where = sys.argv[2]
real = os.replace
def crash(*a):
    if where == "after":
        real(*a)
    os._exit(3)
_compact.os.replace = crash
ws = dfsync.Workspace(sys.argv[1])
ws.sync("people").forget([{key!r}])
"""


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_crash_while_compacting_leaves_the_old_file_or_the_new_one(tmp_path, where):
    path, run_id = first_run(tmp_path)
    out = subprocess.run([sys.executable, "-c", CRASH.format(key=KEY), str(path), where], capture_output=True,
                         text=True, env=env_with_repo(), timeout=120)
    assert out.returncode == 3, out.stderr  # it died at the rename (before or after it)
    strays = [f for f in os.listdir(path.parent) if ".compact-" in f]
    assert len(strays) == 1, strays  # its private directory: the copy (before), empty (after the rename)
    assert bool(os.listdir(path.parent / strays[0])) == (where == "before")
    ws = dfsync.Workspace(path)  # opens: the forget had committed; a dead process's copy is removed
    try:
        assert not [f for f in os.listdir(path.parent) if ".compact-" in f]
        assert ws.run(run_id).records("failed").height == 0 and ws.run(run_id).records().height == 2
        assert ws.sync("people").runs().height == 1
        assert holding(file_bytes(path), EMAIL) == ([] if where == "after" else [f"{EMAIL} in ws.duckdb"])
    finally:
        ws.close()



def test_a_file_another_thread_keeps_open_is_not_compacted_and_the_sync_says_so(tmp_path):
    path, run_id = first_run(tmp_path)
    ws = dfsync.Workspace(path, busy_timeout=0.5)
    holder = dfsync.Workspace(path)
    entered, done = threading.Event(), threading.Event()

    def hold() -> None:  # a lease that never reaches a batch boundary
        with holder.store.lease():
            holder.syncs()
            entered.set()
            done.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(60)
        with pytest.warns(UserWarning, match="not compacted .*kept it open.*next forget or purge"):
            counts = ws.sync("people").forget([KEY])
    finally:
        done.set()
        thread.join()
    assert counts["records"] == 1 and ws.run(run_id).records("failed").height == 0  # the erasure stands
    assert "not compacted" in ws.sync("people").events()["detail"][-1]
    ws.close()
    holder.close()
    assert holding(file_bytes(path), EMAIL)  # as the event says: still in the file's unused blocks


def test_opening_the_workspace_again_in_the_same_process_keeps_other_processes_out(tmp_path):
    # reading the file's header and closing it would drop this process's DuckDB (POSIX) lock, and
    # another process could then open the file to write while this one holds it, or swaps it
    path = tmp_path / "ws.duckdb"
    ws = dfsync.Workspace(path)
    probe = f"import duckdb\ntry:\n    duckdb.connect({str(path)!r})\n    print('got in')\nexcept duckdb.IOException:\n    print('locked')"
    try:
        with ws.store.lease():
            again = dfsync.Workspace(path)
            again.close()
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
            assert out.stdout.strip() == "locked", out.stderr
    finally:
        ws.close()

"""The workspace on PostgreSQL: schemas, migrations, the password, outages, one run per sync.

Real server (tests/plugins/postgres.py), real processes; behaviour shared with the DuckDB
workspace is tested by the modules that run on both stores (``ws_target``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.states import RunStatus
from dfsync.store._pgconnections import MIGRATIONS_PG
from tests.plugins.postgres import PASSWORD_ROLE
from tests.plugins.processes import child_env

pytestmark = pytest.mark.postgres


def _schema() -> str:
    return "w_" + uuid.uuid4().hex[:12]


def _sync(ws, tmp_path, name="s"):
    return ws.create_sync(name, source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2, 3]})),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table=name),
                          primary_key="id")


def test_two_workspaces_share_one_database_under_different_schemas(pg_uri, tmp_path):
    a = dfsync.Workspace(f"{pg_uri}?schema=team_a")
    b = dfsync.Workspace(f"{pg_uri}?schema=team_b")
    _sync(a, tmp_path, "only_in_a")
    _sync(b, tmp_path, "only_in_b")
    assert a.syncs()["name"].to_list() == ["only_in_a"]
    assert b.syncs()["name"].to_list() == ["only_in_b"]
    # each has its own id (destination ledgers tell their runs apart) and its own sequences
    assert a.sql("SELECT value FROM workspace_meta WHERE key = 'id'").item() != \
        b.sql("SELECT value FROM workspace_meta WHERE key = 'id'").item()
    assert a.sync("only_in_a").id == b.sync("only_in_b").id == 1
    a.close()
    b.close()


def test_reopening_migrates_nothing_twice_and_matches_the_duckdb_tables(pg_uri, pg_server, tmp_path):
    target = f"{pg_uri}?schema=ws"
    ws = dfsync.Workspace(target)
    _sync(ws, tmp_path)
    versions = ws.sql("SELECT version FROM dfsync_schema ORDER BY 1")["version"].to_list()
    assert versions == list(range(1, dfsync.store.SCHEMA_VERSION + 1))
    assert ws.sql("SELECT max(version) FROM dfsync_schema_pg").item() == max(MIGRATIONS_PG)
    ws.close()
    again = dfsync.Workspace(target, create=False)  # opens, keeps the sync, applies nothing again
    assert again.syncs()["name"].to_list() == ["s"]
    assert again.sql("SELECT count(*) FROM dfsync_schema").item() == dfsync.store.SCHEMA_VERSION
    # every column of the DuckDB workspace's tables exists here too (a new DuckDB migration
    # that PostgreSQL cannot run fails this test rather than a user's run)
    duck = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    for table in ("syncs", "runs", "events", "batches", "checks", "workspace_meta", "dfsync_schema"):
        want = set(duck.sql(f"SELECT * FROM {table} LIMIT 0").columns)
        have = set(again.sql(f"SELECT * FROM {table} LIMIT 0").columns)
        assert want <= have, (table, want - have)
    again.close()
    duck.close()


def test_a_schema_holding_other_tables_is_refused_and_left_unchanged(pg_uri, pg_server):
    db = pg_uri.rsplit("/", 1)[1]
    pg_server.execute("CREATE SCHEMA crm", dbname=db)
    pg_server.execute("CREATE TABLE crm.customers (id int)", dbname=db)
    with pytest.raises(dfsync.errors.WorkspaceError, match="holds other tables .*customers.*did not change"):
        dfsync.Workspace(f"{pg_uri}?schema=crm")
    assert pg_server.execute("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'crm'",
                             dbname=db) == [("customers",)]
    with pytest.raises(dfsync.errors.WorkspaceError, match="no dfsync workspace"):
        dfsync.Workspace(f"{pg_uri}?schema=nothing_here", create=False)
    assert pg_server.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'nothing_here'",
                             dbname=db) == [(0,)]


def test_an_unreachable_server_is_workspace_busy_with_a_clear_message(pg_server):
    with __import__("socket").socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(dfsync.errors.WorkspaceBusy) as info:
        dfsync.Workspace(f"postgresql://dfsync@127.0.0.1:{port}/db?schema=ws", busy_timeout=0.5)
    assert time.monotonic() - start < 30
    msg = str(info.value)
    assert "workspace server unreachable" in msg and f"127.0.0.1:{port}/db (schema ws)" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no driver traceback under it


def test_the_password_is_resolved_at_connect_time_and_never_shown(pg_server, monkeypatch, tmp_path):
    pw = "pw-" + uuid.uuid4().hex
    db = pg_server.new_database().rsplit("/", 1)[1]
    verb = "ALTER" if pg_server.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}'") else "CREATE"
    pg_server.execute(f"{verb} ROLE {PASSWORD_ROLE} WITH LOGIN PASSWORD '{pw}'")
    pg_server.execute(f'ALTER DATABASE "{db}" OWNER TO {PASSWORD_ROLE}')
    target = f"postgresql://{PASSWORD_ROLE}:env:DFSYNC_TEST_WS_PW@127.0.0.1:{pg_server.port}/{db}?schema=ops"
    # not set: a ConfigError naming the variable, nothing opened
    monkeypatch.delenv("DFSYNC_TEST_WS_PW", raising=False)
    with pytest.raises(dfsync.errors.ConfigError, match="DFSYNC_TEST_WS_PW"):
        dfsync.Workspace(target)
    # wrong: refused by the server, the error shows neither password
    monkeypatch.setenv("DFSYNC_TEST_WS_PW", "wrong-" + pw)
    with pytest.raises(dfsync.errors.WorkspaceError) as info:
        dfsync.Workspace(target, busy_timeout=1)
    assert "password" in str(info.value) and pw not in str(info.value) and not isinstance(
        info.value, dfsync.errors.WorkspaceBusy)
    monkeypatch.setenv("DFSYNC_TEST_WS_PW", pw)
    ws = dfsync.Workspace(target)
    sync = _sync(ws, tmp_path)
    rid = ws.store.create_run(sync.id, 1, "manual")
    ws.store.transition_run(rid, RunStatus.FAILED, "for the test", error="x")
    shown = [repr(ws), ws.path, ws._repr_html_(), repr(ws.store), str(ws.syncs().to_dicts()),
             str(ws.runs().to_dicts()), str(sync.events().to_dicts())]
    assert ws.path == target and all(pw not in s for s in shown)
    # a literal password works in this process and is kept out of the path too
    lit = dfsync.Workspace(target.replace("env:DFSYNC_TEST_WS_PW", pw))
    assert pw not in lit.path and pw not in repr(lit) and lit.syncs().height == 1
    lit.close()
    ws.close()
    # the whole schema, dumped: no password anywhere in it
    pg_dump = shutil.which("pg_dump") or next(
        (p for p in (f"/usr/lib/postgresql/{v}/bin/pg_dump" for v in (16, 15, 14)) if os.path.exists(p)), None)
    assert pg_dump, "pg_dump not found"
    dump = subprocess.run([pg_dump, "--schema=ops", f"postgresql://dfsync@127.0.0.1:{pg_server.port}/{db}"],
                          capture_output=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    assert b"CREATE TABLE ops.syncs" in dump.stdout and b"run created" in dump.stdout
    assert pw.encode() not in dump.stdout


def test_claim_next_run_is_a_compare_and_set_across_handles(pg_uri, tmp_path):
    from datetime import datetime, timedelta, timezone

    target = f"{pg_uri}?schema={_schema()}"
    one, two = dfsync.Workspace(target), dfsync.Workspace(target)
    sync = _sync(one, tmp_path)
    due = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    assert one.store.claim_next_run(sync.id, None, due)
    nxt = due + timedelta(hours=1)
    assert one.store.claim_next_run(sync.id, due, nxt)
    assert not two.store.claim_next_run(sync.id, due, nxt + timedelta(hours=1))  # already claimed
    assert two.sync("s").next_run_at == nxt


RACER = r"""
import os, sys, time, pathlib
import dfsync
from dfsync.states import RunStatus
target, rounds, me, other, box = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], pathlib.Path(sys.argv[5])
ws = dfsync.Workspace(target)
sid = ws.sync("s").id

def wait(p):
    while not p.exists():
        time.sleep(0.001)

for i in range(rounds):
    wait(box / f"go-{i}")
    try:
        rid = ws.store.create_run(sid, 1, "manual")
    except dfsync.errors.SyncAlreadyRunning as exc:
        (box / f"att-{i}-{me}").write_text("lost " + str(exc))
        continue
    (box / f"att-{i}-{me}").write_text(f"won {rid}")
    wait(box / f"att-{i}-{other}")  # hold the run until the other process has tried
    ws.store.transition_run(rid, RunStatus.QUERYING)
    ws.store.transition_run(rid, RunStatus.FAILED, "round over", error="round over")
    (box / f"end-{i}").write_text("")
"""


def test_the_same_sync_raced_from_two_processes_gets_one_run_per_round(pg_uri, tmp_path):
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    _sync(ws, tmp_path)
    box = tmp_path / "box"
    box.mkdir()
    rounds = 12
    procs = [subprocess.Popen([sys.executable, "-c", RACER, target, str(rounds), me, other, str(box)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    try:
        for i in range(rounds):
            (box / f"go-{i}").write_text("")
            deadline = time.monotonic() + 120
            while not ((box / f"end-{i}").exists() and (box / f"att-{i}-a").exists()
                       and (box / f"att-{i}-b").exists()):
                assert time.monotonic() < deadline, [p.poll() for p in procs]
                assert all(p.poll() in (None, 0) for p in procs), [p.communicate() for p in procs]
                time.sleep(0.005)
            results = sorted((box / f"att-{i}-{w}").read_text() for w in "ab")
            assert [r.split()[0] for r in results] == ["lost", "won"], results
            lost = results[0]
            won_id = results[1].split()[1]
            assert f"run {won_id} of this sync" in lost and "in process" in lost and " on " in lost, lost
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    # one run per round, each with its own events; the loser wrote nothing
    assert ws.store.run_count(ws.sync("s").id) == rounds
    created = ws.sync("s").events().filter(pl.col("detail").str.starts_with("run created"))
    assert created.height == rounds
    assert ws.runs()["status"].to_list() == ["failed"] * rounds
    ws.close()


def test_a_run_whose_owner_process_died_is_recovered_from_another_process(pg_uri, tmp_path):
    """The owner's session ends with its process: its sync lock is free, so any process (on any host)
    moves the run per STATES.md."""
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    sync = _sync(ws, tmp_path)
    code = ("import sys, os, dfsync\nfrom dfsync.states import RunStatus\n"
            "ws = dfsync.Workspace(sys.argv[1])\nrid = ws.store.create_run(ws.sync('s').id, 1, 'manual')\n"
            "ws.store.transition_run(rid, RunStatus.QUERYING)\nws.store.transition_run(rid, RunStatus.QUEUED)\n"
            "ws.store.transition_run(rid, RunStatus.IN_PROGRESS)\nprint(rid, flush=True)\nos._exit(0)\n")
    p = subprocess.run([sys.executable, "-c", code, target], capture_output=True, text=True, timeout=120,
                       env=child_env())
    assert p.returncode == 0, p.stderr
    rid = int(p.stdout.split()[0])
    # the row says in_progress, owned by another process under another token: we cannot see its pid,
    # but its session (and the sync lock with it) is gone
    ws.store.set_run_fields(rid, owner_host="some-other-host")
    moved = ws.recover()
    assert moved == [(rid, "in_progress", "paused")]
    assert ws.run(rid).status == "paused"
    ws.store.claim_run(rid, sync.id)  # any process may resume it now
    ws.store.transition_run(rid, RunStatus.IN_PROGRESS)
    # while this process owns it, another store (another session) cannot start a run of the sync
    other = dfsync.store.open_store(target)
    with pytest.raises(dfsync.errors.SyncAlreadyRunning, match=f"run {rid} of this sync is in_progress"):
        other.create_run(sync.id, 1, "manual")
    ws.store.transition_run(rid, RunStatus.FAILED, "done", error="done")
    other.close()
    ws.close()


def test_duckdb_is_still_the_default(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "w.duckdb"))
    assert type(ws.store).__name__ == "Store"
    ws.close()
    duckdb.connect(str(tmp_path / "w.duckdb")).close()

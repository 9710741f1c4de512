"""The workspace on PostgreSQL: schemas, migrations, the password, outages, one run per sync.

Real server (tests/plugins/postgres.py), real processes; behaviour shared with the DuckDB
workspace is tested by the modules that run on both stores (``ws_target``).
"""

from __future__ import annotations

import json
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


def test_the_public_frames_have_the_same_columns_and_types_on_both_stores(pg_uri, tmp_path):
    # sync.runs()["duration_s"] was a Decimal(38, 3) on PostgreSQL and a float on DuckDB
    # (to_numpy() gave an object array; a frame of both stores' runs would not concat)
    frames = []
    for ws in (dfsync.Workspace(f"{pg_uri}?schema={_schema()}"), dfsync.Workspace(str(tmp_path / "ws.duckdb"))):
        sync = _sync(ws, tmp_path, name=f"s{len(frames)}")
        run = sync.run(progress=False)
        assert run.status == "success", run.error
        frames.append({"runs": sync.runs(), "records": run.records(), "delivered": sync.delivered(),
                       "validation": run.validation()})
        ws.close()
    pg, duck = frames
    for name in pg:
        # datetimes too: UTC on both, spelt alike (DuckDB gave the machine's zone, e.g. 'Etc/UTC'
        # or 'Europe/Berlin', where PostgreSQL gives 'UTC': the frames would not concat)
        assert pg[name].schema == duck[name].schema, name
        assert pl.concat([pg[name], duck[name]]).height == pg[name].height + duck[name].height
    assert pg["runs"]["duration_s"].dtype == pl.Float64
    assert pg["runs"]["started_at"].dtype == pl.Datetime("us", "UTC")


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


def test_a_server_restart_between_calls_is_ridden_out_and_a_stopped_server_is_busy(pg_server, pg_uri, tmp_path):
    ws = dfsync.Workspace(f"{pg_uri}?schema={_schema()}", busy_timeout=1)
    _sync(ws, tmp_path)
    try:
        pg_server.restart()
        assert ws.syncs()["name"].to_list() == ["s"]  # the dropped connection is replaced
        pg_server.stop()
        with pytest.raises(dfsync.errors.WorkspaceBusy, match="workspace server unreachable"):
            ws.syncs()
        with pytest.raises(dfsync.errors.WorkspaceBusy, match="did not answer for"):
            ws.sync("s")
    finally:
        pg_server.start()
    assert ws.sync("s").name == "s"
    ws.close()


@pytest.fixture
def role_db(pg_server) -> tuple[str, str]:
    """(database, password): a fresh database owned by the role that must give its password."""
    pw = "pw-" + uuid.uuid4().hex
    db = pg_server.new_database().rsplit("/", 1)[1]
    verb = "ALTER" if pg_server.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{PASSWORD_ROLE}'") else "CREATE"
    pg_server.execute(f"{verb} ROLE {PASSWORD_ROLE} WITH LOGIN PASSWORD '{pw}'")
    pg_server.execute(f'ALTER DATABASE "{db}" OWNER TO {PASSWORD_ROLE}')
    return db, pw


def test_the_password_is_resolved_at_connect_time_and_never_shown(pg_server, role_db, monkeypatch, tmp_path):
    db, pw = role_db
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
    dump = pg_server.dump_schema(f"postgresql://dfsync@127.0.0.1:{pg_server.port}/{db}", "ops")
    assert b"CREATE TABLE ops.syncs" in dump and b"run created" in dump
    assert pw.encode() not in dump


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
import sys, time, pathlib
import dfsync
target, rounds, me, other, box = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], pathlib.Path(sys.argv[5])
sync = dfsync.Workspace(target).sync("s")

def wait(p):
    while not p.exists():
        time.sleep(0.001)

for i in range(rounds):
    wait(box / f"go-{i}")
    won = []

    def hold(status, row, i=i):  # the winner's run stays on until the other process has tried
        if not won:
            won.append(row["id"])
            (box / f"att-{i}-{me}").write_text(f"won {row['id']}")
            wait(box / f"att-{i}-{other}")

    try:
        run = sync.run(progress=hold)
    except dfsync.errors.SyncAlreadyRunning as exc:
        (box / f"att-{i}-{me}").write_text("lost " + str(exc))
        continue
    assert run.status == "success", run.error
    (box / f"end-{i}").write_text(run.status.value)
"""


@pytest.mark.slow
def test_the_same_sync_raced_from_two_processes_gets_one_run_per_round(pg_uri, tmp_path):
    """2 processes x 50 rounds: in each round both run the sync; the winner holds its run until the
    loser has tried, so they truly overlap. Exactly one run per round; the loser gets
    SyncAlreadyRunning naming the run, its process and host, and leaves no rows: no run, no
    event, nothing in the destination (the source changes every round, so every run sends)."""
    rounds = 50
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    src = tmp_path / "src.parquet"
    dest = tmp_path / "d.duckdb"

    def version(i: int) -> pl.DataFrame:
        return pl.DataFrame({"id": list(range(100)), "v": [f"round {i}"] * 100})

    version(0).write_parquet(src)
    ws.create_sync("s", source=dfsync.sources.files(str(src)),
                   destination=dfsync.destinations.duckdb(str(dest), table="t"), primary_key="id")
    events_before = ws.sql("SELECT max(id) FROM events").item()
    box = tmp_path / "box"
    box.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, target, str(rounds), me, other, str(box)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    winners: list[int] = []
    try:
        for i in range(rounds):
            version(i).write_parquet(src)
            (box / f"go-{i}").write_text("")
            deadline = time.monotonic() + 120
            while not ((box / f"end-{i}").exists() and (box / f"att-{i}-a").exists()
                       and (box / f"att-{i}-b").exists()):
                assert time.monotonic() < deadline, [p.poll() for p in procs]
                assert all(p.poll() in (None, 0) for p in procs), [p.communicate() for p in procs]
                time.sleep(0.005)
            results = sorted((box / f"att-{i}-{w}").read_text() for w in "ab")
            assert [r.split()[0] for r in results] == ["lost", "won"], results
            lost, won_id = results[0], results[1].split()[1]
            assert f"run {won_id} of this sync is" in lost and "in process" in lost and " on " in lost, lost
            winners.append(int(won_id))
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    # one run per round, each the round's winner, each sent that round's version
    assert len(set(winners)) == rounds
    runs = ws.sql("SELECT id, status, sent, inserted, updated FROM runs ORDER BY id")
    assert runs["id"].to_list() == winners and runs["status"].to_list() == ["success"] * rounds
    assert runs["sent"].to_list() == [100] * rounds
    assert runs["inserted"].sum() == 100 and runs["updated"].sum() == 100 * (rounds - 1)
    # the losers wrote no event: every event since is a winner's run's, or the sync's note of its end
    ev = ws.sql("SELECT run_id, detail FROM events WHERE id > ? ORDER BY id", [events_before])
    assert set(ev["run_id"].drop_nulls().to_list()) == set(winners)
    assert ev.filter(pl.col("run_id").is_null())["detail"].to_list() == [f"run {w} success" for w in winners]
    # nor anything in the destination: its ledger holds the winners' runs only
    con = duckdb.connect(str(dest), read_only=True)
    try:
        keys = [k for (k,) in con.execute("SELECT DISTINCT run_key FROM _dfsync_batches").fetchall()]
        got = pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").to_arrow_table())
    finally:
        con.close()
    assert sorted(int(k.split("/")[1].split("@")[0]) for k in keys) == winners
    assert got.equals(version(rounds - 1))
    assert ws.sync("s").delivered().height == 100
    ws.close()


TWO_SYNCS = r"""
import sys, time, pathlib
import dfsync
target, name, box = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
other = "b" if name == "a" else "a"

def hold(status, row):  # once transferring, wait (at most 120 s) until the other sync transfers too
    if status == "in_progress" and not (box / name).exists():
        (box / name).write_text(str(row["id"]))
        deadline = time.monotonic() + 120
        while not (box / other).exists() and time.monotonic() < deadline:
            time.sleep(0.005)

run = dfsync.Workspace(target).sync(name).run(progress=hold)
print(run.status.value, run.counts["inserted"], flush=True)
"""


def test_two_processes_run_two_syncs_of_one_workspace_at_the_same_time(pg_uri, tmp_path):
    """Many writers: each run waits, mid-transfer, until the other is transferring too, and both
    finish with exact counters (with a lease on the workspace, one would wait for the other)."""
    target = f"{pg_uri}?schema={_schema()}"
    ws = dfsync.Workspace(target)
    for name, n in (("a", 3000), ("b", 2000)):
        pl.DataFrame({"id": list(range(n)), "v": [name] * n}).write_parquet(tmp_path / f"{name}.parquet")
        ws.create_sync(name, source=dfsync.sources.files(str(tmp_path / f"{name}.parquet")), batch_size=250,
                       destination=dfsync.destinations.duckdb(str(tmp_path / f"{name}.duckdb"), table="t"),
                       primary_key="id")
    box = tmp_path / "box"
    box.mkdir()
    procs = {name: subprocess.Popen([sys.executable, "-c", TWO_SYNCS, target, name, str(box)], env=child_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in "ab"}
    outs = {name: p.communicate(timeout=300) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outs[name][1]
    assert outs["a"][0].split() == ["success", "3000"] and outs["b"][0].split() == ["success", "2000"]
    # each run was in_progress before the other one ended: they overlapped
    ev = ws.sql("SELECT run_id, to_status, id FROM events WHERE kind = 'run' ORDER BY id")
    at = {(r["run_id"], r["to_status"]): r["id"] for r in ev.to_dicts()}
    ra, rb = ws.sync("a").last_run().id, ws.sync("b").last_run().id
    assert at[(ra, "in_progress")] < at[(rb, "success")] and at[(rb, "in_progress")] < at[(ra, "success")]
    assert ws.sync("a").delivered().height == 3000 and ws.sync("b").delivered().height == 2000
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


def test_the_cli_runs_a_sync_of_a_postgres_workspace_and_sql_speaks_postgresql(pg_server, role_db, monkeypatch,
                                                                                tmp_path, dfsync_cli):
    """--workspace takes the URI (password by env:NAME, resolved in the CLI's own process)."""
    db, pw = role_db
    target = f"postgresql://{PASSWORD_ROLE}:env:DFSYNC_TEST_CLI_PW@127.0.0.1:{pg_server.port}/{db}?schema=ops"
    monkeypatch.setenv("DFSYNC_TEST_CLI_PW", pw)
    pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}).write_parquet(tmp_path / "src.parquet")
    ws = dfsync.Workspace(target)
    ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "src.parquet")),
                   destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), primary_key="id")
    res = dfsync_cli("run", "s", "-w", target, "--json", DFSYNC_TEST_CLI_PW=pw)
    assert res.code == 0, res.err
    assert json.loads(res.out)["status"] == "success" and pw not in res.out + res.err
    listed = dfsync_cli("syncs", "-w", target, DFSYNC_TEST_CLI_PW=pw)
    assert listed.code == 0 and "s" in listed.out and pw not in listed.out + listed.err
    # ws.sql() is PostgreSQL: its functions, $n or ? placeholders
    assert ws.sql("SELECT inserted FROM runs WHERE sync_id = $1", [1]).item() == 3
    assert ws.sql("SELECT string_agg(status, ',' ORDER BY id) AS s FROM runs WHERE id = ?", [1]).item() == "success"
    # the CLI never creates a workspace: a schema without one is a usage error
    res = dfsync_cli("syncs", "-w", target.replace("schema=ops", "schema=nothing"), DFSYNC_TEST_CLI_PW=pw)
    assert res.code == 2 and "no dfsync workspace" in res.err and "Traceback" not in res.err
    ws.close()


def test_records_read_back_the_same_from_both_stores(pg_uri, tmp_path):
    """Kept records (every type a frame commonly has), the panels' samples and last sent values:
    a PostgreSQL workspace answers exactly as the DuckDB file does."""
    from datetime import date, datetime, timezone
    from decimal import Decimal

    import pyarrow as pa

    df = pl.DataFrame({
        "id": [1, 2, 3, 4], "name": ["a", "b ✓", None, "d"], "score": [1.5, float("nan"), None, -0.0],
        "ok": [True, False, None, True], "day": [date(2024, 1, 1), None, date(1999, 12, 31), date(2024, 2, 29)],
        "at": [datetime(2024, 1, 1, 12, tzinfo=timezone.utc), None, datetime(2024, 3, 1, tzinfo=timezone.utc),
               datetime(2000, 1, 1, tzinfo=timezone.utc)],
        "amount": [Decimal("1.10"), Decimal("-2.50"), None, Decimal("0.01")],
        "tags": [["x", "y"], [], None, ["z"]],
    })
    answers = []
    for target in (str(tmp_path / "ws.duckdb"), f"{pg_uri}?schema={_schema()}"):
        ws = dfsync.Workspace(target)
        sync = ws.create_sync("r", source=dfsync.sources.frame(df), primary_key="id", on_invalid="skip",
                              destination=dfsync.destinations.duckdb(str(tmp_path / f"d{len(answers)}.duckdb"), table="t"),
                              checks=[dfsync.checks.not_null("name")])
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["invalid"] == 1, run.error
        answers.append((
            run.records().sort("id"),
            ws.store.record_sample(sync.id, run.id, "invalid", check="name not_null"),
            ws.store.last_sent_values(sync.id, ["id"], pa.table({"id": [1, 2, 9]})).sort("id"),
            ws.store.checks_frame(run.id).drop("result"),
            sync.delivered().sort("id"),
        ))
        ws.close()
    from polars.testing import assert_frame_equal

    for duck, pg in zip(*answers, strict=True):
        assert duck.columns == pg.columns and duck.height == pg.height > 0
        # the same values; PostgreSQL's decimals come back as decimal(38, scale), its time zone as "UTC"
        assert_frame_equal(duck, pg.cast(duck.schema))


def test_duckdb_is_still_the_default(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "w.duckdb"))
    assert type(ws.store).__name__ == "Store"
    ws.close()
    duckdb.connect(str(tmp_path / "w.duckdb")).close()


def test_a_postgres_destination_never_writes_into_a_workspace_schema(pg_uri, tmp_path):
    """A PostgreSQL destination table in the schema of a PostgreSQL workspace (table='dfsync.events',
    or an unqualified table with the workspace in ?schema=public) replaced the workspace's events
    table: the run stayed in_progress and every later open of the workspace failed with the
    server's raw 'INSERT has more expressions than target columns'. The run fails before the
    destination's ledger or table is made, naming the schema; the workspace keeps working."""
    schema = _schema()
    ws = dfsync.Workspace(f"{pg_uri}?schema={schema}")
    df = pl.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    sync = ws.create_sync("x", source=df, destination=dfsync.destinations.postgres(pg_uri, table=f"{schema}.events"),
                          primary_key="id", destination_mode="replace")
    run = sync.run(progress=False)
    assert run.status == "failed" and f"the schema '{schema}' holds a dfsync workspace" in run.error
    ws.close()
    ws = dfsync.Workspace(f"{pg_uri}?schema={schema}")
    assert ws.syncs()["name"].to_list() == ["x"] and ws.sync("x").status == "failed"
    tables = ws.sql(f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'")["tablename"].to_list()
    assert "_dfsync_batches" not in tables and not any("replace" in t for t in tables)
    ok = ws.create_sync("y", source=df, destination=dfsync.destinations.postgres(pg_uri, table=f"{schema}_data.events"),
                        primary_key="id")
    assert ok.run(progress=False).status == "success"


def test_ws_sql_only_reads_in_postgresql_too(pg_uri, tmp_path):
    """On PostgreSQL ws.sql() runs in a read-only transaction: a write is refused (before the
    server, or by it when DuckDB's parser cannot read the statement) and a failing query is a
    WorkspaceQueryError with the server's message."""
    ws = dfsync.Workspace(f"{pg_uri}?schema={_schema()}")
    _sync(ws, tmp_path)
    assert ws.sql("SELECT name FROM syncs")["name"].to_list() == ["s"]
    with pytest.raises(dfsync.WorkspaceQueryError, match="only reads"):
        ws.sql("DELETE FROM events")
    # PostgreSQL-only syntax DuckDB cannot parse: the read-only transaction refuses the write
    with pytest.raises(dfsync.WorkspaceQueryError, match="read-only transaction"):
        ws.sql("DELETE FROM ONLY events")
    with pytest.raises(dfsync.WorkspaceQueryError, match="nope"):
        ws.sql("SELECT nope FROM syncs")
    assert ws.sql("SELECT count(*) AS n FROM events")["n"].item() >= 1
    assert ws.sync("s").status == "pending"
    ws.close()

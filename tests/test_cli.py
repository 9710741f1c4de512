"""The ``dfsync`` command, run as a real separate process on a workspace made from Python.

Syncs are defined here (like in a notebook), then operated with ``python -m dfsync`` in
another process: that is the persistence of definitions working end to end.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

import dfsync

from .plugins.processes import REPO, child_env

#: the commands on a workspace file and (-m slow) on a PostgreSQL workspace (--workspace postgresql://...)
#: the workspace file; a PostgreSQL workspace (slow) for a run, a status and a scheduler pass through the command line
WORKSPACE_STORES = ("duckdb",)
SLOW_WORKSPACE_STORES = ("postgres",)


@pytest.fixture
def ws_path(tmp_path, ws_target):
    return ws_target if ws_target.startswith("postgresql://") else str(tmp_path / ".dfsync" / "workspace.duckdb")


def _read_duckdb(path, table) -> pl.DataFrame:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return pl.from_arrow(con.sql(f"SELECT * FROM {table} ORDER BY 1").to_arrow_table())
    finally:
        con.close()


@pytest.fixture
def files_sync(tmp_path, ws_path):
    """A Parquet file -> DuckDB table sync, defined in this process and then closed."""
    src = tmp_path / "customers.parquet"
    pl.DataFrame({"id": [1, 2, 3], "name": ["ada", "bob", "cy"]}).write_parquet(src)
    warehouse = tmp_path / "warehouse.duckdb"
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("customers", source=dfsync.sources.files(str(src)),
                       destination=dfsync.destinations.duckdb(str(warehouse), table="customers"),
                       primary_key="id", destination_mode="mirror", schedule="every 2 hours")
    return src, warehouse


def _clean_error(res, *needles: str) -> None:
    """One readable line on stderr, no traceback."""
    assert "Traceback" not in res.err, res.err
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    for n in needles:
        assert n in lines[0], lines[0]


def test_workspace_given_before_the_command(files_sync, ws_path, dfsync_cli) -> None:
    """`dfsync --workspace WS run NAME` (the form the docs show for a shared workspace) as well as
    after the command; a command's own --workspace wins over the one before it."""
    _, warehouse = files_sync
    res = dfsync_cli("--workspace", ws_path, "run", "customers", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["counts"]["inserted"] == 3
    assert _read_duckdb(warehouse, "customers").height == 3
    res = dfsync_cli("-w", "elsewhere.duckdb", "runs", "customers", "--workspace", ws_path, "--json")
    assert res.code == 0, res.err
    assert [r["status"] for r in json.loads(res.out)] == ["success"]
    res = dfsync_cli("--workspace", "elsewhere.duckdb", "runs", "customers")
    assert res.code == 2
    _clean_error(res, "no workspace at elsewhere.duckdb")


# ---------------------------------------------------------------------- run from another process
@pytest.mark.workspaces("duckdb", "postgres")
def test_run_a_files_sync_from_the_cli(files_sync, ws_path, dfsync_cli) -> None:
    src, warehouse = files_sync
    res = dfsync_cli("run", "customers", "--workspace", ws_path, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["status"] == "success" and out["counts"]["inserted"] == 3 and out["counts"]["sent"] == 3
    assert _read_duckdb(warehouse, "customers")["name"].to_list() == ["ada", "bob", "cy"]
    # the source changes: the next CLI run sends only the difference
    pl.DataFrame({"id": [1, 2, 4], "name": ["ada", "BOB", "dee"]}).write_parquet(src)
    res = dfsync_cli("run", "customers", "--workspace", ws_path)
    assert res.code == 0, res.err
    assert "success" in res.out and "inserted=1 updated=1 deleted=1 unchanged=1" in res.out
    assert "row/s" not in res.err  # no progress bar when stderr is not a terminal
    assert _read_duckdb(warehouse, "customers").rows() == [(1, "ada"), (2, "BOB"), (4, "dee")]
    with dfsync.Workspace(ws_path) as ws:
        assert ws.sync("customers").runs()["trigger"].to_list() == ["cli", "cli"]


def test_run_a_duckdb_query_sync_into_parquet_from_the_cli(tmp_path, ws_path, dfsync_cli) -> None:
    pl.DataFrame({"id": range(50), "login": [f"user{i}" for i in range(50)]}).write_parquet(tmp_path / "users.parquet")
    lake = tmp_path / "lake" / "users"
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("users", source=dfsync.sources.duckdb_query(
            f"SELECT * FROM read_parquet('{tmp_path / 'users.parquet'}') WHERE id % 2 = 0"),
            destination=dfsync.destinations.parquet(str(lake)), primary_key="id")
    res = dfsync_cli("run", "users", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["counts"]["inserted"] == 25
    got = pl.read_parquet(lake / "data.parquet").sort("id")
    assert got["id"].to_list() == list(range(0, 50, 2))
    assert got["login"][1] == "user2"


def test_run_a_duckdb_database_query_sync_from_the_cli(tmp_path, ws_path, dfsync_cli) -> None:
    db = tmp_path / "app.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE users AS SELECT range AS id, 'user' || range AS login FROM range(50)")
    con.close()
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("users", source=dfsync.sources.duckdb_query("SELECT * FROM users", database=str(db)),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="users"),
                       primary_key="id")
    res = dfsync_cli("run", "users", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    assert _read_duckdb(tmp_path / "w.duckdb", "users").height == 50


def test_preview_sends_nothing(files_sync, ws_path, dfsync_cli) -> None:
    _, warehouse = files_sync
    res = dfsync_cli("run", "customers", "--preview", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["counts"]["insert"] == 3
    assert sorted(r["id"] for r in out["changes"]) == [1, 2, 3]
    assert {r["_action"] for r in out["changes"]} == {"insert"}
    text = dfsync_cli("run", "customers", "--preview", "-w", ws_path)
    assert text.code == 0 and "nothing sent" in text.out and "insert=3" in text.out
    assert not warehouse.exists()
    with dfsync.Workspace(ws_path) as ws:
        assert ws.sync("customers").runs().height == 0


def test_preview_limit_0_shows_every_change_and_limit_without_preview_is_refused(files_sync, ws_path,
                                                                                dfsync_cli) -> None:
    """`--limit 0` means all for runs and records, but `run --preview --limit 0` printed 'no changes' beside
    insert=3; a cut list did not say so; `run NAME --limit 5` silently sent every changed row."""
    _, warehouse = files_sync
    res = dfsync_cli("run", "customers", "--preview", "--limit", "0", "-w", ws_path)
    assert res.code == 0 and "no changes" not in res.out and res.out.count("| insert") == 3, res.out
    res = dfsync_cli("run", "customers", "--preview", "--limit", "2", "-w", ws_path)
    assert "the first 2 changed rows of 3 (--limit 0 shows all)" in res.out and res.out.count("| insert") == 2
    res = dfsync_cli("run", "customers", "--limit", "1", "-w", ws_path)
    assert res.code == 2 and "--limit goes with --preview" in res.err and "Traceback" not in res.err, res.err
    assert not warehouse.exists()  # nothing was sent


def test_purge_says_why_nothing_is_purged_and_speaks_on_an_empty_workspace(tmp_path, ws_path, dfsync_cli,
                                                                           monkeypatch) -> None:
    """`dfsync purge` printed '0 records purged' for a sync with no record_retention (nothing ever
    expires there) without saying so, and nothing at all on a workspace without syncs."""
    monkeypatch.delenv("DFSYNC_RECORD_RETENTION", raising=False)
    dfsync.Workspace(ws_path).close()
    res = dfsync_cli("purge", "-w", ws_path)
    assert res.code == 0 and res.out.strip() == "no syncs in this workspace yet", res.out
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "x.parquet")
    with dfsync.Workspace(ws_path) as ws:
        for name, kept in (("kept", None), ("aged", "30 days")):
            ws.create_sync(name, source=dfsync.sources.files(str(tmp_path / "x.parquet")),
                           destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table=name),
                           primary_key="id", record_retention=kept)
    res = dfsync_cli("purge", "-w", ws_path)
    assert "kept: 0 records purged (no record_retention: all kept; see --older-than)" in res.out, res.out
    assert "aged: 0 records purged\n" in res.out
    assert "no record_retention" not in dfsync_cli("purge", "--older-than", "2 days", "-w", ws_path).out


def test_a_failed_run_exits_1_and_its_records_are_listed(tmp_path, ws_path, dfsync_cli) -> None:
    src = tmp_path / "orders.csv"
    pl.DataFrame({"id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}).write_csv(src)
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("orders", source=dfsync.sources.files(str(src)), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="orders"))
    pl.DataFrame({"id": [1, None, 3, 3], "amount": [1.0, 2.0, 3.0, 4.0]}).write_csv(src)
    res = dfsync_cli("run", "orders", "-w", ws_path)
    assert res.code == 1
    assert "failed" in res.out and "error:" in res.out
    # where the offending rows are is said as the command that lists them, not as run.records(...)
    # (the run's id: in `dfsync runs` a later run may be the sync's last)
    assert "the offending rows are kept as `dfsync records 1 --status invalid`" in res.out, res.out
    res = dfsync_cli("runs", "orders", "-w", ws_path, "--json")
    assert "`dfsync records 1 --status invalid`" in res.out and "run.records(" not in res.out, res.out
    # the same data with on_invalid="skip": the run succeeds and keeps the invalid rows
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("orders", source=dfsync.sources.files(str(src)), primary_key="id", on_invalid="skip",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="orders"))
    res = dfsync_cli("run", "orders", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    run_id = json.loads(res.out)["run_id"]
    res = dfsync_cli("records", str(run_id), "--status", "invalid", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    recs = json.loads(res.out)
    assert sorted((r["id"], r["amount"]) for r in recs if r["id"] is not None) == [(3, 3.0), (3, 4.0)]
    assert {r["_status"] for r in recs} == {"invalid"} and len(recs) == 3
    res = dfsync_cli("records", str(run_id), "--status", "failed", "-w", ws_path)
    assert res.code == 0 and "no failed records" in res.out
    # a table cut short by --limit said nothing of the records it left out
    res = dfsync_cli("records", str(run_id), "--status", "invalid", "--limit", "2", "-w", ws_path)
    assert res.code == 0 and res.out.count("| invalid ") == 2, res.out
    assert f"the first 2 invalid records of run {run_id}; there are more (--limit 0 shows them all)" in res.out
    res = dfsync_cli("records", str(run_id), "--status", "bogus", "-w", ws_path)
    assert res.code == 2
    _clean_error(res, "unknown record status")


def test_records_show_a_naive_time_as_it_is_and_an_aware_one_in_utc(tmp_path, ws_path, dfsync_cli) -> None:
    """`dfsync records` printed a naive timestamp of the user's data as '2024-01-02 09:30:00Z', an
    instant in UTC it never said it was; an aware one is shown in UTC as before. With --json a NaN
    or infinite float was written as a bare NaN / Infinity, which is no JSON (jq and JavaScript
    refuse the whole output); it is the text "NaN" / "Infinity" now. Bytes were written as a Python
    repr (b'\\x00\\xff'); they are hex, PostgreSQL's bytea text form (\\x00ff)."""
    df = pl.DataFrame({"id": [1, 1], "naive": [datetime(2024, 1, 2, 9, 30)] * 2,
                       "aware": [datetime(2024, 1, 2, 9, 30, tzinfo=timezone.utc)] * 2,
                       "f": [float("nan"), float("-inf")], "b": [b"\x00\xff", b"ab"]}).with_columns(
        pl.col("aware").dt.convert_time_zone("Europe/Paris"))
    src = tmp_path / "t.parquet"
    df.write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("t", source=dfsync.sources.files(str(src)), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"))
    assert dfsync_cli("run", "t", "-w", ws_path).code == 1  # a repeated key: two invalid records
    res = dfsync_cli("records", "t", "--status", "invalid", "-w", ws_path)
    assert res.code == 0, res.err
    rows = [ln for ln in res.out.splitlines() if ln.startswith("| 1 ")]
    assert len(rows) == 2 and all("| 2024-01-02 09:30:00 | 2024-01-02 09:30:00Z |" in r for r in rows), res.out
    res = dfsync_cli("records", "t", "--status", "invalid", "-w", ws_path, "--json")
    assert res.code == 0, res.err

    def no_constant(name):
        raise AssertionError(f"{name} is not JSON")
    out = json.loads(res.out, parse_constant=no_constant)
    assert sorted(r["f"] for r in out) == ["-Infinity", "NaN"]
    assert sorted(r["b"] for r in out) == ["\\x00ff", "\\x6162"], res.out  # bytes in hex, as PostgreSQL writes bytea; not b'...'


def test_runs_and_syncs_list_what_happened(files_sync, ws_path, dfsync_cli) -> None:
    assert dfsync_cli("run", "customers", "-w", ws_path).code == 0
    res = dfsync_cli("runs", "customers", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    runs = json.loads(res.out)
    assert [(r["status"], r["inserted"], r["trigger"]) for r in runs] == [("success", 3, "cli")]
    text = dfsync_cli("runs", "customers", "-w", ws_path)
    assert text.code == 0 and "| success" in text.out and "older ones" not in text.out
    assert dfsync_cli("run", "customers", "-w", ws_path).code == 0  # a history cut short by --limit says so
    text = dfsync_cli("runs", "customers", "--limit", "1", "-w", ws_path)
    assert text.code == 0 and text.out.count("| success") == 1, text.out
    assert "the newest 1 run of sync 'customers'; there are older ones (--limit 0 shows them all)" in text.out
    res = dfsync_cli("syncs", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    (row,) = json.loads(res.out)
    assert row["name"] == "customers" and row["schedule"] == "every 2 hours"
    assert row["last_run_status"] == "success" and row["source"] == "files" and row["destination"] == "duckdb"
    nxt = datetime.fromisoformat(row["next_run_at"])
    assert nxt > datetime.now(timezone.utc) + timedelta(minutes=90)
    text = dfsync_cli("syncs", "-w", ws_path)
    assert "customers" in text.out and "every 2 hours" in text.out
    status = dfsync_cli("status", "customers", "-w", ws_path)
    assert status.code == 0 and "every 2 hours" in status.out and "next run" in status.out
    every = dfsync_cli("status", "-w", ws_path, "--json")  # no name: every sync, as `dfsync syncs`
    assert every.code == 0 and [r["name"] for r in json.loads(every.out)] == ["customers"]


@pytest.mark.workspaces("duckdb", "postgres")
def test_status_shows_the_cursor_of_an_incremental_sync(tmp_path, ws_path, dfsync_cli) -> None:
    src = tmp_path / "events.parquet"
    at = datetime(2013, 6, 30, 23, 0, tzinfo=timezone.utc)
    pl.DataFrame({"id": [1, 2], "ts": [at - timedelta(hours=5), at]}).write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("events", source=dfsync.sources.files(str(src)),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="events"),
                       primary_key="id", sync_mode="incremental", cursor_field="ts")
    before = dfsync_cli("status", "events", "-w", ws_path)
    assert before.code == 0 and "ts: nothing delivered yet" in before.out, before.out
    assert json.loads(dfsync_cli("status", "events", "-w", ws_path, "--json").out)["cursor"] is None
    assert dfsync_cli("run", "events", "-w", ws_path).code == 0
    res = dfsync_cli("status", "events", "-w", ws_path, "--json")
    assert res.code == 0 and datetime.fromisoformat(json.loads(res.out)["cursor"]) == at
    text = dfsync_cli("status", "events", "-w", ws_path)
    assert f"ts = {at.isoformat()}" in text.out, text.out
    assert dfsync_cli("reset", "events", "-w", ws_path).code == 0
    assert "ts: nothing delivered yet" in dfsync_cli("status", "events", "-w", ws_path).out


def test_workspace_from_the_environment_and_default_path(files_sync, ws_path, dfsync_cli, tmp_path) -> None:
    res = dfsync_cli("syncs", "--json", DFSYNC_WORKSPACE=ws_path)
    assert res.code == 0 and json.loads(res.out)[0]["name"] == "customers"
    if ws_path.startswith("postgresql://"):
        return  # DFSYNC_WORKSPACE takes the URI; the default path is a file's
    # cwd is tmp_path and the workspace is at ./.dfsync/workspace.duckdb: the default finds it
    assert ws_path == str(tmp_path / ".dfsync" / "workspace.duckdb")
    res = dfsync_cli("syncs", "--json")
    assert res.code == 0 and json.loads(res.out)[0]["name"] == "customers"


def test_enable_and_disable(files_sync, ws_path, dfsync_cli) -> None:
    res = dfsync_cli("disable", "customers", "-w", ws_path, "--json")
    assert res.code == 0 and json.loads(res.out) == {"name": "customers", "status": "disabled"}
    res = dfsync_cli("run", "customers", "-w", ws_path)
    assert res.code == 2
    _clean_error(res, "disabled", "dfsync enable customers")
    res = dfsync_cli("enable", "customers", "-w", ws_path)
    assert res.code == 0 and "customers" in res.out
    assert dfsync_cli("run", "customers", "-w", ws_path).code == 0


def test_abort_gives_up_a_paused_run_and_messages_name_commands(files_sync, ws_path) -> None:
    """`dfsync reset` while a run was paused told a terminal user to call run.abort(), which the command
    line had no command for: `dfsync abort NAME` moves the sync's running or paused run to failed, and
    what the command prints names the commands to type (`dfsync run NAME` resumes it), not Python calls."""
    from typer.testing import CliRunner

    from dfsync.cli import app
    from dfsync.states import RunStatus

    with dfsync.Workspace(ws_path) as ws:  # a run left paused (as by Ctrl-C mid-transfer)
        sync = ws.sync("customers")
        rid = ws.store.create_run(sync.id, 1, "manual")
        for to in (RunStatus.QUERYING, RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.PAUSED):
            ws.store.transition_run(rid, to)
    cli = CliRunner()
    res = cli.invoke(app, ["reset", "customers", "-w", ws_path])
    assert res.exit_code == 1
    assert ("finish it (`dfsync run customers` resumes it) or abort it (`dfsync abort customers`)"
            in res.output), res.output
    assert "run.abort()" not in res.output and "sync.run()" not in res.output
    assert "Give up a sync's running or paused run" in " ".join(cli.invoke(app, ["abort", "--help"]).output.split())
    res = cli.invoke(app, ["abort", "customers", "-w", ws_path, "--json"])
    assert res.exit_code == 0 and json.loads(res.output) == {"run_id": rid, "sync": "customers", "was": "paused",
                                                             "status": "failed"}, res.output
    res = cli.invoke(app, ["abort", "customers", "-w", ws_path])
    assert res.exit_code == 2 and f"no running or paused run to abort (its last run, {rid}, ended failed)" in res.output
    with dfsync.Workspace(ws_path) as ws:
        assert ws.run(rid).error == "aborted by the user" and ws.sync("customers").status == "failed"
    res = cli.invoke(app, ["reset", "customers", "-w", ws_path])
    assert res.exit_code == 0, res.output
    # options named as typed, not as the keyword arguments they are passed as (Sync.runs(limit=-1))
    res = cli.invoke(app, ["runs", "customers", "--limit", "-1", "-w", ws_path])
    assert res.exit_code == 2 and "--limit -1: give a whole number of rows >= 0 (0: all)" in res.output, res.output
    res = cli.invoke(app, ["purge", "--older-than", "soon", "-w", ws_path])
    assert res.exit_code == 2 and "--older-than 'soon': write it as a number and a unit" in res.output, res.output


# ---------------------------------------------------------------------- usage errors
def test_usage_errors_exit_2_with_one_line(files_sync, ws_path, dfsync_cli, tmp_path) -> None:
    res = dfsync_cli("run", "nope", "-w", ws_path)
    assert res.code == 2
    _clean_error(res, "no sync named 'nope'", "customers")
    res = dfsync_cli("runs", "customers", "-w", str(tmp_path / "missing.duckdb"))
    assert res.code == 2
    _clean_error(res, "no workspace at")
    assert not (tmp_path / "missing.duckdb").exists()  # a typo does not create a workspace
    res = dfsync_cli("records", "999", "-w", ws_path)
    assert res.code == 2
    _clean_error(res, "no run with id 999")
    assert dfsync_cli("run", "-w", ws_path).code == 2  # missing NAME: click's usage error
    assert dfsync_cli("frobnicate").code == 2
    bad = tmp_path / "not-a-workspace.duckdb"
    bad.write_bytes(b"hello, this is not DuckDB" * 100)
    res = dfsync_cli("syncs", "-w", str(bad))
    assert res.code == 2
    _clean_error(res, "not a DuckDB workspace")


def test_a_session_only_sync_cannot_run_from_the_cli(tmp_path, ws_path, dfsync_cli) -> None:
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("frame_sync", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"))
    res = dfsync_cli("run", "frame_sync", "-w", ws_path)
    assert res.code == 2
    _clean_error(res, "in-memory frame")
    # due on a schedule, a cron's `dfsync scheduler --once` said "nothing due" and exited 0
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("frame_sync", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), primary_key="id",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"),
                       schedule="every hour", if_exists="update")
    res = dfsync_cli("scheduler", "--once", "-w", ws_path)
    assert res.code == 1 and "nothing due" not in res.out, res.out
    assert "sync 'frame_sync': not run, skipped: sync 'frame_sync' can only run in the Python session" in res.out
    _make_due(ws_path, "frame_sync")  # --json printed [] (the sync was in the exit code and stderr only)
    res = dfsync_cli("scheduler", "--once", "-w", ws_path, "--json")
    (entry,) = json.loads(res.out)
    assert res.code == 1 and entry["sync"] == "frame_sync" and entry["status"] == "not_started", res.out
    assert entry["run_id"] is None and entry["problem"] is True
    assert entry["error"].startswith("skipped: sync 'frame_sync' can only run in the Python session")
    status = dfsync_cli("status", "frame_sync", "-w", ws_path, "--json")
    assert json.loads(status.out)["session_only"] is True
    with dfsync.Workspace(ws_path) as ws:
        assert ws.sync("frame_sync").runs().height == 0
        # a literal token is kept in memory only: another process cannot build the destination, and
        # `dfsync status` (like the sync's repr there) stopped half-way with exit 2 on that
        pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "one.parquet")
        ws.create_sync("http_sync", source=dfsync.sources.files(str(tmp_path / "one.parquet")), primary_key="id",
                       destination=dfsync.destinations.http("http://127.0.0.1:9/api", auth="tok-LITERAL-123"))
    status = dfsync_cli("status", "http_sync", "-w", ws_path)
    assert status.code == 0, status.err
    assert "destination  http(http://127.0.0.1:9/api) [upsert]" in status.out and "session-only" in status.out
    assert "tok-LITERAL-123" not in status.out + status.err


# ---------------------------------------------------------------------- scheduler
def _make_due(ws_path: str, name: str) -> None:
    with dfsync.Workspace(ws_path) as ws:
        ws.store.set_sync_fields(ws.sync(name).id, next_run_at=datetime.now(timezone.utc) - timedelta(hours=5))


@pytest.mark.workspaces("duckdb", "postgres")
def test_scheduler_once_runs_what_is_due(files_sync, ws_path, dfsync_cli) -> None:
    """A sync that never ran is due at the first pass (a `dfsync scheduler --once` from cron said
    "nothing due" for the sync's first interval); then it is due an interval after its run."""
    _, warehouse = files_sync
    res = dfsync_cli("scheduler", "--once", "-w", ws_path, "--json")
    assert res.code == 0, res.err
    (run,) = json.loads(res.out)
    assert run["sync"] == "customers" and run["status"] == "success"
    assert _read_duckdb(warehouse, "customers").height == 3
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.sync("customers")
        assert sync.runs()["trigger"].to_list() == ["schedule"]
        assert sync.next_run_at > datetime.now(timezone.utc) + timedelta(minutes=90)
    res = dfsync_cli("scheduler", "--once", "-w", ws_path)
    assert res.code == 0 and "nothing due" in res.out
    _make_due(ws_path, "customers")
    assert [r["status"] for r in json.loads(dfsync_cli("scheduler", "--once", "-w", ws_path, "--json").out)] \
        == ["success"]


def test_the_scheduler_log_and_a_run_error_name_commands_not_python_calls(tmp_path, ws_path, dfsync_cli) -> None:
    """A scheduled run that failed logged its error as Python tells it ('run sync.reset() to forget
    the cursor'); from `dfsync scheduler` the log and the run's line name the command."""
    src = tmp_path / "seq.parquet"
    pl.DataFrame({"id": [1, 2], "seq": [1, 2]}).write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.create_sync("seq", source=dfsync.sources.files(str(src)), primary_key="id", schedule="every hour",
                              destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"),
                              sync_mode="incremental", cursor_field="seq")
        assert sync.run(progress=False).status == "success"
    pl.DataFrame({"id": [1, 2], "seq": ["1", "2"]}).write_parquet(src)  # the cursor column is text now
    _make_due(ws_path, "seq")
    res = dfsync_cli("scheduler", "--once", "-w", ws_path)
    assert res.code == 1
    assert "run `dfsync reset seq` to forget the cursor" in res.err, res.err  # the log
    assert "error: cursor_field 'seq' is String" in res.out and "`dfsync reset seq`" in res.out, res.out
    assert "sync.reset()" not in res.out + res.err
    # a `dfsync run` under on_invalid='warn' warned '...; run.validation() has the details'
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("warned", source=dfsync.sources.files(str(src)), primary_key="id", on_invalid="warn",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "w2.duckdb"), table="t"),
                       checks=[dfsync.checks.in_set("seq", ["1"])])
    res = dfsync_cli("run", "warned", "-w", ws_path)
    assert res.code == 0 and "seq in_set: 1 row; `dfsync status warned` lists them" in res.err, res.err
    assert "run.validation()" not in res.err


def test_scheduler_in_the_foreground_stops_on_sigterm(files_sync, ws_path, spawn) -> None:
    _make_due(ws_path, "customers")
    proc = spawn("scheduler", "--poll", "0.2", "-w", ws_path)
    deadline = time.monotonic() + 120
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        with dfsync.Workspace(ws_path) as ws:
            runs = ws.sync("customers").runs()
        if runs.height and runs["status"][0] == "success":
            status = runs["status"][0]
            break
        time.sleep(0.2)
    assert status == "success"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped" in err and "Traceback" not in err


# ---------------------------------------------------------------------- terminal, demo
def test_progress_bar_on_a_terminal(files_sync, ws_path, tmp_path) -> None:
    """With stderr on a terminal, `dfsync run` draws a progress bar; piped, it does not."""
    master, slave = pty.openpty()
    # a fresh pty is 0x0; tqdm draws nothing that narrow, so give it a real terminal's size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "dfsync", "run", "customers", "-w", ws_path], cwd=tmp_path,
                            env=child_env(), stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    term = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, term
    assert "customers #1" in term and "3/3" in term
    assert "success" in out


def test_demo_command_still_works(tmp_path, dfsync_cli) -> None:
    res = dfsync_cli("demo", "--directory", str(tmp_path / "demo"), "--data", str(REPO / "data"))
    assert res.code == 0, res.err
    assert "customers" in res.out and "success" in res.out
    assert (tmp_path / "demo" / "warehouse.duckdb").exists()
    # the "inspect it" lines name the workspace as a path to type here: relative under the working
    # directory, absolute outside it (not '../../..')
    outside = tmp_path.parent / f"{tmp_path.name}-demo"
    try:
        for where in (tmp_path / "demo", outside):
            res = dfsync_cli("demo", "--directory", str(where), "--data", str(REPO / "data"))
            shown = res.out.split("--workspace ")[-1].split()[0]
            assert ".." not in shown and (tmp_path / shown).exists(), res.out
            assert os.path.isabs(shown) == (where == outside)
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    # a directory it cannot make (here under a file; or a working directory the user may not write):
    # one line naming it and what to pass, not an OSError traceback
    (tmp_path / "afile").write_text("")
    res = dfsync_cli("demo", "--directory", str(tmp_path / "afile" / "demo"), "--data", str(REPO / "data"))
    assert res.code == 2
    _clean_error(res, f"cannot create {tmp_path / 'afile' / 'demo'}", "--directory")


@pytest.mark.workspaces("duckdb")
def test_reader_options_with_polars_types_work_from_another_process(tmp_path, ws_path, dfsync_cli) -> None:
    """`sources.files("x.csv", schema_overrides={"code": pl.String})` is stored as the type's text and
    rebuilt (without eval) by `dfsync run` in another process: the leading zeros of "007" stay."""
    src = tmp_path / "codes.csv"
    src.write_text("id,code,at\n1,007,2024-01-01T00:00:00Z\n2,042,2024-01-02T00:00:00Z\n")
    warehouse = tmp_path / "w.duckdb"
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("codes", source=dfsync.sources.files(
            str(src), schema_overrides={"code": pl.String, "at": pl.Datetime("ms", "UTC")}),
            destination=dfsync.destinations.duckdb(str(warehouse), table="codes"), primary_key="id")
    res = dfsync_cli("run", "codes", "-w", ws_path)
    assert res.code == 0, res.err
    got = _read_duckdb(warehouse, "codes")
    assert got["code"].to_list() == ["007", "042"]
    assert got["at"].to_list() == [datetime(2024, 1, d, tzinfo=timezone.utc) for d in (1, 2)]
    res = dfsync_cli("status", "codes", "-w", ws_path, "--json")
    assert json.loads(res.out)["definition"]["source"]["schema_overrides"]["code"] == {"polars_dtype": "String"}


@pytest.mark.workspaces("duckdb")
def test_a_tsv_file_is_read_tab_separated_here_and_by_the_cli(tmp_path, ws_path, dfsync_cli) -> None:
    """`.tsv` was taken for CSV by its extension and read comma-separated: the header became
    one column named "id\\tcity" (create_sync refused the key with that name). It is read with
    tabs, and the separator is stored, so `dfsync run` reads it the same way."""
    src = tmp_path / "places.tsv"
    src.write_text("id\tcity\n1\tSão Paulo, SP\n2\tNew York\n")
    warehouse = tmp_path / "w.duckdb"
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.create_sync("places", source=dfsync.sources.files(str(src)),
                              destination=dfsync.destinations.duckdb(str(warehouse), table="places"), primary_key="id")
        assert sync.preview().records.sort("id")["city"].to_list() == ["São Paulo, SP", "New York"]
    res = dfsync_cli("run", "places", "-w", ws_path)
    assert res.code == 0, res.err
    assert _read_duckdb(warehouse, "places").sort("id")["city"].to_list() == ["São Paulo, SP", "New York"]
    with pytest.raises(dfsync.ConfigError, match="mixes .tsv"):
        dfsync.sources.files([str(src), str(tmp_path / "other.csv")])


@pytest.mark.workspaces("duckdb")
def test_static_dates_decimals_and_bytes_are_stored_and_run_from_the_cli(tmp_path, ws_path, dfsync_cli) -> None:
    """`dfsync.static(date(1960, 1, 1))` made create_sync fail with a bare TypeError ("date is not
    JSON serializable"); such constants are stored as polars literals, run from another process,
    and a value that cannot be a column is a ConfigError."""
    from datetime import date
    from decimal import Decimal

    src = tmp_path / "ids.csv"
    src.write_text("id\n1\n2\n")
    warehouse = tmp_path / "w.duckdb"
    mapping = {"id": "id", "since": dfsync.static(date(1960, 1, 1)), "fee": dfsync.static(Decimal("1.50")),
               "tag": dfsync.static(b"\x00\xff"), "note": dfsync.static("x")}
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("consts", source=dfsync.sources.files(str(src)), mapping=mapping,
                       destination=dfsync.destinations.duckdb(str(warehouse), table="consts"), primary_key="id")
        with pytest.raises(dfsync.ConfigError, match="cannot be a column value"):
            ws.create_sync("bad", source=dfsync.sources.files(str(src)), primary_key="id",
                           mapping={"id": "id", "x": dfsync.static(object())},
                           destination=dfsync.destinations.duckdb(str(warehouse), table="bad"))
    res = dfsync_cli("run", "consts", "-w", ws_path)
    assert res.code == 0, res.err
    got = _read_duckdb(warehouse, "consts").sort("id")
    assert got["since"].to_list() == [date(1960, 1, 1)] * 2 and got["fee"].to_list() == [Decimal("1.50")] * 2
    assert got["tag"].to_list() == [b"\x00\xff"] * 2 and got["note"].to_list() == ["x"] * 2


def test_version(dfsync_cli):
    res = dfsync_cli("--version")
    assert res.code == 0 and res.out.strip() == f"dfsync {dfsync.__version__}", res

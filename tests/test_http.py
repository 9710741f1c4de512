"""The REST API destination against a real scripted HTTP server on 127.0.0.1 (session level)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import logging

import pyarrow as pa
import pytest

import dfsync
from dfsync._settings import use as use_settings
from dfsync.destinations._http import HTTPDestination, nest_expressions, parse_rate_limit
from dfsync.destinations.base import DestinationContext, WriteBatch, destination_from_config
from dfsync.errors import ConfigError, DestinationError, SessionOnlyError, TransientDestinationError
from dfsync.states import DestinationMode
from tests.plugins.http_server import POLL, Reply

FAST = {"retry_initial_wait": 0.01, "retry_max_wait": 0.05, "max_retries": 4, "timeout": 5.0}


def ctx(mode: DestinationMode = DestinationMode.UPSERT, run_id: int = 1, pk: tuple[str, ...] = ("id",)):
    return DestinationContext(sync_id=7, sync_name="contacts", run_id=run_id, mode=mode, primary_key=pk)


def batch(n: int, start: int = 0, action: str | list[str] = "insert", batch_no: int = 1, **cols) -> WriteBatch:
    ids = list(range(start, start + n))
    actions = [action] * n if isinstance(action, str) else action
    data = {"id": ids, "name": [f"n{i}" for i in ids], **cols, "_action": actions}
    return WriteBatch(batch_no, pa.table(data))


def send(dest: HTTPDestination, *batches: WriteBatch, context: DestinationContext | None = None):
    results = []
    with dest.open(context or ctx()) as session:
        session.prepare(batches[0].data.schema)
        for b in batches:
            results.append(session.write(b))
        session.finish()
    return results


def ids(records) -> list:
    return sorted(r["id"] for r in records)


# ------------------------------------------------------------------ success
def test_batches_are_split_sent_concurrently_and_each_record_arrives_once(http_server, monkeypatch):
    monkeypatch.setenv("CRM_TOKEN", "tok-abc-123456")
    dest = dfsync.destinations.http(http_server.url + "/contacts", auth="env:CRM_TOKEN",
                                    batch_size=100, concurrency=4, **FAST)
    (result,) = send(dest, batch(1050))
    assert result.failed == {} and result.skipped == {}
    assert ids(http_server.delivered()) == list(range(1050))
    reqs = http_server.requests
    assert len(reqs) == 11 and sorted(len(r.records) for r in reqs) == [50] + [100] * 10
    assert {r.method for r in reqs} == {"POST"} and {r.path for r in reqs} == {"/contacts"}
    assert {r.headers["authorization"] for r in reqs} == {"Bearer tok-abc-123456"}
    assert {r.headers["content-type"] for r in reqs} == {"application/json"}
    keys = [r.key for r in reqs]
    assert len(set(keys)) == 11 and all(k.startswith("dfsync-") and "-s7-r1-insert-" in k for k in keys)
    assert min(http_server.delivered(), key=lambda r: r["id"]) == {"id": 0, "name": "n0"}


def test_idempotency_keys_repeat_when_the_same_batch_is_sent_again(http_server):
    dest = dfsync.destinations.http(http_server.url, batch_size=10, **FAST)
    send(dest, batch(30, batch_no=3))
    first = [r.key for r in http_server.requests]
    send(dest, batch(30, batch_no=4))  # re-sent after a pause: same run, same records, any batch number
    second = [r.key for r in http_server.requests[3:]]
    assert sorted(first) == sorted(second)
    assert len(http_server.replayed) == 3  # the server recognised every one of them
    assert ids(http_server.delivered()) == list(range(30))
    send(dest, batch(30, batch_no=3), context=ctx(run_id=2))  # a new run gets new keys
    assert set(r.key for r in http_server.requests[6:]).isdisjoint(first)


def test_routes_per_action_fill_the_key_into_the_url(http_server):
    dest = dfsync.destinations.http(http_server.url + "/v1/contacts", update="PATCH /{id}",
                                    delete="DELETE /{id}", batch_size=50, **FAST)
    b = batch(6, action=["insert", "insert", "update", "update", "delete", "insert"])
    (result,) = send(dest, b, context=ctx(DestinationMode.MIRROR))
    assert result.failed == {}
    seen = sorted((r.method, r.path, r.body) for r in http_server.requests)
    assert seen == [
        ("DELETE", "/v1/contacts/4", b""),
        ("PATCH", "/v1/contacts/2", b'{"id":2,"name":"n2"}'),
        ("PATCH", "/v1/contacts/3", b'{"id":3,"name":"n3"}'),
        ("POST", "/v1/contacts", b'[{"id":0,"name":"n0"},{"id":1,"name":"n1"},{"id":5,"name":"n5"}]'),
    ]
    per_record_keys = [r.key for r in http_server.requests if r.method != "POST"]
    assert len(set(per_record_keys)) == 3


def test_batched_deletes_carry_only_the_primary_key_and_keys_are_url_quoted(http_server):
    dest = dfsync.destinations.http(http_server.url, update="PUT /items/{name}", delete="POST /delete",
                                    **FAST)
    b = WriteBatch(1, pa.table({"id": [1, 2], "name": ["a b/c", "x"], "_action": ["update", "delete"]}))
    send(dest, b, context=ctx(DestinationMode.MIRROR))
    by_method = {r.method: r for r in http_server.requests}
    assert by_method["PUT"].path == "/items/a%20b%2Fc"
    assert by_method["POST"].path == "/delete" and by_method["POST"].records == [{"id": 2}]




def test_a_key_of_dots_stays_in_its_path_segment(http_server):
    # a key '..' or '.' filled the URL as is: the client removes such dot segments, so the record's
    # update went to /items/x and its delete to the collection's parent (and a delete answered 404
    # there counts as done: the record stayed while the run said deleted)
    dest = dfsync.destinations.http(http_server.url, update="PUT /items/{name}/x", delete="DELETE /items/{name}",
                                    **FAST)
    b = WriteBatch(1, pa.table({"id": [1, 2, 3], "name": ["..", ".", "a.b"], "_action": ["update", "delete", "delete"]}))
    send(dest, b, context=ctx(DestinationMode.MIRROR))
    assert sorted(r.path for r in http_server.requests) == ["/items/%2E", "/items/%2E%2E/x", "/items/a.b"]


def test_an_empty_key_in_a_url_path_fails_its_record_unsent(http_server):
    # '' filled 'DELETE /items/{name}' as /items/: a request to the collection itself (a 404 there
    # counted the delete as done; an API that deletes a collection would lose every record)
    dest = dfsync.destinations.http(http_server.url, update="PUT /items/{name}?v=1", delete="DELETE /items/{name}",
                                    **FAST)
    b = WriteBatch(1, pa.table({"id": [1, 2, 3], "name": ["", "", "x"], "_action": ["update", "delete", "delete"]}))
    (result,) = send(dest, b, context=ctx(DestinationMode.MIRROR))
    assert [r.path for r in http_server.requests] == ["/items/x"]
    assert sorted(result.failed) == [0, 1] and result.skipped == {}
    assert "field 'name' is empty" in result.failed[1] and "/items/{name}'" in result.failed[1]


def test_a_null_in_a_url_placeholder_fails_its_record_unsent(http_server):
    # a null non-key field filled the URL with the text 'null': the update went to /items/null (and
    # '?v=null'), another record than this one, and the row counted as succeeded
    dest = dfsync.destinations.http(http_server.url, update="PUT /items/{name}?v={ver}", **FAST)
    b = WriteBatch(1, pa.table({"id": [1, 2, 3], "name": [None, "a", "b"], "ver": pa.array([1, None, 2], pa.int64()),
                                "_action": ["update", "update", "update"]}))
    (result,) = send(dest, b, context=ctx(DestinationMode.UPSERT))
    assert [r.path for r in http_server.requests] == ["/items/b?v=2"]
    assert sorted(result.failed) == [0, 1] and result.skipped == {}
    assert "field 'name' is null" in result.failed[0] and "field 'ver' is null" in result.failed[1]
    assert "/items/{name}?v={ver}'" in result.failed[0]

def test_a_url_placeholder_holds_the_key_as_the_body_writes_it(http_server):
    # a timestamp key filled the URL as Python's str ('2013-01-01 06:00:00+00:00') while the body
    # said '2013-01-01T06:00:00+00:00': an API found no such record, and a delete answered 404 counts
    # as done (the record stayed); booleans were 'True' in the URL and true in the body
    dest = dfsync.destinations.http(http_server.url, update="PATCH /{at}/{naive}/{ok}/{id}", **FAST)
    at = pa.array([dt.datetime(2013, 1, 1, 6, tzinfo=dt.timezone.utc)], pa.timestamp("us", "UTC"))
    b = WriteBatch(1, pa.table({"id": [1.5], "at": at, "naive": pa.array([dt.datetime(1969, 12, 31, 23, 59, 59, 5)]),
                                "ok": [True], "_action": ["update"]}))
    send(dest, b, context=ctx(pk=("id", "at", "naive", "ok")))
    (req,) = http_server.requests
    (body,) = req.records
    from urllib.parse import unquote
    assert [unquote(p) for p in req.path.split("/")[1:]] == [body["at"], body["naive"], "true", "1.5"]

# ------------------------------------------------------------------ outcomes
def test_multi_status_answer_reports_exactly_the_failed_records(http_server):
    def partial(req):
        results = [{"id": r["id"], "status": 422 if r["id"] % 7 == 0 else 201,
                    **({"error": f"bad email for {r['id']}"} if r["id"] % 7 == 0 else {})}
                   for r in req.records]
        return Reply(207, {"results": list(reversed(results))})  # matched by id, not by position

    http_server.handler = partial
    dest = dfsync.destinations.http(http_server.url, batch_size=20, concurrency=3, **FAST)
    (result,) = send(dest, batch(100, start=1))
    # rows index WriteBatch.data: id = row + 1
    assert result.failed == {i - 1: f"bad email for {i}" for i in range(1, 101) if i % 7 == 0}


def test_multi_status_by_index_and_records_left_out_count_as_failed(http_server):
    http_server.handler = lambda req: Reply(207, {"results": [{"index": 0, "status": "ok"},
                                                               {"index": 2, "status": "error"}]})
    dest = dfsync.destinations.http(http_server.url, batch_size=4, **FAST)
    (result,) = send(dest, batch(4))
    assert result.failed == {1: "the 207 answer reported no outcome for this record", 2: "status error",
                             3: "the 207 answer reported no outcome for this record"}


def test_a_failure_the_answer_does_not_tie_to_a_record_fails_the_records_it_left_unreported(http_server):
    # a 200 listing only failures, by an "id" dfsync cannot match (composite key, unknown id) or by a
    # non-integer index: the run said success, every record counted delivered, the failure lost
    pk = ("id", "name")
    http_server.handler = lambda req: Reply(200, {"results": [{"id": "2-n2", "error": "bad email"}]})
    dest = dfsync.destinations.http(http_server.url, batch_size=4, **FAST)
    (result,) = send(dest, batch(4), context=ctx(pk=pk))
    assert sorted(result.failed) == [0, 1, 2, 3]
    assert all("bad email" in e and "could not match" in e for e in result.failed.values())
    http_server.reset()  # same keys as above: the server would replay its stored answer
    http_server.handler = lambda req: Reply(200, {"results": [{"index": 0, "status": 201},
                                                               {"id": 99, "error": "no such contact"}]})
    (result,) = send(dest, batch(3))
    assert sorted(result.failed) == [1, 2] and "no such contact" in result.failed[1]
    http_server.reset()
    http_server.handler = lambda req: Reply(200, {"results": [{"index": "1", "error": "bad email"}]})
    (result,) = send(dest, batch(3))
    assert result.failed == {1: "bad email"}


def test_a_200_answer_is_read_for_failures_however_its_results_key_is_written():
    import httpx

    from dfsync.destinations._http_parts import results_parser

    text = '{"results": [{"index": 1, "error": "bad email"}]}'
    for content in (text.encode(), text.replace("results", "r\\u0065sults").encode(), text.encode("utf-16"),
                    ('{"echo": [{"id": 1}], ' + text[1:]).encode()):
        assert results_parser(httpx.Response(200, content=content), [{}, {}]) == {1: "bad email"}, content
    for content in (b'{"ok":true}', b'[{"id": 1, "status": "error"}]', b"not json", b""):
        assert results_parser(httpx.Response(200, content=content), [{}, {}]) == {}, content


def test_custom_response_parser(http_server):
    http_server.handler = lambda req: Reply(200, {"rejected": [r["id"] for r in req.records if r["id"] > 7]})

    def parser(response, records):
        bad = set(response.json()["rejected"])
        return {i: "rejected" for i, r in enumerate(records) if r["id"] in bad}

    dest = dfsync.destinations.http(http_server.url, batch_size=3, response_parser=parser, **FAST)
    (result,) = send(dest, batch(10))
    assert result.failed == {8: "rejected", 9: "rejected"}


def test_a_4xx_fails_that_requests_records_at_once_with_a_snippet(http_server):
    http_server.handler = lambda req: (Reply(422, {"message": "field email is invalid"})
                                       if any(r["id"] == 15 for r in req.records) else None)
    dest = dfsync.destinations.http(http_server.url, batch_size=10, **FAST)
    (result,) = send(dest, batch(30))
    assert set(result.failed) == set(range(10, 20))
    assert result.failed[10].startswith("HTTP 422") and "field email is invalid" in result.failed[10]
    assert len(http_server.requests) == 3  # not retried
    assert ids(http_server.delivered()) == list(range(10)) + list(range(20, 30))


def test_update_mode_404_on_a_record_is_skipped(http_server):
    http_server.handler = lambda req: Reply(404, {"error": "not found"}) if req.path.endswith("/2") else None
    dest = dfsync.destinations.http(http_server.url, update="PATCH /{id}", **FAST)
    (result,) = send(dest, batch(3, action="update"), context=ctx(DestinationMode.UPDATE))
    assert result.failed == {} and list(result.skipped) == [2]


def test_401_fails_the_run_instead_of_every_record(http_server):
    http_server.default = Reply(401, {"error": "bad token"})
    dest = dfsync.destinations.http(http_server.url, auth="literal-token-99", **FAST)
    with pytest.raises(DestinationError) as err:
        send(dest, batch(3))
    assert not isinstance(err.value, TransientDestinationError) and "HTTP 401" in str(err.value)


# ------------------------------------------------------------------ retries
def test_429_with_retry_after_is_honoured(http_server):
    http_server.script(Reply(429, {"error": "slow down"}, headers={"Retry-After": "1"}))
    dest = dfsync.destinations.http(http_server.url, batch_size=100, **FAST)
    (result,) = send(dest, batch(5))
    assert result.failed == {}
    first, second = http_server.requests
    assert first.key == second.key
    assert second.at - first.at >= 0.95  # waited as told (backoff alone would be <= 0.05 s)
    assert ids(http_server.delivered()) == list(range(5))


def test_retry_after_longer_than_allowed_pauses_at_once(http_server):
    http_server.default = Reply(503, headers={"Retry-After": "3600"})
    dest = dfsync.destinations.http(http_server.url, max_retry_after=10, **FAST)
    with pytest.raises(TransientDestinationError, match="asks to wait 3600s"):
        send(dest, batch(5))
    assert len(http_server.requests) == 1


def test_flapping_500s_deliver_every_record_exactly_once(http_server):
    http_server.handler = lambda req: Reply(500, "oops") if req.n % 3 != 2 else None
    dest = dfsync.destinations.http(http_server.url, batch_size=25, concurrency=4, max_retries=8,
                                    retry_initial_wait=0.01, retry_max_wait=0.02)
    (result,) = send(dest, batch(200))
    assert result.failed == {}
    assert ids(http_server.delivered()) == list(range(200))
    assert all(len(keys) == 1 for keys in http_server.keys_per_record().values())
    assert len(http_server.requests) > 8  # the 500s really happened and were retried


def test_slow_answer_past_the_timeout_is_retried_with_the_same_key(http_server):
    # the server applies the records, then answers too late: the client retries the same key
    http_server.script(Reply(200, delay=1.5))
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=1,
                                    **{**FAST, "timeout": 0.3})
    (result,) = send(dest, batch(20))
    assert result.failed == {}
    assert ids(http_server.delivered()) == list(range(20))
    assert len(http_server.replayed) == 1 and http_server.replayed[0].key == http_server.requests[0].key
    assert all(len(keys) == 1 for keys in http_server.keys_per_record().values())


@pytest.mark.parametrize("processed", [False, True])
def test_dropped_connection_is_retried(http_server, processed):
    http_server.script(Reply(drop=True, apply=processed))
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=1, **FAST)
    (result,) = send(dest, batch(10))
    assert result.failed == {}
    assert len(http_server.requests) == 2 and http_server.requests[0].key == http_server.requests[1].key
    assert ids(http_server.delivered()) == list(range(10))
    assert len(http_server.replayed) == (1 if processed else 0)


def test_an_outage_outlasting_the_retries_pauses_and_a_resend_has_no_duplicates(http_server):
    http_server.handler = lambda req: Reply(503, "maintenance") if req.n >= 2 else None
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=2, **FAST)
    with pytest.raises(TransientDestinationError, match="gave up after 5 attempts"):
        send(dest, batch(60, batch_no=4))
    delivered_before = ids(http_server.delivered())
    assert len(delivered_before) == 20
    http_server.handler = None  # the API is back; the paused run re-sends the batch
    (result,) = send(dest, batch(60, batch_no=4))
    assert result.failed == {}
    assert ids(http_server.delivered()) == list(range(60))
    assert all(len(keys) == 1 for keys in http_server.keys_per_record().values())
    assert len(http_server.replayed) == 2  # the two requests that got through before the outage


@pytest.mark.parametrize("retries", [0, 3])
def test_a_request_is_tried_max_retries_plus_one_times_and_each_retry_is_logged(http_server, caplog, retries):
    http_server.default = Reply(503, "down")
    dest = dfsync.destinations.http(http_server.url, batch_size=10, concurrency=1, **{**FAST, "max_retries": retries})
    with caplog.at_level(logging.WARNING, "dfsync.destinations.http"), \
            pytest.raises(TransientDestinationError, match=f"gave up after {retries + 1} attempts"):
        send(dest, batch(5))
    assert len(http_server.requests) == retries + 1
    assert len({r.key for r in http_server.requests}) == 1
    logged = [m for m in caplog.messages if "; retry " in m]
    assert [m.split("; ")[-1].split(" in ")[0] for m in logged] == [f"retry {i} of {retries}" for i in range(1, retries + 1)]
    assert all("HTTP 503: down" in m for m in logged)


def test_connection_refused_pauses(http_server):
    url = http_server.url
    http_server.close()
    dest = dfsync.destinations.http(url, **{**FAST, "max_retries": 1})
    with pytest.raises(TransientDestinationError, match="connection problem"):
        send(dest, batch(3))


# ------------------------------------------------------------------ rate limit
def test_request_rate_stays_within_the_rate_limit(http_server):
    dest = dfsync.destinations.http(http_server.url, batch_size=1, concurrency=8, rate_limit="10/second",
                                    **FAST)
    send(dest, batch(35))
    times = sorted(r.at for r in http_server.requests)
    assert len(times) == 35
    # 35 requests at 10/second leave in groups of 10 at 0, >=1, >=2, >=3 s (the limiter is a
    # sliding-window log; RateLimiter is exact on its own clock). Arrival times at this
    # in-process server add the scheduling delay between taking a slot and reaching the socket,
    # which reaches hundreds of ms on a loaded 2-core machine. So: the whole run spans about
    # three periods, and no one-second window holds 2 x 10 arrivals (impossible unless the
    # limit was broken, even with up to a second of delay); without the limiter all 35
    # arrive within a fraction of a second and both checks fail
    assert times[-1] - times[0] >= 2.5
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    assert busiest < 20
    assert (len(times) - 10) / (times[-1] - times[0]) <= 10.0


def test_parse_rate_limit():
    assert parse_rate_limit("100/minute") == (100, 60.0)
    assert parse_rate_limit("10/second") == (10, 1.0)
    assert parse_rate_limit("5/10s") == (5, 10.0)
    assert parse_rate_limit("1000 / hour") == (1000, 3600.0)
    with pytest.raises(ConfigError, match="N/minute"):
        parse_rate_limit("fast")


# ------------------------------------------------------------------ bodies
def test_nested_json_paths_build_objects_and_lists(http_server):
    table = pa.table({
        "id": [1, 2],
        "address.city": ["Oslo", None],
        "address.geo.lat": [59.9, 1.0],
        "tags[]": ["vip", "new"],
        "phones[1]": ["222", None],
        "phones[0]": ["111", "333"],
        "items[].sku": ["A", "B"],
        "langs[]": [["no", "en"], []],
        "_action": ["insert", "insert"],
    })
    dest = dfsync.destinations.http(http_server.url, **FAST)
    send(dest, WriteBatch(1, table))
    assert http_server.requests[0].records == [
        {"id": 1, "address": {"city": "Oslo", "geo": {"lat": 59.9}}, "tags": ["vip"],
         "phones": ["111", "222"], "items": [{"sku": "A"}], "langs": ["no", "en"]},
        {"id": 2, "address": {"city": None, "geo": {"lat": 1.0}}, "tags": ["new"],
         "phones": ["333", None], "items": [{"sku": "B"}], "langs": []},
    ]


def test_nested_paths_that_collide_are_refused_at_validation():
    dest = dfsync.destinations.http("http://127.0.0.1:9/x")
    with pytest.raises(ConfigError, match="address"):
        dest.validate(["id", "address", "address.city"], ["id"], DestinationMode.UPSERT)
    with pytest.raises(ConfigError, match="mix object keys and list items"):
        nest_expressions(["a.b", "a[0]"])
    plain = dfsync.destinations.http("http://127.0.0.1:9/x", nested=False)
    plain.validate(["id", "address", "address.city"], ["id"], DestinationMode.UPSERT)


def test_json_lines_envelope_and_function_bodies(http_server):
    send(dfsync.destinations.http(http_server.url, body="ndjson", **FAST), batch(3))
    req = http_server.requests[-1]
    assert req.headers["content-type"] == "application/x-ndjson"
    assert req.body == b'{"id":0,"name":"n0"}\n{"id":1,"name":"n1"}\n{"id":2,"name":"n2"}\n'
    send(dfsync.destinations.http(http_server.url, envelope="data", **FAST), batch(2))
    assert json.loads(http_server.requests[-1].body) == {"data": [{"id": 0, "name": "n0"}, {"id": 1, "name": "n1"}]}
    send(dfsync.destinations.http(http_server.url, body=lambda recs: {"contacts": recs, "n": len(recs)},
                                  **FAST), batch(2))
    assert json.loads(http_server.requests[-1].body) == {
        "contacts": [{"id": 0, "name": "n0"}, {"id": 1, "name": "n1"}], "n": 2}
    # what the function returns is written as the built-in bodies write it (str() gave
    # '2013-01-01 06:00:00+00:00' and "b'\\x00\\xff'")
    at = dt.datetime(2013, 1, 1, 6, tzinfo=dt.timezone.utc)
    send(dfsync.destinations.http(http_server.url, body=lambda recs: recs, **FAST),
         batch(1, start=5, at=[at], blob=[b"\x00\xff"], price=[decimal.Decimal("1.50")]))
    assert json.loads(http_server.requests[-1].body) == [
        {"id": 5, "name": "n5", "at": "2013-01-01T06:00:00+00:00", "blob": "AP8=", "price": "1.50"}]


AWKWARD = ["plain", "line\nbreak", "},{\"id\":0}", "tab\tand \\ backslash", "quote \" here", "ünïcødé ✓",
           "\r\n", "", None, "[1,2]\n{}"]


@pytest.mark.parametrize("body", ["json", "ndjson", "envelope"])
def test_bodies_cut_from_one_encoded_chunk_carry_exactly_their_records(http_server, body):
    """Each chunk is encoded once (records back to back) and every request's body is a byte range
    of it: strings holding newlines, '},{', quotes or nothing must not move a record to another
    request, across chunk boundaries (batch_size 7 x concurrency 3 = 21 rows a wave; chunks of one
    request, the rest of the first wave, then 2, 4, 8, 16 waves: 960 inserts make seven chunks) and
    with an action group that is not the whole batch (updates interleaved with inserts)."""
    n = 1200
    names = [AWKWARD[i % len(AWKWARD)] for i in range(n)]
    actions = ["update" if i % 5 == 0 else "insert" for i in range(n)]
    opts = {"body": "ndjson"} if body == "ndjson" else {"envelope": "data"} if body == "envelope" else {}
    dest = dfsync.destinations.http(http_server.url, update="PATCH", batch_size=7, concurrency=3, **opts, **FAST)
    (result,) = send(dest, WriteBatch(1, pa.table({"id": list(range(n)), "name": names, "_action": actions})))
    assert result.failed == {}
    by_method: dict[str, list] = {}
    for req in http_server.requests:
        assert 1 <= len(req.records) <= 7
        by_method.setdefault(req.method, []).extend(req.records)
    expect = {a: [{"id": i, "name": names[i]} for i in range(n) if actions[i] == a] for a in ("insert", "update")}
    assert {m: sorted(r, key=lambda r: r["id"]) for m, r in by_method.items()} == {
        "POST": expect["insert"], "PATCH": expect["update"]}
    assert len({r.key for r in http_server.requests}) == len(http_server.requests)


@pytest.mark.parametrize("n,batch_size", [(1, 7), (7, 7), (8, 7), (20, 7), (21, 7), (22, 7), (31, 7), (64, 7),
                                          (147, 7), (700, 7), (1700, 400)])
def test_every_record_goes_once_in_requests_of_batch_size_whatever_the_chunking(http_server, n, batch_size):
    """Chunks (one request first, then the rest of the first wave, then 2, 4, 8, 16 waves,
    a small remainder joined to the last chunk) cut requests of exactly ``batch_size`` records
    but the last, every record once and in order, with the Idempotency-Key of its records (a
    key text over 2 KiB, batch_size 400, is hashed in pieces: the same hash)."""
    dest = dfsync.destinations.http(http_server.url, batch_size=batch_size, concurrency=3, **FAST)
    (result,) = send(dest, batch(n))
    assert result.failed == {}
    reqs = sorted(http_server.requests, key=lambda r: r.records[0]["id"])
    assert [rec["id"] for r in reqs for rec in r.records] == list(range(n))
    assert [len(r.records) for r in reqs] == [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    for r in reqs:
        named = "".join(f'{{"id":{rec["id"]}}}\n' for rec in r.records).encode()
        assert r.key.rsplit("-", 1)[1] == hashlib.sha1(named).hexdigest()[:16]


def test_partial_failure_maps_to_the_right_rows_across_chunks_and_groups(http_server):
    """A 207 answer's per-record errors land on the rows of WriteBatch.data they came from, for a
    group of rows picked out of the batch and sent in several chunks."""
    def partial(req):
        return Reply(207, {"results": [{"index": i, **({"error": f"bad {r['id']}"} if r["id"] % 3 == 0 else {})}
                                       for i, r in enumerate(req.records)]})

    http_server.handler = partial
    n = 120
    actions = ["update" if i % 4 == 1 else "insert" for i in range(n)]
    dest = dfsync.destinations.http(http_server.url, update="PUT", batch_size=5, concurrency=2, **FAST)
    (result,) = send(dest, WriteBatch(1, pa.table({"id": [1000 + i for i in range(n)], "name": ["x"] * n,
                                                   "_action": actions})))
    assert result.failed == {i: f"bad {1000 + i}" for i in range(n) if (1000 + i) % 3 == 0}


@pytest.mark.parametrize("body", ["json", "ndjson"])
def test_bodies_are_byte_for_byte_polars_json_lines_of_the_records(http_server, body):
    """The wire format is polars' JSON writer (``write_ndjson``) over the JSON-ready records, one
    record after another: a polars upgrade that made the per-record encoder write anything else
    (floats, escapes, time zones, nested values, nulls) fails here."""
    import polars as pl

    from dfsync.destinations._http_parts import json_ready

    oslo = pa.array([dt.datetime(2024, 1, 1, 12), None, dt.datetime(2024, 6, 1, 23, 59, 59, 999999)] * 3,
                    pa.timestamp("us", "Europe/Oslo"))
    table = pa.table({
        "id": list(range(9)), "name": ["a\"b\\c\n\t\u0001", "ünï €😀", None, "\u2028</script>", "", "x", "y", "z", "w"],
        "score": [1.5e20, float("nan"), None, 0.1, float("inf"), -0.0, 1e-300, 3.0, 2.5],
        "small": pa.array([0.1, None, 1e-40] * 3, pa.float32()), "big": pa.array([2**64 - 1, 0, None] * 3, pa.uint64()),
        "at": [dt.datetime(2024, 5, 6, 7, 8, 9, 123000), None, dt.datetime(1, 1, 1)] * 3, "zoned": oslo,
        "day": [dt.date(2024, 5, 6), None, dt.date(9999, 12, 31)] * 3, "clock": [dt.time(1, 2, 3, 5), None, dt.time(0)] * 3,
        "tags": [["a", None], [], None] * 3, "address.city": ["Oslo", None, "Bergen"] * 3,
        "meta": [{"k": 1, "v": "x"}, None, {"k": None, "v": None}] * 3, "flag": [True, False, None] * 3,
        "_action": ["insert"] * 9})
    send(dfsync.destinations.http(http_server.url, body=body, batch_size=4, concurrency=1, **FAST), WriteBatch(1, table))
    frame = pl.from_arrow(table.drop_columns(["_action"]))
    frame = frame.select(json_ready(frame.schema)).select(nest_expressions(frame.columns))
    lines = frame.write_ndjson().encode().splitlines(keepends=True)
    groups = [lines[i:i + 4] for i in range(0, 9, 4)]
    expect = [b"".join(g) if body == "ndjson" else b"[" + b",".join(x.rstrip(b"\n") for x in g) + b"]" for g in groups]
    assert sorted(r.body for r in http_server.requests) == sorted(expect)
    assert json.loads(expect[0].splitlines()[0] if body == "ndjson" else expect[0])  # the reference is JSON
    # the Idempotency-Key hashes the key fields' JSON Lines of the request's records (kept across versions:
    # a run resumed after an upgrade re-sends with the same keys)
    keys = {hashlib.sha1("".join(f'{{"id":{i}}}\n' for i in range(s, min(s + 4, 9))).encode()).hexdigest()[:16]
            for s in range(0, 9, 4)}
    assert {r.key.rsplit("-", 1)[1] for r in http_server.requests} == keys


def test_values_are_encoded_the_way_apis_expect(http_server):
    table = pa.table({
        "id": [1], "at": [dt.datetime(2024, 5, 6, 7, 8, 9, 123000)], "day": [dt.date(2024, 5, 6)],
        "blob": [b"\x00\xffhi"], "price": pa.array([decimal.Decimal("1.25")], pa.decimal128(10, 2)), "ok": [True],
        "_action": ["insert"]})
    send(dfsync.destinations.http(http_server.url, **FAST), WriteBatch(1, table))
    (rec,) = http_server.requests[0].records
    assert rec == {"id": 1, "at": "2024-05-06T07:08:09.123", "day": "2024-05-06",
                   "blob": base64.b64encode(b"\x00\xffhi").decode(), "price": "1.25", "ok": True}


# ------------------------------------------------------------------ secrets and config
def test_basic_auth_and_env_headers(http_server, monkeypatch):
    monkeypatch.setenv("API_KEY", "key-from-env-777")
    dest = dfsync.destinations.http(http_server.url, auth=("me", "env:API_PW"),
                                    headers={"X-Api-Key": "env:API_KEY", "X-Team": "growth"}, **FAST)
    with pytest.raises(DestinationError, match="API_PW is not set"):
        send(dest, batch(1))
    monkeypatch.setenv("API_PW", "pw-from-env-888")
    send(dest, batch(1))
    h = http_server.requests[0].headers
    assert h["authorization"] == "Basic " + base64.b64encode(b"me:pw-from-env-888").decode()
    assert h["x-api-key"] == "key-from-env-777" and h["x-team"] == "growth"
    assert dest.config()["auth"] == ["me", "env:API_PW"]
    assert dest.config()["headers"] == {"X-Api-Key": "env:API_KEY", "X-Team": "growth"}
    again = destination_from_config({"kind": "http", **dest.config()})
    assert again.config() == dest.config() and not dest.session_only


def test_literal_secrets_stay_in_memory_and_out_of_everything_shown(http_server, caplog):
    token = "sk-live-literal-0042"
    # the server echoes the Authorization header back: a careless error would leak it
    http_server.handler = lambda req: Reply(400, {"got": req.headers["authorization"]}) if req.n == 0 else (
        Reply(503, "down " + req.headers["authorization"]) if req.n < 3 else None)
    dest = dfsync.destinations.http(http_server.url, auth=token, headers={"X-Secret-Token": "hdr-literal-77"},
                                    batch_size=2, concurrency=1, **FAST)
    assert dest.session_only
    shown = [repr(dest), dest.describe(), json.dumps(dest.config()), dest.identity()]
    assert not any(token in s or "hdr-literal-77" in s for s in shown)
    with caplog.at_level(logging.WARNING, logger="dfsync"):
        (result,) = send(dest, batch(4))
    assert http_server.requests[0].headers["authorization"] == f"Bearer {token}"
    assert set(result.failed) == {0, 1}
    assert token not in result.failed[0] and "***" in result.failed[0]
    assert caplog.records and not any(token in r.getMessage() for r in caplog.records)
    with pytest.raises(SessionOnlyError, match="env:NAME"):
        destination_from_config({"kind": "http", **dest.config()})


def test_config_round_trips_and_functions_are_stored_by_import_path():
    dest = dfsync.destinations.http("https://api.example.com/c", update=("PUT", "https://api.example.com/c/{id}"),
                                    body=json.dumps, rate_limit="5/second", batch_size=7)
    cfg = dest.config()
    assert cfg["body"] == "json:dumps" and cfg["update"] == ["PUT", "https://api.example.com/c/{id}"]
    with pytest.raises(ConfigError, match="allowed_callbacks=\\['json'\\]"):  # stored code: this host must allow it
        destination_from_config({"kind": "http", **json.loads(json.dumps(cfg))})
    with use_settings({"allowed_callbacks": ("json",)}):
        again = destination_from_config({"kind": "http", **json.loads(json.dumps(cfg))})
    assert again.config() == cfg and again.identity() == dest.identity()
    lam = dfsync.destinations.http("https://api.example.com/c", body=lambda r: r)
    assert lam.session_only
    with pytest.raises(SessionOnlyError, match="body"):
        destination_from_config({"kind": "http", **lam.config()})


@pytest.mark.parametrize("kwargs, message", [
    ({"url": "ftp://x"}, "http\\(s\\) URL"),
    ({"rate_limit": "lots"}, "rate_limit"),
    ({"batch_size": 0}, "batch_size"),
    ({"concurrency": "8"}, "concurrency"),
    ({"auth": 42}, "auth="),
    ({"update": "PATCH contacts/{id}"}, "must start with '/'"),
    ({"body": "xml"}, "body="),
    ({"timeout": 0}, "timeout"),
])
def test_bad_options_fail_at_the_door(kwargs, message):
    kwargs = {"url": "https://api.example.com/c", **kwargs}
    with pytest.raises(ConfigError, match=message):
        dfsync.destinations.http(kwargs.pop("url"), **kwargs)


def test_validate_checks_modes_and_url_fields():
    dest = dfsync.destinations.http("https://api.example.com/c", update="PATCH /{contact_id}")
    with pytest.raises(ConfigError, match="contact_id.*fields sent: id, email"):
        dest.validate(["id", "email"], ["id"], DestinationMode.UPSERT)
    with pytest.raises(ConfigError, match="delete route"):
        dest.validate(["id", "contact_id"], ["id"], DestinationMode.MIRROR)
    with pytest.raises(ConfigError, match="replace"):
        dest.validate(["id", "contact_id"], ["id"], DestinationMode.REPLACE)
    dest.validate(["id", "contact_id"], ["id"], DestinationMode.UPDATE)
    assert dest.transactional is False


def test_deletes_without_a_route_are_refused(http_server):
    dest = dfsync.destinations.http(http_server.url, **FAST)
    with pytest.raises(DestinationError, match="no delete route"):
        send(dest, batch(2, action="delete"))
    assert http_server.requests == []


@pytest.mark.timeout(20)
def test_a_request_giving_up_cuts_short_the_others_waits(http_server):
    # request A is told to come back in a minute; request B meets an outage and gives up:
    # the batch pauses now instead of sleeping out A's minute
    http_server.handler = lambda req: (Reply(503, headers={"Retry-After": "60"}) if req.records[0]["id"] == 0
                                       else Reply(503, "down"))
    dest = dfsync.destinations.http(http_server.url, batch_size=5, concurrency=2, max_retry_after=120,
                                    **{**FAST, "max_retries": 2})
    with pytest.raises(TransientDestinationError, match="HTTP 503: down"):
        send(dest, batch(10))
    first_key = next(r.key for r in http_server.requests if r.records[0]["id"] == 0)
    assert [r.key for r in http_server.requests].count(first_key) == 1


def _tls_server(tmp_path):
    """A TLS HTTP server on 127.0.0.1 with a certificate from a CA of its own (written to ca.pem);
    it answers 200 and keeps the (method, path) of each request."""
    import http.server
    import ssl
    import threading

    from cryptography import x509  # the dev extra declares it: never skipped
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject, key, issuer, issuer_key, ca):
        now = dt.datetime.now(dt.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            import ipaddress
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("dfsync test CA", ca_key, "dfsync test CA", ca_key, True)
    leaf = cert("127.0.0.1", key, "dfsync test CA", ca_key, False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PATCH(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "leaf.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True).start()
    return server, seen, tmp_path / "ca.pem"


def test_plain_http_loads_no_certificates_and_an_https_route_verifies_with_the_environments(
        http_server, tmp_path, monkeypatch):
    """A destination whose every URL is http:// opens its client without loading CA certificates
    (~17 ms of CPU a run) and with a context that would refuse any certificate; one https route
    (here beside an http url) brings back httpx's verification with the environment's CA file."""
    import ssl

    from dfsync.destinations._http_session import _verify

    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    plain = _verify(dfsync.destinations.http(http_server.url, update="PATCH /{id}"))
    assert isinstance(plain, ssl.SSLContext) and plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.cert_store_stats()["x509_ca"] == 0
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a proxy may speak TLS: full verification
    assert _verify(dfsync.destinations.http(http_server.url)) is True
    monkeypatch.delenv("HTTPS_PROXY")

    server, seen, ca = _tls_server(tmp_path)
    try:
        dest = dfsync.destinations.http(http_server.url, update=("PATCH", f"https://127.0.0.1:{server.server_port}/c/{{id}}"),
                                        **{**FAST, "max_retries": 0})
        assert _verify(dest) is True
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        (result,) = send(dest, batch(3, action=["insert", "update", "insert"]))
        assert result.failed == {} and seen == [("PATCH", "/c/1")] and ids(http_server.delivered()) == [0, 2]
        monkeypatch.delenv("SSL_CERT_FILE")  # the default CAs do not know this server's: refused
        with pytest.raises(TransientDestinationError, match="CERTIFICATE_VERIFY_FAILED"):
            send(dest, batch(1, start=5, action="update"))
    finally:
        server.shutdown()

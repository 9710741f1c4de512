"""The HTTP destination at work: one session per run sends the batches as requests, with
retries, rate limits and per-record outcomes (see :mod:`dfsync.destinations._http`)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import tenacity

from .._arrow import is_interval, nested_to_json, string_scalar
from ..errors import (
    DestinationError,
    MissingDependencyError,
    TransientDestinationError,
    redact,
    register_secret,
)
from ..states import DestinationMode
from ._http_parts import (
    ACTIONS,
    RateLimiter,
    RecordsView,
    Route,
    Secret,
    Texts,
    check_fields,
    json_default,
    json_ready,
    json_texts,
    nest_expressions,
    placeholder_texts,
    record_json,
    results_parser,
    retry_after_seconds,
    snippet,
)
from .base import (
    ACTION_COLUMN,
    BatchResult,
    DestinationContext,
    DestinationSession,
    WriteBatch,
)

if TYPE_CHECKING:
    from ._http import HTTPDestination

log = logging.getLogger("dfsync.destinations.http")


class _RedactingFilter(logging.Filter):
    """Scrubs registered secrets from log records of the HTTP client (its request lines carry URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, _RedactingFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_RedactingFilter())


_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the http extra is installed in tests
        raise MissingDependencyError("httpx", "http", "the REST API destination") from exc
    return httpx


def _verify(destination: HTTPDestination) -> Any:
    """The client's ``verify``: True (httpx loads the CA certificates, ~17 ms of CPU per session)
    when a request may use TLS (an https route, or a proxy from the environment); else a context
    that verifies certificates and host names but knows no CA, so that any TLS would fail closed."""
    import ssl
    from urllib.request import getproxies

    urls = [r.url for r in destination.routes.values() if r is not None] + [destination.url]
    if any(not u.lower().startswith("http://") for u in urls) or getproxies():
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _NotSent(TransientDestinationError):
    """A request not sent because another request of the batch gave up."""


def _rejected(status: int, where: str, req: _Request, said: str) -> str:
    """A failed row's error for an HTTP 4xx/5xx answer (a 404 says what it means and what to do)."""
    if status not in (404, 410):
        return f"HTTP {status}: {said}"
    if req.route.per_record:
        return (f"HTTP {status} from {where}: the destination has no record there (deleted there?) and the "
                f"{req.action} route does not create one; the row stays failed and is sent again on the next "
                f"run, as every failed row; a route that creates records (e.g. {req.action}='PUT /{{id}}') or "
                f"removing the row from the source ends this. The server said: {said}")
    return f"HTTP {status} from {where}: no such endpoint; check the destination's url and routes. The server said: {said}"


# ------------------------------------------------------------------ session
@dataclass
class _Request:
    action: str
    route: Route
    url: str
    target: Any  # what the client is given: ``url``, or for a batched route its httpx.URL parsed once
    rows: pa.Array | range  # positions in WriteBatch.data
    records: pa.Table  # the request's records (for parsers / body functions)
    text: memoryview | None  # JSON of the request's chunk, records back to back (None: no body to encode)
    span: tuple[int, int]  # the request's byte range of ``text``, each record followed by its separator
    prefix: str
    named_by: Any  # bytes naming the records (their keys' JSON): the Idempotency-Key hashes them
    refused: str | None = None  # why the request is not sent: its records fail with this error

    @property
    def key(self) -> str:
        # hashed by the worker that sends the request (the thread planning the requests must not
        # wait for the GIL among the busy workers), in pieces hashlib hashes without letting go of
        # the GIL (2 KiB and more it does): a few microseconds that need no wait to get it back
        digest = hashlib.sha1()
        named = memoryview(self.named_by)
        for at in range(0, len(named), _HASH_PIECE):
            digest.update(named[at:at + _HASH_PIECE])
        return f"{self.prefix}-{digest.hexdigest()[:16]}"


_HASH_PIECE = 2047  # CPython's hashlib releases the GIL for 2048 bytes and more


def _positions(rows: pa.Array | range) -> list[int]:
    return list(rows) if isinstance(rows, range) else rows.to_pylist()


class HTTPSession(DestinationSession):
    destination: HTTPDestination
    # Requests per worker in each chunk of a batch encoded at once (then the last figure again),
    # the first wave cut in two: FIRST requests, encoded before any request leaves, then the rest.
    # Each next chunk is encoded while the workers send the ones before, and must be ready before
    # they run out: chunks at most double. Few chunks: the thread encoding them waits for the GIL
    # among the busy workers each time polars gives it back.
    FIRST = 1
    WAVES = (1, 2, 4, 8, 16)

    def __init__(self, destination: HTTPDestination, ctx: DestinationContext) -> None:
        super().__init__(destination, ctx)
        httpx = _httpx()
        d = destination
        headers = {"User-Agent": "dfsync", "Accept": "application/json"}
        for name, value in d.headers.items():
            headers[name] = value.resolve() if isinstance(value, Secret) else value
        if isinstance(d.auth, Secret):
            headers["Authorization"] = f"Bearer {d.auth.resolve()}"
        elif isinstance(d.auth, tuple):
            token = base64.b64encode(f"{d.auth[0]}:{d.auth[1].resolve()}".encode()).decode()
            register_secret(token)
            headers["Authorization"] = f"Basic {token}"
        self.client = httpx.Client(
            headers=headers,
            verify=_verify(d),
            timeout=httpx.Timeout(d.timeout),
            limits=httpx.Limits(max_connections=d.concurrency, max_keepalive_connections=d.concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=d.concurrency, thread_name_prefix="dfsync-http")
        started = threading.Barrier(d.concurrency, timeout=10)  # start the workers now, not amid a batch
        for _ in range(d.concurrency):
            self.pool.submit(started.wait)
        self.limiter = RateLimiter(*d.rate) if d.rate else None
        self.stop = threading.Event()  # set when one request gave up: the others stop retrying
        digest = hashlib.sha1(ctx.sync_name.encode()).hexdigest()[:8]
        self.key_prefix = f"dfsync-{digest}-{ctx.run_tag}"
        self.columns: list[str] = []
        self.exprs: dict[tuple, tuple[list[pl.Expr], dict[str, pl.Expr]]] = {}  # by schema, keys, separator
        self.set_type = "content-type" not in {k.lower() for k in d.headers}
        # exponential backoff plus jitter (spreads the retries of concurrent requests apart)
        self.wait = (tenacity.wait_exponential(multiplier=d.retry_initial_wait, max=d.retry_max_wait)
                     + tenacity.wait_random(0, d.retry_initial_wait))

    # -------------------------------------------------------------- prepare
    def prepare(self, schema: pa.Schema) -> None:
        self.columns = [f.name for f in schema if f.name != ACTION_COLUMN]
        check_fields(self.destination.routes, self.columns)
        pk = list(self.ctx.primary_key)
        missing = [k for k in pk if k not in self.columns]
        if missing:
            raise DestinationError(f"primary key {missing} is not among the fields sent: {self.columns}")
        if self.destination.nested:
            nest_expressions(self.columns)  # raises ConfigError on colliding paths

    def _frame(self, table: pa.Table, group: str) -> pl.DataFrame:
        """The fields sent (all, or the keys of a delete) as one polars frame, made once per batch
        and sliced into chunks (each conversion waits for the GIL among the busy workers)."""
        if not self.columns:
            self.prepare(table.schema)
        picked = table.select(self.columns if group == "all" else (list(self.ctx.primary_key) or self.columns))
        frame = pl.from_arrow(nested_to_json(picked, [f.name for f in picked.schema if is_interval(f.type)]))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def _texts(self, frame: pl.DataFrame, pk: list[str], sep: str | None) -> tuple[Texts | None, Texts]:
        """The records' JSON as sent (ISO dates, base64 bytes, nested paths), each followed by
        ``sep`` (None: no bodies to encode), and their key fields' JSON Lines (they name the
        requests); the polars expressions are made once per schema."""
        cache = (tuple(frame.schema.items()), tuple(pk), sep)
        if cache not in self.exprs:
            texts = {"key": record_json([pl.col(k) for k in pk], "\n")}
            if sep is not None:
                fields = nest_expressions(frame.columns) if self.destination.nested else [pl.col(c) for c in frame.columns]
                texts["body"] = record_json(fields, sep)
            self.exprs[cache] = (json_ready(frame.schema), texts)
        out = json_texts(frame, *self.exprs[cache])
        return out.get("body"), out["key"]

    # -------------------------------------------------------------- write
    def write(self, batch: WriteBatch) -> BatchResult:
        data = batch.data
        groups = []
        actions = data.column(ACTION_COLUMN)
        present = set(pc.unique(actions).to_pylist())
        if self.ctx.mode == DestinationMode.UPDATE and "insert" in present:
            # update mode changes records that exist and never creates one: a row the sync has not
            # delivered yet goes by the update route too (a per-record 404 marks it skipped), as the
            # SQL destinations apply every row of an update-mode run as an UPDATE
            actions = pc.if_else(pc.equal(actions, string_scalar("insert")), string_scalar("update"), actions)
            present = (present - {"insert"}) | {"update"}
        for action in ACTIONS:
            if action not in present:
                continue
            if len(present) == 1:  # one action (a first load): every row, no comparison
                rows = range(data.num_rows)
            else:
                rows = pc.indices_nonzero(pc.equal(actions, string_scalar(action)))  # a str would import pandas
            route = self.destination.routes[action]
            if route is None:
                raise DestinationError(
                    f"the batch has {len(rows)} {action} rows but the http destination has no {action} "
                    f"route; give it one, e.g. {action}='DELETE /{{id}}'")
            groups.append((action, route, rows))
        self.stop.clear()
        # requests of a chunk go out while the next chunk is encoded: the workers take them from a
        # queue (a put costs this thread no wait for the GIL, a pool submit per request did)
        work: queue.SimpleQueue = queue.SimpleQueue()
        workers: list[Future] = []
        errors: list[tuple[int, BaseException]] = []
        order = itertools.count()
        try:
            for action, route, rows in groups:
                records = data if len(rows) == data.num_rows else data.take(rows)
                for req in self._plan(action, route, records.drop_columns([ACTION_COLUMN]), rows):
                    work.put((next(order), req))
                    if not workers:
                        workers = [self.pool.submit(self._work, work) for _ in range(self.destination.concurrency)]
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the requests in flight
            self.stop.set()
            errors.append((-1, exc))
        for _ in workers:
            work.put(None)
        result = BatchResult()
        for worker in workers:  # wait for every request, even after one failed: none is left in flight
            failed, skipped, failures = worker.result()
            result.failed.update(failed)
            result.skipped.update(skipped)
            errors.extend(failures)
        if errors:
            raised = [e for _, e in sorted(errors, key=lambda e: e[0])]  # encoding first, then by request
            # the root cause first: a terminal error, else the request that gave up
            terminal = [e for e in raised if not isinstance(e, TransientDestinationError)]  # incl. encoding
            causes = [e for e in raised if not isinstance(e, _NotSent)]
            raise (terminal or causes or raised)[0]
        return result

    def _work(self, work: queue.SimpleQueue) -> tuple[dict[int, str], dict[int, str], list[tuple[int, BaseException]]]:
        """One worker: send the queued requests until the end marker; their outcomes and errors."""
        failed: dict[int, str] = {}
        skipped: dict[int, str] = {}
        errors: list[tuple[int, BaseException]] = []
        while (item := work.get()) is not None:
            n, req = item
            try:
                f, s = self._send(req)
            except BaseException as exc:  # noqa: BLE001 - raised by write(), after the others
                errors.append((n, exc))
                continue
            failed.update(f)
            skipped.update(s)
        return failed, skipped, errors

    def _plan(self, action: str, route: Route, table: pa.Table, rows: pa.Array | range) -> Iterator[_Request]:
        d = self.destination
        group = "key" if action == "delete" else "all"
        prefix = f"{self.key_prefix}-{action}"
        pk = list(self.ctx.primary_key) or list(route.fields) or self.columns
        if route.per_record:
            yield from self._plan_per_record(action, route, table, rows, group, prefix, pk)
            return
        sep = None if callable(d.body) else "\n" if d.body == "ndjson" else ","
        target = _httpx().URL(route.url)  # parsed once, not by the client for every request
        bs, wave = d.batch_size, self.WAVES[0] * d.concurrency * d.batch_size
        frame, at = None, 0  # the records from row ``at`` on, as polars
        for start, size in self._chunks(table.num_rows):
            part = table.slice(start, size)
            if frame is None or start + size > at + frame.height:  # the first wave alone, then the rest at once
                end = max(start + size, wave) if start < wave else table.num_rows
                frame, at = self._frame(table.slice(start, end - start), group), start
            body, keys = self._texts(frame.slice(start - at, size), pk, sep)
            for a in range(0, size, bs):
                ka, kb = keys.span(a, a + bs)
                yield _Request(action, route, route.url, target, rows[start + a:start + a + bs], part.slice(a, bs),
                               body.data if body else None, body.span(a, a + bs) if body else (0, 0),
                               prefix, keys.data[ka:kb])

    def _chunks(self, total: int) -> Iterator[tuple[int, int]]:
        """(first row, rows) of each chunk encoded at once: ``FIRST`` requests (sending starts
        after the least encoding), the rest of the first wave, then ``WAVES`` (requests per
        worker), the last figure repeated; the last chunk takes a remainder under half a chunk."""
        d = self.destination
        per_wave = d.concurrency * d.batch_size
        first = min(self.FIRST, self.WAVES[0] * d.concurrency) * d.batch_size
        sizes = itertools.chain((first, self.WAVES[0] * per_wave - first),
                                (w * per_wave for w in self.WAVES[1:]), itertools.repeat(self.WAVES[-1] * per_wave))
        start = 0
        for chunk in sizes:
            if start >= total:
                return
            if chunk <= 0:
                continue
            if total - start - chunk < chunk // 2:  # no small chunk at the end
                chunk = total - start
            yield start, chunk
            start += chunk

    def _plan_per_record(self, action: str, route: Route, table: pa.Table, rows: pa.Array | range, group: str,
                         prefix: str, pk: list[str]) -> list[_Request]:
        no_body = callable(self.destination.body) or action == "delete"
        body, _ = self._texts(self._frame(table, group), pk, None if no_body else "\n")
        picked = table.select(list(route.fields))
        frame = pl.from_arrow(nested_to_json(picked, [f.name for f in picked.schema if is_interval(f.type)]))
        fields = placeholder_texts(frame)  # type: ignore[arg-type]
        keys = list(zip(*(table.column(k).to_pylist() for k in pk), strict=True))
        out = []
        for i in range(table.num_rows):
            values = {f: v[i] for f, v in fields.items()}
            url = route.format(values)
            out.append(_Request(action, route, url, url, rows[i:i + 1], table.slice(i, 1),
                                body.data if body else None, body.span(i, i + 1) if body else (0, 0),
                                prefix, json.dumps(keys[i], default=str).encode(), route.refuse_empty(values)))
        return out

    def _body(self, req: _Request) -> tuple[bytes | None, str | None]:
        d = self.destination
        if req.action == "delete" and req.route.per_record:
            return None, None
        if callable(d.body):
            made = d.body(list(RecordsView(req.records)))
            if isinstance(made, bytes):
                return made, "application/json"
            if isinstance(made, str):
                return made.encode(), "application/json"
            return json.dumps(made, default=json_default).encode(), "application/json"
        assert req.text is not None
        a, b = req.span  # each record is followed by its separator: a newline, or a comma in an array
        if req.route.per_record:
            return bytes(req.text[a:b - 1]), "application/json"
        if d.body == "ndjson":
            return bytes(req.text[a:b]), "application/x-ndjson"
        if d.envelope:  # one copy of the records' bytes, with the brackets around them
            return b"".join((b"{", json.dumps(d.envelope).encode(), b":[", req.text[a:b - 1], b"]}")), "application/json"
        return b"".join((b"[", req.text[a:b - 1], b"]")), "application/json"

    def _send(self, req: _Request) -> tuple[dict[int, str], dict[int, str]]:
        """Send one request with retries; return (failed, skipped) by row of the batch."""
        if req.refused:
            return {r: req.refused for r in _positions(req.rows)}, {}
        content, ctype = self._body(req)
        headers = {self.destination.idempotency_header: req.key}
        if ctype and self.set_type:
            headers["Content-Type"] = ctype
        try:  # the first attempt is a plain call: tenacity's loop costs ~16 us a request
            return self._attempt(req, content, headers)
        except _Retryable as exc:
            return self._retry(req, content, headers, exc)

    def _attempt(self, req: _Request, content: bytes | None, headers: dict[str, str]) -> tuple[dict[int, str], dict[int, str]]:
        """One attempt: _Retryable when it may be retried."""
        httpx = _httpx()
        if self.stop.is_set() or (self.limiter and not self.limiter.acquire(self.stop)):
            raise _NotSent(
                f"{req.route.method} {redact(req.url)}: not sent because another request of the "
                f"batch gave up; the run is paused, run the sync again to resume")
        try:
            response = self.client.request(req.route.method, req.target, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"no answer within {self.destination.timeout:g}s ({type(exc).__name__})") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise _Retryable(f"connection problem: {exc or type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise DestinationError(f"{req.route.method} {redact(req.url)}: {exc}") from exc
        return self._outcome(req, response)

    def _retry(self, req: _Request, content: bytes | None, headers: dict[str, str],
               first: _Retryable) -> tuple[dict[int, str], dict[int, str]]:
        """The attempts after a first one that failed with ``first``, in tenacity's loop: its first
        iteration replays that failure, so attempt numbers, waits and logs are those of one loop."""
        d = self.destination
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(d.max_retries + 1),
            wait=self._wait_for,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: self._log_retry(req, state),
            sleep=self._sleep,  # a closing session (Ctrl-C, another request gave up) cuts waits short
            reraise=True,
        )
        replay: list[_Retryable] = [first]
        try:
            for attempt in retrying:
                with attempt:
                    if replay:
                        raise replay.pop()
                    return self._attempt(req, content, headers)
        except _Retryable as exc:
            self.stop.set()
            raise TransientDestinationError(
                f"{req.route.method} {redact(req.url)}: {redact(exc.reason)} (gave up after "
                f"{d.max_retries + 1} attempts); the run is paused, run the sync again to resume"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _wait_for(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return exc.retry_after
        return float(self.wait(state))

    def _log_retry(self, req: _Request, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s %s: %s; retry %d of %d in %.2fs", req.route.method, redact(req.url),
                    redact(str(exc)), state.attempt_number, self.destination.max_retries,
                    state.upcoming_sleep)

    def _outcome(self, req: _Request, response: Any) -> tuple[dict[int, str], dict[int, str]]:
        d = self.destination
        status = response.status_code
        if status < 300:
            return self._answered(req, response)
        rows = _positions(req.rows)
        where = f"{req.route.method} {redact(req.url)}"
        if status in _RETRY_STATUS:
            after = retry_after_seconds(response.headers.get("Retry-After"))
            if after is not None and after > d.max_retry_after:
                self.stop.set()
                raise TransientDestinationError(
                    f"{where}: HTTP {status}, the server asks to wait {after:.0f}s (more than "
                    f"max_retry_after={d.max_retry_after:g}s); the run is paused, run the sync again later")
            raise _Retryable(f"HTTP {status}: {snippet(response)}", after)
        if status in (401, 407):
            raise DestinationError(
                f"{where}: HTTP {status}, the server refused the credentials ({snippet(response)}); "
                f"check auth= / the token's environment variable")
        if 400 <= status < 600:
            if status in (404, 410) and req.route.per_record and req.action == "delete":
                return {}, {}  # the record is already gone: what the delete wanted (succeeded)
            if status == 404 and req.route.per_record and self.ctx.mode == DestinationMode.UPDATE:
                return {}, {r: "no such record at the destination (update mode only updates existing records)"
                            for r in rows}
            return {r: _rejected(status, where, req, snippet(response)) for r in rows}, {}
        return {r: f"HTTP {status}: unexpected redirect to {response.headers.get('Location')}"
                for r in rows}, {}

    def _answered(self, req: _Request, response: Any) -> tuple[dict[int, str], dict[int, str]]:
        """The records a 2xx answer reports as failed (read by the response parser)."""
        d = self.destination
        records = RecordsView(req.records)
        try:
            if d.response_parser is not None:
                failed = d.response_parser(response, records) or {}
            else:
                failed = results_parser(response, records, self.ctx.primary_key)
        except Exception as exc:  # a user parser that breaks must not lose the batch silently
            where = f"{req.route.method} {redact(req.url)}"
            raise DestinationError(f"{where}: response_parser raised {type(exc).__name__}: {exc}") from exc
        if not failed:
            return {}, {}
        rows = _positions(req.rows)
        return {rows[i]: redact(str(e)) for i, e in failed.items() if 0 <= i < len(rows)}, {}

    # -------------------------------------------------------------- end
    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

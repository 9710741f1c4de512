"""A REST API as a destination: batched JSON requests, retries, rate limits, per-record outcomes.

    dest = dfsync.destinations.http(
        "https://crm.example.com/api/contacts",
        update="PATCH /{id}",             # one request per record: the key fills the template
        delete="DELETE /{id}",
        auth="env:CRM_TOKEN",             # bearer token read from the environment at run time
        batch_size=100, concurrency=4, rate_limit="100/minute",
    )

How a batch is sent
    Rows are grouped by action (``insert`` / ``update`` / ``delete``). Each action has a
    route ``"METHOD path-or-url"``: a path starting with ``/`` is appended to ``url``, a
    full URL is used as is, and no path means ``url``. A route whose URL has ``{field}``
    placeholders sends one request per record (the field's value, URL-quoted, fills the
    placeholder); otherwise records go ``batch_size`` at a time in one body. Deletes
    carry only the primary-key fields (per-record deletes carry no body). By default
    inserts and updates go to ``method url`` and deletes have no route, so
    ``destination_mode="mirror"`` needs ``delete=``; ``replace`` is not supported.

Bodies
    ``body="json"`` (a JSON array, the default), ``"ndjson"`` (JSON Lines) or a function
    ``records -> body`` (``records`` is a list of dicts; str/bytes are sent as they are,
    anything else is JSON-encoded). ``envelope="data"`` wraps an array as ``{"data": [...]}``.
    Per-record requests send one JSON object. Encoding is vectorised and pipelined: the
    records go in chunks of a few requests' worth (the first chunk one request per worker,
    so sending starts at once); polars makes each chunk JSON-ready in one ``select`` and
    writes it as JSON Lines in one call, and each request's body is a byte range of that
    text (no per-record Python); requests of a chunk are sent while the next is encoded.
    Datetimes become ISO 8601, binary becomes base64, decimals become strings.

Nested JSON
    Field names are paths: ``"address.city"`` builds ``{"address": {"city": ..}}``,
    ``"tags[]"`` builds a list (a scalar becomes a one-element list, a list stays a list),
    ``"tags[0]"``, ``"tags[1]"`` build a list from several fields in index order, and the
    forms combine (``"items[].sku"`` gives ``[{"sku": ..}]``). The transform is one polars
    ``select`` of ``struct``/``concat_list`` expressions; ``nested=False`` sends names as
    they are. URL placeholders use the flat field name (``"/{user.id}"``).

Retries and outcomes
    429, 408, 5xx, timeouts and dropped connections are retried with exponential backoff
    and jitter (tenacity), honouring ``Retry-After`` up to ``max_retry_after`` seconds.
    When they outlast ``max_retries`` the write raises ``TransientDestinationError`` and
    the run pauses; resuming re-sends the batch with the same ``Idempotency-Key`` values.
    401/407 fail the run (check the credentials). Other 4xx fail the request's records at
    once with a snippet of the response; in update mode a per-record 404 marks the record
    skipped. A 2xx body is read by ``response_parser(response, records) -> {index: error}``;
    the default reads ``{"results": [{"index"|"id": .., "status": .., "error": ..}]}``
    (an entry fails when it has an ``error``, a status >= 400 or "error"/"failed"; entries
    are matched by ``index``, else by ``id`` against a one-field primary key, else by
    position). A 207 answer must list every record: unlisted records count as failed.

Idempotency and delivery
    At least once: ``transactional = False`` and ``committed_batches()`` is empty. Every
    request carries ``Idempotency-Key: dfsync-<hash of sync name>-s<sync_id>-r<run_id>-<action>-<h>``
    where ``h`` hashes the primary keys of the request's records (in order). It is the
    same on every retry, and on every re-send of the same records in the same run (a
    resumed run), whatever batch number the runner gives them; a new run gets new keys.

Secrets
    ``auth`` is a bearer token ``str`` or ``("user", "password")``; it and any header value
    may be ``"env:NAME"``, read when a run opens the destination and kept out of
    ``config()``. A literal secret (or a literal value of a header whose name looks like
    a credential) is kept in memory only: the destination is then ``session_only`` and
    cannot be rebuilt from the workspace by another process (CLI, scheduler).
    Secrets are registered with :func:`dfsync.errors.register_secret` and never appear
    in reprs, logs or errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import tenacity

from ..errors import (
    ConfigError,
    DestinationError,
    MissingDependencyError,
    SessionOnlyError,
    TransientDestinationError,
    redact,
    register_secret,
)
from ..states import DestinationMode
from ._http_parts import (
    SESSION_ONLY,
    RateLimiter,
    RecordsView,
    Route,
    Secret,
    callable_ref,
    json_ready,
    line_groups,
    load_callable,
    nest_expressions,
    parse_rate_limit,
    parse_route,
    results_parser,
    retry_after_seconds,
    snippet,
)
from ._sql import is_interval, nested_to_json
from .base import (
    ACTION_COLUMN,
    BatchResult,
    Destination,
    DestinationContext,
    DestinationSession,
    WriteBatch,
    register_destination,
)

__all__ = ["HTTPDestination", "HTTPSession", "RateLimiter", "nest_expressions", "parse_rate_limit",
           "results_parser"]

log = logging.getLogger("dfsync.destinations.http")

ACTIONS = ("insert", "update", "delete")
def _scrub_query_secrets(url: str) -> str:
    """The URL with secret-looking query values replaced by the session-only marker."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    scrubbed = []
    for k, v in pairs:
        if _SECRET_HEADER.search(k) or re.search(r"(?i)sig(nature)?$|^key$", k):
            register_secret(v)
            v = SESSION_ONLY
        scrubbed.append((k, v))
    return urlunsplit(parts._replace(query=urlencode(scrubbed, safe="<> ")))


class _RedactingFilter(logging.Filter):
    """Scrubs registered secrets from log records of the HTTP client (its request lines carry URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ..errors import redact

        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


for _name in ("httpx", "httpcore"):
    if not any(isinstance(f, _RedactingFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_RedactingFilter())


_SECRET_HEADER = re.compile(r"(?i)authorization|token|secret|api[-_]?key|password|cookie|(^|[-_])key$")
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


def _httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:  # pragma: no cover - the http extra is installed in tests
        raise MissingDependencyError("httpx", "http", "the REST API destination") from exc
    return httpx


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class _NotSent(TransientDestinationError):
    """A request not sent because another request of the batch gave up."""


# ------------------------------------------------------------------ destination
@register_destination
class HTTPDestination(Destination):
    """Records sent to a REST API; see the module docstring for routes, bodies and outcomes.

    >>> dest = HTTPDestination("https://api.example.com/contacts", auth="env:TOKEN", batch_size=200)
    """

    kind = "http"
    #: JSON has no NaN or infinity (they would be sent as null): refused before anything is sent
    nonfinite = ""
    transactional = False
    modes = frozenset({DestinationMode.INSERT, DestinationMode.UPSERT, DestinationMode.UPDATE,
                       DestinationMode.MIRROR})

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        insert: str | tuple[str, str] | None = None,
        update: str | tuple[str, str] | None = None,
        delete: str | tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        auth: str | tuple[str, str] | None = None,
        body: str | Callable[[list[dict[str, Any]]], Any] = "json",
        envelope: str | None = None,
        batch_size: int = 100,
        concurrency: int = 4,
        rate_limit: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 6,
        retry_initial_wait: float = 0.5,
        retry_max_wait: float = 30.0,
        max_retry_after: float = 300.0,
        response_parser: Callable[..., dict[int, str] | None] | str | None = None,
        idempotency_header: str = "Idempotency-Key",
        nested: bool = True,
    ) -> None:
        if not isinstance(url, str) or not re.match(r"(?i)https?://[^/\s]+", url):
            raise ConfigError(f"destinations.http() needs an http(s) URL, not {url!r}")
        self.url = url
        # A credential in the query string (?access_token=...) is a secret like any other: it is
        # kept in memory, scrubbed from messages and logs, and never stored (session-only).
        self.stored_url = _scrub_query_secrets(url)
        self.method = str(method).upper()
        self.specs = {"insert": insert, "update": update, "delete": delete}
        self.routes: dict[str, Route | None] = {
            "insert": parse_route(insert, url, self.method),
            "update": parse_route(update, url, self.method),
            "delete": parse_route(delete, url, None),
        }
        self.headers: dict[str, str | Secret] = {}
        for name, value in (headers or {}).items():
            if not isinstance(value, str):
                raise ConfigError(f"header {name!r} must be a string, not {type(value).__name__}")
            secret = value.startswith("env:") or bool(_SECRET_HEADER.search(name))
            self.headers[str(name)] = Secret(value) if secret else value
        self.auth: Secret | tuple[str, Secret] | None
        if auth is None:
            self.auth = None
        elif isinstance(auth, str):
            self.auth = Secret(auth)
        elif isinstance(auth, (tuple, list)) and len(auth) == 2 and all(isinstance(a, str) for a in auth):
            self.auth = (auth[0], Secret(auth[1]))
        else:
            raise ConfigError("auth= takes a bearer token 'str' (or 'env:NAME') or ('user', 'password')")
        if not (body in ("json", "ndjson") or callable(body) or isinstance(body, str)):
            raise ConfigError(f"body= is 'json', 'ndjson' or a function records -> body, not {body!r}")
        self.body_ref = body if isinstance(body, str) else callable_ref(body)
        self.body = load_callable(body, "body") if body not in ("json", "ndjson") else body
        if isinstance(self.body, str) and self.body not in ("json", "ndjson"):
            raise ConfigError(f"body={body!r}: choose 'json', 'ndjson' or a function records -> body")
        self.envelope = envelope
        for opt, count, low in (("batch_size", batch_size, 1), ("concurrency", concurrency, 1),
                                ("max_retries", max_retries, 0)):
            if not isinstance(count, int) or count < low:
                raise ConfigError(f"{opt} must be an integer >= {low}, not {count!r}")
        for opt, secs in (("timeout", timeout), ("retry_initial_wait", retry_initial_wait),
                          ("retry_max_wait", retry_max_wait), ("max_retry_after", max_retry_after)):
            if not isinstance(secs, (int, float)) or secs < 0 or (opt == "timeout" and secs == 0):
                raise ConfigError(f"{opt} must be a positive number of seconds, not {secs!r}")
        self.batch_size, self.concurrency = batch_size, concurrency
        self.rate_limit = rate_limit
        self.rate = parse_rate_limit(rate_limit) if rate_limit is not None else None
        self.timeout, self.max_retries = float(timeout), max_retries
        self.retry_initial_wait, self.retry_max_wait = float(retry_initial_wait), float(retry_max_wait)
        self.max_retry_after = float(max_retry_after)
        self.parser_ref = callable_ref(response_parser)
        self.response_parser = load_callable(response_parser, "response_parser")
        self.idempotency_header = idempotency_header
        self.nested = bool(nested)

    @property
    def session_only(self) -> bool:
        """True when a secret or function is held in memory only (no other process can run it)."""
        return SESSION_ONLY in json.dumps(self.config())

    def config(self) -> dict[str, Any]:
        auth: Any = None
        if isinstance(self.auth, Secret):
            auth = self.auth.stored()
        elif isinstance(self.auth, tuple):
            auth = [self.auth[0], self.auth[1].stored()]
        return {
            "url": self.stored_url, "method": self.method, **{a: self._spec(a) for a in ACTIONS},
            "headers": {k: v.stored() if isinstance(v, Secret) else v for k, v in self.headers.items()} or None,
            "auth": auth, "body": self.body_ref, "envelope": self.envelope,
            "batch_size": self.batch_size, "concurrency": self.concurrency, "rate_limit": self.rate_limit,
            "timeout": self.timeout, "max_retries": self.max_retries,
            "retry_initial_wait": self.retry_initial_wait, "retry_max_wait": self.retry_max_wait,
            "max_retry_after": self.max_retry_after, "response_parser": self.parser_ref,
            "idempotency_header": self.idempotency_header, "nested": self.nested,
        }

    def _spec(self, action: str) -> Any:
        spec = self.specs[action]
        return list(spec) if isinstance(spec, tuple) else spec

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Destination:
        config = dict(config)
        auth = config.get("auth")
        held = [k for k, v in (config.get("headers") or {}).items() if v == SESSION_ONLY]
        if SESSION_ONLY in str(config.get("url", "")):
            held = ["url query string"]
        if auth == SESSION_ONLY or (isinstance(auth, list) and auth[1] == SESSION_ONLY) or held:
            what = "auth secret" if not held else (held[0] if held[0].startswith("url") else f"header {held[0]!r}")
            raise SessionOnlyError(
                f"this http destination's {what} was given literally, so it was kept in memory only; "
                f"run the sync from the session that created it, or create it with the secret written "
                f"'env:NAME' (read from the environment at run time)"
            )
        if isinstance(auth, list):
            config["auth"] = tuple(auth)
        for a in ACTIONS:
            if isinstance(config.get(a), list):
                config[a] = tuple(config[a])
        return cls(config.pop("url"), **config)

    def identity(self) -> str:
        routes = {a: r.spec() if r else None for a, r in self.routes.items()}
        return json.dumps({"kind": self.kind, "url": self.url, "routes": routes}, sort_keys=True)

    def describe(self) -> str:
        extra = "".join(f", {a}={r.spec()!r}" for a, r in self.routes.items()
                        if r and (a == "delete" or r.spec() != f"{self.method} {self.url}"))
        rate = f", rate_limit={self.rate_limit!r}" if self.rate_limit else ""
        return (f"http({self.method} {self.url}{extra}, batch_size={self.batch_size}, "
                f"concurrency={self.concurrency}{rate})")

    def validate(self, columns: Sequence[str], primary_key: Sequence[str], mode: DestinationMode) -> None:
        super().validate(columns, primary_key, mode)
        if mode.sends_deletes and self.routes["delete"] is None:
            raise ConfigError("destination_mode='mirror' sends deletes: give the http destination a "
                              "delete route, e.g. delete='DELETE /{" + (primary_key[0] if primary_key else "id") + "}'")
        _check_fields(self.routes, columns)
        if self.nested:
            nest_expressions([c for c in columns if c != ACTION_COLUMN])

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return HTTPSession(self, ctx)


def _check_fields(routes: dict[str, Route | None], columns: Sequence[str]) -> None:
    for action, route in routes.items():
        missing = [f for f in (route.fields if route else ()) if f not in columns]
        if missing:
            raise ConfigError(
                f"the {action} route {route.spec()!r} uses {', '.join(missing)}, which the records do "  # type: ignore[union-attr]
                f"not have; fields sent: {', '.join(c for c in columns if c != ACTION_COLUMN)}"
            )


# ------------------------------------------------------------------ session
@dataclass
class _Request:
    action: str
    route: Route
    url: str
    rows: pa.Array  # positions in WriteBatch.data
    records: pa.Table  # the request's records (for parsers / body functions)
    text: bytes | None  # JSON Lines of the request's chunk (None: per-record delete or body function)
    span: tuple[int, int]  # the request's byte range of ``text``
    key: str


class HTTPSession(DestinationSession):
    destination: HTTPDestination

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
            timeout=httpx.Timeout(d.timeout),
            limits=httpx.Limits(max_connections=d.concurrency, max_keepalive_connections=d.concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=d.concurrency, thread_name_prefix="dfsync-http")
        self.limiter = RateLimiter(*d.rate) if d.rate else None
        self.stop = threading.Event()  # set when one request gave up: the others stop retrying
        digest = hashlib.sha1(ctx.sync_name.encode()).hexdigest()[:8]
        self.key_prefix = f"dfsync-{digest}-{ctx.run_tag}"
        self.columns: list[str] = []
        self.set_type = "content-type" not in {k.lower() for k in d.headers}
        # exponential backoff plus jitter (spreads the retries of concurrent requests apart)
        self.wait = (tenacity.wait_exponential(multiplier=d.retry_initial_wait, max=d.retry_max_wait)
                     + tenacity.wait_random(0, d.retry_initial_wait))

    # -------------------------------------------------------------- prepare
    def prepare(self, schema: pa.Schema) -> None:
        self.columns = [f.name for f in schema if f.name != ACTION_COLUMN]
        _check_fields(self.destination.routes, self.columns)
        pk = list(self.ctx.primary_key)
        missing = [k for k in pk if k not in self.columns]
        if missing:
            raise DestinationError(f"primary key {missing} is not among the fields sent: {self.columns}")
        if self.destination.nested:
            nest_expressions(self.columns)  # raises ConfigError on colliding paths

    def _json_frames(self, table: pa.Table, group: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The records as polars will write them (ISO dates, base64 bytes, nested paths), and
        the flat JSON-ready frame they come from (its key columns name the requests)."""
        if not self.columns:
            self.prepare(table.schema)
        cols = self.columns if group == "all" else (list(self.ctx.primary_key) or self.columns)
        picked = table.select(cols)
        ready = pl.from_arrow(nested_to_json(picked, [f.name for f in picked.schema if is_interval(f.type)]))
        ready = ready.select(json_ready(ready.schema))  # type: ignore[union-attr]
        return (ready.select(nest_expressions(cols)) if self.destination.nested else ready), ready

    # -------------------------------------------------------------- write
    def write(self, batch: WriteBatch) -> BatchResult:
        data = batch.data
        groups = []
        actions = data.column(ACTION_COLUMN)
        for action in ACTIONS:
            rows = pc.indices_nonzero(pc.equal(actions, action))
            if len(rows) == 0:
                continue
            route = self.destination.routes[action]
            if route is None:
                raise DestinationError(
                    f"the batch has {len(rows)} {action} rows but the http destination has no {action} "
                    f"route; give it one, e.g. {action}='DELETE /{{id}}'")
            groups.append((action, route, rows))
        self.stop.clear()
        futures: list[Future] = []
        errors: list[BaseException] = []
        try:  # requests of a chunk go out while the next chunk is encoded
            for action, route, rows in groups:
                records = data if len(rows) == data.num_rows else data.take(rows)
                for req in self._plan(action, route, records.drop_columns([ACTION_COLUMN]), rows):
                    futures.append(self.pool.submit(self._send, req))
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the requests in flight
            self.stop.set()
            errors.append(exc)
        result = BatchResult()
        for fut in futures:  # wait for every request, even after one failed: none is left in flight
            try:
                failed, skipped = fut.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                continue
            result.failed.update(failed)
            result.skipped.update(skipped)
        if errors:
            # the root cause first: a terminal error, else the request that gave up
            terminal = [e for e in errors if not isinstance(e, TransientDestinationError)]  # incl. encoding
            causes = [e for e in errors if not isinstance(e, _NotSent)]
            raise (terminal or causes or errors)[0]
        return result

    def _plan(self, action: str, route: Route, table: pa.Table, rows: pa.Array) -> Iterator[_Request]:
        d = self.destination
        group = "key" if action == "delete" else "all"
        prefix = f"{self.key_prefix}-{action}"
        pk = list(self.ctx.primary_key) or list(route.fields) or self.columns
        if route.per_record:
            yield from self._plan_per_record(action, route, table, rows, group, prefix, pk)
            return
        bs, start = d.batch_size, 0
        chunk = bs * d.concurrency  # the first chunk: one request per worker, then larger ones
        while start < table.num_rows:
            part = table.slice(start, chunk)
            frame, ready = self._json_frames(part, group)
            text = None if callable(d.body) else frame.write_ndjson().encode()
            keys = ready.select(pk).write_ndjson().encode()
            spans = line_groups(text, bs) if text is not None else [(0, 0)] * len(line_groups(keys, bs))
            for n, (span, (a, b)) in enumerate(zip(spans, line_groups(keys, bs), strict=True)):
                yield _Request(action, route, route.url, rows[start + n * bs:start + (n + 1) * bs],
                               part.slice(n * bs, bs), text, span,
                               f"{prefix}-{hashlib.sha1(keys[a:b]).hexdigest()[:16]}")
            start += chunk
            chunk = min(chunk * 2, bs * d.concurrency * 8)

    def _plan_per_record(self, action: str, route: Route, table: pa.Table, rows: pa.Array, group: str,
                         prefix: str, pk: list[str]) -> list[_Request]:
        frame, _ = self._json_frames(table, group)
        text = frame.write_ndjson().encode()
        fields = {f: table.column(f).to_pylist() for f in route.fields}
        keys = list(zip(*(table.column(k).to_pylist() for k in pk), strict=True))
        out = []
        for i, span in enumerate(line_groups(text, 1) if text else []):
            url = route.format({f: v[i] for f, v in fields.items()})
            digest = hashlib.sha1(json.dumps(keys[i], default=str).encode()).hexdigest()[:16]
            out.append(_Request(action, route, url, rows[i:i + 1], table.slice(i, 1), text,
                                (span[0], span[1] - 1), f"{prefix}-{digest}"))
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
            return json.dumps(made, default=str).encode(), "application/json"
        assert req.text is not None
        a, b = req.span
        if req.route.per_record:
            return req.text[a:b], "application/json"
        if d.body == "ndjson":
            return req.text[a:b], "application/x-ndjson"
        # JSON Lines -> a JSON array: newlines only separate records (JSON escapes them in strings)
        array = b"[" + req.text[a:b - 1].replace(b"\n", b",") + b"]"
        if d.envelope:
            array = b"{" + json.dumps(d.envelope).encode() + b":" + array + b"}"
        return array, "application/json"

    def _send(self, req: _Request) -> tuple[dict[int, str], dict[int, str]]:
        """Send one request with retries; return (failed, skipped) by row of the batch."""
        httpx = _httpx()
        d = self.destination
        content, ctype = self._body(req)
        headers = {d.idempotency_header: req.key}
        if ctype and self.set_type:
            headers["Content-Type"] = ctype
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(d.max_retries + 1),
            wait=self._wait_for,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: self._log_retry(req, state),
            sleep=self._sleep,  # a closing session (Ctrl-C, another request gave up) cuts waits short
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if self.stop.is_set() or (self.limiter and not self.limiter.acquire(self.stop)):
                        raise _NotSent(
                            f"{req.route.method} {redact(req.url)}: not sent because another request of the "
                            f"batch gave up; the run is paused, run the sync again to resume")
                    try:
                        response = self.client.request(req.route.method, req.url, content=content,
                                                       headers=headers)
                    except httpx.TimeoutException as exc:
                        raise _Retryable(f"no answer within {d.timeout:g}s ({type(exc).__name__})") from exc
                    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                        raise _Retryable(f"connection problem: {exc or type(exc).__name__}") from exc
                    except httpx.HTTPError as exc:
                        raise DestinationError(f"{req.route.method} {redact(req.url)}: {exc}") from exc
                    return self._outcome(req, response)
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
        rows = req.rows.to_pylist() if not 200 <= status < 300 else []
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
            error = f"HTTP {status}: {snippet(response)}"
            if status == 404 and req.route.per_record and self.ctx.mode == DestinationMode.UPDATE:
                return {}, {r: "no such record at the destination (update mode only updates existing records)"
                            for r in rows}
            return {r: error for r in rows}, {}
        if status >= 300:
            return {r: f"HTTP {status}: unexpected redirect to {response.headers.get('Location')}"
                    for r in rows}, {}
        records = RecordsView(req.records)
        try:
            if d.response_parser is not None:
                failed = d.response_parser(response, records) or {}
            else:
                failed = results_parser(response, records, self.ctx.primary_key)
        except Exception as exc:  # a user parser that breaks must not lose the batch silently
            raise DestinationError(f"{where}: response_parser raised {type(exc).__name__}: {exc}") from exc
        if not failed:
            return {}, {}
        rows = req.rows.to_pylist()
        return {rows[i]: redact(str(e)) for i, e in failed.items() if 0 <= i < len(rows)}, {}

    # -------------------------------------------------------------- end
    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

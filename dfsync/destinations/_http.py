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
    route ``"METHOD path-or-url"``: a path starting with ``/`` is appended to the path of
    ``url`` (whose query string, e.g. ``?access_token=...``, every request keeps), a full
    URL is used as is, and no path means ``url``. A route whose URL has ``{field}``
    placeholders sends one request per record (the field's value, URL-quoted, fills the
    placeholder; '.' and '..' go as %2E and %2E%2E, which the client would otherwise drop as
    dot segments, and a record whose path placeholder is empty, or any placeholder null, fails unsent: '/items/' and '/items/null' are not the record); otherwise records go ``batch_size`` at a time in one body. A sync whose
    own ``batch_size`` is None gives the destination batches of a few requests per worker
    (:attr:`HTTPDestination.default_batch_size`), so counters, pauses and resumes work per
    batch rather than per run. Deletes
    carry only the primary-key fields (per-record deletes carry no body). By default
    inserts and updates go to ``method url`` and deletes have no route, so
    ``destination_mode="mirror"`` needs ``delete=``; ``replace`` is not supported.

Bodies
    ``body="json"`` (a JSON array, the default), ``"ndjson"`` (JSON Lines) or a function
    ``records -> body`` (``records`` is a list of dicts; str/bytes are sent as they are,
    anything else is JSON-encoded, datetimes as ISO 8601, bytes as base64, decimals as strings). ``envelope="data"`` wraps an array as ``{"data": [...]}``.
    Per-record requests send one JSON object. Encoding is vectorised and pipelined: the
    records go in a few chunks (one request first, so sending starts at once, then the rest
    of the first round of requests, then 2, 4, 8 and 16 requests per worker); one polars
    query per chunk makes the records JSON-ready and writes each as JSON (polars' JSON Lines
    writer, byte for byte) into one Arrow text column, and each request's body is a byte
    range of it (no per-record Python); the workers take requests from a queue and send a
    chunk while the next is encoded. Datetimes become ISO 8601, binary becomes base64,
    decimals become strings.

Nested JSON
    Field names are paths: ``"address.city"`` builds ``{"address": {"city": ..}}``,
    ``"tags[]"`` builds a list (a scalar becomes a one-element list, a list stays a list),
    ``"tags[0]"``, ``"tags[1]"`` build a list from several fields in index order, and the
    forms combine (``"items[].sku"`` gives ``[{"sku": ..}]``). The transform is one polars
    ``select`` of ``struct``/``concat_list`` expressions; ``nested=False`` sends names as
    they are. URL placeholders use the flat field name (``"/{user.id}"``).

TLS
    https URLs are verified by httpx (its CA bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``).
    A destination whose URLs are all ``http://`` (and no proxy in the environment) does not
    load CA certificates when a run opens it; any TLS it met would be refused.

Retries and outcomes
    429, 408, 5xx, timeouts and dropped connections are retried with exponential backoff
    and jitter (tenacity), honouring ``Retry-After`` up to ``max_retry_after`` seconds.
    When they outlast ``max_retries`` the write raises ``TransientDestinationError`` and
    the run pauses; resuming re-sends the batch with the same ``Idempotency-Key`` values.
    401/407 fail the run (check the credentials). Other 4xx fail the request's records at
    once with a snippet of the response. In ``destination_mode="update"`` every row goes by the
    update route (rows the sync has not delivered yet too: the mode never creates a record), and
    a per-record 404 marks the record skipped. A per-record delete answered 404 or 410 succeeded
    (the record is already gone); any other per-record 404 fails the record with an error saying
    the destination has no such record (sent again next run, as every failed row). A 2xx body is read by ``response_parser(response, records) -> {index: error}``;
    the default reads ``{"results": [{"index"|"id": .., "status": .., "error": ..}]}``
    (an entry fails when it has an ``error``, a status >= 400 or "error"/"failed"; entries
    are matched by ``index``, else by ``id`` against a one-field primary key, else by
    position). A 207 answer must list every record: unlisted records count as failed. A failure
    the answer reports for a record it does not identify (an ``id`` with a composite key, an
    unknown ``id``) fails every record of the request it did not report on (sent again next run).

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

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import (
    ConfigError,
    SessionOnlyError,
    register_secret,
)
from ..states import DestinationMode
from ._http_parts import (
    ACTIONS,
    SESSION_ONLY,
    RateLimiter,
    Route,
    Secret,
    callable_ref,
    check_fields,
    load_callable,
    nest_expressions,
    parse_rate_limit,
    parse_route,
    results_parser,
)
from ._http_session import HTTPSession
from .base import (
    ACTION_COLUMN,
    Destination,
    DestinationContext,
    DestinationSession,
    register_destination,
)

__all__ = ["HTTPDestination", "HTTPSession", "RateLimiter", "nest_expressions", "parse_rate_limit",
           "results_parser"]

#: a run's batch when the sync leaves batch_size None (see HTTPDestination.default_batch_size)
REQUESTS_PER_WORKER = 32
PER_RECORD_PER_WORKER = 256
MAX_DEFAULT_BATCH = 50_000

_SECRET_HEADER = re.compile(r"(?i)authorization|token|secret|api[-_]?key|password|cookie|(^|[-_])key$")


def _scrub_url_secrets(url: str) -> str:
    """The URL with its credentials (a password in its user part, secret-looking query values)
    replaced by the session-only marker; each value is registered so no message shows it."""
    from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        register_secret(parts.password)
        register_secret(unquote(parts.password))
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}:{SESSION_ONLY}@{host}"
    pieces = []
    for piece in parts.query.split("&") if parts.query else []:
        name, eq, value = piece.partition("=")
        key = unquote_plus(name)
        if eq and value and (_SECRET_HEADER.search(key) or re.search(r"(?i)sig(nature)?$|^key$", key)):
            register_secret(value)
            register_secret(unquote_plus(value))
            piece = f"{name}={SESSION_ONLY}"
        pieces.append(piece)
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(pieces)))


def _scrub_route(spec: Any) -> Any:
    """A route as given (``"PATCH /{id}?token=..."`` or ``("PUT", url)``), its URL's credentials scrubbed."""
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], str):
        return [spec[0], _scrub_url_secrets(spec[1])]
    if isinstance(spec, str) and spec.strip():
        method, _, target = spec.strip().partition(" ")
        return f"{method} {_scrub_url_secrets(target.strip())}" if target.strip() else spec
    return spec


# ------------------------------------------------------------------ destination
@register_destination
class HTTPDestination(Destination):
    """Records sent to a REST API; see the module docstring for routes, bodies and outcomes.

    >>> dest = HTTPDestination("https://api.example.com/contacts", auth="env:TOKEN", batch_size=200)
    """

    kind = "http"
    needs = ("httpx", "httpx", "http", "the REST API destination")
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
        # A credential in the URL (?access_token=..., user:password@) is a secret like any other: it
        # is kept in memory, scrubbed from messages and logs, and never stored or shown (session-only).
        self.stored_url = _scrub_url_secrets(url)
        self.method = str(method).upper()
        if self.method not in ("POST", "PUT", "PATCH"):  # a typo would fail every batch with a 405 at run time
            raise ConfigError(f"destinations.http(method={method!r}): records are sent with POST, PUT or PATCH; a "
                              f"route of its own per action takes any method: update='PATCH /{{id}}', delete='DELETE /{{id}}'")
        self.specs = {"insert": insert, "update": update, "delete": delete}
        self.stored_specs = {a: _scrub_route(spec) for a, spec in self.specs.items()}  # as stored and shown
        self.routes: dict[str, Route | None] = {
            "insert": parse_route(insert, url, self.method),
            "update": parse_route(update, url, self.method),
            "delete": parse_route(delete, url, None),
        }
        self.headers: dict[str, str | Secret] = {}
        for name, value in (headers or {}).items():
            if not isinstance(value, str):
                raise ConfigError(f"header {name!r} must be a string, not {type(value).__name__}")
            if "env:" in value and not value.startswith("env:"):  # it would be sent as written
                raise ConfigError(f"header {name!r}: 'env:NAME' is read from the environment only as the whole "
                                  f"value; put the whole value in the variable (headers={{{name!r}: 'env:NAME'}}), "
                                  f"or for a bearer token give auth='env:NAME'")
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
    def default_batch_size(self) -> int:  # type: ignore[override]
        """Rows per batch of a run whose sync leaves ``batch_size`` None: a few requests per worker
        (:data:`REQUESTS_PER_WORKER` of ``batch_size`` records each), so counters move, a pause or
        disable takes effect and a resume re-sends at most that many rows; at most
        :data:`MAX_DEFAULT_BATCH` rows, and, when inserts or updates go one request per record,
        at most :data:`PER_RECORD_PER_WORKER` records per worker (never under one request per worker)."""
        rows = self.batch_size * self.concurrency * REQUESTS_PER_WORKER
        if any(r is not None and r.per_record for a, r in self.routes.items() if a != "delete"):
            rows = max(self.batch_size * self.concurrency, min(rows, PER_RECORD_PER_WORKER * self.concurrency))
        return max(1, min(rows, MAX_DEFAULT_BATCH))

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
        spec = self.stored_specs[action]
        return list(spec) if isinstance(spec, tuple) else spec

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Destination:
        config = dict(config)
        auth = config.get("auth")
        held = [k for k, v in (config.get("headers") or {}).items() if v == SESSION_ONLY]
        if any(SESSION_ONLY in str(config.get(k) or "") for k in ("url", *ACTIONS)):
            held = ["url credential"]
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
        routes = {a: _scrub_route(r.spec()) if r else None for a, r in self.routes.items()}
        return json.dumps({"kind": self.kind, "url": self.stored_url, "routes": routes}, sort_keys=True)

    def describe(self) -> str:
        extra = "".join(f", {a}={_scrub_route(r.spec())!r}" for a, r in self.routes.items()
                        if r and (a == "delete" or r.spec() != f"{self.method} {self.url}"))
        rate = f", rate_limit={self.rate_limit!r}" if self.rate_limit else ""
        return (f"http({self.method} {self.stored_url}{extra}, batch_size={self.batch_size}, "
                f"concurrency={self.concurrency}{rate})")

    def writes_json(self, t: Any) -> bool:
        return True

    def validate(self, columns: Sequence[str], primary_key: Sequence[str], mode: DestinationMode) -> None:
        super().validate(columns, primary_key, mode)
        if mode.sends_deletes and self.routes["delete"] is None:
            raise ConfigError("destination_mode='mirror' sends deletes: give the http destination a "
                              "delete route, e.g. delete='DELETE /{" + (primary_key[0] if primary_key else "id") + "}'")
        check_fields(self.routes, columns)
        if self.nested:
            nest_expressions([c for c in columns if c != ACTION_COLUMN])

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return HTTPSession(self, ctx)

"""Pieces of the REST API destination (:mod:`dfsync.destinations._http`), kept apart to keep
each module short: secrets, routes, the rate limiter, the nested-JSON transform and the
default per-record outcome reader.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa

from .._callbacks import resolve_callback
from .._secrets import resolve_secret
from ..errors import ConfigError, DestinationError, SessionOnlyError, redact, register_secret
from .base import ACTION_COLUMN

__all__ = [
    "SESSION_ONLY",
    "Secret",
    "callable_ref",
    "load_callable",
    "retry_after_seconds",
    "snippet",
    "RateLimiter",
    "RecordsView",
    "Route",
    "Texts",
    "placeholder_texts",
    "json_ready",
    "json_texts",
    "nest_expressions",
    "parse_rate_limit",
    "parse_route",
    "record_json",
    "results_parser",
]

SESSION_ONLY = "<kept in memory only>"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
ACTIONS = ("insert", "update", "delete")
_FAIL_WORDS = frozenset({"error", "failed", "failure", "rejected", "invalid"})
SNIPPET = 300


# ------------------------------------------------------------------ secrets
class Secret:
    """A credential: an ``env:NAME`` reference or a literal kept in memory only."""

    __slots__ = ("_literal", "ref")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError("a secret must be a non-empty string (or 'env:NAME')")
        self.ref = value if value.startswith("env:") else None
        self._literal = None if self.ref else value
        register_secret(self._literal)

    def resolve(self) -> str:
        if self._literal is not None:
            return self._literal
        return resolve_secret(self.ref, "destination's secret", error=DestinationError, required=True)  # type: ignore[return-value]

    def stored(self) -> str:
        return self.ref or SESSION_ONLY

    def __repr__(self) -> str:
        return self.ref or "***"


# ------------------------------------------------------------------ routes
@dataclass(frozen=True)
class Route:
    method: str
    url: str

    @functools.cached_property  # read for every request sent
    def fields(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.url))

    @functools.cached_property
    def per_record(self) -> bool:
        return bool(self.fields)

    @functools.cached_property
    def path_fields(self) -> tuple[str, ...]:
        """The placeholders in the URL's path (not its query string)."""
        return tuple(_PLACEHOLDER.findall(self.url.partition("?")[0]))

    def refuse_empty(self, values: dict[str, str | None]) -> str | None:
        """Why a record whose text for a path placeholder is empty is not sent (None: it is sent):
        '/items/{id}' with '' is /items/, the collection itself, another resource than a record;
        a null value in any placeholder would have been the text 'null' ('/items/null')."""
        null = [f for f in self.fields if values[f] is None]
        if null:
            return (f"not sent: field {null[0]!r} is null, and the route {redact(self.spec())!r} has no value to "
                    f"put in its place (the request would have gone to a URL with 'null' in it); give the record "
                    f"a {null[0]!r} in the source or the sync's mapping (pl.col({null[0]!r}).fill_null(...)), or "
                    f"use a route without it")
        empty = [f for f in self.path_fields if values[f] == ""]
        if not empty:
            return None
        return (f"not sent: field {empty[0]!r} is empty, and the route {redact(self.spec())!r} would then address "
                f"another resource than the record (an empty piece of its path); give the record a "
                f"non-empty {empty[0]!r} in the source or the sync's mapping, or use a route without it")

    def format(self, values: dict[str, Any]) -> str:
        # a null fills nothing: such a request is refused unsent (refuse_empty), its URL only named
        return _PLACEHOLDER.sub(lambda m: _quote_value("" if values[m[1]] is None else str(values[m[1]])), self.url)

    def spec(self) -> str:
        return f"{self.method} {self.url}"


def _quote_value(value: str) -> str:
    """A value as one piece of a URL path: ``/`` and the rest quoted, and a value of dots only
    ('.', '..') as %2E: the client removes dot segments, which sent the request to another URL."""
    return value.replace(".", "%2E") if value and not value.strip(".") else quote(value, safe="")


def parse_route(spec: str | tuple[str, str] | None, base: str, default_method: str | None) -> Route | None:
    """``"PATCH /{id}"`` / ``"DELETE"`` / ``("PUT", "https://…/{id}")`` -> Route (None: no route)."""
    if spec is None:
        return Route(default_method, base) if default_method else None
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        method, target = spec
    elif isinstance(spec, str) and spec.strip():
        method, _, target = spec.strip().partition(" ")
    else:
        raise ConfigError(f"a route is 'METHOD /path', 'METHOD https://…' or ('METHOD', url), not {spec!r}")
    method, target = str(method).upper(), str(target).strip()
    if not re.fullmatch(r"[A-Z]+", method):
        raise ConfigError(f"route {spec!r}: {method!r} is not an HTTP method (e.g. POST, PATCH, PUT, DELETE)")
    if not target:
        url = base
    elif target.startswith("/"):  # appended to the base URL's path; the base's query string stays
        parts = urlsplit(base)  # (?access_token=...), the route's own is added after it
        path, _, query = target.partition("?")
        url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + path,
                                        query="&".join(q for q in (parts.query, query) if q)))
    elif re.match(r"(?i)https?://", target):
        url = target
    else:
        raise ConfigError(f"route {spec!r}: the path must start with '/' or be a full http(s) URL")
    return Route(method, url)


# ------------------------------------------------------------------ rate limit
_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``"100/minute"`` -> (100, 60.0); also ``"10/second"``, ``"5/10s"``, ``"1000/hour"``.

    >>> parse_rate_limit("100/minute")
    (100, 60.0)
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-zA-Z]+)\s*", str(text))
    if not m or m[3].lower() not in _UNITS or int(m[1]) < 1:
        raise ConfigError(
            f"rate_limit={text!r} is not a rate; write 'N/second', 'N/minute', 'N/hour' or 'N/10s'"
        )
    period = (float(m[2]) if m[2] else 1.0) * _UNITS[m[3].lower()]
    if period <= 0:
        raise ConfigError(f"rate_limit={text!r}: the period must be positive")
    return int(m[1]), period


class RateLimiter:
    """At most ``count`` acquisitions in any window of ``period`` seconds (sliding-window log).

    Thread-safe; bursts up to ``count`` are allowed, which is what "N per period" APIs
    promise. A small exact limiter, no dependency needed.

    >>> RateLimiter(10, 1.0).acquire()
    True
    """

    def __init__(self, count: int, period: float) -> None:
        self.count, self.period = count, period
        self._times: deque[float] = deque(maxlen=count)
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot; False when ``stop`` was set while waiting (nothing acquired)."""
        while True:
            with self._lock:
                now = time.monotonic()
                if len(self._times) < self.count or now - self._times[0] >= self.period:
                    self._times.append(now)
                    return True
                wait = self.period - (now - self._times[0])
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                return False


# ------------------------------------------------------------------ nested JSON
def _parse_path(name: str) -> list[tuple[str, Any]]:
    """``"items[0].sku"`` -> [("key","items"), ("index",0), ("key","sku")]."""
    steps: list[tuple[str, Any]] = []
    for part in name.split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\d*\])*)", part)
        if not m or (not m[1] and not steps):
            raise ConfigError(f"field {name!r}: cannot read it as a path like 'address.city' or 'tags[]'")
        if m[1]:
            steps.append(("key", m[1]))
        for idx in re.findall(r"\[(\d*)\]", m[2]):
            steps.append(("list", None) if idx == "" else ("index", int(idx)))
    return steps


def nest_expressions(columns: Sequence[str]) -> list[pl.Expr]:
    """Polars expressions turning flat path-named columns into nested structs and lists.

    >>> df = pl.DataFrame({"id": [1], "address.city": ["Oslo"], "tags[]": ["vip"]})
    >>> df.select(nest_expressions(df.columns)).to_dicts()
    [{'id': 1, 'address': {'city': 'Oslo'}, 'tags': ['vip']}]
    """
    tree: dict[tuple[str, Any], Any] = {}
    for col in columns:
        node = tree
        steps = _parse_path(col)
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last:
                if step in node:
                    raise ConfigError(f"field {col!r} collides with other fields under the same path")
                node[step] = col
            else:
                child = node.setdefault(step, {})
                if not isinstance(child, dict):
                    raise ConfigError(f"field {col!r} nests under {child!r}, which is a value, not an object")
                node = child

    def build(node: dict[tuple[str, Any], Any], where: str) -> pl.Expr:
        kinds = {k for k, _ in node}
        if len(kinds) > 1:
            raise ConfigError(f"fields under {where!r} mix object keys and list items")
        kind = kinds.pop()
        if kind == "key":
            return pl.struct([expr(v, f"{where}.{k}").alias(k) for (_, k), v in node.items()])
        if kind == "list":
            return pl.concat_list([expr(node[("list", None)], f"{where}[]")])
        items = sorted(node.items(), key=lambda kv: kv[0][1])
        return pl.concat_list([expr(v, f"{where}[{k}]") for (_, k), v in items])

    def expr(value: Any, where: str) -> pl.Expr:
        return pl.col(value) if isinstance(value, str) else build(value, where)

    out = []
    for (kind, key), value in tree.items():
        if kind != "key":  # pragma: no cover - _parse_path rejects a leading list
            raise ConfigError(f"field paths must start with a name, not {kind}")
        out.append(expr(value, key).alias(key))
    return out


def json_ready(schema: pl.Schema) -> list[pl.Expr]:
    """Column conversions so polars writes what APIs expect (ISO 8601, base64)."""
    exprs = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            col = col.dt.to_string("%Y-%m-%dT%H:%M:%S%.f")
        elif dtype == pl.Binary:
            col = col.bin.encode("base64")
        elif isinstance(dtype, pl.Decimal):
            col = col.cast(pl.String)
        exprs.append(col)
    return exprs


def placeholder_texts(frame: pl.DataFrame) -> dict[str, list[str | None]]:
    """Each column's values as URL placeholders take them: the value as the body's JSON writes it
    (ISO 8601 times, ``true``/``false``, numbers), a string without its quotes. ``str()`` of the
    Python value was another text for a time ('2013-01-01 06:00:00+00:00') or a bool ('True'),
    so the URL named a record the API never received."""
    ready = frame.select(json_ready(frame.schema))
    out = {}
    for name in ready.columns:
        encoded = ready.select(pl.struct(pl.col(name)).struct.json_encode())[:, 0]
        values = (json.loads(text)[name] for text in encoded)
        # a null stays None (a record that has none is refused unsent, Route.refuse_empty): 'null' was
        # the text of the URL ('/items/null')
        out[name] = [v if v is None or isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in values]
    return out


class Texts:
    """The JSON text of consecutive records back to back, each ended by a separator byte:
    record ``i`` is ``data[offsets[i]:offsets[i + 1]]`` (separator included)."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: memoryview, offsets: Any) -> None:
        self.data, self.offsets = data, offsets

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Byte range of records ``start`` to ``stop`` (exclusive, clipped to the records)."""
        n = len(self.offsets) - 1
        return int(self.offsets[min(start, n)]), int(self.offsets[min(stop, n)])


def json_texts(frame: pl.DataFrame, ready: list[pl.Expr], texts: dict[str, pl.Expr]) -> dict[str, Texts]:
    """Each record's JSON, one text per name of ``texts`` (expressions over the columns after
    ``ready``, e.g. :func:`record_json`), in one polars query and straight to bytes.

    Polars writes the JSON (its ``struct.json_encode`` is the serializer ``write_ndjson``
    uses, byte for byte) without the GIL, and the Arrow string column it gives is already
    the records back to back: no per-record Python, no copy into a ``str`` and back.

    >>> t = json_texts(pl.DataFrame({"a": [1, 2]}), [pl.col("a")], {"j": record_json([pl.col("a")], ",")})["j"]
    >>> bytes(t.data), t.span(0, 2), t.span(1, 5)
    (b'{"a":1},{"a":2},', (0, 16), (8, 16))
    """
    import numpy as np

    out = frame.lazy().select(ready).select(**texts).collect().to_arrow()
    result = {}
    for name in texts:
        column = out.column(name)
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if array.null_count or not pa.types.is_large_string(array.type):  # pragma: no cover - polars' contract
            raise DestinationError(f"polars gave {array.type} JSON text with {array.null_count} nulls")
        _, offsets, data = array.buffers()
        result[name] = Texts(memoryview(data) if data is not None else memoryview(b""),
                             np.frombuffer(offsets, dtype=np.int64)[array.offset:array.offset + len(array) + 1])
    return result


def record_json(fields: list[pl.Expr], sep: str) -> pl.Expr:
    """One JSON object per record of ``fields`` (named expressions), followed by ``sep``."""
    return pl.concat_str([pl.struct(fields).struct.json_encode(), pl.lit(sep)])


def json_default(value: Any) -> Any:
    """JSON for what a ``body=`` function returns, as the built-in bodies write it: datetimes, dates
    and times as ISO 8601 ('2013-01-01T06:00:00+00:00', not str()'s space), bytes as base64 (str()
    gave "b'\\x00\\xff'"), anything else (decimals, ...) as its text."""
    import base64
    import datetime as dt

    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


# ------------------------------------------------------------------ responses
class RecordsView(Sequence):
    """The records of one request as dicts, materialised only when first read."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self._table.num_rows

    def __getitem__(self, i: Any) -> Any:
        if self._rows is None:
            self._rows = self._table.to_pylist()
        return self._rows[i]


def _entry_error(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    error, status = entry.get("error") or entry.get("errors"), entry.get("status")
    if error:
        return error if isinstance(error, str) else _cut(json.dumps(error, default=str))
    if entry.get("success") is False or entry.get("ok") is False:
        return "the server reported this record as failed"
    if isinstance(status, int) and status >= 400:
        return f"status {status}"
    if isinstance(status, str) and status.lower() in _FAIL_WORDS:
        return f"status {status}"
    return None


def results_parser(response: Any, records: Sequence[dict[str, Any]], primary_key: Sequence[str] = ()) -> dict[int, str]:
    """Default per-record outcome reader: ``{"results": [{"index"|"id": .., "status": .., "error": ..}]}``.

    Returns ``{position in the request: error}`` for the records that failed.

    >>> import httpx
    >>> results_parser(httpx.Response(200, json={"results": [{"index": 1, "error": "bad email"}]}), [{}, {}])
    {1: 'bad email'}
    """
    multi = response.status_code == 207
    content = response.content
    if not content:
        return {i: "207 answer without a body" for i in range(len(records))} if multi else {}
    if not multi and b'"results"' not in content and b"\\" not in content and b"\0" not in content:
        # no "results" key: not written out, nor with an escape, nor in UTF-16/32 (which json reads
        # too): the answer reports no failure, and a large one (the records echoed) is not parsed
        return {}
    try:
        body = response.json()
    except ValueError:
        return {i: "207 answer that is not JSON" for i in range(len(records))} if multi else {}
    results = body.get("results") if isinstance(body, dict) else (body if multi and isinstance(body, list) else None)
    if not isinstance(results, list):
        return {i: "207 answer without a results list" for i in range(len(records))} if multi else {}
    by_id: dict[str, int] | None = None
    failed: dict[int, str] = {}
    seen: set[int] = set()
    unmatched: str | None = None  # a failure the answer reported for a record it did not identify
    for pos, entry in enumerate(results):
        idx = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(idx, str) and idx.strip().isdigit():  # "index": "3"
            idx = int(idx)
        if idx is None and isinstance(entry, dict) and "id" in entry and len(primary_key) == 1:
            if by_id is None:
                by_id = {str(r.get(primary_key[0])): i for i, r in enumerate(records)}
            idx = by_id.get(str(entry["id"]))
        if idx is None and len(results) == len(records):
            idx = pos
        error = _entry_error(entry)
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(records):
            if error and unmatched is None:
                unmatched = error
            continue
        seen.add(idx)
        if error:
            failed[idx] = error
    if unmatched is not None:
        # Counting the request's other records delivered would hide the failure (the run said
        # success): each record the answer did not report on is failed and sent again next run.
        which = ("by 'index', or by 'id' with a one-column primary key" if len(primary_key) == 1
                 else "by 'index' (a composite primary key has no single 'id')")
        for i in range(len(records)):
            if i not in seen:
                failed[i] = (f"the answer reported a failure ({_cut(str(unmatched))}) that dfsync could not match "
                             f"to a record (entries are matched {which}, or by position when the answer lists "
                             f"every record); this record is counted failed and sent again next run")
    if multi:
        for i in range(len(records)):
            if i not in seen:
                failed[i] = "the 207 answer reported no outcome for this record"
    return failed


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def snippet(response: Any) -> str:
    """The start of an answer's text for an error, its secrets removed before it is cut (cut first,
    a secret the answer echoes, e.g. a request header, could keep its first characters)."""
    return _cut(response.text.strip().replace("\n", " "))


def _cut(text: str) -> str:
    text = redact(text)
    return text[:SNIPPET] + ("…" if len(text) > SNIPPET else "")




# ------------------------------------------------------------------ callables in config
def callable_ref(fn: Any) -> str | None:
    """``"module:qualname"`` when ``fn`` can be imported again by another process, else None."""
    if fn is None or isinstance(fn, str):
        return fn
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual:
        return SESSION_ONLY
    return f"{mod}:{qual}"


def load_callable(ref: Any, what: str) -> Any:
    if ref is None or callable(ref) or ref in ("json", "ndjson"):
        return ref
    if ref == SESSION_ONLY:
        raise SessionOnlyError(
            f"this http destination's {what} is a function that only exists in the Python session that "
            f"created the sync; run it from that session, or use a module-level function"
        )
    return resolve_callback(ref, what)


def check_fields(routes: dict[str, Route | None], columns: Sequence[str]) -> None:
    for action, route in routes.items():
        missing = [f for f in (route.fields if route else ()) if f not in columns]
        if missing:
            raise ConfigError(
                f"the {action} route {route.spec()!r} uses {', '.join(missing)}, which the records do "  # type: ignore[union-attr]
                f"not have; fields sent: {', '.join(c for c in columns if c != ACTION_COLUMN)}"
            )

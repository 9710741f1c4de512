"""A real, scripted HTTP server on 127.0.0.1 for the REST API destination tests.

The ``http_server`` fixture starts a ``ThreadingHTTPServer`` on a free loopback port. It
behaves like an idempotent API: a request whose ``Idempotency-Key`` was already applied
gets the stored answer again and is not applied twice, so tests can count deliveries by
key. Tests script its answers per request:

    http_server.script(Reply(429, headers={"Retry-After": "1"}), Reply(200))
    http_server.handler = lambda req: Reply(500) if req.n % 2 else None   # None: default answer

Answers can be slow (``delay``), can hang up without answering (``drop``) and may apply
the records before a lost answer (``apply=True``), as a real server that processed a
request whose answer never arrived.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes as is, callable(Received) -> either
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (after applying)
    drop: bool = False  # hang up without an answer
    apply: bool | None = None  # None: apply when the answer is 2xx and not dropped


@dataclass
class Received:
    n: int  # arrival order, from 0
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def records(self) -> list[dict[str, Any]]:
        """The JSON records of the body: an array, JSON Lines, an object, or an envelope."""
        if not self.body:
            return []
        text = self.body.decode()
        ctype = self.headers.get("content-type", "")
        if "ndjson" in ctype:
            return [json.loads(line) for line in text.splitlines() if line]
        data = json.loads(text)
        if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
            return next(iter(data.values()))
        return data if isinstance(data, list) else [data]


#: how often a test server's serving loop looks for shutdown() (the default 0.5 s made every
#: test's teardown wait half a second)
POLL = 0.02


class ScriptedServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.applied: dict[str, tuple[Received, Reply]] = {}  # idempotency key -> first applied request
        self.applied_order: list[Received] = []
        self.replayed: list[Received] = []  # requests recognised by key and not applied again
        self.queue: list[Reply] = []
        self.handler: Callable[[Received], Reply | None] | None = None
        self.default = Reply(200, {"ok": True})
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _any(self) -> None:
                server._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # shutdown() waits for the serving loop's next poll: 0.5 s by default, paid by every test
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(POLL,), daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- scripting
    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; then the default."""
        with self.lock:
            self.queue.extend(replies)

    def _choose(self, req: Received) -> Reply:
        if self.handler is not None:
            reply = self.handler(req)
            if reply is not None:
                return reply
        if self.queue:
            return self.queue.pop(0)
        return self.default

    # ---------------------------------------------------------------- serving
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self.lock:
            req = Received(len(self.requests), h.command, h.path,
                           {k.lower(): v for k, v in h.headers.items()}, body, time.monotonic())
            self.requests.append(req)
            replay = self.applied.get(req.key) if req.key else None
            if replay is not None:
                self.replayed.append(req)
        if replay is not None:  # an idempotent API answers a repeated key with the stored answer
            reply = Reply(replay[1].status, replay[1].body, replay[1].headers)
        else:
            with self.lock:
                reply = self._choose(req)
            apply = reply.apply if reply.apply is not None else (200 <= reply.status < 300 and not reply.drop)
            if apply:
                with self.lock:
                    if req.key:
                        self.applied[req.key] = (req, Reply(200 if reply.drop or reply.delay else reply.status,
                                                            reply.body, reply.headers))
                    self.applied_order.append(req)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            h.close_connection = True
            return
        payload = reply.body(req) if callable(reply.body) else reply.body
        if payload is None:
            data = b""
        elif isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = json.dumps(payload).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            h.close_connection = True

    # ---------------------------------------------------------------- reading
    def delivered(self) -> list[dict[str, Any]]:
        """Records applied, once per idempotency key (what a real idempotent API stored)."""
        with self.lock:
            return [r for req in self.applied_order for r in req.records]

    def keys_per_record(self, field: str = "id") -> dict[Any, set[str]]:
        """For each record id: the idempotency keys it was applied under (1 = no duplicate)."""
        out: dict[Any, set[str]] = {}
        with self.lock:
            for req in self.applied_order:
                for r in req.records or [{field: req.path.rsplit("/", 1)[-1]}]:
                    out.setdefault(r.get(field), set()).add(req.key or f"no-key-{req.n}")
        return out

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.applied.clear()
            self.applied_order.clear()
            self.replayed.clear()
            self.queue.clear()
            self.handler = None

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()

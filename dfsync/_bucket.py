"""One bucket's transfer, as a worker runs it: plain data in, plain data out.

A partitioned run's driver (:mod:`dfsync._partition`) has already staged, diffed and checked
every row, written each batch ahead to the workspace and saved it as an Arrow IPC file. The
worker opens its own session on the destination (rebuilt from the definition's stored config:
secrets travel only as ``env:NAME`` references), writes the bucket's batches, each with its
ledger entry, and returns every batch's row-level outcome. It never touches the workspace:
the driver confirms what comes back. Batches the destination's ledger already holds (an
earlier attempt landed them before its worker died) are not written again; the driver settles
them from that ledger.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import threading
from typing import Any

import pyarrow as pa

from .destinations.base import (
    DestinationContext,
    DestinationSession,
    WriteBatch,
    destination_from_config,
)
from .states import DestinationMode


def context_task(ctx: DestinationContext) -> dict[str, Any]:
    """A destination context as plain data (for a worker)."""
    return {"sync_id": ctx.sync_id, "sync_name": ctx.sync_name, "run_id": ctx.run_id, "mode": ctx.mode.value,
            "primary_key": list(ctx.primary_key), "requeried": ctx.requeried, "workspace_id": ctx.workspace_id,
            "schema": ctx.schema, "owner_epoch": ctx.owner_epoch}  # a worker's batches are fenced as the driver's


def read_ipc(path: str) -> pa.Table:
    with pa.memory_map(path) as src:
        return pa.ipc.open_file(src).read_all()


def write_ipc(path: str, tbl: pa.Table) -> None:
    tmp = path + ".tmp"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, tbl.schema) as writer:
        writer.write_table(tbl)
    os.replace(tmp, path)


def kill_point(point: str, task: dict[str, Any], n: int) -> None:
    """Test hook (DFSYNC_TEST_KILL_WORKER="point:bucket:n:once-file"): SIGKILL this worker there, once
    (``n``: the bucket's nth batch, counted over its waves; 0: a task's start)."""
    plan = task.get("test_kill") or os.environ.get("DFSYNC_TEST_KILL_WORKER")
    if not plan:
        return
    where, bucket, nth, once = plan.split(":", 3)
    if where == point and int(bucket) == task["bucket"] and int(nth) == n + task.get("first", 0) \
            and not os.path.exists(once):
        open(once, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


#: a worker keeps its destination session this long after a wave, for the run's next wave
#: (opening one is a new connection: ~0.1 s on PostgreSQL), then closes it
IDLE_SECONDS = 2.0
_idle: dict[str, DestinationSession] = {}
_idle_lock = threading.Lock()
_idle_timer: threading.Timer | None = None


def _take_session(key: str) -> DestinationSession | None:
    """The session a wave of the same run left open in this worker (others are closed)."""
    with _idle_lock:
        session = _idle.pop(key, None)
        others = list(_idle.values())
        _idle.clear()
    for s in others:
        s.close()
    return session


def _keep_session(key: str, session: DestinationSession) -> None:
    global _idle_timer
    with _idle_lock:
        _idle[key] = session
        if _idle_timer is not None:
            _idle_timer.cancel()
        _idle_timer = threading.Timer(IDLE_SECONDS, close_idle_sessions)
        _idle_timer.daemon = True
        _idle_timer.start()


def close_idle_sessions() -> None:
    with _idle_lock:
        sessions = list(_idle.values())
        _idle.clear()
    for s in sessions:
        s.close()


def send_bucket(task: dict[str, Any]) -> dict[str, Any]:
    """Write one wave of a bucket's batches on a session of its own (or the one this worker's
    previous wave of the same run left open, where the destination allows it); returns
    ``{"bucket", "pid", "results": {batch_no: outcome}}`` where an outcome is ``{"failed": {row:
    error}, "skipped": {row: why}}`` or ``{"landed": [keys not delivered]}`` (already in the
    destination's ledger)."""
    for module in task.get("modules", ()):
        importlib.import_module(module)  # where a destination kind outside dfsync is registered
    destination = destination_from_config(task["destination"])
    c = dict(task["context"])
    ctx = DestinationContext(**{**c, "mode": DestinationMode(c["mode"]), "primary_key": tuple(c["primary_key"])})
    kill_point("open", task, 0)
    # a session is kept only between waves of one run, on one schema, and only one at a time
    key = hashlib.sha256(json.dumps([task["destination"], c, task.get("modules"), task.get("widen")], sort_keys=True,
                                    default=str)
                         .encode() + task["schema"]).hexdigest() if destination.reusable_sessions else ""
    session = _take_session(key) if key else None
    if session is None:
        session = destination.open(ctx)
        session.widen_columns = set(task.get("widen", ()))  # as the run's own session took them
        try:
            session.prepare(pa.ipc.read_schema(pa.py_buffer(task["schema"])))
        except BaseException:
            session.close()
            raise
    ok = False
    try:
        out = write_bucket(session, task)
        ok = True
        return out
    finally:
        if ok and key:
            _keep_session(key, session)
        else:  # an error: the session goes with it
            session.close()


def write_bucket(session: DestinationSession, task: dict[str, Any]) -> dict[str, Any]:
    """Write one bucket's batches on a prepared session (the driver's own, in process)."""
    results: dict[int, dict[str, Any]] = {}
    committed = session.committed_batches()
    for n, (batch_no, path) in enumerate(task["batches"], start=1):
        if batch_no in committed:  # its keys the destination did not deliver, as its ledger says
            results[batch_no] = {"landed": committed[batch_no]}
            continue
        data = read_ipc(path).drop_columns(["_fp", "_rid"])
        kill_point("before_write", task, n)
        res = session.write(WriteBatch(batch_no, data))
        kill_point("after_write", task, n)
        results[batch_no] = {"failed": dict(res.failed), "skipped": dict(res.skipped)}
    return {"bucket": task["bucket"], "pid": os.getpid(), "results": results}

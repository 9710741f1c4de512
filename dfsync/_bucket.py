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

import importlib
import os
import signal
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
            "schema": ctx.schema}


def read_ipc(path: str) -> pa.Table:
    with pa.memory_map(path) as src:
        return pa.ipc.open_file(src).read_all()


def write_ipc(path: str, tbl: pa.Table) -> None:
    tmp = path + ".tmp"
    with pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, tbl.schema) as writer:
        writer.write_table(tbl)
    os.replace(tmp, path)


def kill_point(point: str, task: dict[str, Any], n: int) -> None:
    """Test hook (DFSYNC_TEST_KILL_WORKER="point:bucket:n:once-file"): SIGKILL this worker there, once."""
    plan = task.get("test_kill") or os.environ.get("DFSYNC_TEST_KILL_WORKER")
    if not plan:
        return
    where, bucket, nth, once = plan.split(":", 3)
    if where == point and int(bucket) == task["bucket"] and int(nth) == n and not os.path.exists(once):
        open(once, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


def send_bucket(task: dict[str, Any]) -> dict[str, Any]:
    """Write one bucket's batches on a session of its own; returns ``{"bucket", "pid", "results":
    {batch_no: outcome}}`` where an outcome is ``{"failed": {row: error}, "skipped": {row: why}}``
    or ``{"landed": [keys not delivered]}`` (already in the destination's ledger)."""
    for module in task.get("modules", ()):
        importlib.import_module(module)  # where a destination kind outside dfsync is registered
    destination = destination_from_config(task["destination"])
    c = dict(task["context"])
    ctx = DestinationContext(**{**c, "mode": DestinationMode(c["mode"]), "primary_key": tuple(c["primary_key"])})
    kill_point("open", task, 0)
    session = destination.open(ctx)
    try:
        session.prepare(pa.ipc.read_schema(pa.py_buffer(task["schema"])))
        return write_bucket(session, task)
    finally:
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

"""A destination wrapper that injects faults into a real destination, for tests.

``FaultyDestination(inner, ...)`` behaves exactly like ``inner`` (same delivered-state
identity, same ledger) but can raise KeyboardInterrupt before or after a given batch,
sleep per batch, or touch a marker file once a batch has committed — so tests can
interrupt or SIGKILL a run at a known point. Importing this module registers the kind.

Crash tests also use *fault points*: :data:`FAULTS` (empty unless a test sets it, usually
in a child process it is about to SIGKILL) names one place — ``querying`` (the source is
being read), ``queued`` (validation is running), ``before_write``/``after_write`` of the
n-th batch this process sends, ``before_finish``/``after_finish``, ``close`` (a session closes) — where the process
touches a marker file and then holds still, so the parent kills it exactly there.
:class:`FaultySource` wraps a real source to provide the ``querying`` point, and
:func:`install_runner_hooks` the ``queued`` one.
"""

from __future__ import annotations

import os
import pathlib
import threading
import time
from typing import Any

from dfsync.destinations.base import (
    Destination,
    DestinationContext,
    DestinationSession,
    destination_from_config,
    register_destination,
)
from dfsync.sources.base import CursorFilter, Source, register_source, source_from_config

#: this process's fault plan: {"phase": str, "n": int | None, "marker": path, "hold": seconds}
FAULTS: dict[str, Any] = {}


def fault_point(phase: str, n: int | None = None) -> None:
    """Touch the marker and hold when this process's plan names this point (else nothing)."""
    f = FAULTS
    if not f or f.get("phase") != phase or (f.get("n") is not None and n != f["n"]):
        return
    pathlib.Path(f["marker"]).write_text(f"{phase} {n}")
    if f.get("hold"):
        time.sleep(f["hold"])


def install_runner_hooks() -> None:
    """Add the ``queued`` fault point: validation starts while the run is queued; and the steps of a
    fused first load (dfsync/_fused.py: ``fused_loaded``, ``fused_written_ahead``, ``fused_committed``,
    ``fused_confirmed``) and of a Delta first load written aside (dfsync/_fused_delta.py: ``aside_written``,
    ``aside_committed``, ``aside_confirmed``)."""
    from dfsync import _fused, _fused_delta, runner

    _fused.hook = _fused_delta.hook = fault_point

    if getattr(runner.Runner._validate, "_faulty", False):
        return
    original = runner.Runner._validate

    def _validate(self):  # type: ignore[no-untyped-def]
        fault_point("queued")
        return original(self)

    _validate._faulty = True  # type: ignore[attr-defined]
    runner.Runner._validate = _validate  # type: ignore[method-assign]


@register_source
class FaultySource(Source):
    """A real source with the ``querying`` fault point (reading has begun)."""

    kind = "faulty"

    def __init__(self, inner: Source | dict[str, Any]) -> None:
        self.inner = inner if isinstance(inner, Source) else source_from_config(inner)
        self.session_only = self.inner.session_only  # type: ignore[misc]

    def config(self) -> dict[str, Any]:
        return {"inner": {"kind": self.inner.kind, **self.inner.config()}}

    def schema(self):  # type: ignore[no-untyped-def]
        return self.inner.schema()

    def scan(self, cursor: CursorFilter | None = None):  # type: ignore[no-untyped-def]
        fault_point("querying")
        return self.inner.scan(cursor)

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any:
        fault_point("querying")
        return self.inner.duckdb_relation(con, cursor)

    def describe(self) -> str:
        return self.inner.describe()

    # what the staging engine asks of the source beyond reading it: passed through, so crash
    # tests exercise the changed-only diff and the unchanged-files skip of the real source
    @property
    def counts_from_metadata(self) -> bool:  # type: ignore[override]
        return self.inner.counts_from_metadata

    @property
    def skip_unchanged(self) -> bool:
        return getattr(self.inner, "skip_unchanged", False)

    def snapshot(self) -> str | None:
        return self.inner.snapshot()


@register_destination
class FaultyDestination(Destination):
    kind = "faulty"

    def __init__(self, inner: Destination | dict[str, Any], *, interrupt_before: int | None = None,
                 interrupt_after: int | None = None, sleep: float = 0.0, marker: str | None = None,
                 marker_after: int | None = None, raise_after: int | None = None) -> None:
        self.inner = inner if isinstance(inner, Destination) else destination_from_config(inner)
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.raise_after = raise_after
        self.sleep = sleep
        self.marker = marker
        self.marker_after = marker_after
        self.transactional = self.inner.transactional  # type: ignore[misc]
        self.applies_per_batch = getattr(self.inner, "applies_per_batch", True)
        self.modes = self.inner.modes  # type: ignore[misc]
        self.one_writer = self.inner.one_writer  # type: ignore[misc]

    def config(self) -> dict[str, Any]:
        return {"inner": {"kind": self.inner.kind, **self.inner.config()},
                "interrupt_before": self.interrupt_before, "interrupt_after": self.interrupt_after,
                "raise_after": self.raise_after, "sleep": self.sleep, "marker": self.marker,
                "marker_after": self.marker_after}

    def identity(self) -> str:
        return self.inner.identity()

    def validate(self, columns, primary_key, mode) -> None:
        self.inner.validate(columns, primary_key, mode)

    def open(self, ctx: DestinationContext) -> DestinationSession:
        return FaultySession(self, ctx, self.inner.open(ctx))


class FaultySession(DestinationSession):
    destination: FaultyDestination

    def __init__(self, destination: FaultyDestination, ctx: DestinationContext, inner: DestinationSession,
                 shared: dict[str, Any] | None = None) -> None:
        super().__init__(destination, ctx)
        self.inner = inner
        self.parallel_writes = inner.parallel_writes  # forks share the count of writes
        self.shared = shared if shared is not None else {"calls": 0, "lock": threading.Lock()}

    def fork(self) -> FaultySession:
        return FaultySession(self.destination, self.ctx, self.inner.fork(), self.shared)

    def prepare(self, schema):
        return self.inner.prepare(schema)

    def committed_batches(self):
        return self.inner.committed_batches()

    def write(self, batch):
        d = self.destination
        with self.shared["lock"]:
            self.shared["calls"] += 1
            calls = self.shared["calls"]
        if d.interrupt_before is not None and calls == d.interrupt_before:
            d.interrupt_before = None  # once
            raise KeyboardInterrupt
        if d.sleep:
            time.sleep(d.sleep)
        fault_point("before_write", calls)
        result = self.inner.write(batch)
        fault_point("after_write", calls)
        if d.marker and d.marker_after is not None and calls >= d.marker_after:
            pathlib.Path(d.marker).write_text(str(batch.batch_no))
        if d.interrupt_after is not None and calls == d.interrupt_after:
            d.interrupt_after = None
            raise KeyboardInterrupt
        if d.raise_after is not None and calls == d.raise_after:
            d.raise_after = None
            raise RuntimeError("injected failure after the destination committed")
        return result

    def finish(self):
        fault_point("before_finish")
        out = self.inner.finish()
        fault_point("after_finish")
        return out

    def abandon(self):
        return self.inner.abandon()

    def applied(self):
        return self.inner.applied()

    def close(self):
        fault_point("close")
        return self.inner.close()


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def paused_first_load(ws: Any, tmp_path: pathlib.Path) -> tuple[Any, int, pathlib.Path]:
    """A 60-row insert-mode first load from a Parquet file into a DuckDB table, interrupted after
    three of its six batches (paused): the sync, its run id and the destination file."""
    import polars as pl
    import pytest

    import dfsync

    src, dest = tmp_path / "src.parquet", tmp_path / "d.duckdb"
    pl.DataFrame({"id": list(range(60)), "v": [i * 10 for i in range(60)]}).write_parquet(src)
    inner = dfsync.destinations.duckdb(str(dest), table="t")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)),
                          destination=FaultyDestination(inner, interrupt_after=3),
                          primary_key="id", destination_mode="insert", batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    assert sync.runs()["status"].to_list() == ["paused"]
    [run_id] = sync.runs()["run_id"].to_list()
    return sync, run_id, dest

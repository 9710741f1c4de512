"""Where a partitioned run's buckets run: ``sync.run(engine=...)``.

>>> sync.run(engine=dfsync.engines.local(processes=4))       # plain local processes

Without an engine a partitioned sync runs its buckets in this process, one after another.
An engine receives plain data only (:func:`dfsync._bucket.send_bucket`): the destination's
stored config, the run's ledger id, the bucket and its batch files.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from ._base import BucketsLost, Engine, Task, WorkerLost


class InProcess(Engine):
    """The buckets one after another in this process (a partitioned sync run without an engine)."""

    name = "in_process"
    remote = False

    def submit(self, fn: Callable[[Task], Any], task: Task) -> cf.Future[Any]:
        fut: cf.Future[Any] = cf.Future()
        try:
            fut.set_result(fn(task))
        except Exception as exc:  # KeyboardInterrupt goes straight up, as in a run without buckets
            fut.set_exception(exc)
        return fut


def _die_with_parent() -> None:
    """A worker must not outlive its driver: a batch it committed after the driver died could race
    the resumed run (Linux: the kernel SIGKILLs the worker when its parent exits)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


class LocalProcesses(Engine):
    name = "local"

    def __init__(self, processes: int | None = None) -> None:
        if processes is not None and (not isinstance(processes, int) or isinstance(processes, bool) or processes < 1):
            raise ConfigError(f"engines.local(processes=...) takes a positive whole number, not {processes!r}")
        self.processes = processes or max(1, min(4, os.cpu_count() or 1))
        self._pool: cf.ProcessPoolExecutor | None = None

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            self._pool = cf.ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_die_with_parent)
        return self._pool

    def slots(self) -> int:
        return self.processes

    def submit(self, fn: Callable[[Task], Any], task: Task) -> cf.Future[Any]:
        inner = self._executor().submit(fn, task)
        outer: cf.Future[Any] = cf.Future()

        def done(f: cf.Future[Any]) -> None:
            exc = f.exception()
            if isinstance(exc, cf.process.BrokenProcessPool):
                self._pool = None  # broken for good: the next submit starts fresh workers
                outer.set_exception(WorkerLost(f"a worker process died: {exc}"))
            elif exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)
        return outer

    def shutdown(self) -> None:
        """Stop the worker processes (they are kept between runs of this engine; they also end
        with this process)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"dfsync.engines.local(processes={self.processes})"


def local(processes: int | None = None) -> LocalProcesses:
    """Run a partitioned sync's buckets in ``processes`` local worker processes (default: the
    machine's cores, at most 4). No extra dependency."""
    return LocalProcesses(processes)


__all__ = ["BucketsLost", "Engine", "WorkerLost", "Task", "InProcess", "LocalProcesses", "local"]

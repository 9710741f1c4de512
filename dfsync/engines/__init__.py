"""Where a partitioned run's buckets run: ``sync.run(engine=...)``.

>>> sync.run(engine=dfsync.engines.local(processes=4))       # plain local processes
>>> sync.run(engine=dfsync.engines.ray(address="auto"))      # a Ray cluster (pip install 'dfsync[ray]')

Without an engine a partitioned sync runs its buckets in this process, one after another.
An engine receives plain data only (:func:`dfsync._bucket.send_bucket`): the destination's
stored config, the run's ledger id, the bucket and its batch files. Ray is imported only when
a Ray engine starts, so ``import dfsync`` stays light.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from .._args import checked
from ..errors import ConfigError
from ._base import BucketsLost, Engine, Task, WorkerLost, finished


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


@contextlib.contextmanager
def _main_left_alone() -> Iterator[None]:
    """Start worker processes without running the user's script again in them.

    A spawned process re-runs the parent's ``__main__`` (a script's top level, or a ``-m``
    module's) before its task, so a script without an ``if __name__ == "__main__":`` guard would
    create syncs and start runs again in every worker. Workers only run dfsync's own functions
    on plain data, so the script's main module is hidden from multiprocessing while they start."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


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
        with _main_left_alone():  # the pool starts its workers inside submit
            try:
                inner = self._executor().submit(fn, task)
            except cf.process.BrokenProcessPool:
                # its workers died since the last run: with the thread that started them (a background
                # run's, a scheduler's: PR_SET_PDEATHSIG acts on the thread), or killed; start fresh ones
                broken, self._pool = self._pool, None
                if broken is not None:
                    broken.shutdown(wait=False, cancel_futures=True)
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
        """Stop the worker processes (they are kept between runs of this engine, as a Ray cluster
        is; they also end with this process)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return f"dfsync.engines.local(processes={self.processes})"


class RayEngine(Engine):
    name = "ray"
    cluster = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
                 **init_kwargs: Any) -> None:
        self.address, self.num_cpus, self.max_retries, self.init_kwargs = address, num_cpus, max_retries, init_kwargs
        self._remote: Any = None
        self._remotes: dict[Any, Any] = {}

    def start(self) -> None:
        if self._remote is not None:
            return
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("dfsync.engines.ray() needs Ray: pip install 'dfsync[ray]'") from exc
        if not ray.is_initialized():
            # a Ray started here keeps running for the session's next runs (starting takes seconds)
            ray.init(address=self.address, num_cpus=self.num_cpus, log_to_driver=False,
                     include_dashboard=False, **self.init_kwargs)
        from ._ray import remote_send_bucket

        self._remote = remote_send_bucket(self.max_retries)

    def slots(self) -> int:
        import ray

        return max(1, self.num_cpus or int(ray.cluster_resources().get("CPU", 1)))

    def other_hosts(self) -> list[str]:
        from ._ray import other_hosts

        return other_hosts()

    def submit(self, fn: Callable[[Task], Any], task: Task) -> cf.Future[Any]:
        from ._ray import remote_task, wrap

        if fn not in self._remotes:  # a bucket's transfer, a split's read: one Ray task each
            self._remotes[fn] = remote_task(fn, self.max_retries)
        return wrap(self._remotes[fn].remote(task))

    def __repr__(self) -> str:
        return f"dfsync.engines.ray(address={self.address!r}, num_cpus={self.num_cpus!r})"


@checked("engines.local")
def local(processes: int | None = None) -> LocalProcesses:
    """Run a partitioned sync's buckets in ``processes`` local worker processes (default: the
    machine's cores, at most 4). No extra dependency."""
    return LocalProcesses(processes)


def ray(address: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
        **init_kwargs: Any) -> RayEngine:
    """Run a partitioned sync's buckets as Ray tasks. ``address``: None starts (or joins) a local
    Ray, ``"auto"`` joins the cluster of this machine, ``"ray://host:10001"`` a remote one;
    ``num_cpus``: the CPUs of a local Ray started here. A task whose worker dies is retried by Ray
    ``max_retries`` times, then dispatched again by the run. ``pip install 'dfsync[ray]'``."""
    return RayEngine(address, num_cpus, max_retries, **init_kwargs)


def from_spec(spec: str) -> Engine:
    """An engine from its command-line form (``dfsync run NAME --engine SPEC``, the scheduler's
    ``--engine``): ``local``, ``local:4`` (processes), ``ray`` (a local Ray), ``ray:auto`` (the
    cluster of this machine) or ``ray:ray://host:10001``."""
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "local":
        if not arg:
            return local()
        if arg.isdigit() and int(arg) > 0:
            return local(int(arg))
    elif kind == "ray":
        return ray(address=arg or None)
    raise ConfigError(f"engine {spec!r} is not one dfsync knows: write local, local:N (N worker processes), "
                      f"ray (a local Ray), ray:auto (this machine's cluster) or ray:ray://HOST:PORT")


__all__ = ["BucketsLost", "Engine", "WorkerLost", "Task", "finished", "InProcess", "LocalProcesses", "RayEngine", "from_spec",
           "local", "ray"]

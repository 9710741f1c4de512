"""What every engine is: runs bucket tasks and returns futures of their results."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import TransientDestinationError

Task = dict[str, Any]
K = TypeVar("K")


class WorkerLost(Exception):
    """The worker running a bucket died (killed, out of memory): the driver dispatches the bucket again."""


class BucketsLost(TransientDestinationError):
    """A bucket's worker died on every attempt: the run pauses, and the next sync.run() resumes it."""


class Engine:
    """Runs bucket tasks; :meth:`submit` returns a future of the task's result (its exception: the
    task's own, or :class:`WorkerLost`)."""

    name = "engine"
    #: tasks leave this process (a literal secret in the definition could not travel with them)
    remote = True
    #: its workers may run on other hosts (a session-only source, an in-memory frame, cannot go there)
    cluster = False

    def start(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first task of a run."""

    def slots(self) -> int:
        return 1

    def other_hosts(self) -> list[str]:
        """The hosts other than this process's that its workers can run on (none: all on this one).
        Called after :meth:`start`."""
        return []

    def submit(self, fn: Callable[[Task], Any], task: Task) -> cf.Future[Any]:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called when the run's transfer ends (also on error)."""

    def __repr__(self) -> str:
        return f"dfsync.engines.{self.name}()"


def finished(running: dict[cf.Future[Any], K], timeout: float = 0.5) -> Iterator[tuple[K, Any, Exception | None]]:
    """The tasks of ``running`` that ended within ``timeout`` (taken out of it): ``(key, result,
    None)``, or ``(key, None, error)`` with the task's error or :class:`WorkerLost`."""
    done, _ = cf.wait(list(running), timeout=timeout, return_when=cf.FIRST_COMPLETED)
    for fut in done:
        key = running.pop(fut)
        exc = fut.exception()
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and the like go straight up
        yield key, None if exc is not None else fut.result(), exc

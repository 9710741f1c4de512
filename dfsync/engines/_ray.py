"""The Ray side of :func:`dfsync.engines.ray` (imported only when a Ray engine starts)."""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any

import ray

from .._bucket import send_bucket
from ._base import WorkerLost


def remote_task(fn: Any, max_retries: int) -> Any:
    """``fn`` (a bucket's transfer, a split's read) as a Ray task."""
    # retry_exceptions=False: an error the task raised (a destination refusing a batch) is the
    # run's to handle; only a dead worker is retried by Ray
    return ray.remote(max_retries=max_retries, retry_exceptions=False)(fn)


def remote_send_bucket(max_retries: int) -> Any:
    return remote_task(send_bucket, max_retries)


def other_hosts() -> list[str]:
    """The addresses of the cluster's live nodes that can run a task (they have CPUs) other than
    the host of this process (the driver); through Ray Client the driver is on none of them."""
    from ray.util.client import ray as client

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = None
    if not client.is_connected():
        me = ray.get_runtime_context().get_node_id()
        here = next((n["NodeManagerAddress"] for n in nodes if n["NodeID"] == me), None) \
            or ray.util.get_node_ip_address()
    return sorted({n["NodeManagerAddress"] for n in nodes if n.get("Resources", {}).get("CPU", 0) > 0} - {here})


def wrap(ref: Any) -> cf.Future[Any]:
    """The task's result as a concurrent future, with Ray's errors told apart: the task's own
    exception as itself, a dead worker (after Ray's retries) as WorkerLost."""
    outer: cf.Future[Any] = cf.Future()

    def done(f: cf.Future[Any]) -> None:
        exc = f.exception()
        if exc is None:
            outer.set_result(f.result())
        elif isinstance(exc, ray.exceptions.RayTaskError):
            cause = getattr(exc, "cause", None)
            outer.set_exception(cause if isinstance(cause, Exception) else exc)
        elif isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                              ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)):
            outer.set_exception(WorkerLost(f"a Ray worker died: {exc}"))
        else:
            outer.set_exception(exc)

    ref.future().add_done_callback(done)
    return outer

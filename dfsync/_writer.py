"""Writing a run's batches to its destination: batches of the right size, written on
background threads (one per destination session), confirmed in order by the runner."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa

from .destinations.base import BatchResult, DestinationSession, WriteBatch

__all__ = ["SPLIT_MIN_ROWS", "DestinationWriter", "NotWritten", "landed", "rebatch"]

SPLIT_MIN_ROWS = 10_000  # smallest batch a run is split into to use a destination's parallel writers


def rebatch(reader: pa.RecordBatchReader, size: int) -> Iterator[pa.Table]:
    """Arrow tables of exactly ``size`` rows (the last may be smaller) from a reader."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for rb in reader:
        if rb.num_rows == 0:
            continue
        pending.append(rb)
        count += rb.num_rows
        while count >= size:
            tbl = pa.Table.from_batches(pending)
            yield tbl.slice(0, size)
            rest = tbl.slice(size)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


class DestinationWriter:
    """Destination writes on background threads: one thread per session, batches in turn.

    One session (the usual case) writes its batches in order, one at a time. A destination
    whose session sets ``parallel_writes`` > 1 gets that many sessions (``fork()``, each on
    its own connection), batch n going to session n mod k. Once a write fails, no write
    queued after it is attempted.
    """

    def __init__(self, session: DestinationSession | None, *, inline: bool = False) -> None:
        assert session is not None
        self.sessions: list[DestinationSession] = [session]
        self.capacity = max(1, int(getattr(session, "parallel_writes", 1)))
        #: write on the calling thread (a destination without a ledger, such as HTTP: Ctrl-C
        #: then interrupts the write at once instead of waiting for its retries to end)
        self.inline = inline
        self.pools: list[ThreadPoolExecutor] = []
        self.failed = threading.Event()
        self.count = 0

    @property
    def depth(self) -> int:
        """Batches that may be written but not yet confirmed while the next one is prepared."""
        return 0 if self.inline else self.capacity

    def batch_rows(self, batch_size: int, total: int) -> int:
        """Rows per batch: ``batch_size``, or less so that a run smaller than one batch per
        session still gives every session a share (30k changed rows into PostgreSQL: two
        15k-row batches applied at once on two connections, not one on one). Never below
        ``SPLIT_MIN_ROWS`` a batch, where a second connection costs more than it saves."""
        if self.inline or self.capacity <= 1:
            return batch_size
        share = -(-total // self.capacity)
        return batch_size if share < SPLIT_MIN_ROWS else min(batch_size, share)

    def submit(self, batch: WriteBatch) -> Future[BatchResult]:
        if self.inline:
            done: Future[BatchResult] = Future()
            done.set_result(self.sessions[0].write(batch))  # an exception propagates as before
            return done
        i = self.count % self.capacity
        self.count += 1
        if i == len(self.sessions):  # forked when first needed (a one-batch run opens no more)
            self.sessions.append(self.sessions[0].fork())
        if i == len(self.pools):
            self.pools.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dfsync-destination-{i}"))
        session = self.sessions[i]

        def write() -> BatchResult:
            if self.failed.is_set():
                raise NotWritten(f"batch {batch.batch_no} was not sent: an earlier batch failed")
            try:
                return session.write(batch)
            except BaseException:
                self.failed.set()
                raise

        return self.pools[i].submit(write)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self.pools = []
        for forked in self.sessions[1:]:  # the first is the runner's, closed by it
            with contextlib.suppress(Exception):
                forked.close()
        del self.sessions[1:]


class NotWritten(Exception):
    """A batch not written because an earlier one failed."""


def landed(written: Future[BatchResult]) -> bool:
    return written.done() and not written.cancelled() and written.exception() is None

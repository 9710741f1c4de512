"""Writing a run's batches to its destination: batches of the right size, written on
background threads (one per destination session), confirmed in order by the runner."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ._ident import quote
from .destinations.base import ACTION_COLUMN, BatchResult, DestinationSession, WriteBatch

if TYPE_CHECKING:
    from .staging import Staging
    from .states import DestinationMode

__all__ = ["SPLIT_MIN_ROWS", "DestinationWriter", "NotWritten", "batches_written_ahead", "landed", "rebatch"]

SPLIT_MIN_ROWS = 10_000  # smallest batch a run is split into to use a destination's parallel writers
#: most batches a run reads from staging by row-id range (one query each, ~1.5 ms: 2M rows in
#: 1,000-row ranges cost 3.4 CPU-s against 0.2 read in one go, bench/RESULTS.md, issue 22)
MAX_RANGES = 64


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


def batches_written_ahead(store: Any, staging: Staging, sync_id: int, run_id: int, first: int, mode: DestinationMode,
                          read_size: int, size: int, total: int, key: Sequence[str]) -> Iterator[tuple[int, pa.Table]]:
    """The run's ``total`` pending rows as numbered batches of ``size`` rows (from ``first``), each
    written ahead to the workspace before it is handed out (step 1 of the runner's docstring).

    When every staged row is pending and their row ids run 0..n-1 (a first load, a re-sync that
    staged only changes), batch ``first + j`` is the rows whose id lies in [j*size, (j+1)*size): a
    store that can (``writes_run_ahead``) writes the first batch ahead alone and, while the
    destination writes it, every other batch ahead in one transaction, instead of one beside each
    write to the destination (bench/RESULTS.md, issue 22); each batch is read by its id range and
    must hold exactly that range's rows (at most ``MAX_RANGES`` batches). A batch not sent stays
    in flight until the next run settles it, as a batch written ahead alone does. Otherwise each
    batch is written ahead as it is read (staging reading ``read_size`` rows at a time)."""
    ranged = getattr(store, "writes_run_ahead", False) and -(-total // size) <= MAX_RANGES
    inserts_only = _whole_range(staging, mode, total) if ranged else None
    if inserts_only is None:
        for i, tbl in enumerate(rebatch(staging.batches(mode, read_size), size)):
            store.write_ahead(sync_id, run_id, first + i, tbl, key, ACTION_COLUMN)
            yield first + i, tbl
        return
    con = staging.con
    bounds = [(j * size, min(total, (j + 1) * size)) for j in range(-(-total // size))]
    ahead = f"SELECT {', '.join(quote(k) for k in key)}, _fp{'' if inserts_only else ', _action::VARCHAR AS _action'} FROM stg"
    cols = ", ".join(quote(c) for c in staging.columns)
    sent_action = "'insert'" if mode.rewrites else "_action::VARCHAR"  # as Staging.batches() gives them
    for j, (lo, hi) in enumerate(bounds):
        if j == 1:  # while the destination writes the first batch (written ahead alone), the rest at once
            store.write_ahead_run(sync_id, run_id, ((first + i, b - a, con.cursor().sql(
                f"{ahead} WHERE rowid >= {a} AND rowid < {b}").to_arrow_reader(size)) for i, (a, b) in
                enumerate(bounds) if i), key, inserts_only)
        tbl = con.cursor().sql(f"SELECT {cols}, {sent_action} AS _action, _fp, rowid AS _rid FROM stg "
                               f"WHERE rowid >= {lo} AND rowid < {hi}").to_arrow_table(size)
        if tbl.num_rows != hi - lo:  # never send other rows than those written ahead
            raise RuntimeError(f"staging gave {tbl.num_rows} rows for batch {first + j}, not the {hi - lo} "
                               f"written ahead; the batch was not sent")
        if j == 0:
            store.write_ahead(sync_id, run_id, first, tbl, key, ACTION_COLUMN)
        yield first + j, tbl


def _whole_range(staging: Staging, mode: DestinationMode, total: int) -> bool | None:
    """When every staged row is pending and the row ids are 0..n-1: is every row an insert as sent?"""
    if total <= 0:
        return None
    n, lo, hi, others = staging.con.execute(
        "SELECT count(*), min(rowid), max(rowid), count(*) FILTER (_action <> 'insert') FROM stg").fetchall()[0]
    if n != total or lo != 0 or hi != n - 1:  # some rows are not sent (invalid, sent before, unchanged)
        return None
    return bool(mode.rewrites or not others)


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

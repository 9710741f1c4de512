"""A first load into a Delta table the run creates: one commit of files written aside.

The staged rows go out as ONE batch (batch 1) in three steps, the first two at once:

1. on a thread, the destination encodes every pending row into Parquet files *aside*, in a
   scratch table no reader sees (``DeltaSession.write_aside``), streamed from staging;
2. meanwhile the workspace writes the batch's keys and fingerprints ahead (the run's only
   batch: ``write_ahead(alone=True)``), the batch in flight;
3. once both are done, ONE Delta commit moves the files into the table and creates it with
   them, with the run's transaction identifier and ledger metadata (``commit_aside``); the
   runner confirms the batch as any other (:meth:`Runner.confirm`).

The usual transfer encodes a batch only after its write-ahead, and reads each batch out of
staging whole before either: for a 2M-row load that was two serial 1M-row commits after
0.2-0.3 s of reading and writing ahead. Exactly once holds as for any batch: nothing is in the
table before the commit (step 3), the workspace knows the batch before it (step 2), and the
commit is the ledger entry ``committed_batches`` and a resumed run read. A crash before it
leaves no table; the next run discards the in-flight batch and sends the rows the usual way.

:func:`takes` decides, in one place, whether a run goes this way; the staged path is the
fallback for everything else (an explicit ``batch_size``, partitions, a resumed run, a table
that exists, an object store, a float key (a NaN key fails its row), rows other than inserts,
more than ``AT_MOST`` rows).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ._arrow import int_array, string_array
from .destinations._delta import DeltaSession
from .destinations.base import ACTION_COLUMN, BatchResult
from .states import DestinationMode, SyncMode

if TYPE_CHECKING:
    from .runner import Runner

#: the modes it takes (update needs rows there, replace rewrites at its end)
MODES = (DestinationMode.INSERT, DestinationMode.UPSERT, DestinationMode.MIRROR)
#: rows per Arrow batch streamed from staging into the files
STREAM_ROWS = 1 << 17
#: files encoded at once (delta-rs encodes a stream on one core), each of at least PER_WRITER rows
WRITERS = max(1, min(2, os.cpu_count() or 1))
PER_WRITER = 500_000
#: the most rows it takes: every key and fingerprint is held in memory for the write-ahead, and a
#: crash before the one commit costs the whole encoding (a larger load goes batch by batch)
AT_MOST = 10_000_000


def hook(point: str) -> None:
    """Tests (tests/faulty.py) replace this to stop a process between two steps."""


def takes(runner: Runner, total: int, next_batch: int) -> bool:
    """Does this run send its rows as one commit of files written aside? A run's first batch into
    a local Delta table it creates, of inserts only (at most ``AT_MOST``), without an explicit
    batch size or partitions, its key of no float type."""
    defn, session, staging = runner.defn, runner.session, runner.staging
    if (not isinstance(session, DeltaSession) or not session.can_load_aside() or staging is None
            or not 0 < total <= AT_MOST or next_batch != 1 or defn.destination_mode not in MODES or defn.batch_size is not None
            or defn.partitions or runner.store.requeried(runner.run_id)):
        return False
    if any(t.upper() in ("FLOAT", "DOUBLE", "REAL") for k, t in staging.types.items() if k in defn.primary_key):
        return False
    send = staging.send_filter(defn.destination_mode)
    return not staging.con.cursor().execute(
        f"SELECT EXISTS (SELECT 1 FROM stg WHERE {send} AND _action <> 'insert')").fetchall()[0][0]


def load(runner: Runner, total: int, keep_all: bool, batch_no: int) -> None:
    """Steps 1-3 for the pending rows of ``runner``'s staging (see the module's text)."""
    defn, store, staging, session = runner.defn, runner.store, runner.staging, runner.session
    assert staging is not None and isinstance(session, DeltaSession)
    key = list(defn.primary_key)
    mode = defn.destination_mode
    # what the write-ahead and the confirm read: keys, fingerprints, row ids (every column when
    # the run keeps every record; the cursor when an incremental run advances it)
    cols = None if keep_all else list(dict.fromkeys(
        key + ([defn.cursor_field] if defn.sync_mode == SyncMode.INCREMENTAL and defn.cursor_field in staging.columns
               else [])))
    records = staging.batches(mode, STREAM_ROWS, bookkeeping=False)  # the rows to encode, nothing else
    schema = records.schema
    with store.lease():
        store.ensure_state_table(runner.sync_id, {k: staging.types[k] for k in key})
        # opened here, read once the files are under way. Every row is an insert (takes()): the
        # actions are one dictionary-encoded 'insert', not 2M texts out of staging (~0.03 CPU-s),
        # unless the run keeps every row's record (then stored as text, as any run's)
        slim = staging.batches(mode, total, columns=cols, action=keep_all)
        failed: list[BaseException] = []

        def write() -> None:
            try:
                session.write_aside(iter(records), schema, writers=WRITERS if total >= WRITERS * PER_WRITER else 1)
            except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
                failed.append(exc)

        thread = threading.Thread(target=write, name="dfsync-delta-aside", daemon=True)
        thread.start()
        try:
            try:
                tbl = slim.read_all()
                if not keep_all:
                    tbl = tbl.append_column(ACTION_COLUMN, pa.DictionaryArray.from_arrays(
                        int_array(np.zeros(tbl.num_rows, np.int8), pa.int8()), string_array(["insert"])))
                store.write_ahead(runner.sync_id, runner.run_id, batch_no, tbl, key, ACTION_COLUMN, alone=True)
            finally:
                thread.join()  # never leave the files being written under a session about to close
            if failed:
                raise failed[0]
            hook("aside_written")
            written: Future[BatchResult] = Future()
            written.set_result(session.commit_aside(batch_no))
        except BaseException:
            session.drop_aside()  # the files not moved into the table (those moved may be committed: kept)
            raise
        hook("aside_committed")
        runner.confirm(tbl, batch_no, written, key, keep_all)
    hook("aside_confirmed")
    runner.check_requests()  # a pause or abort asked for while the batch was sent acts now

"""Partitioned runs: a sync's rows in buckets by a stable hash of the primary key.

The driver (this module, in the process that called ``sync.run``) owns the run: it reads the
source, stages, diffs and checks every row exactly as a run without buckets does, so the
gates stay global (a null or repeated key anywhere, a failed check under ``fail``, an empty
source, dataset-level checks over the whole data set) and fail the run before any bucket sends
anything. Then each bucket's pending rows go to the destination as a task of the run's engine
(:mod:`dfsync.engines`): the driver writes each batch ahead to the workspace and into an Arrow
IPC file, a worker writes the files to the destination with their ledger entries
(:func:`dfsync._bucket.send_bucket`) and returns each batch's outcome, and the driver confirms
them. Only the driver writes the workspace (the DuckDB file has one writer; the protocol is the
one-process protocol, so reconcile, resume and counters are unchanged). A worker that dies is
dispatched again: the batches the destination's ledger already holds are settled from it, the
rest are written.

The bucket of a key is a pure function of the key (:data:`KH_ALGO`): the delivered state
stores no bucket, so ``partitions`` may change between runs and a resumed run re-buckets its
pending rows with no effect on what is sent.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._arrow import int_array
from ._bucket import context_task, read_ipc, send_bucket, write_bucket, write_ipc
from ._cursor import cursor_to_json, max_cursor
from ._ident import quote
from .destinations.base import ACTION_COLUMN, BatchResult
from .engines import BucketsLost, Engine, InProcess, WorkerLost, finished
from .errors import ConfigError
from .states import SyncMode
from .store import bucket_summary

if TYPE_CHECKING:
    from .definition import SyncDefinition
    from .runner import Runner

#: how a key is hashed to its bucket: MD5 (a fixed standard, unlike DuckDB's ``hash()``) of each
#: key column cast to text, length-prefixed; the low 64 bits, scaled onto the buckets
KH_ALGO = "md5-lower64-varchar-v1"
MAX_ATTEMPTS = 3


def key_hash_sql(key: list[str]) -> str:
    """The stable 64-bit hash of a row's key (an UBIGINT SQL expression over the key columns)."""
    parts = [f"coalesce(length(CAST({quote(k)} AS VARCHAR))::VARCHAR || ':' || CAST({quote(k)} AS VARCHAR), '-')"
             for k in key]
    return f"md5_number_lower({' || '.join(parts)})"


def bucket_sql(key: list[str], n: int) -> str:
    """The bucket (0 .. n-1) of a row: its key hash scaled onto n, so each bucket is one range of hashes."""
    return f"CAST((CAST({key_hash_sql(key)} AS UHUGEINT) * {int(n)}) >> 64 AS INTEGER)"


def check_engine(defn: SyncDefinition, sync_name: str, engine: Any, source: Any = None) -> None:
    """``sync.run(engine=...)``: refused before anything runs when it cannot work (``source``: this
    run's own ``source=``, if given)."""
    if engine is None:
        return
    if not isinstance(engine, Engine):
        raise ConfigError(f"engine= takes dfsync.engines.local(...) or dfsync.engines.ray(...), not {engine!r}")
    if not defn.partitions:
        raise ConfigError(f"sync {sync_name!r} is not partitioned, so it has no buckets to run on {engine!r}: "
                          f"recreate it with partitions=N (ws.create_sync(..., partitions=8))")
    if engine.cluster and (source or defn.source).session_only:
        raise ConfigError(
            f"sync {sync_name!r} reads an in-memory frame, which exists only in this Python process, so it cannot "
            f"run on {engine!r}, whose workers may be on other hosts. Write the frame to files every worker can "
            f"reach (df.write_parquet('/shared/events.parquet')) and give the sync dfsync.sources.files(...), or "
            f"run it on dfsync.engines.local(...) or without an engine.")
    if engine.remote and defn.destination.literal_secret:
        raise ConfigError(
            f"sync {sync_name!r} is partitioned and runs on {engine!r}, but its destination holds a literal "
            f"secret or a function, which never leave this process. Write the secret as 'env:NAME' (set on every "
            f"worker), or run without an engine (its buckets then run here, one after another).")


# ---------------------------------------------------------------------- progress
def note_bucket(runner: Runner, b: int, state: str, counts: dict[str, int] | None = None,
                error: str | None = None) -> None:
    """A bucket changed state: its row in the workspace (``run.buckets()``, the panel and the CLI
    read it), and the progress hooks see ``row["buckets"]`` ("3 done, 2 running, 3 waiting, 0 failed")."""
    have = runner.store.set_bucket(runner.sync_id, runner.run_id, b, state, counts, error)
    runner.report({"buckets": bucket_summary(have)})



# ---------------------------------------------------------------------- the transfer
def send_buckets(runner: Runner, keep_all: bool, next_batch: int) -> None:
    """The transfer of a partitioned run: every bucket's pending rows, on the run's engine."""
    defn, store, staging = runner.defn, runner.store, runner.staging
    with store.lease():
        store.ensure_state_table(runner.sync_id, {k: staging.types[k] for k in defn.primary_key})
        _send(runner, keep_all, next_batch)


def _send(runner: Runner, keep_all: bool, next_batch: int) -> None:
    defn, store, staging = runner.defn, runner.store, runner.staging
    assert staging is not None and runner.session is not None
    n: int = defn.partitions
    engine: Engine = getattr(runner, "engine", None) or InProcess()
    check_engine(defn, runner.sync_name, runner.engine)
    key = list(defn.primary_key)
    schema = staging.arrow_schema()
    ctx = runner.session.ctx
    in_process = not engine.remote
    if in_process:  # the buckets one after another on the run's own session
        fn: Any = functools.partial(write_bucket, runner.session)
    else:  # the driver's session goes while the workers write (a one-writer file destination), and
        # comes back, prepared again, for the run's end (session.finish)
        fn = send_bucket
        runner.session.close()
        runner.session = None
    store.begin_buckets(runner.sync_id, runner.run_id, n, f"{n} buckets by {KH_ALGO} of the key, on {engine!r}")
    workdir = os.path.join(staging.temp_dir, "buckets")
    os.makedirs(workdir, exist_ok=True)
    base_task = {"destination": {"kind": defn.destination.kind, **defn.destination.config()},
                 "modules": sorted({type(defn.destination).__module__} - {"__main__"}),
                 "context": context_task(ctx), "schema": schema.serialize().to_pybytes(),
                 "test_kill": os.environ.get("DFSYNC_TEST_KILL_WORKER")}  # tests only: see _bucket
    rows = defn.batch_size or defn.destination.default_batch_size
    files, next_batch = _write_batches(runner, rows, n, workdir, next_batch)
    waiting = list(range(n))
    tasks: dict[int, dict[str, Any]] = {}
    attempts: dict[int, int] = dict.fromkeys(range(n), 0)
    running: dict[cf.Future[Any], int] = {}
    error: BaseException | None = None
    engine.start()
    slots = 1 if defn.destination.one_writer else engine.slots()
    try:
        while waiting or running:
            while waiting and len(running) < slots and error is None:
                b = waiting.pop(0)
                if b not in tasks:
                    tasks[b] = {**base_task, "bucket": b, "batches": files[b]}
                    if not files[b]:
                        note_bucket(runner, b, "done")
                        continue
                attempts[b] += 1
                tasks[b]["attempt"] = attempts[b]
                note_bucket(runner, b, "running")
                running[engine.submit(fn, tasks[b])] = b
            if not running:
                break
            for b, out, exc in finished(running):
                if isinstance(exc, WorkerLost):
                    if attempts[b] >= MAX_ATTEMPTS or error is not None:
                        note_bucket(runner, b, "failed", error=str(exc))
                        error = error or BucketsLost(f"bucket {b}: its worker died {attempts[b]} times ({exc}); "
                                                     f"the next sync.run() resumes the run")
                    else:  # dispatched again: its batches that landed are settled from the ledger
                        note_bucket(runner, b, "waiting", error=str(exc))
                        waiting.insert(0, b)
                    continue
                if exc is not None:  # the task's own error: the run stops once the running buckets end
                    note_bucket(runner, b, "failed", error=str(exc)[:500])
                    error = error or exc
                    continue
                counts = _confirm_bucket(runner, tasks[b], out["results"], key, keep_all)
                note_bucket(runner, b, "done", counts)
            if error is None:
                runner.check_requests()
            store.release_if_stale()  # a bucket boundary: another process waiting for the workspace gets in
    finally:
        if running:  # stopped (Ctrl-C, a pause): no worker may go on writing under a run that stopped;
            cf.wait(list(running))  # what they committed stays in flight for _settle.reconcile()
        engine.close()
    if error is not None:
        raise error
    shutil.rmtree(workdir, ignore_errors=True)
    if not in_process:
        runner.session = defn.destination.open(ctx)
        runner.session.prepare(schema)


def _write_batches(runner: Runner, rows: int, n: int, workdir: str,
                   next_batch: int) -> tuple[dict[int, list[tuple[int, str]]], int]:
    """Every bucket's batches, in one pass over the pending rows (each row's bucket hashed once, in
    one query), each batch of ``rows`` rows of one bucket written ahead to the workspace
    and into an Arrow IPC file. Returns each bucket's ``[(batch_no, path)]`` and the next batch
    number. (A scan of the staged rows per bucket cost 8 scans, each also filtering out the rows
    of the buckets confirmed before it: 15 of 34 s of a 10M-row first load.)"""
    store, staging, defn = runner.store, runner.staging, runner.defn
    assert staging is not None
    key = list(defn.primary_key)
    files: dict[int, list[tuple[int, str]]] = {b: [] for b in range(n)}
    held: dict[int, list[pa.Table]] = {b: [] for b in range(n)}
    count = dict.fromkeys(range(n), 0)
    # each row's bucket, hashed once in one parallel query over the rows the mode sends (MD5 is the
    # dear part: ~0.8 us a row on one core), kept as a table rowid -> bucket (1 byte a staged row)
    staging.con.execute(f"CREATE OR REPLACE TEMP TABLE _dfsync_buckets AS SELECT rowid AS _rid, "
                        f"{bucket_sql(key, n)} AS _b FROM stg WHERE {staging.send_filter(defn.destination_mode)}")
    got = staging.con.execute("SELECT _rid, _b FROM _dfsync_buckets").fetchnumpy()
    staging.con.execute("DROP TABLE _dfsync_buckets")
    bucket_of = np.zeros(int(got["_rid"].max()) + 1 if len(got["_rid"]) else 0, np.uint8 if n <= 256 else np.int32)
    bucket_of[got["_rid"]] = got["_b"]
    del got

    def emit(b: int, tbl: pa.Table) -> None:
        nonlocal next_batch
        store.write_ahead(runner.sync_id, runner.run_id, next_batch, tbl, key, ACTION_COLUMN)
        path = os.path.join(workdir, f"b{b}-{next_batch}.arrow")
        write_ipc(path, tbl)
        files[b].append((next_batch, path))
        next_batch += 1
        store.release_if_stale()
        runner.check_requests()

    for rb in staging.batches(defn.destination_mode, rows):
        if not rb.num_rows:
            continue
        of = bucket_of[rb.column("_rid").to_numpy()]
        order = np.argsort(of, kind="stable")
        grouped = pa.Table.from_batches([rb]).take(int_array(order))
        bounds = np.searchsorted(of[order], np.arange(n + 1))
        for b in range(n):
            if bounds[b + 1] == bounds[b]:
                continue
            held[b].append(grouped.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])))
            count[b] += int(bounds[b + 1] - bounds[b])
            if count[b] >= rows:
                tbl = pa.concat_tables(held[b]).combine_chunks()
                while tbl.num_rows >= rows:
                    emit(b, tbl.slice(0, rows))
                    tbl = tbl.slice(rows)
                held[b], count[b] = ([tbl] if tbl.num_rows else []), tbl.num_rows
    for b in range(n):
        if count[b]:
            emit(b, pa.concat_tables(held[b]).combine_chunks())
    return files, next_batch


def _confirm_bucket(runner: Runner, task: dict[str, Any], results: dict[int, dict[str, Any]], key: list[str],
                    keep_all: bool) -> dict[str, int]:
    """Confirm a bucket's batches in order, as a run without buckets confirms its own."""
    from ._settle import adopt_confirmed_batches, applies_per_batch

    store, staging = runner.store, runner.staging
    assert staging is not None
    counts = {"sent": 0, "succeeded": 0, "failed": 0, "skipped": 0, "batches": 0}
    landed: list[int] = []
    for batch_no, path in task["batches"]:
        outcome = results[batch_no]
        tbl = read_ipc(path)
        if "landed" in outcome:  # an earlier attempt's worker committed it, then died
            nd = [list(k) for k in outcome["landed"]]
            cursor = runner.defn.cursor_field
            if runner.defn.sync_mode == SyncMode.INCREMENTAL and cursor in tbl.column_names:
                runner.cursor_max = max_cursor(runner.cursor_max, pc.max(tbl.column(cursor)).as_py())
                store.set_run_fields(runner.run_id, cursor_max=json.dumps(cursor_to_json(runner.cursor_max)))
            store.settle_inflight(runner.sync_id, runner.run_id, [batch_no], {batch_no: nd}, key,
                                  not applies_per_batch(runner.defn))
            landed.append(batch_no)
            bad = len(nd)
            counts.update(sent=counts["sent"] + tbl.num_rows, succeeded=counts["succeeded"] + tbl.num_rows - bad,
                          failed=counts["failed"] + bad, batches=counts["batches"] + 1)
            continue
        res = BatchResult(failed={int(i): e for i, e in outcome["failed"].items()},
                          skipped={int(i): e for i, e in outcome["skipped"].items()})
        fut: cf.Future[BatchResult] = cf.Future()
        fut.set_result(res)
        runner.confirm(tbl, batch_no, fut, key, keep_all)
        counts.update(sent=counts["sent"] + tbl.num_rows, failed=counts["failed"] + len(res.failed),
                      skipped=counts["skipped"] + len(res.skipped), batches=counts["batches"] + 1,
                      succeeded=counts["succeeded"] + tbl.num_rows - len(res.failed) - len(res.skipped))
    if landed:
        adopt_confirmed_batches(store, staging, runner.sync_id, runner.run_id, key)
    return counts

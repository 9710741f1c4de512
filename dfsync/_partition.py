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

The bucket of a key is a pure function of the key (:mod:`dfsync._keyhash`): the delivered state
stores no bucket, so ``partitions`` may change between runs and a resumed run re-buckets its
pending rows with no effect on what is sent.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import json
import os
import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ._arrow import int_array
from ._bucket import context_task, read_ipc, send_bucket, write_bucket, write_ipc
from ._cursor import cursor_to_json, top_cursor
from ._ident import quote
from ._keyhash import INT_ALGO, bucket_sql, int_key_buckets, key_algo
from ._sensitive import scrub_run_texts
from ._words import plural
from .destinations.base import ACTION_COLUMN, BatchResult
from .engines import BucketsLost, Engine, InProcess, WorkerLost, finished
from .errors import ConfigError, redact
from .states import SyncMode
from .store import bucket_summary

if TYPE_CHECKING:
    from .definition import SyncDefinition
    from .runner import Runner

MAX_ATTEMPTS = 3
#: on an engine, each bucket's batches go in about this many waves, each as soon as it is cut,
#: and a wave holds this many rows at least (a wave is a task: a worker opening a session); a
#: 10M-row first load into PostgreSQL on local(2): 24.97 -> 18.53 s with the integer key hash
WAVES = 4
MIN_WAVE_ROWS = 100_000


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
    if error:  # as the run's own error: a destination's message may quote a row's sensitive value (cut
        # after the scrub, which finds whole values only)
        error = scrub_run_texts(runner, redact(error))[0][:500]
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
    algo = key_algo(schema, key)
    ctx = runner.session.ctx
    # the columns whose source type widened: a worker's prepare() takes them as the run's own
    # session did (a Parquet data set is only rewritten at the run's end, so they are still narrow)
    widen = sorted(runner.session.widen_columns)
    in_process = not engine.remote
    if in_process:  # the buckets one after another on the run's own session
        fn: Any = functools.partial(write_bucket, runner.session)
    else:  # the driver's session goes while the workers write (a one-writer file destination), and
        # comes back, prepared again, for the run's end (session.finish)
        fn = send_bucket
        runner.session.close()
        runner.session = None
    store.begin_buckets(runner.sync_id, runner.run_id, n, f"{plural(n, 'bucket')} by {algo} of the key, on {engine!r}")
    workdir = os.path.join(staging.temp_dir, "buckets")
    os.makedirs(workdir, exist_ok=True)
    base_task = {"destination": {"kind": defn.destination.kind, **defn.destination.config()},
                 "modules": sorted({type(defn.destination).__module__} - {"__main__"}),
                 "context": context_task(ctx), "schema": schema.serialize().to_pybytes(),
                 "widen": widen,
                 "test_kill": os.environ.get("DFSYNC_TEST_KILL_WORKER")}  # tests only: see _bucket
    rows = defn.batch_size or defn.destination.default_batch_size
    engine.start()
    slots = 1 if defn.destination.one_writer else engine.slots()
    waves = Waves(runner, engine, fn, base_task, slots, key, keep_all, n)
    try:
        # in process the buckets run after the cut, one after another; on an engine each bucket's
        # batches go in waves while the driver cuts the next ones
        _write_batches(runner, rows, n, workdir, next_batch, algo, waves, WAVES if engine.remote else 0)
        waves.drain()
    finally:
        waves.stop()  # no worker may go on writing under a run that stopped (Ctrl-C, a pause): what
        engine.close()  # they committed stays in flight for _settle.reconcile()
    shutil.rmtree(workdir, ignore_errors=True)
    if not in_process:
        runner.session = defn.destination.open(ctx)
        runner.session.widen_columns = set(widen)
        runner.session.prepare(schema)


class Waves:
    """The transfer's tasks: each a *wave*, some consecutive batches of one bucket, dispatched to the
    engine as soon as they are cut, while the driver cuts the next ones (so the destination takes
    batches while the driver writes others ahead, as in a run without buckets). A bucket is
    ``running`` from its first wave, ``done`` once the cut ended and its last wave was confirmed;
    a wave whose worker died is dispatched again (one attempt more for its bucket), three times at
    most. A wave's outcome is confirmed as it comes back, except one with batches an earlier worker
    had landed (settled from the ledger, which adopts rows into staging): those once the cut ended."""

    def __init__(self, runner: Runner, engine: Engine, fn: Any, base_task: dict[str, Any], slots: int,
                 key: list[str], keep_all: bool, n: int) -> None:
        self.runner, self.engine, self.fn, self.base_task, self.slots = runner, engine, fn, base_task, slots
        self.key, self.keep_all = key, keep_all
        self.tasks: list[dict[str, Any]] = []  # wave -> task
        self.attempts: list[int] = []  # wave -> dispatches
        self.queue: collections.deque[int] = collections.deque()  # waves waiting for a worker
        self.running: dict[cf.Future[Any], int] = {}
        self.open = [0] * n  # a bucket's waves not yet confirmed
        self.cut = [0] * n  # a bucket's batches cut so far (a wave's first batch is its bucket's cut[b] + 1)
        self.started, self.done = [False] * n, [False] * n
        self.counts = [dict.fromkeys(("sent", "succeeded", "failed", "skipped", "batches"), 0) for _ in range(n)]
        self.later: list[tuple[int, dict[str, Any]]] = []
        self.cutting = True
        self.error: BaseException | None = None

    def add(self, b: int, batches: list[tuple[int, str]]) -> None:
        """A wave of bucket ``b``'s next batches, dispatched when a worker is free."""
        self.tasks.append({**self.base_task, "bucket": b, "batches": batches, "first": self.cut[b]})
        self.attempts.append(0)
        self.cut[b] += len(batches)
        self.open[b] += 1
        self.queue.append(len(self.tasks) - 1)
        self.pump(0)

    def pump(self, timeout: float) -> None:
        """Dispatch waiting waves to free workers, then take in those that ended within ``timeout``."""
        runner = self.runner
        while self.queue and len(self.running) < self.slots and self.error is None:
            w = self.queue.popleft()
            b = self.tasks[w]["bucket"]
            self.attempts[w] += 1
            self.tasks[w]["attempt"] = self.attempts[w]
            if self.attempts[w] > 1 or not self.started[b]:  # the bucket's first dispatch, or one again
                self.started[b] = True
                note_bucket(runner, b, "running")
            self.running[self.engine.submit(self.fn, self.tasks[w])] = w
        for w, out, exc in finished(self.running, timeout) if self.running else ():
            b = self.tasks[w]["bucket"]
            if isinstance(exc, WorkerLost):
                if self.attempts[w] >= MAX_ATTEMPTS or self.error is not None:
                    note_bucket(runner, b, "failed", error=str(exc))
                    self.error = self.error or BucketsLost(
                        f"bucket {b}: its worker died {plural(self.attempts[w], 'time')} ({exc}); the next sync.run() resumes the run")
                else:  # dispatched again: its batches that landed are settled from the ledger
                    note_bucket(runner, b, "waiting", error=str(exc))
                    self.queue.appendleft(w)
            elif exc is not None:  # the task's own error: the run stops once the running waves end
                note_bucket(runner, b, "failed", error=str(exc))
                self.error = self.error or exc
            elif self.cutting and any("landed" in o for o in out["results"].values()):
                self.later.append((w, out))
            else:
                self._confirm(w, out)
        if self.error is None and timeout:  # the cut (timeout 0) asks after each batch itself
            runner.check_requests()
        runner.store.release_if_stale()  # a boundary: another process waiting for the workspace gets in

    def _confirm(self, w: int, out: dict[str, Any]) -> None:
        task = self.tasks[w]
        b = task["bucket"]
        for k, v in _confirm_bucket(self.runner, task, out["results"], self.key, self.keep_all).items():
            self.counts[b][k] += v
        self.open[b] -= 1
        self._done(b)

    def _done(self, b: int) -> None:
        if not self.cutting and not self.open[b] and not self.done[b]:
            self.done[b] = True
            note_bucket(self.runner, b, "done", self.counts[b] if self.started[b] else None)

    def cut_done(self, ready: dict[int, list[tuple[int, str]]]) -> None:
        """The cut ended (the staged rows are no longer being read): the last waves, ``ready``."""
        self.cutting = False
        for w, out in self.later:
            self._confirm(w, out)
        self.later = []
        for b, batches in ready.items():
            if batches:
                self.add(b, batches)
            self._done(b)

    def drain(self) -> None:
        """Every wave dispatched and confirmed; raises the first error."""
        while self.running or (self.queue and self.error is None):
            self.pump(0.5)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.running:
            cf.wait(list(self.running))


def _write_batches(runner: Runner, rows: int, n: int, workdir: str, next_batch: int, algo: str,
                   waves: Waves, per_bucket: int) -> int:
    """Every bucket's batches, in one pass over the pending rows (each row's bucket hashed once),
    each batch of ``rows`` rows of one bucket written ahead to the workspace and into an Arrow IPC
    file, handed to ``waves`` about ``per_bucket`` times a bucket as they are cut (0: each bucket's
    batches at the end). Returns the next batch number. (A scan of the staged rows per bucket cost
    8 scans, each also filtering out the rows of the buckets confirmed before it: 15 of 34 s of a
    10M-row first load.)"""
    store, staging, defn = runner.store, runner.staging, runner.defn
    assert staging is not None
    key = list(defn.primary_key)
    held: dict[int, list[pa.Table]] = {b: [] for b in range(n)}
    count = dict.fromkeys(range(n), 0)
    ready: dict[int, list[tuple[int, str]]] = {b: [] for b in range(n)}
    bucket_of, sizes = _bucket_of(staging, key, n, algo, defn.destination_mode)
    # a wave: about 1/per_bucket of the bucket's batches, MIN_WAVE_ROWS rows at least
    least = -(-MIN_WAVE_ROWS // rows)
    wave = [max(least, -(-int(c) // rows) // per_bucket) if per_bucket else 0 for c in sizes]

    def emit(b: int, tbl: pa.Table) -> None:
        nonlocal next_batch
        store.write_ahead(runner.sync_id, runner.run_id, next_batch, tbl, key, ACTION_COLUMN)
        path = os.path.join(workdir, f"b{b}-{next_batch}.arrow")
        write_ipc(path, tbl)
        ready[b].append((next_batch, path))
        next_batch += 1
        if wave[b] and len(ready[b]) >= wave[b]:
            waves.add(b, ready[b])
            ready[b] = []
        else:
            waves.pump(0)
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
    wave = [0] * n  # the last waves: what is left of each bucket
    for b in range(n):
        if count[b]:
            emit(b, pa.concat_tables(held[b]).combine_chunks())
    waves.cut_done(ready)
    return next_batch


def _bucket_of(staging: Any, key: list[str], n: int, algo: str, mode: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each pending row's bucket, indexed by its staged rowid (1 byte a staged row), and the pending
    rows of each bucket; hashed once over the rows the mode sends, a million rows at a time (the
    whole rowid and key columns at once cost 2 GB more at 50M rows): integer keys in numpy
    (:data:`INT_ALGO`, 0.1 s for 10M rows), any other key by MD5 in the query (~0.8 us a row)."""
    size = staging.con.execute("SELECT coalesce(max(rowid), -1) + 1 FROM stg").fetchall()[0][0]
    out = np.zeros(int(size), np.uint8 if n <= 256 else np.int32)
    counts = np.zeros(n, np.int64)
    where = staging.send_filter(mode)
    ints = algo == INT_ALGO
    what = ", ".join(quote(k) for k in key) if ints else f"{bucket_sql(key, n)} AS _b"
    for rb in staging.con.cursor().sql(f"SELECT rowid AS _rid, {what} FROM stg WHERE {where}") \
            .to_arrow_reader(1 << 20):
        if ints and any(rb.column(i + 1).null_count for i in range(len(key))):
            # a null key fails the run's gates before any transfer: never here, but never wrong
            return _bucket_of(staging, key, n, "", mode)
        b = int_key_buckets([rb.column(i + 1).to_numpy() for i in range(len(key))], n) if ints \
            else rb.column(1).to_numpy()
        out[rb.column(0).to_numpy()] = b
        counts += np.bincount(b, minlength=n)
    return out, counts


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
                runner.cursor_max = top_cursor(runner.cursor_max, tbl.column(cursor))
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
        adopt_confirmed_batches(store, staging, runner.sync_id, runner.run_id, key, runner.defn.destination_mode.rewrites)
    return counts

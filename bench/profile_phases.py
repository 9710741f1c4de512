"""Where a dfsync run spends its time, phase by phase (wall clock; no core module is changed).

    python bench/profile_phases.py --src v1.parquet --src2 v2.parquet --target duckdb
    python bench/profile_phases.py --src v1.parquet --src2 v2.parquet --target postgres --pg-uri postgresql://…

Wraps the runner's and the destination's methods with timers (initial load of --src into a
fresh destination, then the re-sync with --src2) and prints, per run, the seconds inside:
staging.load (read + hash + diff), store.delivered (state copy out of the workspace),
each batch's workspace write-ahead, its destination write (on the writer thread, overlapping
the next batch's write-ahead) and its confirm (which first waits for that write),
the workspace lease reopen (release_if_stale), the destination's finish and close, and the
rest. For a sampled profile of the same runs, run it under ``py-spy record``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dfsync  # noqa: E402
from dfsync import runner, staging, store  # noqa: E402

TIMES: collections.Counter[str] = collections.Counter()
COUNTS: collections.Counter[str] = collections.Counter()


def timed(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def wrapper(*a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            TIMES[label] += time.perf_counter() - t
            COUNTS[label] += 1

    setattr(owner, name, wrapper)


def timed_cm(owner: Any, name: str, label: str) -> None:
    """Time the enter and the exit of a context manager method (not the body)."""
    fn = getattr(owner, name)

    @contextlib.contextmanager
    def wrapper(*a: Any, **kw: Any) -> Any:
        cm = fn(*a, **kw)
        t = time.perf_counter()
        v = cm.__enter__()
        TIMES[label + " (enter)"] += time.perf_counter() - t
        try:
            yield v
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            t = time.perf_counter()
            cm.__exit__(None, None, None)
            TIMES[label + " (exit)"] += time.perf_counter() - t

    setattr(owner, name, wrapper)


def instrument(target: str) -> None:
    timed(staging.Staging, "load", "staging.load (read+hash+diff)")
    timed(staging.Staging, "batches", "staging.batches (open reader)")
    timed(staging.Staging, "record_outcomes", "staging.record_outcomes")
    timed(staging.Staging, "pending_count", "staging.pending_count")
    timed(store.Store, "delivered", "store.delivered (workspace -> arrow)")
    timed(runner, "rebatch", "rebatch (generator creation)")
    timed(store.Store, "write_ahead", "write-ahead of each batch (workspace)")
    timed(runner.Runner, "_confirm", "confirm of each batch (waits for its write)")
    timed(store.Store, "confirm_batch", "  store.confirm_batch (workspace, with counters and records)")
    timed(store.Store, "_store_records", "  store._store_records")
    timed(runner.Runner, "_finish", "runner._finish (incl. session.finish)")
    timed(store.Store, "ensure_state_table", "store.ensure_state_table")
    timed(runner.Runner, "_drop_staging", "drop staging")
    timed(runner.Runner, "_validate", "validate")
    timed(runner.Runner, "_query", "runner._query total")
    timed(runner.Runner, "_transfer", "runner._transfer total")
    timed(runner.Runner, "_notify", "notify")
    timed(store.Store, "release_if_stale", "lease reopen (release_if_stale)")
    timed(store.Store, "add_counters", "store.add_counters")
    timed(store.Store, "transition_run", "store.transition_run")
    timed_cm(store.Store, "_transaction", "workspace transaction")
    if target == "duckdb":
        from dfsync.destinations import _duckdb as mod

        cls: Any = mod.DuckDBSession
    else:
        from dfsync.destinations import _postgres as mod

        cls = mod.PostgresSession
    timed(cls, "write", "destination.write (worker thread)")
    timed(cls, "close", "destination close")
    timed(cls, "prepare", "destination prepare")
    timed(cls, "finish", "destination finish")
    timed(cls, "__init__", "destination open")
    if target == "postgres":
        timed(cls, "_stage", "  pg: adbc_ingest into temp stage")
        timed(cls, "_ingest_direct", "  pg: adbc_ingest direct")
        timed(cls, "_apply", "  pg: apply SQL")
        timed(cls, "_add_deferred_key", "  pg: add primary key")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--src2", required=True)
    ap.add_argument("--target", choices=["duckdb", "postgres"], default="duckdb")
    ap.add_argument("--pg-uri")
    ap.add_argument("--mode", default="upsert")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--only", choices=["both", "initial", "resync"], default="both")
    ap.add_argument("--lease-seconds", type=float, default=None,
                    help="experiment: override store._filelock.LEASE_SECONDS (how often the workspace is reopened)")
    args = ap.parse_args()
    if args.lease_seconds is not None:
        store._filelock.LEASE_SECONDS = args.lease_seconds
    instrument(args.target)
    work = tempfile.mkdtemp(prefix="dfsync-prof-")
    try:
        dest = (dfsync.destinations.duckdb(os.path.join(work, "dest.duckdb"), table="t") if args.target == "duckdb"
                else dfsync.destinations.postgres(args.pg_uri, table="t"))
        kw = {} if args.batch_size is None else {"batch_size": args.batch_size}
        for label, src in (("initial", args.src), ("re-sync", args.src2)):
            TIMES.clear()
            COUNTS.clear()
            t = time.perf_counter()
            ws = dfsync.Workspace(os.path.join(work, "ws.duckdb"))
            sync = ws.create_sync("p", source=dfsync.sources.files(src), destination=dest, primary_key="id",
                                  destination_mode=args.mode, **kw)
            t_run = time.perf_counter()
            run = sync.run(progress=False)
            total = time.perf_counter() - t
            assert run.status == "success", run.error
            if (args.only == "initial" and label != "initial") or (args.only == "resync" and label == "initial"):
                continue
            print(f"\n== {label}: {total:.2f}s total ({t_run - t:.2f}s workspace open + create_sync), "
                  f"counts {run.counts}")
            for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1]):
                print(f"  {k:<44} {v:7.2f}s  x{COUNTS[k] or ''}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Where a dfsync run spends its time, phase by phase (no core module is changed).

    python bench/profile_phases.py --src v1.parquet --src2 v2.parquet --target duckdb
    python bench/profile_phases.py --src v1.parquet --src2 v2.parquet --target postgres --pg-uri postgresql://…
    python bench/profile_phases.py --src v1.parquet --src2 v2.parquet --target delta --mode mirror

Wraps the runner's and the destination's methods with timers (initial load of --src into a
fresh destination, then the re-sync with --src2) and prints, per run, the seconds inside:
staging.load (read + hash + diff), store.delivered (state copy out of the workspace),
each batch's workspace write-ahead, its destination write (on the writer thread, overlapping
the next batch's write-ahead) and its confirm (which first waits for that write),
the workspace lease reopen (release_if_stale), the destination's finish and close, and the
rest. A DuckDB first load is loaded in place (dfsync/_fused.py: ``fused:`` phases) unless
``--batch-size`` is given. For a sampled profile of the same runs, run it under ``py-spy record``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dfsync  # noqa: E402
from dfsync import runner, staging, store  # noqa: E402
from dfsync import sync as sync_mod  # noqa: E402

TIMES: collections.Counter[str] = collections.Counter()
#: (start, seconds, CPU-s of the thread, thread, phase) of each timed call, for --timeline
EVENTS: list[tuple[float, float, float, str, str]] = []
T0 = [0.0]
CPU: collections.Counter[str] = collections.Counter()
COUNTS: collections.Counter[str] = collections.Counter()


def timed(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name, None)
    if fn is None:  # renamed or gone since: nothing to time
        return

    def wrapper(*a: Any, **kw: Any) -> Any:
        t, c, tc = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            TIMES[label] += time.perf_counter() - t
            CPU[label] += time.process_time() - c
            COUNTS[label] += 1
            EVENTS.append((t - T0[0], time.perf_counter() - t, time.thread_time() - tc,
                           threading.current_thread().name, label.strip()))

    setattr(owner, name, wrapper)


def timed_cm(owner: Any, name: str, label: str) -> None:
    """Time the enter and the exit of a context manager method (not the body)."""
    fn = getattr(owner, name, None)
    if fn is None:
        return

    @contextlib.contextmanager
    def wrapper(*a: Any, **kw: Any) -> Any:
        cm = fn(*a, **kw)
        t, c = time.perf_counter(), time.process_time()
        v = cm.__enter__()
        TIMES[label + " (enter)"] += time.perf_counter() - t
        CPU[label + " (enter)"] += time.process_time() - c
        try:
            yield v
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            t, c = time.perf_counter(), time.process_time()
            cm.__exit__(None, None, None)
            TIMES[label + " (exit)"] += time.perf_counter() - t
            CPU[label + " (exit)"] += time.process_time() - c

    setattr(owner, name, wrapper)


def timed_batches(label: str) -> None:
    """Time each batch the runner takes from staging (the reader's work happens in next())."""
    rebatch = runner.rebatch

    def wrapper(*a: Any, **kw: Any) -> Any:
        it = rebatch(*a, **kw)
        while True:
            t, c, tc = time.perf_counter(), time.process_time(), time.thread_time()
            try:
                tbl = next(it)
            except StopIteration:
                return
            finally:
                TIMES[label] += time.perf_counter() - t
                CPU[label] += time.process_time() - c
                COUNTS[label] += 1
                EVENTS.append((t - T0[0], time.perf_counter() - t, time.thread_time() - tc,
                               threading.current_thread().name, label))
            yield tbl

    runner.rebatch = wrapper


def instrument(target: str) -> None:
    timed(staging.Staging, "load", "staging.load (read+hash+diff)")
    timed(staging.Staging, "batches", "staging.batches (open reader)")
    timed(staging.Staging, "record_outcomes", "staging.record_outcomes")
    timed(staging.Staging, "pending_count", "staging.pending_count")
    timed(store.Store, "delivered", "store.delivered (workspace -> arrow)")
    timed_batches("next staged batch (staging -> Arrow)")
    timed(store.Store, "write_ahead", "write-ahead of each batch (workspace)")
    timed(runner.Runner, "confirm", "confirm of each batch (waits for its write)")
    timed(store.Store, "confirm_batch", "  store.confirm_batch (workspace, with counters and records)")
    timed(store.Store, "_store_records", "  store._store_records")
    timed(runner.Runner, "finish", "runner.finish (incl. session.finish)")
    timed(store.Store, "ensure_state_table", "store.ensure_state_table")
    timed(runner.Runner, "drop_staging", "drop staging")
    timed(runner.Runner, "_validate", "validate")
    timed(runner.Runner, "_query", "runner._query total")
    timed(runner.Runner, "_transfer", "runner._transfer total")
    timed(sync_mod, "notify", "notify")
    timed(store.Store, "release_if_stale", "lease reopen (release_if_stale)")
    timed(store.Store, "add_counters", "store.add_counters")
    timed(store.Store, "transition_run", "store.transition_run")
    timed_cm(store.Store, "_transaction", "workspace transaction")
    timed(store.Store, "checkpoint", "workspace checkpoint (beside the destination close)")
    timed(store._filelock.FileConnections, "_open_file", "workspace file open")
    timed(store._filelock.FileConnections, "_close", "workspace file close (checkpoint)")
    timed(dfsync.Workspace, "__init__", "Workspace() open")
    timed(dfsync.Workspace, "create_sync", "create_sync")
    from dfsync import _fused  # a first load into a DuckDB table the run creates (dfsync/_fused.py)

    timed(_fused, "_load", "fused: source into the new table, keys out (querying)")
    timed(_fused, "_keys_distinct", "  fused: null or repeated keys")
    timed(_fused, "_deliver", "fused: write-ahead, commit, confirm + key, end")
    if target == "duckdb":
        from dfsync.destinations import _duckdb as mod

        cls: Any = mod.DuckDBSession
    elif target == "delta":
        from dfsync.destinations import _delta as mod

        cls = mod.DeltaSession
        timed(cls, "_apply", "  delta: commit (append or MERGE)")
        timed(cls, "write_aside", "  delta: files written aside (thread)")
        timed(cls, "commit_aside", "  delta: the one commit of the files aside")
        from dfsync import _fused_delta

        timed(_fused_delta, "load", "delta first load aside: write-ahead || files, commit, confirm")
        timed(cls, "_run_commits", "  delta: read this run's commits (history)")
    else:
        from dfsync.destinations import _postgres as mod

        cls = mod.PostgresSession
    timed(cls, "write", "destination.write (worker thread)")
    timed(cls, "close", "destination close")
    timed(cls, "prepare", "destination prepare")
    timed(cls, "finish", "destination finish")
    timed(cls, "__init__", "destination open")
    if target == "duckdb":
        timed(cls, "_add_deferred_key", "  destination: primary key added")
    if target == "postgres":
        timed(cls, "_stage", "  pg: adbc_ingest into temp stage")
        timed(cls, "_ingest_direct", "  pg: adbc_ingest direct")
        timed(cls, "_apply", "  pg: apply SQL")
        timed(cls, "_add_deferred_key", "  pg: add primary key")


def reference(target: str, src: str, src2: str | None, work: str) -> dict[str, float]:
    """Wall and CPU seconds of the hand-written reference for the first load (and the re-sync)."""
    out: dict[str, float] = {}
    if target == "duckdb":
        import duckdb

        path = os.path.join(work, "ref.duckdb")
        t, c = time.perf_counter(), time.process_time()
        con = duckdb.connect(path)
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{src}')")
        con.close()
        out["CREATE TABLE AS SELECT"] = time.perf_counter() - t
        out["CREATE TABLE AS SELECT (CPU)"] = time.process_time() - c
        os.remove(path)
    elif target == "delta":
        import duckdb
        import polars as pl
        from deltalake import DeltaTable, write_deltalake

        path = os.path.join(work, "ref-delta")
        t, c = time.perf_counter(), time.process_time()
        write_deltalake(path, pl.read_parquet(src).to_arrow())
        out["write_deltalake"] = time.perf_counter() - t
        out["write_deltalake (CPU)"] = time.process_time() - c
        if src2:
            changed = duckdb.sql(f"SELECT * FROM read_parquet('{src2}') EXCEPT SELECT * FROM read_parquet('{src}')").to_arrow_table()
            t, c = time.perf_counter(), time.process_time()
            (DeltaTable(path).merge(changed, "t.id = s.id", source_alias="s", target_alias="t")
             .when_matched_update_all().when_not_matched_insert_all().execute())
            out["DeltaTable.merge of the changed rows"] = time.perf_counter() - t
            out["DeltaTable.merge of the changed rows (CPU)"] = time.process_time() - c
        shutil.rmtree(path, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--src2", required=True)
    ap.add_argument("--target", choices=["duckdb", "postgres", "delta"], default="duckdb")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--pg-uri")
    ap.add_argument("--mode", default="upsert")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--only", choices=["both", "initial", "resync"], default="both")
    ap.add_argument("--unchanged", action="store_true",
                    help="a third run: --src2 again with skip_unchanged=False (an unchanged source read and diffed)")
    ap.add_argument("--timeline", action="store_true",
                    help="also print each timed call in order: start, seconds, CPU-s of its thread, thread "
                         "(the critical path: what the writer thread waits for, and what waits for it)")
    ap.add_argument("--lease-seconds", type=float, default=None,
                    help="experiment: override store._filelock.LEASE_SECONDS (how often the workspace is reopened)")
    args = ap.parse_args()
    if args.lease_seconds is not None:
        store._filelock.LEASE_SECONDS = args.lease_seconds
    instrument(args.target)
    work = tempfile.mkdtemp(prefix="dfsync-prof-")
    try:
        dest = (dfsync.destinations.duckdb(os.path.join(work, "dest.duckdb"), table="t") if args.target == "duckdb"
                else dfsync.destinations.delta(os.path.join(work, "dest-delta")) if args.target == "delta"
                else dfsync.destinations.postgres(args.pg_uri, table="t"))
        ref = {} if args.no_reference else reference(args.target, args.src, args.src2, work)
        kw = {} if args.batch_size is None else {"batch_size": args.batch_size}
        runs = [("initial", args.src, True), ("re-sync", args.src2, True)]
        if args.unchanged:  # the same source again, read and diffed (its files are not skipped)
            runs.append(("unchanged re-sync (read + diffed)", args.src2, False))
        for label, src, skip in runs:
            TIMES.clear()
            CPU.clear()
            COUNTS.clear()
            EVENTS.clear()
            t, c = time.perf_counter(), time.process_time()
            T0[0] = t
            ws = dfsync.Workspace(os.path.join(work, "ws.duckdb"))
            sync = ws.create_sync("p", source=dfsync.sources.files(src, skip_unchanged=skip), destination=dest, primary_key="id",
                                  destination_mode=args.mode, **kw)
            t_run = time.perf_counter()
            run = sync.run(progress=False)
            total, cpu = time.perf_counter() - t, time.process_time() - c
            assert run.status == "success", run.error
            if (args.only == "initial" and label != "initial") or (args.only == "resync" and label == "initial"):
                continue
            print(f"\n== {label}: {total:.2f}s total, {cpu:.2f} CPU-s ({t_run - t:.2f}s workspace open + "
                  f"create_sync), counts {run.counts}")
            refs = [k for k in ref if not k.endswith("(CPU)") and (args.target == "duckdb"
                                                                     or ("merge" in k) == (label != "initial"))]
            for k in refs:
                print(f"  reference: {k:<40} {ref[k]:7.2f}s {ref[k + ' (CPU)']:7.2f} CPU-s   "
                      f"dfsync / reference {total / ref[k]:.2f}x, by CPU {cpu / ref[k + ' (CPU)']:.2f}x")
            print(f"  {'phase':<44} {'wall':>8} {'CPU':>8}")
            for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1]):
                print(f"  {k:<44} {v:7.2f}s {CPU[k]:7.2f}s  x{COUNTS[k] or ''}")
            if args.timeline:
                print(f"  timeline {'start':>8} {'wall':>7} {'thread CPU':>10}  thread / phase")
                for start, wall, tcpu, thread, phase in sorted(EVENTS):
                    if wall >= 0.003 and not phase.endswith("total"):
                        print(f"  {'':8} {start:8.3f} {wall:7.3f} {tcpu:10.3f}  {thread[:20]:<20} {phase}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

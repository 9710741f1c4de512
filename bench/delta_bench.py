"""Delta Lake destination vs hand-written deltalake calls on the same data (prints figures).

    python bench/delta_bench.py [--rows 2000000]

First load: an upsert sync into a new table against ``write_deltalake`` of the same table
(read from the same Parquet file). Re-sync: the same sync in mirror mode after 1% of the
rows changed, against a hand-written ``DeltaTable.merge`` of exactly that change set
(when matched update all, when not matched insert all) into a copy of the table.
Targets (issue 23): first load >= 0.8x write_deltalake's rows/s; mirror re-sync >= 0.8x the
hand-written merge's speed (sync time <= merge time / 0.8). Each time is printed with the process's
CPU-seconds over it (every thread: DuckDB's, delta-rs's), the figure to compare on a shared host.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import polars as pl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dfsync  # noqa: E402
from bench.postgres_bench import make_frame  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the sync's batch_size (default None: the destination's own, 1M rows for Delta)")
    args = ap.parse_args()
    from deltalake import DeltaTable, write_deltalake

    tmp = tempfile.mkdtemp(prefix="dfsync-bench-delta-")
    try:
        df = make_frame(args.rows)
        src = os.path.join(tmp, "src.parquet")
        df.write_parquet(src)
        changed = df.with_columns(pl.when(pl.col("id") % 100 == 0).then(pl.col("qty") + 1).otherwise(pl.col("qty"))
                                  .alias("qty"))

        raw_path = os.path.join(tmp, "raw")
        t0, c0 = time.perf_counter(), time.process_time()
        write_deltalake(raw_path, pl.read_parquet(src).to_arrow())
        raw, raw_cpu = time.perf_counter() - t0, time.process_time() - c0

        dest_path = os.path.join(tmp, "dest")
        ws = dfsync.Workspace(os.path.join(tmp, "ws.duckdb"))
        sync = ws.create_sync("bench", source=dfsync.sources.files(src), primary_key="id",
                              destination=dfsync.destinations.delta(dest_path), destination_mode="mirror",
                              batch_size=args.batch_size)
        t0, c0 = time.perf_counter(), time.process_time()
        run = sync.run(progress=False)
        initial, initial_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert run.status == "success", run.error

        # hand-written: merge exactly the changed rows into the raw table
        delta_rows = changed.filter(pl.col("id") % 100 == 0).to_arrow()
        t0, c0 = time.perf_counter(), time.process_time()
        (DeltaTable(raw_path).merge(delta_rows, "t.id = s.id", source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())
        merge, merge_cpu = time.perf_counter() - t0, time.process_time() - c0

        changed.write_parquet(src)
        t0, c0 = time.perf_counter(), time.process_time()
        run = sync.run(progress=False)
        resync, resync_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert run.status == "success" and run.counts["updated"] == args.rows // 100, run.counts
        ws.close()
        assert pl.read_delta(dest_path).sort("id").equals(pl.read_delta(raw_path).sort("id"))

        n = args.rows
        print(f"rows: {n:,} x 8 columns, local Delta table, batch_size={args.batch_size}")
        print(f"write_deltalake:          {raw:7.2f} s  {n / raw / 1e6:5.2f} M rows/s  {raw_cpu:5.2f} CPU-s")
        print(f"initial mirror sync:      {initial:7.2f} s  {n / initial / 1e6:5.2f} M rows/s  {initial_cpu:5.2f} CPU-s")
        print(f"hand-written merge (1%):  {merge:7.2f} s                 {merge_cpu:5.2f} CPU-s")
        print(f"mirror re-sync (1%):      {resync:7.2f} s                 {resync_cpu:5.2f} CPU-s")
        print(f"first load ratio sync/raw:   {raw / initial:.2f}  (target >= 0.8; by CPU {raw_cpu / initial_cpu:.2f})")
        print(f"re-sync ratio merge/sync:    {merge / resync:.2f}  (target >= 0.8; by CPU {merge_cpu / resync_cpu:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

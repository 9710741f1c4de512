"""Partitioned runs (issue 21): one process against partitions=N, in process and on local workers.

    python bench/partition_bench.py --rows 2_000_000                      # Parquet -> DuckDB file
    python bench/partition_bench.py --rows 2_000_000 --dest parquet
    python bench/partition_bench.py --rows 10_000_000 --dest postgresql://user@host/db
    python bench/partition_bench.py --rows 2_000_000 --workers 1,2,4      # how wall time scales with workers

Each configuration runs in its own subprocess: a first load, then a re-sync with 1% of the rows
changed. Reported: wall seconds of each run, and the peak of the *summed* RSS of the process and
all its descendants (driver + worker processes), sampled every 50 ms. Targets of the issue on
2 cores: time <= 1.5x and summed peak RSS <= 2x the single process; no speed-up is expected on
2 cores (reading, diffing and checks stay on the driver; the buckets parallelise the transfer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, threading, time
import psutil
import polars as pl
import dfsync

def main():
    cfg = json.loads(sys.argv[1])
    peak = [0]
    done = threading.Event()
    me = psutil.Process()

    def sample():
        while not done.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    tmp = cfg["tmp"]
    dest = cfg["dest"]
    if dest == "duckdb":
        d = dfsync.destinations.duckdb(os.path.join(tmp, "dest.duckdb"), table="t")
    elif dest == "parquet":
        d = dfsync.destinations.parquet(os.path.join(tmp, "lake"))
    else:
        d = dfsync.destinations.postgres(dest, table="partition_bench_t")
    ws = dfsync.Workspace(os.path.join(tmp, "ws.duckdb"))
    sync = ws.create_sync("bench", source=dfsync.sources.files(cfg["src"]), destination=d, primary_key="id",
                          destination_mode="mirror", partitions=cfg["partitions"])
    engine = dfsync.engines.local(processes=cfg["workers"]) if cfg["workers"] else None
    out = {}
    for phase, src in (("initial", cfg["src"]), ("resync_1pct", cfg["src2"])):
        if phase == "resync_1pct":
            sync = ws.create_sync("bench", source=dfsync.sources.files(src), destination=d, primary_key="id",
                                  destination_mode="mirror", partitions=cfg["partitions"])
        t = time.perf_counter()
        run = sync.run(progress=False, engine=engine)
        out[phase] = round(time.perf_counter() - t, 2)
        assert run.status == "success", run.error
        out[phase + "_sent"] = run.counts["sent"]
    done.set()
    out["peak_rss_mb"] = round(peak[0] / 2**20)
    print(json.dumps(out))

if __name__ == "__main__":
    main()
"""


def generate(path: str, path2: str, rows: int) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(1)
    df = pl.DataFrame({"id": np.arange(rows), "amount": rng.random(rows), "name": rng.integers(0, 10**6, rows).astype(str),
                       "ts": (np.arange(rows) * 1000).astype("datetime64[ms]")})
    df.write_parquet(path)
    changed = rng.random(rows) < 0.01
    df.with_columns(pl.when(pl.Series(changed)).then(pl.col("amount") + 1).otherwise(pl.col("amount"))
                    .alias("amount")).write_parquet(path2)


def run_one(cfg: dict, script: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, script, json.dumps(cfg)], env=env, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--dest", default="duckdb", help="duckdb, parquet or a postgresql:// URI")
    ap.add_argument("--workers", default="2", help="comma-separated local worker counts to measure")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="dfsync-partition-bench-")
    try:
        src, src2 = os.path.join(base, "src.parquet"), os.path.join(base, "src2.parquet")
        generate(src, src2, args.rows)
        script = os.path.join(base, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD)
        configs = [("one process", None, 0), (f"partitions={args.partitions}, in process", args.partitions, 0)]
        configs += [(f"partitions={args.partitions}, local({w})", args.partitions, int(w))
                    for w in args.workers.split(",") if w]
        rows = []
        for label, n, workers in configs:
            tmp = tempfile.mkdtemp(dir=base)
            cfg = {"tmp": tmp, "src": src, "src2": src2, "dest": args.dest, "partitions": n, "workers": workers}
            if args.dest.startswith("postgresql"):
                import psycopg

                with psycopg.connect(args.dest, autocommit=True) as con:
                    con.execute("DROP TABLE IF EXISTS partition_bench_t")
                    con.execute("DROP TABLE IF EXISTS _dfsync_batches")
            res = run_one(cfg, script)
            rows.append((label, res))
            shutil.rmtree(tmp, ignore_errors=True)
        ref = rows[0][1]
        print(f"{args.rows:,} rows -> {args.dest}, mirror; seconds (x one process), summed peak RSS")
        print(f"{'configuration':<32} {'first load':>16} {'1% re-sync':>16} {'peak RSS MB':>16}")
        for label, r in rows:
            print(f"{label:<32} {r['initial']:>8} ({r['initial'] / ref['initial']:.2f}x) "
                  f"{r['resync_1pct']:>7} ({r['resync_1pct'] / ref['resync_1pct']:.2f}x) "
                  f"{r['peak_rss_mb']:>8} ({r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x)")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Core sync benchmark (issue 2): Parquet -> DuckDB destination, upsert/mirror, vs a CTAS reference.

    python bench/sync_bench.py --rows 10_000_000          # the issue's figures
    python bench/sync_bench.py --rows 50_000_000 --only initial   # the 50M peak-RSS check

Each measurement runs in its own subprocess so its peak RSS is its own. Prints seconds,
rows/s, peak RSS and the ratio to the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(path: str, rows: int, seed: int = 1) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    chunk = 5_000_000
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        ids = np.arange(start, start + n, dtype=np.int64)
        df = pl.DataFrame({
            "id": ids,
            "qty": rng.integers(0, 1_000_000, n),
            "price": rng.random(n) * 1000,
            "score": rng.standard_normal(n),
            "name": pl.Series(rng.integers(0, 2**62, n)).cast(pl.String) + "-customer",
            "email": pl.Series(rng.integers(0, 2**62, n)).cast(pl.String) + "@example.com",
            "active": rng.random(n) < 0.5,
            "updated_at": pl.Series(rng.integers(1_600_000_000_000_000, 1_700_000_000_000_000, n)).cast(pl.Datetime("us")),
        })
        tbl = df.to_arrow()
        if writer is None:
            writer = pq.ParquetWriter(path, tbl.schema)
        writer.write_table(tbl)
    assert writer is not None
    writer.close()


def make_v2(v1: str, v2: str, rows: int) -> None:
    """1% updated, 0.5% new, 0.5% deleted."""
    import duckdb

    upd, new, dele = rows // 100, rows // 200, rows // 200
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT id, CASE WHEN id % 100 = 7 THEN qty + 1 ELSE qty END AS qty, price, score, name, email, active, updated_at
        FROM read_parquet('{v1}') WHERE id % 200 <> 3
        UNION ALL
        SELECT {rows} + range AS id, range AS qty, 1.5 AS price, 0.0 AS score, 'new-' || range AS name,
               'new' || range || '@example.com' AS email, true AS active, TIMESTAMP '2026-01-01' AS updated_at
        FROM range({new})
    ) TO '{v2}' (FORMAT parquet)""")
    assert upd and dele


# ----------------------------------------------------------------------------- measured steps
def step_reference(work: str, v1: str) -> dict:
    import duckdb

    dest = os.path.join(work, "ref.duckdb")
    t = time.perf_counter()
    con = duckdb.connect(dest)
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{v1}')")
    con.close()
    return {"seconds": time.perf_counter() - t}


def step_sync(work: str, source: str, mode: str, batch_size: int, skip_unchanged: bool = True) -> dict:
    sys.path.insert(0, ROOT)
    import dfsync

    ws = dfsync.Workspace(os.path.join(work, "ws.duckdb"))
    sync = ws.create_sync("bench", source=dfsync.sources.files(source, skip_unchanged=skip_unchanged),
                          destination=dfsync.destinations.duckdb(os.path.join(work, "dest.duckdb"), table="t"),
                          primary_key="id", destination_mode=mode, batch_size=batch_size)
    import threading

    phase = ["started"]
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:  # RSS every 0.1 s, attributed to the run state at that moment
        while not done.wait(0.1):
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    run = sync.run(progress=lambda status, row: phase.__setitem__(0, status))
    secs = time.perf_counter() - t
    done.set()
    sampler.join()
    if run.status != "success":
        raise SystemExit(f"run failed: {run.error}")
    return {"seconds": secs, "counts": run.counts, "durations": run.durations(),
            "rss_by_state": {k: round(v) for k, v in peaks.items()}}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM): ru_maxrss would include the parent's high-water
    mark inherited across fork+exec (the parent generated the data)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    fn = {"reference": step_reference, "sync": step_sync}[args.step]
    kwargs = json.loads(args.kwargs)
    out = fn(**kwargs)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out, default=str))


def run_child(step: str, **kwargs: object) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--kwargs", json.dumps(kwargs)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{step} failed:\n{p.stdout}\n{p.stderr}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch-size", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["all", "initial"], default="all")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip the CTAS reference (ratios print as nan)")
    ap.add_argument("--child", default=None)
    ap.add_argument("--kwargs", default="{}")
    args = ap.parse_args()
    if args.child:
        args.step = args.child
        return child(args)

    base = args.workdir or tempfile.mkdtemp(prefix="dfsync-bench-")
    os.makedirs(base, exist_ok=True)
    v1, v2 = os.path.join(base, "v1.parquet"), os.path.join(base, "v2.parquet")
    if not os.path.exists(v1):
        t = time.perf_counter()
        generate(v1, args.rows)
        print(f"generated {args.rows:,} rows x 8 columns in {time.perf_counter() - t:.1f}s")
    if args.only == "all" and not os.path.exists(v2):
        make_v2(v1, v2, args.rows)

    def fresh(name: str) -> str:
        d = os.path.join(base, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    rows = args.rows
    ref = run_child("reference", work=fresh("ref"), v1=v1) if not args.no_reference else {"seconds": float("nan"), "peak_rss_mb": 0}
    results = [("reference: CTAS read_parquet -> DuckDB file", ref)]
    w = fresh("sync")
    init = run_child("sync", work=w, source=v1, mode="upsert", batch_size=args.batch_size)
    results.append(("dfsync initial full sync (upsert)", init))
    if args.only == "all":
        same = run_child("sync", work=w, source=v1, mode="upsert", batch_size=args.batch_size)
        results.append(("dfsync re-sync, nothing changed", same))
        # the same with the file read and diffed anyway (a changed definition re-reads once,
        # so the first of these runs reads; its state is what a real re-read costs)
        read = run_child("sync", work=w, source=v1, mode="upsert", batch_size=args.batch_size,
                         skip_unchanged=False)
        results.append(("  same, file read and diffed (skip_unchanged=False)", read))
        changed = run_child("sync", work=w, source=v2, mode="mirror", batch_size=args.batch_size)
        results.append(("dfsync re-sync 1% upd/0.5% new/0.5% del (mirror)", changed))

    print(f"\n{rows:,} rows x 8 columns, batch_size={args.batch_size:,}  ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores)")
    print(f"{'job':<52} {'seconds':>8} {'rows/s':>12} {'peak RSS':>10} {'vs ref':>7}")
    for name, r in results:
        ratio = r["seconds"] / ref["seconds"]
        print(f"{name:<52} {r['seconds']:>8.2f} {rows / r['seconds']:>12,.0f} {r['peak_rss_mb']:>8.0f}MB {ratio:>6.2f}x")
    for name, r in results[1:]:
        if "durations" in r:
            d = ", ".join(f"{k} {v:.2f}s" for k, v in r["durations"].items())
            print(f"  {name}: {d}")
            if r.get("rss_by_state"):
                print("    peak RSS by state: " + ", ".join(f"{k} {v} MB" for k, v in r["rss_by_state"].items()))
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

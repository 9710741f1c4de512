"""PostgreSQL destination throughput vs raw ADBC ingest, in one run (prints figures; not a test).

    python bench/postgres_bench.py [--rows 2000000] [--uri postgresql://…]

Without --uri a throwaway PostgreSQL cluster is started on a loopback port (as the test
suite does). Targets (issue 4): initial upsert sync / raw adbc_ingest throughput >= 0.7;
re-sync with 1% of rows changed <= 0.15 x the initial sync's time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dfsync  # noqa: E402


def make_frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, 20)) for _ in range(4096)]
    return pl.DataFrame({
        "id": np.arange(n, dtype=np.int64),
        "qty": rng.integers(0, 1_000_000, n),
        "price": rng.random(n) * 100,
        "weight": rng.random(n),
        "name": pl.Series(words).gather(rng.integers(0, 4096, n)),
        "city": pl.Series(words).gather(rng.integers(0, 4096, n)),
        "active": rng.random(n) < 0.5,
        "updated_at": pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1) + pl.duration(seconds=n - 1),
                                        "1s", eager=True),
    })


def start_cluster() -> tuple[str, object]:
    from tests.plugins.postgres import PASSWORD_ROLE, PGServer, _find_bin, _free_port  # noqa: F401

    root = tempfile.mkdtemp(prefix="dfsync-bench-pg-")
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    datadir = os.path.join(root, "data")
    subprocess.run([*as_user, _find_bin("initdb"), "-D", datadir, "-U", "dfsync", "--auth=trust", "--no-sync"],
                   check=True, capture_output=True)
    server = PGServer(datadir, _free_port(), _find_bin("pg_ctl"), as_user, os.path.join(root, "log"))
    server.start()
    return server.uri, (server, root)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--uri")
    ap.add_argument("--batch-size", type=int, default=250_000)
    args = ap.parse_args()
    cleanup = None
    uri = args.uri
    if uri is None:
        uri, cleanup = start_cluster()
    import adbc_driver_postgresql.dbapi as pgdb

    try:
        df = make_frame(args.rows)
        arrow = df.to_arrow()
        con = pgdb.connect(uri)
        cur = con.cursor()
        t0 = time.perf_counter()
        cur.adbc_ingest("raw_ingest", arrow, mode="create")
        con.commit()
        raw = time.perf_counter() - t0
        cur.execute("DROP TABLE raw_ingest")
        # the sync's own table starts empty: a table left by an earlier run would turn the
        # "initial" sync into 2M updates (measured: 18-20 s instead of 5 s)
        cur.execute("DROP TABLE IF EXISTS bench")
        con.commit()
        con.close()

        tmp = tempfile.mkdtemp(prefix="dfsync-bench-")
        src = os.path.join(tmp, "src.parquet")
        df.write_parquet(src)
        ws = dfsync.Workspace(os.path.join(tmp, "ws.duckdb"))
        sync = ws.create_sync("bench", source=dfsync.sources.files(src), primary_key="id",
                              destination=dfsync.destinations.postgres(uri, table="bench"),
                              destination_mode="upsert", batch_size=args.batch_size)
        t0 = time.perf_counter()
        run = sync.run(progress=False)
        initial = time.perf_counter() - t0
        assert run.status == "success", run.error

        # the same sync after 1% of the rows changed in the source file
        df.with_columns(pl.when(pl.col("id") % 100 == 0).then(pl.col("qty") + 1).otherwise(pl.col("qty"))
                        .alias("qty")).write_parquet(src)
        t0 = time.perf_counter()
        run = sync.run(progress=False)
        resync = time.perf_counter() - t0
        assert run.status == "success", run.error
        shutil.rmtree(tmp, ignore_errors=True)

        n = args.rows
        print(f"rows: {n:,} x 8 columns, PostgreSQL on loopback, batch_size={args.batch_size:,}")
        print(f"raw adbc_ingest:        {raw:7.2f} s  {n / raw / 1e6:5.2f} M rows/s")
        print(f"initial upsert sync:    {initial:7.2f} s  {n / initial / 1e6:5.2f} M rows/s")
        print(f"re-sync, 1% changed:    {resync:7.2f} s")
        print(f"throughput ratio sync/raw: {raw / initial:.2f}  (target >= 0.7)")
        print(f"re-sync / initial time:    {resync / initial:.3f} (target <= 0.15)")
    finally:
        if cleanup is not None:
            server, root = cleanup
            server.stop("immediate")
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

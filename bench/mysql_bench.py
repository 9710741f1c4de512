"""MySQL/MariaDB destination throughput vs a raw ``LOAD DATA`` with the same client (prints figures).

    python bench/mysql_bench.py [--rows 2000000] [--uri mysql://root@127.0.0.1:3306/bench]

Without --uri a throwaway MariaDB server is started on a loopback port (as the test suite
does). The raw load is the fastest way the same client (PyMySQL) gets the same Parquet file
in: Arrow writes it as CSV, then one ``LOAD DATA LOCAL INFILE`` into a table with the same
columns and primary key, one commit. ``--inserts`` also times multi-row prepared INSERTs
(PyMySQL's ``executemany``), the other way to load. Targets (issue 23): first load >= 0.7x
the raw rows/s; re-sync with 1% of rows changed <= 0.2x the first load's time.
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

COLUMNS = ("id bigint PRIMARY KEY, qty bigint, price double, weight double, name longtext, city longtext, "
           "active tinyint(1), updated_at datetime(6)")


def start_server():
    import subprocess

    from tests.plugins.mariadb import MariaDBServer, _free_port

    root = tempfile.mkdtemp(prefix="dfsync-bench-mariadb-")
    if os.geteuid() == 0:
        shutil.chown(root, "mysql", "mysql")
    server = MariaDBServer(root, _free_port())
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={server.datadir}", "--user=mysql",
                    "--auth-root-authentication-method=normal", "--skip-test-db"], check=True, capture_output=True)
    server.start()
    return server


def raw_load(con, df: pl.DataFrame) -> float:
    import pyarrow.csv as pcsv

    cur = con.cursor()
    cur.execute("DROP TABLE IF EXISTS raw_load")
    cur.execute(f"CREATE TABLE raw_load ({COLUMNS}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    path = tempfile.mktemp(suffix=".csv")
    t0 = time.perf_counter()
    arrow = df.with_columns(pl.col("active").cast(pl.Int8)).to_arrow()
    pcsv.write_csv(arrow, path, pcsv.WriteOptions(include_header=False, quoting_style="all_valid", null_string="NULL"))
    cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE raw_load CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
                "OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n'")
    con.commit()
    took = time.perf_counter() - t0
    os.unlink(path)
    cur.execute("DROP TABLE raw_load")
    return took


def insert_load(con, df: pl.DataFrame) -> float:
    cur = con.cursor()
    cur.execute("DROP TABLE IF EXISTS raw_insert")
    cur.execute(f"CREATE TABLE raw_insert ({COLUMNS}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    t0 = time.perf_counter()
    rows = df.rows()
    for i in range(0, len(rows), 5000):
        cur.executemany("INSERT INTO raw_insert VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows[i:i + 5000])
    con.commit()
    took = time.perf_counter() - t0
    cur.execute("DROP TABLE raw_insert")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--uri")
    ap.add_argument("--batch-size", type=int, default=250_000)
    ap.add_argument("--inserts", action="store_true", help="also time multi-row prepared INSERTs")
    args = ap.parse_args()
    server = None
    uri = args.uri
    if uri is None:
        server = start_server()
        server.execute("CREATE DATABASE bench")
        uri = server.uri("bench")
    import pymysql

    from dfsync.destinations._mysql_data import mysql_connect

    try:
        df = make_frame(args.rows)
        con = mysql_connect(uri, None, local_infile=True)
        raw = raw_load(con, df)
        ins = insert_load(con, df) if args.inserts else None
        con.cursor().execute("DROP TABLE IF EXISTS bench")
        con.close()
        del pymysql

        tmp = tempfile.mkdtemp(prefix="dfsync-bench-")
        src = os.path.join(tmp, "src.parquet")
        df.write_parquet(src)
        ws = dfsync.Workspace(os.path.join(tmp, "ws.duckdb"))
        sync = ws.create_sync("bench", source=dfsync.sources.files(src), primary_key="id",
                              destination=dfsync.destinations.mysql(uri, table="bench"),
                              destination_mode="upsert", batch_size=args.batch_size)
        t0 = time.perf_counter()
        run = sync.run(progress=False)
        initial = time.perf_counter() - t0
        assert run.status == "success", run.error
        df.with_columns(pl.when(pl.col("id") % 100 == 0).then(pl.col("qty") + 1).otherwise(pl.col("qty"))
                        .alias("qty")).write_parquet(src)
        t0 = time.perf_counter()
        run = sync.run(progress=False)
        resync = time.perf_counter() - t0
        assert run.status == "success" and run.counts["updated"] == args.rows // 100, run.counts
        ws.close()
        shutil.rmtree(tmp, ignore_errors=True)

        n = args.rows
        print(f"rows: {n:,} x 8 columns, MariaDB on loopback, batch_size={args.batch_size:,}")
        print(f"raw LOAD DATA (CSV+load): {raw:7.2f} s  {n / raw / 1e6:5.2f} M rows/s")
        if ins is not None:
            print(f"raw prepared INSERTs:     {ins:7.2f} s  {n / ins / 1e6:5.2f} M rows/s")
        print(f"initial upsert sync:      {initial:7.2f} s  {n / initial / 1e6:5.2f} M rows/s")
        print(f"re-sync, 1% changed:      {resync:7.2f} s")
        print(f"throughput ratio sync/raw: {raw / initial:.2f}  (target >= 0.7)")
        print(f"re-sync / initial time:    {resync / initial:.3f} (target <= 0.2)")
    finally:
        if server is not None:
            server.stop("immediate")
            shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    main()

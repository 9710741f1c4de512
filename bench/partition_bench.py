"""Partitioned runs (issue 21): one process against partitions=N, in process, on local workers, on Ray.

    python bench/partition_bench.py --rows 2_000_000                      # Parquet -> DuckDB file
    python bench/partition_bench.py --rows 2_000_000 --dest parquet
    python bench/partition_bench.py --rows 10_000_000 --dest postgresql   # a throwaway PostgreSQL cluster
    python bench/partition_bench.py --rows 10_000_000 --dest postgresql://user@host/db
    python bench/partition_bench.py --rows 10_000_000 --dest postgresql --configs one,local:2,ray:2
    python bench/partition_bench.py --rows 2_000_000 --configs one,local:1,local:2,local:4   # scaling
    python bench/partition_bench.py --rows 50_000_000 --dest postgresql --configs one --phases initial \
        --data /var/tmp/pb50m                                              # 50M: one config per invocation

``--configs``: ``one`` (no partitions), ``inproc`` (partitions=N, no engine), ``local:W`` (N buckets
on W local worker processes), ``ray:C`` (N buckets on a local Ray started with num_cpus=C). By
default a run on an engine whose workers are all on this host reads the source on the driver; a
``:split-reads`` suffix forces split reads on the workers (DFSYNC_SPLIT_READS=1), ``:driver-reads``
forbids them (DFSYNC_SPLIT_READS=0), to tell the reads' cost from the transfer's. Each run's
read decision (the run's "read ..." event) is printed with its figures.
``--data DIR`` keeps the generated source files between invocations (50M rows take minutes to
generate); ``--phases initial`` measures the first load only.

Each configuration runs in its own subprocess: a first load, then a re-sync with 1% of the rows
changed (mirror). Reported: wall seconds of each run (and of the run's states), and the peak of the
*summed* RSS of every process dfsync uses: the driver, all its descendants (local workers; with
Ray: gcs_server, raylet with its object store, the dashboard agents, every ``ray::`` worker), and
any other Ray process of this user started after the configuration began, sampled every 50 ms
(shared pages, e.g. Ray's object store mapped by several processes, count once per process: the
sum is an upper bound). The PostgreSQL server is the destination in every configuration and is not
counted. A Ray engine starts before the timed runs (``ray start`` is a cluster's one-time cost; its
seconds are printed). Targets of the issue on 2 cores: time <= 1.5x and summed peak RSS <= 2x the
single process (reading, diffing and checks stay on the driver; buckets parallelise the transfer).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, sys, threading, time
import psutil
import dfsync

RAY_NAMES = ("raylet", "gcs_server", "plasma_store", "ray::", "dashboard", "runtime_env_agent", "log_monitor",
             "monitor.py", "ray_client_server")

def is_ray(p, since):
    try:
        if p.uids().real != os.getuid() or p.create_time() < since:
            return False
        text = p.name() + " " + " ".join(p.cmdline()[:3])
    except psutil.Error:
        return False
    return any(n in text for n in RAY_NAMES) or "/ray/" in text

def main():
    cfg = json.loads(sys.argv[1])
    me = psutil.Process()
    since = me.create_time() - 1
    peak, procs, seen = [0], {}, set()
    done = threading.Event()

    def sample():
        n = 0
        while not done.is_set():
            if n % 20 == 0:  # every second: Ray processes outside this process tree (a raylet's own children)
                for p in psutil.process_iter():
                    if p.pid not in procs and is_ray(p, since):
                        procs[p.pid] = p
            n += 1
            for p in me.children(recursive=True):
                procs.setdefault(p.pid, p)
            total = 0
            for pid, p in list([(me.pid, me), *procs.items()]):
                try:
                    total += p.memory_info().rss
                    seen.add(p.name())
                except psutil.Error:
                    procs.pop(pid, None)
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
    out = {}
    kind, _, arg = cfg["config"].partition(":")
    engine = None
    if kind == "local":
        engine = dfsync.engines.local(processes=int(arg))
    elif kind == "ray":
        engine = dfsync.engines.ray(num_cpus=int(arg))
        t = time.perf_counter()
        engine.start()
        out["ray_start"] = round(time.perf_counter() - t, 2)
    parts = None if kind == "one" else cfg["partitions"]
    for phase in cfg["phases"]:
        src = cfg["src"] if phase == "initial" else cfg["src2"]
        sync = ws.create_sync("bench", source=dfsync.sources.files(src), destination=d, primary_key="id",
                              destination_mode="mirror", partitions=parts, if_exists="update")
        t = time.perf_counter()
        run = sync.run(progress=False, engine=engine)
        out[phase] = round(time.perf_counter() - t, 2)
        assert run.status == "success", run.error
        out[phase + "_sent"] = run.counts["sent"]
        out[phase + "_states"] = {k: round(v, 2) for k, v in run.durations().items()}
        out[phase + "_read"] = next((e[:90] for e in run.events()["detail"].to_list() if e and e.startswith("read ")),
                                    None)
        if parts:
            b = run.buckets()
            out[phase + "_attempts"] = int(b["attempts"].sum())
    done.set()
    out["peak_rss_mb"] = round(peak[0] / 2**20)
    out["processes"] = len(procs) + 1
    out["process_names"] = sorted(seen)
    if kind == "local":
        engine.shutdown()
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


#: config suffixes setting DFSYNC_SPLIT_READS
READS = {":driver-reads": "0", ":split-reads": "1"}


def run_one(cfg: dict, script: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_USAGE_STATS_ENABLED": "0"}
    for suffix, flag in READS.items():  # the source read on the driver / in splits on the workers
        if cfg["config"].endswith(suffix):
            env["DFSYNC_SPLIT_READS"] = flag
            cfg = {**cfg, "config": cfg["config"].removesuffix(suffix)}
    out = subprocess.run([sys.executable, script, json.dumps(cfg)], env=env, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _new_database(uri: str, name: str) -> str:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return uri.rsplit("/", 1)[0] + "/" + name


def label(config: str, n: int) -> str:
    for suffix in READS:
        if config.endswith(suffix):
            return label(config.removesuffix(suffix), n) + ", " + suffix[1:].replace("-", " ")
    kind, _, arg = config.partition(":")
    return {"one": "one process", "inproc": f"partitions={n}, in process",
            "local": f"partitions={n}, local({arg})", "ray": f"partitions={n}, ray(num_cpus={arg})"}[kind]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--dest", default="duckdb", help="duckdb, parquet, postgresql (a throwaway cluster) or a URI")
    ap.add_argument("--configs", default="one,inproc,local:2",
                    help="comma-separated: one, inproc, local:W, ray:C (suffix :split-reads / :driver-reads: "
                         "force split reads on / off)")
    ap.add_argument("--workers", default=None, help="(old form) local worker counts: adds local:W configs")
    ap.add_argument("--phases", default="initial,resync_1pct", help="initial[,resync_1pct]")
    ap.add_argument("--data", default=None, help="a directory keeping the generated source between invocations")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    if args.workers:
        configs += [f"local:{w}" for w in args.workers.split(",") if w]
    base = tempfile.mkdtemp(prefix="dfsync-partition-bench-")
    server_ctx = None
    try:
        data = args.data or base
        os.makedirs(data, exist_ok=True)
        src, src2 = os.path.join(data, f"src-{args.rows}.parquet"), os.path.join(data, f"src2-{args.rows}.parquet")
        if not (os.path.exists(src) and os.path.exists(src2)):
            t = time.perf_counter()
            generate(src, src2, args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - t:.1f} s")
        script = os.path.join(base, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD)
        dest = args.dest
        if dest == "postgresql":
            sys.path.insert(0, ROOT)
            from tests.plugins.postgres import throwaway_server

            server_ctx = throwaway_server()
            dest = server_ctx.__enter__().uri
        results = []
        for i, config in enumerate(configs):
            tmp = tempfile.mkdtemp(dir=base)
            d = _new_database(dest, f"partition_bench_{i}") if dest.startswith("postgresql") else dest
            cfg = {"tmp": tmp, "src": src, "src2": src2, "dest": d, "partitions": args.partitions,
                   "config": config, "phases": args.phases.split(",")}
            load = os.getloadavg()[0]
            res = run_one(cfg, script)
            res["load"] = round(load, 1)
            results.append((label(config, args.partitions), res))
            print(label(config, args.partitions), json.dumps(res), flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        phases = args.phases.split(",")
        ref = results[0][1]
        where = "PostgreSQL" if dest.startswith("postgresql") else args.dest
        print(f"\n{args.rows:,} rows -> {where}, mirror; seconds (x {results[0][0]}), summed peak RSS; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
        print(f"{'configuration':<34} " + " ".join(f"{p:>18}" for p in phases) + f" {'peak RSS MB':>16}")
        for name, r in results:
            cells = " ".join(f"{r[p]:>9} ({r[p] / ref[p]:.2f}x)" for p in phases)
            print(f"{name:<34} {cells} {r['peak_rss_mb']:>7} ({r['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x)"
                  + (f"  ray start {r['ray_start']} s" if "ray_start" in r else ""))
    finally:
        if server_ctx is not None:
            server_ctx.__exit__(None, None, None)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

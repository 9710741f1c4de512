"""Core sync benchmark (issue 2): Parquet -> DuckDB destination, upsert/mirror, vs a CTAS reference.

    python bench/sync_bench.py --rows 10_000_000          # the issue's figures
    python bench/sync_bench.py --rows 50_000_000 --only initial   # the 50M peak-RSS check
    python bench/sync_bench.py --rows 10_000_000 --workspace postgresql   # issue 20: the PostgreSQL workspace
    python bench/sync_bench.py --workspace postgresql://user@host/db   # ... on a server of your own

``--workspace postgresql`` starts a throwaway PostgreSQL cluster (as the tests do; a URI uses
that server instead) and syncs into a PostgreSQL destination on it twice, alternating: with the
workspace in a DuckDB file, then with the workspace in a schema on the same server. It prints the
first load, the 1%-changed re-sync and peak RSS of both, with the ratios issue 20 sets targets for;
``--resyncs N`` adds N re-syncs from the last first load (v2 -> v1 -> v2 ..., each a 1% change),
``--pg-setting shared_buffers=2GB`` configures the throwaway cluster:

    python bench/sync_bench.py --rows 10_000_000 --batch-size 100000 --workspace postgresql \
        --pg-setting shared_buffers=2GB --resyncs 4

``--code DIR`` (repeatable) adds the PostgreSQL workspace with the dfsync of another checkout
(e.g. ``git archive main dfsync | tar -x -C /tmp/before``): before and after in one run.

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


def step_sync(work: str, source: str, mode: str, batch_size: int, skip_unchanged: bool = True,
              workspace: str | None = None, dest_uri: str | None = None) -> dict:
    sys.path.insert(0, os.environ.get("DFSYNC_BENCH_CODE") or ROOT)  # --code: another checkout's dfsync
    import dfsync

    ws = dfsync.Workspace(workspace or os.path.join(work, "ws.duckdb"))
    dest = dfsync.destinations.postgres(dest_uri, table="t") if dest_uri else \
        dfsync.destinations.duckdb(os.path.join(work, "dest.duckdb"), table="t")
    sync = ws.create_sync("bench", source=dfsync.sources.files(source, skip_unchanged=skip_unchanged),
                          destination=dest, primary_key="id", destination_mode=mode, batch_size=batch_size)
    calls = _time_store_calls(ws.store)
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
            "rss_by_state": {k: round(v) for k, v in peaks.items()},
            "store_calls": {k: round(v, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.05}}


#: the workspace operations whose time a run's profile shows (the delivered state's stream is
#: timed while staging reads it)
_PROFILED = ("delivered", "write_ahead", "confirm_batch", "ensure_state_table", "next_batch_no", "has_delivered",
             "retry_rows", "finish_run", "set_counters", "add_counters", "transition_run", "note", "create_run")


def _time_store_calls(store: object) -> dict[str, float]:
    import functools

    import pyarrow as pa

    spent: dict[str, float] = {}

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        def call(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            t = time.perf_counter()
            try:
                out = fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            if isinstance(out, pa.RecordBatchReader):
                def batches():  # noqa: ANN202
                    it = iter(out)
                    while True:
                        t0 = time.perf_counter()
                        b = next(it, None)
                        spent[name + " (stream)"] = spent.get(name + " (stream)", 0.0) + time.perf_counter() - t0
                        if b is None:
                            return
                        yield b
                return pa.RecordBatchReader.from_batches(out.schema, batches())
            return out
        return call

    for name in _PROFILED:
        if hasattr(store, name):
            setattr(store, name, timed(name, getattr(store, name)))
    return spent


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


#: the throwaway cluster's data directory (its server's CPU time is measured per step)
_DATADIR: list[str] = []


def _server_cpu() -> float:
    """CPU seconds the throwaway cluster's processes used so far (the postmaster, the children it
    reaped, and its live children: backends, checkpointer, ...); 0 without a cluster."""
    if not _DATADIR:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    with open(os.path.join(_DATADIR[0], "postmaster.pid")) as fh:
        master = int(fh.readline())
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == master:
            total += sum(int(x) for x in f[11:15]) / tick  # utime stime cutime cstime
        elif int(f[1]) == master:
            total += (int(f[11]) + int(f[12])) / tick
    return total


#: the throwaway cluster's URI (the WAL a step writes is measured per step)
_URI: list[str] = []


def _wal() -> tuple[float, float]:
    """(MB of WAL written so far, full-page images so far) of the cluster; zeros without one."""
    if not _URI:
        return 0.0, 0.0
    import psycopg

    with psycopg.connect(_URI[0], autocommit=True) as con:
        lsn, fpi = con.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 / 1e6, wal_fpi::float8 "
                               "FROM pg_stat_wal").fetchone()
    return lsn, fpi


def run_child(step: str, code: str | None = None, **kwargs: object) -> dict:
    """One step in a process of its own (``code``: with the dfsync of that checkout)."""
    cmd = [sys.executable, __file__, "--child", step, "--kwargs", json.dumps(kwargs)]
    env = dict(os.environ, DFSYNC_BENCH_CODE=code, PYTHONPATH=code) if code else None
    wal = _wal()
    server, before = _server_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{step} failed:\n{p.stdout}\n{p.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    out = json.loads(line[7:])
    out["client_cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    out["server_cpu"] = _server_cpu() - server
    time.sleep(1.1)  # the step's backends have exited; their WAL statistics are flushed within a second
    after_wal = _wal()
    out["wal_mb"], out["wal_fpi"] = after_wal[0] - wal[0], after_wal[1] - wal[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch-size", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["all", "initial"], default="all")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip the CTAS reference (ratios print as nan)")
    ap.add_argument("--workspace", default=None,
                    help="'postgresql' (a throwaway cluster) or a postgresql:// URI: compare the PostgreSQL "
                         "workspace with the DuckDB file, both syncing into PostgreSQL on that server")
    ap.add_argument("--rounds", type=int, default=1, help="with --workspace: alternate the two this many times")
    ap.add_argument("--resyncs", type=int, default=0,
                    help="with --workspace: then this many more 1%%-changed re-syncs, alternating the two")
    ap.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                    help="with --workspace postgresql: a server setting of the throwaway cluster, "
                         "e.g. shared_buffers=2GB (docs/CONCURRENCY.md says what a workspace server wants)")
    ap.add_argument("--code", action="append", default=[], metavar="DIR",
                    help="with --workspace: also run the PostgreSQL workspace with the dfsync of this "
                         "checkout (e.g. a `git archive` of main), side by side: before/after in one run "
                         "(repeatable)")
    ap.add_argument("--no-quiesce", action="store_true",
                    help="with --workspace postgresql: no VACUUM ANALYZE + CHECKPOINT between steps (as before "
                         "2026-12-06's fourth session: each step then pays for the maintenance the last one left)")
    ap.add_argument("--child", default=None)
    ap.add_argument("--kwargs", default="{}")
    args = ap.parse_args()
    if args.child:
        args.step = args.child
        return child(args)

    if args.workspace:
        if args.no_quiesce:
            _NO_QUIESCE.append(True)
        return compare_workspaces(args)
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


# ----------------------------------------------------------------------------- issue 20
def _cluster(settings: dict[str, str]) -> tuple[str, object]:
    sys.path.insert(0, ROOT)
    from tests.plugins.postgres import throwaway_server

    ctx = throwaway_server(settings)
    server = ctx.__enter__()
    _DATADIR[:] = [server.datadir]
    _URI[:] = [server.uri]
    return server.uri, ctx


def _new_database(uri: str, name: str) -> str:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return uri.rsplit("/", 1)[0] + "/" + name


def _server_settings(uri: str) -> str:
    import psycopg

    names = ("shared_buffers", "effective_cache_size", "max_wal_size", "fsync", "synchronous_commit")
    with psycopg.connect(uri, autocommit=True) as con:
        rows = con.execute("SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(names)]).fetchall()
        version = con.execute("SHOW server_version").fetchone()[0]
    shown = {n: (f"{int(v) * 8 // 1024} MB" if u == "8kB" else f"{v}{u or ''}") for n, v, u in rows}
    return f"PostgreSQL {version}: " + ", ".join(f"{n}={shown[n]}" for n in names if n in shown)


#: --no-quiesce
_NO_QUIESCE: list[bool] = []


def _quiesce(uri: str) -> float:
    """VACUUM ANALYZE every database of the cluster, then CHECKPOINT: the maintenance a step leaves
    (autovacuum of a 10M-row load, its dirty pages) is done here, not by the next step's server
    processes while that one is timed. Returns the server CPU seconds it took (the step's own)."""
    import psycopg

    if _NO_QUIESCE:
        return 0.0
    before = _server_cpu()
    with psycopg.connect(uri, autocommit=True) as con:
        dbs = [r[0] for r in con.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'").fetchall()]
    for db in dbs:
        with psycopg.connect(uri.rsplit("/", 1)[0] + "/" + db, autocommit=True) as con:
            con.execute("VACUUM ANALYZE")
    with psycopg.connect(uri, autocommit=True) as con:
        con.execute("CHECKPOINT")
    return _server_cpu() - before


def _phases(r: dict) -> str:
    d = r["durations"]
    calls = ", ".join(f"{k} {v:.2f}" for k, v in r["store_calls"].items())
    return f"querying {d.get('querying', 0):.2f} / in_progress {d.get('in_progress', 0):.2f}; {calls}"


def compare_workspaces(args: argparse.Namespace) -> None:
    """The same syncs into PostgreSQL, workspace in a DuckDB file vs in the same server (alternating).

    Between steps every database of the cluster is vacuumed and analyzed and a checkpoint taken
    (its server CPU printed as the step's "then"), so no step's server processes do the autovacuum
    and page writes the previous step left (a 10M-row load leaves several CPU-s of them).
    ``--rounds``: first load and re-sync, both workspaces, this many times. ``--resyncs N``: after
    the last first load, N more 1%-changed re-syncs alternating the two workspaces (the source
    goes v2 -> v1 -> v2 ...: each step changes 1% of the rows, updates, inserts and deletes).
    """
    ctx = None
    uri = args.workspace
    settings = dict(kv.split("=", 1) for kv in args.pg_setting)
    if uri == "postgresql":
        uri, ctx = _cluster(settings)
    elif settings:
        raise SystemExit("--pg-setting applies to the throwaway cluster (--workspace postgresql) only")
    base = args.workdir or tempfile.mkdtemp(prefix="dfsync-bench-")
    os.makedirs(base, exist_ok=True)
    # the PostgreSQL workspace's copies of its delivered state (160 MB per 10M-row sync) go with the
    # run's files, not into ~/.cache/dfsync/state where every run would leave its own
    state_cache = os.path.join(base, "state-cache")
    shutil.rmtree(state_cache, ignore_errors=True)
    os.environ.setdefault("DFSYNC_STATE_CACHE", state_cache)
    v1, v2 = os.path.join(base, "v1.parquet"), os.path.join(base, "v2.parquet")
    code = {f"pg_code{i + 1}": os.path.abspath(d) for i, d in enumerate(args.code)}
    kinds = ("duckdb", "postgresql", *code)
    firsts: dict[str, list[dict]] = {k: [] for k in kinds}
    resyncs: dict[str, list[dict]] = {k: [] for k in kinds}
    for kind, d in code.items():
        print(f"{kind}: the PostgreSQL workspace with the dfsync of {d}", flush=True)
    try:
        print(_server_settings(uri), flush=True)
        if not os.path.exists(v1):
            t = time.perf_counter()
            generate(v1, args.rows)
            print(f"generated {args.rows:,} rows x 8 columns in {time.perf_counter() - t:.1f}s", flush=True)
        if not os.path.exists(v2):
            make_v2(v1, v2, args.rows)
        steps: dict[str, dict] = {}
        for rnd in range(args.rounds):
            for kind in kinds:
                work = os.path.join(base, f"{kind}-{rnd}")
                shutil.rmtree(work, ignore_errors=True)
                os.makedirs(work)
                dest = _new_database(uri, f"bench_dest_{kind}")
                ws = _new_database(uri, "bench_ws_" + kind) + "?schema=dfsync" if kind != "duckdb" else None
                steps[kind] = dict(work=work, batch_size=args.batch_size, workspace=ws, dest_uri=dest,
                                   code=code.get(kind))
                _quiesce(uri)
                first = run_child("sync", source=v1, mode="upsert", **steps[kind])
                first["maintenance_cpu"] = _quiesce(uri)
                changed = run_child("sync", source=v2, mode="mirror", **steps[kind])
                changed["maintenance_cpu"] = _quiesce(uri)
                firsts[kind].append(first)
                resyncs[kind].append(changed)
                print(f"round {rnd + 1} {kind:<10} first load {first['seconds']:7.2f}s "
                      f"(peak {first['peak_rss_mb']:.0f} MB, CPU-s process {first['client_cpu']:.1f} + server "
                      f"{first['server_cpu']:.1f}, then VACUUM ANALYZE + CHECKPOINT {first['maintenance_cpu']:.1f}; "
                      f"WAL {first['wal_mb']:.0f} MB, {first['wal_fpi']:.0f} full pages), "
                      f"1% re-sync {changed['seconds']:6.2f}s (peak {changed['peak_rss_mb']:.0f} MB, CPU-s process "
                      f"{changed['client_cpu']:.1f} + server {changed['server_cpu']:.1f}; WAL {changed['wal_mb']:.0f} MB, "
                      f"{changed['wal_fpi']:.0f} full pages)", flush=True)
        for i in range(args.resyncs):
            source = v1 if i % 2 == 0 else v2  # the last round left v2 delivered
            for kind in kinds:
                r = run_child("sync", source=source, mode="mirror", **steps[kind])
                r["maintenance_cpu"] = _quiesce(uri)
                resyncs[kind].append(r)
                print(f"re-sync {i + 1} {kind:<10} -> {os.path.basename(source)} {r['seconds']:6.2f}s "
                      f"(peak {r['peak_rss_mb']:.0f} MB, CPU-s process {r['client_cpu']:.1f} + server "
                      f"{r['server_cpu']:.1f}, then {r['maintenance_cpu']:.1f}; WAL {r['wal_mb']:.0f} MB, "
                      f"{r['wal_fpi']:.0f} full pages): {_phases(r)}", flush=True)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)

    def best(runs: dict[str, list[dict]], kind: str, what: str) -> float:
        return min(r[what] for r in runs[kind])

    print(f"\n{args.rows:,} rows x 8 columns into PostgreSQL, batch_size={args.batch_size:,}, best of "
          f"{args.rounds} first loads and {len(resyncs['duckdb'])} re-syncs ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores)")
    print(f"{'job':<34} {'DuckDB ws':>10} {'PG ws':>10} {'ratio':>7} {'target':>8}")
    for runs, name, target in ((firsts, "first load (upsert)", "<= 1.3x"), (resyncs, "1% changed re-sync (mirror)", "<= 1.5x")):
        d, p = best(runs, "duckdb", "seconds"), best(runs, "postgresql", "seconds")
        print(f"{name:<34} {d:>9.2f}s {p:>9.2f}s {p / d:>6.2f}x {target:>8}")
        d, p = best(runs, "duckdb", "peak_rss_mb"), best(runs, "postgresql", "peak_rss_mb")
        print(f"{'  peak RSS':<34} {d:>8.0f}MB {p:>8.0f}MB {p - d:>+5.0f}MB {'<= +200':>8}")
    for other in kinds[1:]:
        for runs, name in ((firsts, "first load"), (resyncs, "re-sync")):
            pairs = [p["seconds"] / d["seconds"] for d, p in zip(runs["duckdb"], runs[other], strict=True)]
            print(f"{name} ratio per pair ({other} / DuckDB ws, run one after the other): "
                  + ", ".join(f"{x:.2f}x" for x in pairs)
                  + f"; median {sorted(pairs)[len(pairs) // 2]:.2f}x, worst {max(pairs):.2f}x")
    for kind in kinds:
        for runs, name in ((firsts, "first load"), (resyncs, "1% re-sync")):
            r = min(runs[kind], key=lambda r: r["seconds"])
            print(f"  {kind} {name}: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["durations"].items()))
            print("    store calls: " + ", ".join(f"{k} {v:.2f}s" for k, v in r["store_calls"].items()))


if __name__ == "__main__":
    main()

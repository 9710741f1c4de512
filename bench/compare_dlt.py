"""Side by side with dlt (issue 9): the same sync jobs, the same data, the same run.

    pip install -e '.[bench]'                      # dlt[duckdb,postgres] + dfsync[all]
    python bench/compare_dlt.py                    # 2M and 10M rows, 3 repetitions (long)
    python bench/compare_dlt.py --sizes 200k --reps 1          # a quick look (a few minutes)
    python bench/compare_dlt.py --targets duckdb --sizes 2M    # one destination only

For each size: a generated 8-column table as Parquet (v1) and a second version (v2) with
1% of rows updated, 0.5% new and 0.5% deleted. For each destination and repetition, every
tool starts on a fresh destination, loads v1 (the *initial* job) and then v2 (the *re-sync*):

* dfsync ``destination_mode="upsert"`` (the like-for-like row: dlt's merge keeps deleted rows)
* dlt 1.x, Arrow tables, ``write_disposition="merge"``, ``primary_key="id"``,
  ``loader_file_format="parquet"`` (on PostgreSQL that is its ADBC path, its fastest)
* dfsync ``destination_mode="mirror"`` (also deletes; its own row, no dlt counterpart)
* a reference: ``CREATE TABLE AS SELECT`` from the Parquet (DuckDB), raw ``adbc_ingest`` of
  the Parquet (PostgreSQL)

Tools alternate (the order rotates every repetition); every measurement runs in its own
subprocess, so its peak RSS (``ru_maxrss``) is its own. Median seconds, rows/s, peak RSS and
dfsync's speed-up over dlt are printed and written to ``bench/RESULTS_dlt.md``. After every
job the destinations are compared (row count + checksum over the 8 columns): dfsync upsert
== dlt; dfsync mirror == v2; after the initial load all == v1. A mismatch stops the run.

PostgreSQL: without ``--pg-uri`` a throwaway cluster is started on a loopback port (as the
test suite does: initdb as the ``postgres`` user when running as root, fsync off). Each
measurement gets a fresh database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


COLS = ["id", "qty", "price", "score", "name", "email", "active", "updated_at"]
TABLE = "t"
DLT_DATASET = "bench"
TARGETS = {"duckdb": (1.3, 5.0), "postgres": (2.5, 15.0)}  # issue 9: speed-up over dlt, initial / re-sync


def _quiet_dlt() -> None:
    # no telemetry (no network here) and no progress chatter in the measured process
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")


# ============================================================================ measured steps
def step_ref_duckdb(dest: str, src: str) -> dict[str, Any]:
    import duckdb

    t = time.perf_counter()
    con = duckdb.connect(dest)
    con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM read_parquet('{src}')")
    con.close()
    return {"seconds": time.perf_counter() - t}


def step_ref_postgres(uri: str, src: str) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as pgdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = time.perf_counter()
    pf = pq.ParquetFile(src)
    reader = pa.RecordBatchReader.from_batches(pf.schema_arrow, pf.iter_batches(batch_size=250_000))
    con = pgdb.connect(uri)
    with con.cursor() as cur:
        cur.adbc_ingest(TABLE, reader, mode="create")
    con.commit()
    con.close()
    return {"seconds": time.perf_counter() - t}


def step_dfsync(work: str, src: str, target: str, dest: str, mode: str, batch_size: int | None) -> dict[str, Any]:
    import dfsync

    t = time.perf_counter()
    ws = dfsync.Workspace(os.path.join(work, "ws.duckdb"))
    destination = (dfsync.destinations.duckdb(dest, table=TABLE) if target == "duckdb"
                   else dfsync.destinations.postgres(dest, table=TABLE))
    kw: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    sync = ws.create_sync("bench", source=dfsync.sources.files(src), destination=destination,
                          primary_key="id", destination_mode=mode, **kw)
    run = sync.run(progress=False)
    secs = time.perf_counter() - t
    if run.status != "success":
        raise SystemExit(f"dfsync run failed: {run.error}")
    return {"seconds": secs, "counts": run.counts, "durations": run.durations()}


def step_dlt(work: str, src: str, target: str, dest: str, strategy: str) -> dict[str, Any]:
    _quiet_dlt()
    import dlt
    import pyarrow.parquet as pq

    t = time.perf_counter()

    @dlt.resource(name=TABLE, write_disposition={"disposition": "merge", "strategy": strategy}, primary_key="id")
    def rows():  # Arrow tables straight from the Parquet file: dlt's documented fast path
        yield from pq.ParquetFile(src).iter_batches(batch_size=1_000_000)

    if target == "postgres" and "@" in dest and ":" not in dest.split("//", 1)[1].split("@", 1)[0]:
        # dlt insists on a password; the throwaway cluster trusts loopback and ignores it
        dest = dest.replace("@", ":unused@", 1)
    destination = (dlt.destinations.duckdb(dest) if target == "duckdb" else dlt.destinations.postgres(dest))
    pipeline = dlt.pipeline(pipeline_name="bench", destination=destination, dataset_name=DLT_DATASET,
                            pipelines_dir=os.path.join(work, "pipelines"))
    info = pipeline.run(rows(), loader_file_format="parquet")
    secs = time.perf_counter() - t
    info.raise_on_failed_jobs()
    steps = {}
    trace = pipeline.last_trace
    for s in trace.steps:
        if s.started_at and s.finished_at:
            steps[s.step] = (s.finished_at - s.started_at).total_seconds()
    return {"seconds": secs, "durations": steps}


def step_generate(rows: int, v1: str, v2: str) -> dict[str, Any]:
    from sync_bench import generate, make_v2  # same data as the core benchmark

    t = time.perf_counter()
    generate(v1, rows)
    make_v2(v1, v2, rows)
    return {"seconds": time.perf_counter() - t}


def step_checksum(target: str, dest: str, table: str, where: str = "") -> dict[str, Any]:
    return {"sum": list(checksum(target, dest, table, where))}


STEPS = {"ref_duckdb": step_ref_duckdb, "ref_postgres": step_ref_postgres, "dfsync": step_dfsync, "dlt": step_dlt,
         "generate": step_generate, "checksum": step_checksum}


def _vm_hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1]) / 1024
    except OSError:
        pass
    return None


def child(step: str, kwargs: str) -> None:
    out = STEPS[step](**json.loads(kwargs))
    # ru_maxrss carries the parent's high-water mark across fork+exec on Linux, so the
    # parent stays small (no data libraries imported) and VmHWM (this process's own
    # address space only) is reported next to it; the report uses the smaller, exact one
    out["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hwm = _vm_hwm_mb()
    out["peak_rss_mb"] = hwm if hwm is not None else out["ru_maxrss_mb"]
    print("RESULT " + json.dumps(out, default=str))


def measure(step: str, **kwargs: Any) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", step, "--kwargs", json.dumps(kwargs)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{step} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


# ============================================================================ correctness
# One checksum per table over the 8 record columns, normalised so dlt's column types
# (timestamp with time zone, extra _dlt_* columns) compare equal to dfsync's.
_DUCK_SUM = ("SELECT count(*), sum(hash(id, qty, price, score, name, email, active, epoch_us(updated_at)))::HUGEINT "
             "FROM {src}{where}")
_PG_SUM = ("SELECT count(*), sum(hashtextextended(concat_ws('|', id, qty, price, score, name, email, active, "
           "extract(epoch from updated_at)), 0)::numeric) FROM {src}{where}")


def checksum(target: str, dest: str, table: str, where: str = "") -> tuple[int, int]:
    w = f" WHERE {where}" if where else ""
    if target == "duckdb":
        import duckdb

        if dest.endswith(".parquet"):
            src, con = f"read_parquet('{dest}')", duckdb.connect()
        else:
            src, con = table, duckdb.connect(dest, read_only=True)
        try:
            n, s = con.execute(_DUCK_SUM.format(src=src, where=w)).fetchall()[0]
        finally:
            con.close()
        return int(n), int(s or 0)
    import psycopg

    with psycopg.connect(dest, autocommit=True) as con:
        n, s = con.execute(_PG_SUM.format(src=table, where=w)).fetchall()[0]
    return int(n), int(s or 0)


def remote_checksum(target: str, dest: str, table: str, where: str = "") -> tuple[int, int]:
    """checksum() in a subprocess: the parent stays small (see child())."""
    n, s = measure("checksum", target=target, dest=dest, table=table, where=where)["sum"]
    return int(n), int(s)


# ============================================================================ PostgreSQL cluster
def _find_bin(name: str) -> str | None:
    for d in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/14/bin"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return shutil.which(name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL cluster (as tests/plugins/postgres.py starts one), or --pg-uri."""

    def __init__(self, uri: str | None) -> None:
        self.root: str | None = None
        self.server: Any = None
        if uri:
            self.base = uri
            return
        initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise SystemExit("PostgreSQL binaries not found (apt-get install -y postgresql), or pass --pg-uri")
        self.root = tempfile.mkdtemp(prefix="dfsync-dlt-pg-")
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        datadir = os.path.join(self.root, "data")
        subprocess.run([*as_user, initdb, "-D", datadir, "-U", "dfsync", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        # the test suite's settings, plus a WAL size that does not force a checkpoint every
        # few hundred MB of bulk load (the same server for both tools)
        with open(os.path.join(datadir, "postgresql.conf"), "a") as f:
            f.write("\nmax_wal_size = 8GB\nshared_buffers = 512MB\n")
        # the same server start as tests/plugins/postgres.py (not imported: it pulls in the
        # data libraries, and the parent must stay small)
        self.ctl = [*as_user, pg_ctl, "-D", datadir, "-l", os.path.join(self.root, "log")]
        port = _free_port()
        subprocess.run([*self.ctl, "-w", "-o", f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off -c full_page_writes=off", "start"], check=True, capture_output=True, timeout=120)
        self.server = True
        self.base = f"postgresql://dfsync@127.0.0.1:{port}/postgres"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as con:
            con.execute(sql)

    def fresh(self, name: str) -> str:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        return self.base.rsplit("/", 1)[0] + "/" + name

    def drop(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as con:
            return con.execute("SHOW server_version").fetchall()[0][0]

    def close(self) -> None:
        if self.server is not None:
            subprocess.run([*self.ctl, "-w", "-m", "immediate", "stop"], capture_output=True, timeout=120)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


# ============================================================================ the runs
TOOLS = ["dfsync upsert", "dlt merge", "dfsync mirror"]


def parse_size(s: str) -> int:
    s = s.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def run_size(args: argparse.Namespace, rows: int, base: str, cluster: Cluster | None,
             results: dict[tuple, list[dict]]) -> None:
    data = os.path.join(base, f"data-{rows}")
    os.makedirs(data, exist_ok=True)
    v1, v2 = os.path.join(data, "v1.parquet"), os.path.join(data, "v2.parquet")
    if not os.path.exists(v2):
        r = measure("generate", rows=rows, v1=v1, v2=v2)
        print(f"[{rows:,}] generated v1 + v2 in {r['seconds']:.1f}s", flush=True)
    deleted = f"id % 200 = 3 AND id < {rows}"  # rows make_v2 leaves out of v2

    for target in args.targets:
        # the reference anchors the size (fresh destination each repetition)
        for rep in range(args.reps):
            if target == "duckdb":
                d = fresh_dir(base, f"ref-{rep}")
                r = measure("ref_duckdb", dest=os.path.join(d, "ref.duckdb"), src=v1)
                expect_v1 = remote_checksum("duckdb", v1, "")
                shutil.rmtree(d, ignore_errors=True)
            else:
                assert cluster is not None
                uri = cluster.fresh("ref")
                r = measure("ref_postgres", uri=uri, src=v1)
                expect_v1 = remote_checksum("postgres", uri, TABLE)
                cluster.drop("ref")
            results.setdefault((rows, target, "initial", "reference"), []).append(r)
            print(f"[{rows:,} {target} rep {rep}] reference {r['seconds']:.2f}s {r['peak_rss_mb']:6.0f}MB", flush=True)

        for rep in range(args.reps):
            order = TOOLS[rep % len(TOOLS):] + TOOLS[:rep % len(TOOLS)]
            dests: dict[str, tuple[str, str, str]] = {}  # tool -> (work dir, destination, table)
            for tool in order:
                work = fresh_dir(base, f"{target}-{tool.replace(' ', '_')}")
                if target == "duckdb":
                    dest = os.path.join(work, "dest.duckdb")
                else:
                    assert cluster is not None
                    dest = cluster.fresh(f"b_{tool.replace(' ', '_')}")
                table = f"{DLT_DATASET}.{TABLE}" if tool.startswith("dlt") else TABLE
                dests[tool] = (work, dest, table)
            for job, src in (("initial", v1), ("re-sync", v2)):
                for tool in order:
                    work, dest, _ = dests[tool]
                    if tool.startswith("dlt"):
                        r = measure("dlt", work=work, src=src, target=target, dest=dest, strategy=args.dlt_strategy)
                    else:
                        r = measure("dfsync", work=work, src=src, target=target, dest=dest,
                                    mode=tool.split()[1], batch_size=args.batch_size)
                    results.setdefault((rows, target, job, tool), []).append(r)
                    print(f"[{rows:,} {target} rep {rep}] {job:<8} {tool:<14} {r['seconds']:7.2f}s "
                          f"{r['peak_rss_mb']:6.0f}MB  {fmt_durations(r.get('durations'))}", flush=True)
                verify(target, job, dests, expect_v1, deleted)
            for work, dest, _ in dests.values():
                shutil.rmtree(work, ignore_errors=True)
                if target == "postgres" and cluster is not None:
                    cluster.drop(dest.rsplit("/", 1)[1])


def verify(target: str, job: str, dests: dict[str, tuple[str, str, str]], expect_v1: tuple[int, int],
           deleted: str) -> None:
    sums = {tool: remote_checksum(target, dest, table) for tool, (_, dest, table) in dests.items()}
    problems = []
    if job == "initial":
        problems = [f"{tool} {s} != source {expect_v1}" for tool, s in sums.items() if s != expect_v1]
    else:
        if sums["dfsync upsert"] != sums["dlt merge"]:
            problems.append(f"dfsync upsert {sums['dfsync upsert']} != dlt merge {sums['dlt merge']}")
        _, dest, table = dests["dfsync upsert"]
        want = remote_checksum(target, dest, table, f"NOT ({deleted})")
        if sums["dfsync mirror"] != want:
            problems.append(f"dfsync mirror {sums['dfsync mirror']} != v2 {want}")
    if problems:
        raise SystemExit(f"correctness check failed after the {job} job on {target}: " + "; ".join(problems))
    print(f"    checked {job}: {len(sums)} destinations hold the same rows ({sums['dlt merge'][0]:,})", flush=True)


def fresh_dir(base: str, name: str) -> str:
    d = os.path.join(base, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def fmt_durations(d: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in (d or {}).items())


# ============================================================================ report
def versions(cluster: Cluster | None) -> str:
    from importlib.metadata import version

    def v(p: str) -> str:
        try:
            return version(p)
        except Exception:
            return "?"

    parts = [f"dfsync {v('dfsync') if v('dfsync') != '?' else '0.1.0 (worktree)'}", f"dlt {v('dlt')}",
             f"duckdb {v('duckdb')}", f"pyarrow {v('pyarrow')}", f"polars {v('polars')}",
             f"adbc-driver-postgresql {v('adbc-driver-postgresql')}", f"Python {platform.python_version()}"]
    if cluster is not None:
        parts.append(f"PostgreSQL {cluster.version()}")
    return ", ".join(parts)


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f", {int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, {platform.system()} {platform.release()}"


def report(args: argparse.Namespace, results: dict[tuple, list[dict]], cluster: Cluster | None) -> str:
    lines = [
        "# dfsync vs dlt (issue 9)", "",
        f"Run {time.strftime('%Y-%m-%d %H:%M')}; {machine()}; load average at the end "
        f"{os.getloadavg()[0]:.1f} (others' test suites share the machine: compare ratios, not absolute times).",
        f"Versions: {versions(cluster)}.",
        f"Median of {args.reps} repetition(s), each tool on a fresh destination, tools alternating; each "
        f"measurement in its own subprocess (peak RSS = its VmHWM: ru_maxrss would inherit the parent's "
        f"high-water mark across fork+exec). dlt: Arrow tables from the Parquet file, write_disposition=merge (strategy {args.dlt_strategy}), primary_key=id, "
        f"loader_file_format=parquet (ADBC on PostgreSQL). dfsync: default settings"
        f"{'' if args.batch_size is None else f', batch_size={args.batch_size:,}'}. "
        "Re-sync: v2 has 1% rows updated, 0.5% new, 0.5% deleted (dlt and dfsync upsert keep deleted rows; "
        "mirror removes them). After every job the destinations were checked equal (row count + checksum "
        "over the 8 columns).", "",
        "Speed-up = dlt seconds / dfsync seconds (higher is better for dfsync); target from the issue.", "",
    ]
    sizes = sorted({k[0] for k in results})
    for rows in sizes:
        for target in args.targets:
            lines += [f"## {rows:,} rows x 8 columns -> {target}", "",
                      "| job | tool | seconds (median) | rows/s | peak RSS MB | vs dlt: time ratio | speed-up | "
                      "speed-up per rep | target | met |",
                      "|---|---|---:|---:|---:|---:|---:|---|---:|:-:|"]
            for job in ("initial", "re-sync"):
                dlt_r = results.get((rows, target, job, "dlt merge"))
                dlt_s = med(dlt_r, "seconds") if dlt_r else None
                dlt_m = max(r["peak_rss_mb"] for r in dlt_r) if dlt_r else None
                for tool in ("reference", "dlt merge", "dfsync upsert", "dfsync mirror"):
                    rs = results.get((rows, target, job, tool))
                    if not rs:
                        continue
                    s, m = med(rs, "seconds"), max(r["peak_rss_mb"] for r in rs)
                    ratio = speed = tgt = met = per_rep = ""
                    if dlt_s and tool != "dlt merge":
                        ratio, speed = f"{s / dlt_s:.2f}", f"{dlt_s / s:.2f}x"
                        if tool != "reference" and dlt_r and len(dlt_r) == len(rs):
                            # same repetition = measured minutes apart: steadier under shared load
                            per_rep = " ".join(f"{d['seconds'] / r['seconds']:.2f}" for d, r in zip(dlt_r, rs, strict=True))
                    if tool == "dfsync upsert" and dlt_s:
                        want = TARGETS[target][0 if job == "initial" else 1]
                        tgt = f"{want}x"
                        ok_t, ok_m = dlt_s / s >= want, m <= (dlt_m or 0)
                        met = ("yes" if ok_t and ok_m else "no" + ("" if ok_t else " (time)") + ("" if ok_m else " (RSS)"))
                    lines.append(f"| {job} | {tool} | {s:.2f} | {rows / s:,.0f} | {m:.0f} | {ratio} | {speed} | "
                                 f"{per_rep} | {tgt} | {met} |")
            lines.append("")
            lines.append("Phase medians (dfsync: seconds per run state; dlt: seconds per pipeline step):")
            lines.append("")
            for job in ("initial", "re-sync"):
                for tool in ("dlt merge", "dfsync upsert", "dfsync mirror"):
                    rs = results.get((rows, target, job, tool))
                    if rs:
                        keys = list(rs[0].get("durations") or {})
                        d = {k: statistics.median(r["durations"].get(k, 0.0) for r in rs) for k in keys}
                        lines.append(f"- {job}, {tool}: {fmt_durations(d)}")
            lines.append("")
    return "\n".join(lines) + "\n"


_LINE = re.compile(r"^\[([\d,]+) (\w+) rep (\d+)\] (?:(reference)|(initial|re-sync)\s+(dfsync upsert|dlt merge|"
                   r"dfsync mirror))\s+([\d.]+)s(?:\s+(\d+)MB)?\s*(.*)$")


def results_from_logs(paths: list[str], rss_fallback: dict[tuple[int, str], float]) -> dict[tuple, list[dict]]:
    """Rebuild the measurements from the lines a run printed (to report runs made in parts)."""
    results: dict[tuple, list[dict]] = {}
    for path in paths:
        with open(path) as f:
            for ln in f:
                m = _LINE.match(ln.strip())
                if not m:
                    continue
                rows, target = int(m.group(1).replace(",", "")), m.group(2)
                job, tool = ("initial", "reference") if m.group(4) else (m.group(5), m.group(6))
                rss = float(m.group(8)) if m.group(8) else rss_fallback.get((rows, target), float("nan"))
                durations = {}
                for part in filter(None, (p.strip() for p in m.group(9).split(","))):
                    k, v = part.rsplit(" ", 1)
                    durations[k] = float(v)
                results.setdefault((rows, target, job, tool), []).append(
                    {"seconds": float(m.group(7)), "peak_rss_mb": rss, "durations": durations})
    return results


def med(rs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2M,10M", help="comma-separated row counts, e.g. 200k,2M,10M")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--targets", default="duckdb,postgres")
    ap.add_argument("--pg-uri", default=None, help="an existing server (superuser: databases are created)")
    ap.add_argument("--batch-size", type=int, default=None, help="dfsync batch_size (default: dfsync's)")
    ap.add_argument("--dlt-strategy", default="delete-insert", choices=["delete-insert", "upsert"])
    ap.add_argument("--workdir", default=None, help="keep generated data here (reused across runs)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS_dlt.md"))
    ap.add_argument("--from-logs", nargs="+", default=None,
                    help="only write the report from the printed lines of earlier runs (a long run made in parts)")
    ap.add_argument("--ref-rss", default="", help="with --from-logs: ROWS:TARGET:MB,... for logs whose "
                    "reference lines lack the RSS")
    ap.add_argument("--child", default=None)
    ap.add_argument("--kwargs", default="{}")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.kwargs)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown target(s) {sorted(unknown)}; choose from {sorted(TARGETS)}")
    if args.reps < 1:
        raise SystemExit("--reps must be at least 1")
    import importlib.util

    if importlib.util.find_spec("dlt") is None:  # not imported here: the parent stays small
        raise SystemExit("dlt is not installed: pip install -e '.[bench]'")

    if args.from_logs:
        fallback = {(int(r), t): float(mb) for r, t, mb in (x.split(":") for x in args.ref_rss.split(",") if x)}
        results = results_from_logs(args.from_logs, fallback)
        args.targets = [t for t in args.targets if any(k[1] == t for k in results)]
        args.reps = max(len(v) for v in results.values())
        text = report(args, results, None)
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return

    base = args.workdir or tempfile.mkdtemp(prefix="dfsync-dlt-")
    os.makedirs(base, exist_ok=True)
    cluster = Cluster(args.pg_uri) if "postgres" in args.targets else None
    results: dict[tuple, list[dict]] = {}
    try:
        for rows in (parse_size(s) for s in args.sizes.split(",")):
            run_size(args, rows, base, cluster, results)
            text = report(args, results, cluster)  # written after every size: a long run keeps what it has
            with open(args.out, "w") as f:
                f.write(text)
        print("\n" + text)
        print(f"written to {args.out}")
    finally:
        if cluster is not None:
            cluster.close()
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Validation benchmark: 10M staged rows, five checks (not null, between, unique, in set, regex).

1. dfsync built-in checks vs one hand-written DuckDB query computing the same five checks
   (target: dfsync <= 1.5x the hand-written query).
2. The same five as a Great Expectations ExpectationSuite evaluated by dfsync vs GX
   validating the data itself on pandas, conversion to pandas included (target: dfsync
   >= 8x faster). GX-pandas runs on --gx-rows rows (default 1M) and its time is scaled
   linearly to --rows; the report says so.

3. (--resync) A full-refresh re-sync of a Parquet source with 1% of the rows changed, with
   five dataset-level checks (row count, mean, min/max, unique, distinct count: they judge
   the whole source, so the re-sync reads it again for their columns) against the same
   re-sync without checks, in the same process (target: <= 1.2x). Each of --rounds rounds
   changes another 1% and runs both, one right after the other, the order alternating
   between rounds; it prints every round's ratio, their median, each sync's wall and CPU
   seconds, the wall and CPU seconds of each phase of a run (median over the rounds) and the
   peak RSS of each run above the RSS it started from.

    python bench/validation_bench.py [--rows 10000000] [--gx-rows 1000000]
    python bench/validation_bench.py --resync [--rows 10000000] [--rounds 3] [--profile]

--fresh runs every re-sync in a process of its own; --before DIR adds a third sync run by the
checkout at DIR (in a workspace of its own, which that code makes), in the same rounds.

--profile prints, for the checked re-syncs, the wall and CPU seconds (all threads of the
process) of each part of the check phase: the dataset view, each uniqueness check's hash
test and exact GROUP BY, the scan of aggregates, the whole evaluation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import duckdb  # noqa: E402

from dfsync import checks as dc  # noqa: E402

STATUSES = ["active", "churned", "trial"]


def make_rows(con: duckdb.DuckDBPyConnection, n: int, table: str = "staged") -> None:
    # about 0.1% null emails, ages 0..99 plus 0.01% out of range, status mostly valid, codes C00000..C99999
    con.execute(f"""
        CREATE OR REPLACE TABLE {table} AS
        SELECT range AS _rid,
               range AS id,
               CASE WHEN range % 1000 = 7 THEN NULL ELSE 'user' || range || '@example.com' END AS email,
               CASE WHEN range % 10000 = 3 THEN 150.0 ELSE (range % 100)::DOUBLE END AS age,
               CASE WHEN range % 5000 = 11 THEN 'unknown' ELSE ['active','churned','trial'][range % 3 + 1] END
                   AS status,
               'C' || lpad((range % 100000)::VARCHAR, 5, '0') || CASE WHEN range % 20000 = 5 THEN 'x' ELSE '' END
                   AS code
        FROM range({n})""").complete()


def builtin_checks() -> list[dc.Check]:
    return [dc.not_null("email"), dc.between("age", 0, 120), dc.unique("id"),
            dc.in_set("status", STATUSES), dc.matches("code", r"^C\d{5}$")]


HAND_WRITTEN = r"""
SELECT count(*) FILTER (WHERE email IS NULL),
       count(*) FILTER (WHERE age < 0 OR age > 120),
       (SELECT coalesce(sum(c), 0) FROM (SELECT count(*) AS c FROM {t} WHERE id IS NOT NULL
                                         GROUP BY id HAVING count(*) > 1)),
       count(*) FILTER (WHERE status NOT IN ('active', 'churned', 'trial')),
       count(*) FILTER (WHERE NOT regexp_matches(code, '^C[0-9]{{5}}$'))
FROM {t}
"""


def gx_suite():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx.ExpectationSuite(name="bench", expectations=[
        gxe.ExpectColumnValuesToNotBeNull(column="email"),
        gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=120),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="status", value_set=STATUSES),
        gxe.ExpectColumnValuesToMatchRegex(column="code", regex=r"^C\d{5}$"),
    ])


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def dataset_checks() -> list:
    import great_expectations.expectations as gxe

    return [dc.row_count_between(1), gxe.ExpectColumnMeanToBeBetween(column="age", min_value=0, max_value=100),
            gxe.ExpectColumnMinToBeBetween(column="age", min_value=0),
            gxe.ExpectColumnMaxToBeBetween(column="age", max_value=200),
            dc.unique("email"), gxe.ExpectColumnUniqueValueCountToBeBetween(column="status", min_value=2)]


PROFILE: dict[str, list[float]] = {}


def profiled(owner, name: str, label: str) -> None:
    """Add each call's wall and CPU seconds (the process: DuckDB's threads too) to PROFILE."""
    fn = getattr(owner, name)

    def wrapper(*a, **kw):
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            acc = PROFILE.setdefault(label, [0.0, 0.0, 0])
            acc[0] += time.perf_counter() - t
            acc[1] += time.process_time() - c
            acc[2] += 1

    setattr(owner, name, wrapper)


def instrument() -> None:
    from dfsync import _checks_sql, checks, staging

    try:
        from dfsync import _checks_eval as evaluation  # where evaluation lives after the split
    except ImportError:
        evaluation = checks
    profiled(staging.Staging, "dataset_view", "dataset view")
    profiled(_checks_sql.DistinctTest, "all_distinct", "unique: hash test (64-bit hashes sorted by numpy)")
    profiled(_checks_sql.Compiled, "prepare", "unique: hash test + exact GROUP BY if needed")
    start = _checks_sql.DistinctTest.start

    def counted(self, *a, **kw):  # count the hash tests an earlier proof answered (no sort)
        start(self, *a, **kw)
        acc = PROFILE.setdefault("unique: hashes an earlier proof holds for (no sort; calls = such tests)",
                                 [0.0, 0.0, 0])
        acc[2] += bool(getattr(self, "proof", None) and self.proof.get("sorted") is False)

    _checks_sql.DistinctTest.start = counted
    profiled(evaluation, "_run_sql_checks", "compiled checks (prepare + aggregate scan + failing rows)")
    if hasattr(evaluation, "_scan_counts"):
        profiled(evaluation, "_scan_counts", "scan of counts and aggregates (distinct count apart)")
    profiled(_checks_sql.DistinctTest, "start", "unique: hashes read (then sorted, unless a proof holds)")
    profiled(checks, "evaluate_staged", "whole check phase (evaluate_staged)")


#: (owner module, class, method, label) timed per run by --resync: wall and CPU seconds of the process
PHASES = [
    ("dfsync.runner", "Runner", "_query", "querying (read, hash, diff)"),
    ("dfsync.store", "Store", "delivered", "  delivered state out of the workspace"),
    ("dfsync.staging", "Staging", "_load_state", "  delivered state into staging"),
    ("dfsync.staging", "Staging", "_stage_changed", "  diff (changed rows only)"),
    ("dfsync.staging", "Staging", "_stage_full", "  diff (every row)"),
    ("dfsync.staging", "Staging", "_check_keys", "  key checks"),
    ("dfsync.runner", "Runner", "_validate", "checks (queued)"),
    ("dfsync.runner", "Runner", "_transfer", "transfer (in_progress)"),
    ("dfsync.runner", "Runner", "_finish", "finish"),
]
RUN: dict[str, list[float]] = {}  # label -> [wall, CPU] of the current run


def time_phases() -> None:
    import importlib

    for mod, cls, meth, label in PHASES:
        owner = getattr(importlib.import_module(mod), cls)
        fn = getattr(owner, meth, None)
        if fn is None:  # renamed since: not timed
            continue

        def wrapper(*a, __fn=fn, __label=label, **kw):
            t, c = time.perf_counter(), time.process_time()
            try:
                return __fn(*a, **kw)
            finally:
                acc = RUN.setdefault(__label, [0.0, 0.0])
                acc[0] += time.perf_counter() - t
                acc[1] += time.process_time() - c

        setattr(owner, meth, wrapper)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb(total: bool = False) -> float:
    """Peak RSS since the last reset (VmHWM), or (``total``, or without /proc) of the whole
    process (getrusage: not reset)."""
    hwm = None if total else _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def run_measured(sync) -> dict:
    """Run ``sync`` once in this process: wall and CPU seconds, peak RSS above the start, phases."""
    RUN.clear()
    reset_peak_rss()
    before = current_rss_mb()
    t, c = time.perf_counter(), time.process_time()
    run = sync.run(progress=False)
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "rss": peak_rss_mb() - before,
            "phases": {label: list(v) for label, v in RUN.items()}, "status": run.status, "error": run.error,
            "counts": dict(run.counts)}


def run_child(d: str, name: str, profile: bool = False, bench: str = __file__) -> dict:
    """Run sync ``name`` of the workspace in ``d`` in a new Python process (as the CLI or cron would):
    the run's own figures as in :func:`run_measured`, and the whole process's wall and CPU seconds.
    ``bench``: this script in another checkout (--before), whose dfsync the child then imports."""
    import json
    import subprocess

    t = time.perf_counter()
    before = os.times()
    cmd = [sys.executable, bench, "--child", d, name] + (["--profile"] if profile else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    after = os.times()
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for label, (w, c, calls) in res.pop("profile", {}).items():  # the child's check phase, summed here
        acc = PROFILE.setdefault(label, [0.0, 0.0, 0])
        acc[0] += w
        acc[1] += c
        acc[2] += calls
    res["process"] = (time.perf_counter() - t, (after.children_user - before.children_user)
                      + (after.children_system - before.children_system))
    return res


def child(d: str, name: str, profile: bool = False) -> None:
    """--child: open the workspace, run one sync, print its figures as JSON."""
    import json

    import dfsync

    time_phases()
    if profile:
        instrument()
    ws = dfsync.Workspace(os.path.join(d, "ws.duckdb"))
    out = run_measured(ws.sync(name))
    out["profile"] = PROFILE
    ws.close()
    print(json.dumps(out, default=str))


#: --before: the checked sync of the code before, made by that code in a workspace of its own
#: (argv: the checkout, the directory, the source directory)
SETUP_BEFORE = """
import os, runpy, sys
before, d, src = sys.argv[1:4]
sys.path.insert(0, before)
bench = runpy.run_path(os.path.join(before, "bench", "validation_bench.py"))
import dfsync
ws = dfsync.Workspace(os.path.join(d, "ws.duckdb"))
sync = ws.create_sync("before", source=dfsync.sources.files(src + "/*.parquet", skip_unchanged=False),
                      destination=dfsync.destinations.duckdb(os.path.join(d, "before.duckdb"), table="t"),
                      primary_key="id", destination_mode="mirror", checks=bench["dataset_checks"](), on_invalid="fail")
run = sync.run(progress=False)
assert run.status == "success", run.error
ws.close()
"""


def resync(n: int, rounds: int, profile: bool = False, fresh: bool = False, before: str | None = None) -> None:
    """Each round changes 1% of the rows, then re-syncs both syncs, plain and checked, one right
    after the other; the order alternates between rounds so neither always runs first.

    ``before`` (with ``fresh``): the root of another checkout (the code before a change); a third
    sync, checked like the second, runs in each round with that checkout's dfsync, so the ratios
    before and after come from the same rounds (the order rotates over the three)."""
    import shutil
    import tempfile

    import dfsync

    d = tempfile.mkdtemp(prefix="dfsync-valbench-")
    src = os.path.join(d, "src")
    os.makedirs(src)
    con = duckdb.connect()
    make_rows(con, n)
    con.execute(f"COPY (SELECT * EXCLUDE (_rid) FROM staged) TO '{src}/v.parquet' (FORMAT parquet)").complete()
    ws = dfsync.Workspace(os.path.join(d, "ws.duckdb"))
    labels = {"plain": "without checks", "checked": "5 dataset-level checks"}
    made = [("plain", None), ("checked", dataset_checks())]
    names = [name for name, _ in made] + (["before"] if before else [])
    dirs = dict.fromkeys(names, d)
    if before:  # a workspace of its own, made by the code before (it may not open a newer workspace)
        labels["before"] = "5 checks, --before code"
        dirs["before"] = os.path.join(d, "before")
        os.makedirs(dirs["before"])
        import subprocess

        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", SETUP_BEFORE, before, dirs["before"], src], check=True)
        print(f"initial load {labels['before']}: {time.perf_counter() - t:.1f} s (its own process and workspace)")
    syncs = {}
    for name, chk in made:
        syncs[name] = ws.create_sync(
            name, source=dfsync.sources.files(f"{src}/*.parquet", skip_unchanged=False),
            destination=dfsync.destinations.duckdb(os.path.join(d, f"{name}.duckdb"), table="t"),
            primary_key="id", destination_mode="mirror", checks=chk, on_invalid="fail")
        t = time.perf_counter()
        run = syncs[name].run(progress=False)
        assert run.status == "success", run.error
        print(f"initial load {labels[name]}: {time.perf_counter() - t:.1f} s")
    if not fresh:  # (--fresh: the children time their own runs)
        time_phases()
        if profile:
            instrument()
    times: dict[str, list[float]] = {k: [] for k in names}
    cpus: dict[str, list[float]] = {k: [] for k in names}
    phases: dict[str, list[dict[str, list[float]]]] = {k: [] for k in names}
    rss: dict[str, list[float]] = {k: [] for k in names}
    whole: dict[str, list[tuple[float, float]]] = {k: [] for k in names}  # --fresh: the child process's wall, CPU
    per_run_rss = reset_peak_rss()
    if fresh:
        ws.close()  # each run opens the workspace in a process of its own
    for k in range(rounds):
        # 1% of the rows change (a different 1% each round)
        con.execute(f"UPDATE staged SET age = age + 0.5 WHERE (_rid + {k * 37}) % 100 = 0").complete()
        con.execute(f"COPY (SELECT * EXCLUDE (_rid) FROM staged) TO '{src}/v.parquet' (FORMAT parquet)").complete()
        order = ["plain", "checked"] if k % 2 == 0 else ["checked", "plain"]
        if before:  # each of the three first, second and last in turn
            order = [["plain", "checked", "before"], ["before", "plain", "checked"],
                     ["checked", "before", "plain"], ["plain", "before", "checked"],
                     ["checked", "plain", "before"], ["before", "checked", "plain"]][k % 6]
        for name in order:
            bench = os.path.join(before, "bench", os.path.basename(__file__)) if name == "before" else __file__
            out = run_child(dirs[name], name, profile and name != "before", bench) if fresh else run_measured(syncs[name])
            times[name].append(out["wall"])
            cpus[name].append(out["cpu"])
            rss[name].append(out["rss"])
            phases[name].append(out["phases"])
            if fresh:
                whole[name].append(out["process"])
            assert out["status"] == "success", out["error"]
            counts = out["counts"]
            assert counts["updated"] == n // 100 and counts["unchanged"] == n - n // 100, counts
        p, c_ = times["plain"][-1], times["checked"][-1]
        extra = f"; before {times['before'][-1]:.2f} s, ratio {times['before'][-1] / p:.2f}" if before else ""
        print(f"round {k + 1} ({' then '.join(order)}): plain {p:.2f} s, checked {c_:.2f} s, ratio {c_ / p:.2f}"
              f"{extra} (load {os.getloadavg()[0]:.1f})", flush=True)
    ratios = [c / p for p, c in zip(times["plain"], times["checked"], strict=True)]
    print(f"\n3) full-refresh re-sync, {n:,} rows, 1% changed, {rounds} rounds (plain and checked alternating"
          + (", each run in a fresh process: the CLI / cron case, no proof kept from an earlier run)" if fresh else ")"))
    print(f"   ratio per round (checked / plain, same moment's load): {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"   median ratio {median(ratios):.2f}x (target <= 1.2x); within target in "
          f"{sum(r <= 1.2 for r in ratios)} of {rounds} rounds")
    cpu_ratios = [c / p for p, c in zip(cpus["plain"], cpus["checked"], strict=True)]
    print(f"   CPU seconds, checked / plain, per round (what other processes' load changes least): "
          f"{', '.join(f'{r:.2f}' for r in cpu_ratios)}; median {median(cpu_ratios):.2f}x")
    if before:
        br = [c / p for p, c in zip(times["plain"], times["before"], strict=True)]
        bc = [c / p for p, c in zip(cpus["plain"], cpus["before"], strict=True)]
        print(f"   --before code, same rounds: ratio per round {', '.join(f'{r:.2f}' for r in br)}; median "
              f"{median(br):.2f}x, within 1.2 in {sum(r <= 1.2 for r in br)} of {rounds}; CPU "
              f"{', '.join(f'{r:.2f}' for r in bc)}; median {median(bc):.2f}x")
    for name in names:
        print(f"   {labels[name]:24s}: wall {', '.join(f'{x:.2f}' for x in times[name])} s (median "
              f"{median(times[name]):.2f}); CPU {', '.join(f'{x:.2f}' for x in cpus[name])} s (median "
              f"{median(cpus[name]):.2f}); peak RSS above the RSS before the run: max "
              f"{max(rss[name]):.0f} MB" + ("" if per_run_rss else " (no per-run reset of the peak here)"))
    print(f"   peak RSS of the whole process (bench's own 10M-row table included): {peak_rss_mb(total=True):.0f} MB")
    print("   per phase, median over the rounds (wall s / CPU s):")
    print(f"     {'phase':42s} {'without checks':>16s} {'with checks':>16s}" + (f" {'before':>16s}" if before else ""))
    for _, _, _, label in PHASES:
        cells = []
        for name in names:
            runs = [r[label] for r in phases[name] if label in r]
            cells.append(f"{median([w for w, _ in runs]):.2f} / {median([c for _, c in runs]):.2f}"
                         if runs else "-")
        if any(c != "-" for c in cells):
            print(f"     {label:42s} " + " ".join(f"{c:>16s}" for c in cells))
    if fresh:
        for name in names:
            print(f"   {labels[name]:24s}: whole process (start to exit) wall "
                  f"{', '.join(f'{w:.2f}' for w, _ in whole[name])} s, CPU {', '.join(f'{c:.2f}' for _, c in whole[name])} s")
        for name in [x for x in ("checked", "before") if x in names]:
            wr = [c[0] / p[0] for p, c in zip(whole["plain"], whole[name], strict=True)]
            print(f"   whole process ratio per round ({name}): {', '.join(f'{r:.2f}' for r in wr)}; "
                  f"median {median(wr):.2f}x")
        ws = dfsync.Workspace(os.path.join(d, "ws.duckdb"))
        syncs = {name: ws.sync(name) for name in syncs}  # (not "before": its workspace is its own)
    if profile:
        print(f"   check phase over {rounds} checked re-syncs (wall s, CPU s, calls):")
        for label, (w, c, calls) in PROFILE.items():
            print(f"     {label:60s} {w:6.2f} {c:6.2f} {calls:3d}")
    v = syncs["checked"].last_run().validation()
    print(v.select("check_name", "scope", "success", "element_count").to_dicts())
    ws.close()
    shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--gx-rows", type=int, default=1_000_000)
    ap.add_argument("--resync", action="store_true")
    ap.add_argument("--rounds", "--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="--resync: every re-sync in a new process (no proof kept)")
    ap.add_argument("--before", metavar="DIR", help="--resync --fresh: also run a checked sync with the dfsync "
                    "of the checkout at DIR (the code before a change), same rounds")
    ap.add_argument("--child", nargs=2, metavar=("DIR", "SYNC"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.rows
    if args.child:
        child(*args.child, profile=args.profile)
        return
    if args.resync:
        if args.before and not args.fresh:
            ap.error("--before needs --fresh (each run in a process of its own, with its checkout's code)")
        resync(n, args.rounds, args.profile, args.fresh, args.before)
        return
    con = duckdb.connect()
    t = time.perf_counter()
    make_rows(con, n)
    print(f"staged {n:,} rows in DuckDB (:memory:) in {time.perf_counter() - t:.1f} s")

    def run_dfsync(checks):
        ev = dc.evaluate(con, "staged", checks)
        con.execute(f"DROP TABLE {ev.failures_table}").complete()
        return ev

    checks = builtin_checks()
    t_hand, hand = timed(lambda: con.execute(HAND_WRITTEN.format(t="staged")).fetchall()[0])
    t_dfs, ev = timed(lambda: run_dfsync(checks))
    ours = tuple(r["unexpected_count"] for r in ev.results)
    assert ours == tuple(hand), (ours, hand)
    print(f"\n1) five built-in checks, {n:,} rows (best of 3)")
    print(f"   hand-written DuckDB query : {t_hand:6.2f} s  ({n / t_hand / 1e6:.1f} M rows/s)")
    print(f"   dfsync built-in checks    : {t_dfs:6.2f} s  ({n / t_dfs / 1e6:.1f} M rows/s)"
          f"  ratio {t_dfs / t_hand:.2f}x (target <= 1.5x)")
    print(f"   failing rows per check    : {dict(zip([c.name for c in checks], ours, strict=True))}")

    t = time.perf_counter()
    suite = gx_suite()
    print(f"\n2) the same five as a GX ExpectationSuite (import great_expectations: {time.perf_counter() - t:.1f} s)")
    gx_checks = dc.normalize_checks(suite)
    t_dgx, ev2 = timed(lambda: run_dfsync(gx_checks))
    assert tuple(r["unexpected_count"] for r in ev2.results) == ours
    print(f"   dfsync (suite compiled to DuckDB SQL), {n:,} rows : {t_dgx:6.2f} s")

    import great_expectations as gx

    g = args.gx_rows
    con.execute(f"CREATE OR REPLACE TABLE gx_rows AS SELECT * EXCLUDE (_rid) FROM staged WHERE _rid < {g}").complete()
    ctx = gx.get_context(mode="ephemeral")
    bd = ctx.data_sources.add_pandas("bench").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("b")

    def run_gx():
        t0 = time.perf_counter()
        df = con.sql("SELECT * FROM gx_rows").to_arrow_table().to_pandas()
        t1 = time.perf_counter()
        res = bd.get_batch(batch_parameters={"dataframe": df}).validate(suite)
        return t1 - t0, res

    t_gx, (t_conv, res) = timed(run_gx, repeat=1)
    gx_counts = tuple(r.result.get("unexpected_count") for r in res.results)
    con.execute(f"CREATE OR REPLACE TABLE gx_staged AS SELECT * FROM staged WHERE _rid < {g}").complete()
    small = dc.evaluate(con, "gx_staged", dc.normalize_checks(suite))
    same = tuple(r["unexpected_count"] for r in small.results) == gx_counts
    scaled = t_gx * n / g
    print(f"   GX on pandas, {g:,} rows (conversion {t_conv:.2f} s incl.): {t_gx:6.2f} s"
          f"  -> scaled to {n:,} rows: {scaled:6.1f} s (linear scaling)")
    print(f"   GX unexpected counts on its {g:,} rows: {gx_counts}; dfsync on the same rows agrees: {same}")
    print(f"   speed-up dfsync vs GX-pandas: {scaled / t_dgx:.1f}x (target >= 8x)")


if __name__ == "__main__":
    main()

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
   re-sync without checks, in the same process, alternating (target: <= 1.2x).

    python bench/validation_bench.py [--rows 10000000] [--gx-rows 1000000]
    python bench/validation_bench.py --resync [--rows 10000000] [--repeat 2] [--profile]

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
    profiled(_checks_sql.DistinctTest, "all_distinct", "unique: hash test (64-bit hashes, polars)")
    profiled(_checks_sql.Compiled, "prepare", "unique: hash test + exact GROUP BY if needed")
    profiled(evaluation, "_run_sql_checks", "compiled checks (prepare + aggregate scan + failing rows)")
    profiled(checks, "evaluate_staged", "whole check phase (evaluate_staged)")


def resync(n: int, repeat: int, profile: bool = False) -> None:
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
    checks = dataset_checks()
    syncs = {}
    for label, chk in (("without checks", None), ("5 dataset-level checks", checks)):
        name = "plain" if chk is None else "checked"
        syncs[label] = ws.create_sync(
            name, source=dfsync.sources.files(f"{src}/*.parquet", skip_unchanged=False),
            destination=dfsync.destinations.duckdb(os.path.join(d, f"{name}.duckdb"), table="t"),
            primary_key="id", destination_mode="mirror", checks=chk, on_invalid="fail")
        t = time.perf_counter()
        run = syncs[label].run(progress=False)
        assert run.status == "success", run.error
        print(f"initial load {label}: {time.perf_counter() - t:.1f} s")
    times: dict[str, list[float]] = {k: [] for k in syncs}
    if profile:
        instrument()
    for k in range(repeat):
        # 1% of the rows change (a different 1% each round)
        con.execute(f"UPDATE staged SET age = age + 0.5 WHERE (_rid + {k * 37}) % 100 = 0").complete()
        con.execute(f"COPY (SELECT * EXCLUDE (_rid) FROM staged) TO '{src}/v.parquet' (FORMAT parquet)").complete()
        for label, sync in (list(syncs.items()) if k % 2 == 0 else list(syncs.items())[::-1]):
            t = time.perf_counter()
            run = sync.run(progress=False)
            times[label].append(time.perf_counter() - t)
            assert run.status == "success", run.error
            assert run.counts["updated"] == n // 100 and run.counts["unchanged"] == n - n // 100, run.counts
    plain, checked = (min(v) for v in times.values())
    print(f"\n3) full-refresh re-sync, {n:,} rows, 1% changed (best of {repeat}; all: {times})")
    print(f"   without checks          : {plain:6.2f} s")
    print(f"   5 dataset-level checks  : {checked:6.2f} s  ratio {checked / plain:.2f}x (target <= 1.2x)")
    rounds = [c / p for p, c in zip(*times.values(), strict=True)]
    print(f"   ratio per round (same moment's load): {', '.join(f'{r:.2f}' for r in rounds)}")
    for label, sync in syncs.items():
        print(f"   {label}: seconds per state of the last re-sync {sync.last_run().durations}")
    if profile:
        print(f"   check phase over {repeat} checked re-syncs (wall s, CPU s, calls):")
        for label, (w, c, calls) in PROFILE.items():
            print(f"     {label:60s} {w:6.2f} {c:6.2f} {calls:3d}")
    v = syncs["5 dataset-level checks"].last_run().validation()
    print(v.select("check_name", "scope", "success", "element_count").to_dicts())
    ws.close()
    shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--gx-rows", type=int, default=1_000_000)
    ap.add_argument("--resync", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    n = args.rows
    if args.resync:
        resync(n, args.repeat, args.profile)
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

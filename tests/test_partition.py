"""Partitioned runs (partitions=N): the same results as a run without buckets, gates global."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync._keyhash import (
    INT_ALGO,
    MD5_ALGO,
    bucket_sql,
    int_key_buckets,
    int_key_hash,
    key_algo,
    key_hash_sql,
    scale,
)
from dfsync.definition import SyncDefinition
from tests.faulty import env_with_repo

COUNTERS = ["queried", "inserted", "updated", "deleted", "unchanged", "invalid", "sent", "succeeded", "failed",
            "skipped", "retried"]


def rows(n: int, *, version: int = 1, start: int = 0) -> pl.DataFrame:
    ids = list(range(start, start + n))
    return pl.DataFrame({
        "id": ids,
        "name": [f"row {i} v{version if i % 3 == 0 else 1} ✓" for i in ids],
        "value": [None if i % 7 == 0 else i * 0.5 for i in ids],
        "updated_at": [1000 + i + (version * 10_000 if i % 3 == 0 else 0) for i in ids],
    })


def make_dest(kind: str, root, name: str):
    if kind == "duckdb":
        return dfsync.destinations.duckdb(str(root / f"{name}.duckdb"), table="t")
    if kind == "sqlite":
        return dfsync.destinations.sqlite(str(root / f"{name}.sqlite"), table="t")
    return dfsync.destinations.parquet(str(root / name))


def read_dest(kind: str, root, name: str) -> pl.DataFrame:
    if kind == "duckdb":
        con = duckdb.connect(str(root / f"{name}.duckdb"), read_only=True)
        try:
            return pl.from_arrow(con.sql("SELECT * FROM t").to_arrow_table()).sort("id")
        finally:
            con.close()
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(str(root / f"{name}.sqlite"))
        try:
            cur = con.execute("SELECT * FROM t ORDER BY id")
            return pl.DataFrame(cur.fetchall(), schema=[d[0] for d in cur.description], orient="row")
        finally:
            con.close()
    return pl.read_parquet(root / name / "data.parquet").sort("id")


def pair(ws, tmp_path, kind: str, mode: str, sync_mode: str = "full_refresh", partitions: int = 8, **kw):
    """A sync without buckets and the same sync with ``partitions`` buckets, into two destinations."""
    src = tmp_path / "src.parquet"
    rows(600).write_parquet(src)
    common = dict(source=dfsync.sources.files(str(src)), primary_key="id", destination_mode=mode,
                  sync_mode=sync_mode, batch_size=97, **kw)
    if sync_mode == "incremental":
        common["cursor_field"] = "updated_at"
    one = ws.create_sync("one", destination=make_dest(kind, tmp_path, "one"), **common)
    part = ws.create_sync("part", destination=make_dest(kind, tmp_path, "part"), partitions=partitions, **common)
    return src, one, part


def same_run(r1, r2) -> None:
    assert r1.status == r2.status == "success", (r1.error, r2.error)
    assert {k: r1.counts[k] for k in COUNTERS} == {k: r2.counts[k] for k in COUNTERS}


def same_state(kind, tmp_path, one, part) -> None:
    a, b = read_dest(kind, tmp_path, "one"), read_dest(kind, tmp_path, "part")
    assert a.equals(b), (a, b)
    assert one.delivered().sort("id").equals(part.delivered().sort("id"))


def records(run) -> pl.DataFrame:
    return run.records().drop("_batch").sort("id")


SLOW = pytest.mark.slow


@pytest.mark.parametrize("kind, mode, sync_mode", [
    ("duckdb", "mirror", "full_refresh"), ("parquet", "upsert", "incremental"),
    pytest.param("duckdb", "upsert", "full_refresh", marks=SLOW), pytest.param("duckdb", "insert", "full_refresh", marks=SLOW),
    pytest.param("duckdb", "upsert", "incremental", marks=SLOW), pytest.param("sqlite", "mirror", "full_refresh", marks=SLOW),
    pytest.param("parquet", "mirror", "full_refresh", marks=SLOW), pytest.param("duckdb", "replace", "full_refresh", marks=SLOW),
])
def test_partitioned_in_process_equals_one_process(tmp_path, kind, mode, sync_mode):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = pair(ws, tmp_path, kind, mode, sync_mode)
    rows(600).write_parquet(src)
    r1, r2 = one.run(progress=False), part.run(progress=False)
    same_run(r1, r2)
    same_state(kind, tmp_path, one, part)
    assert records(r1).equals(records(r2))
    b = r2.buckets()
    assert b.height == 8 and b["state"].to_list() == ["done"] * 8
    assert b["sent"].sum() == r2.counts["sent"] and b["batches"].sum() == len(r2.records()["_batch"].unique())
    assert (b["sent"] > 0).all(), "600 keys spread over every one of 8 buckets"
    # changes: updated, deleted (full refresh), new rows
    v2 = pl.concat([rows(500, version=2), rows(50, start=1000)])
    v2.write_parquet(src)
    r1, r2 = one.run(progress=False), part.run(progress=False)
    same_run(r1, r2)
    same_state(kind, tmp_path, one, part)
    assert records(r1).equals(records(r2))
    # nothing changed: nothing sent by either (replace sends every row again, both alike)
    r1, r2 = one.run(progress=False), part.run(progress=False)
    same_run(r1, r2)
    assert r2.counts["sent"] == (550 if mode == "replace" else 0)


def test_partitions_change_between_runs_without_resending(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src = tmp_path / "src.parquet"
    rows(800).write_parquet(src)
    kw = dict(source=dfsync.sources.files(str(src)), destination=make_dest("duckdb", tmp_path, "d"),
              primary_key="id", destination_mode="mirror", batch_size=50)
    sync = ws.create_sync("s", partitions=8, **kw)
    seen: list[str] = []
    assert sync.run(progress=lambda status, row: seen.append(row.get("buckets"))).counts["sent"] == 800
    assert "0 done, 1 running, 7 waiting, 0 failed" in seen and seen[-2] == "8 done, 0 running, 0 waiting, 0 failed"
    for n in (16, 4):
        sync = ws.create_sync("s", partitions=n, **kw)
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["sent"] == 0 and run.counts["unchanged"] == 800
    rows(800, version=5).write_parquet(src)
    run = sync.run(progress=False)
    assert run.counts["updated"] == run.counts["sent"] == 800 // 3 + 1
    assert run.buckets().height == 4
    assert read_dest("duckdb", tmp_path, "d").equals(rows(800, version=5))


def test_gates_are_global_nothing_sent(tmp_path):
    """A duplicate key split across two files (rows of different buckets in between) fails the run
    before any bucket sends; so does a failed check under on_invalid='fail' and an empty source."""
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    d.mkdir()
    rows(300).write_parquet(d / "a.parquet")
    rows(300, start=300).vstack(rows(1, start=5)).write_parquet(d / "b.parquet")
    dest = make_dest("duckdb", tmp_path, "d")
    sync = ws.create_sync("dup", source=dfsync.sources.files(str(d / "*.parquet")), destination=dest,
                          primary_key="id", partitions=8, batch_size=10)
    run = sync.run(progress=False)
    assert run.status == "failed" and "5" in run.error, run.error
    assert run.counts["sent"] == 0 and run.buckets().height == 0
    assert not (tmp_path / "d.duckdb").exists() or read_dest("duckdb", tmp_path, "d").height == 0
    (d / "b.parquet").unlink()
    checked = ws.create_sync("chk", source=dfsync.sources.files(str(d / "*.parquet")), destination=dest,
                             primary_key="id", partitions=8, batch_size=10,
                             checks=[dfsync.checks.row_count_between(1000, 2000)])
    run = checked.run(progress=False)
    assert run.status == "failed" and run.counts["sent"] == 0 and run.buckets().height == 0
    pl.DataFrame(schema=rows(1).schema).write_parquet(tmp_path / "empty.parquet")
    empty = ws.create_sync("empty", source=dfsync.sources.files(str(tmp_path / "empty.parquet")),
                           destination=dest, primary_key="id", partitions=8)
    run = empty.run(progress=False)
    assert run.status == "failed" and "no rows" in run.error and run.counts["sent"] == 0


def test_definition_json_backward_compatible():
    old = {"source": {"kind": "files", "paths": ["x.parquet"]}, "destination": {"kind": "duckdb"},
           "primary_key": ["id"], "sync_mode": "full_refresh", "destination_mode": "upsert", "on_invalid": "fail",
           "max_failed_rows": 0, "batch_size": None}
    assert SyncDefinition.from_json(old).partitions is None
    assert SyncDefinition.from_json({**old, "partitions": 16}).partitions == 16


def test_partitions_and_engine_are_checked(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src = tmp_path / "src.parquet"
    rows(10).write_parquet(src)
    kw = dict(source=dfsync.sources.files(str(src)), destination=make_dest("duckdb", tmp_path, "d"), primary_key="id")
    for bad in (0, -1, 1.5, True, "8", 10_000):
        with pytest.raises(dfsync.ConfigError, match="partitions"):
            ws.create_sync("s", partitions=bad, **kw)
    plain = ws.create_sync("plain", **kw)
    with pytest.raises(dfsync.ConfigError, match="not partitioned"):
        plain.run(engine=dfsync.engines.local(processes=2), progress=False)
    assert ws.sync("plain").definition.get("partitions") is None
    part = ws.create_sync("part", partitions=4, **kw)
    assert ws.sync("part").definition["partitions"] == 4
    with pytest.raises(dfsync.ConfigError, match="engine="):
        part.run(engine="ray", progress=False)


def test_key_hash_is_stable_and_spreads_evenly():
    """The bucket of a key never depends on the DuckDB, numpy or polars version or the process:
    pinned values (a change must come with a new algorithm name), and keys spread over 16 buckets
    within 5% of the mean: 100k sequential integers (SplitMix64), 100k strings (MD5)."""
    assert (INT_ALGO, MD5_ALGO) == ("splitmix64-int-v1", "md5-lower64-varchar-v1")
    # SplitMix64 with seed 0 gives 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4 (its published first outputs)
    h = int_key_hash([np.array([0, 0x9E3779B97F4A7C15], np.uint64)])
    assert [int(v) for v in h] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    # an integer's bucket is the same whatever its width and sign: -1 as int8 and int64
    assert int_key_hash([np.array([-1], np.int8)])[0] == int_key_hash([np.array([-1], np.int64)])[0]
    assert int(int_key_hash([np.array([42], np.int32), np.array([7], np.int64)])[0]) == 0xED971DCF21BB5A4C  # mix(mix(42) ^ mix(7))
    assert scale(np.array([2**63, 2**64 - 1, 0], np.uint64), 3).tolist() == [1, 2, 0]
    counts = np.bincount(int_key_buckets([np.arange(100_000)], 16), minlength=16)
    assert counts.max() / (100_000 / 16) < 1.05 and counts.min() / (100_000 / 16) > 0.95
    con = duckdb.connect()
    got = con.execute(f"SELECT {key_hash_sql(['id'])}, {bucket_sql(['id'], 8)} FROM (SELECT 42 AS id)").fetchall()
    assert got[0][0] == con.execute("SELECT md5_number_lower('2:42')").fetchall()[0][0]
    assert got[0][1] == (got[0][0] * 8) >> 64
    counts = con.execute(f"SELECT {bucket_sql(['id'], 16)} b, count(*) FROM (SELECT 'user-' || range AS id "
                         "FROM range(100000)) GROUP BY b ORDER BY b").fetchall()
    assert [b for b, _ in counts] == list(range(16))
    assert max(c for _, c in counts) / (100000 / 16) < 1.05
    two = con.execute(f"SELECT {key_hash_sql(['a', 'b'])} FROM (SELECT 'x' a, 'yz' b UNION ALL SELECT 'xy', 'z')")
    assert len({r[0] for r in two.fetchall()}) == 2, "length prefixes tell ('x','yz') from ('xy','z')"
    assert key_algo(pa.schema([("id", pa.int32()), ("k", pa.uint64())]), ["id", "k"]) == INT_ALGO
    assert key_algo(pa.schema([("id", pa.int64()), ("k", pa.string())]), ["id", "k"]) == MD5_ALGO


def test_bucket_hash_is_the_same_in_another_process():
    """The driver of a resumed run may be another process (another host): it buckets alike."""
    code = ("import numpy as np; from dfsync._keyhash import int_key_buckets; "
            "print(int_key_buckets([np.arange(-500, 500), np.arange(1000)[::-1]], 7).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_with_repo(), check=True)
    assert out.stdout.strip() == str(int_key_buckets([np.arange(-500, 500), np.arange(1000)[::-1]], 7).tolist())


def test_interrupted_partitioned_run_pauses_and_resumes_exactly(tmp_path):
    """Ctrl-C after the fifth batch committed (bucket 0 done, bucket 1 under way): the run pauses; the next
    sync.run() resumes it, settles the landed batches from the ledger and sends the rest once."""
    from tests.faulty import FaultyDestination

    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src = tmp_path / "src.parquet"
    rows(600).write_parquet(src)
    dest = FaultyDestination(make_dest("duckdb", tmp_path, "d"), interrupt_after=5)
    sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="insert", partitions=4, batch_size=60)
    with pytest.raises(KeyboardInterrupt):
        sync.run(progress=False)
    run = sync.last_run()
    assert run.status == "paused"
    b = run.buckets()
    # nothing runs under a paused run: bucket 1, dispatched once, waits again; its batches in flight
    assert b["state"].to_list() == ["done", "waiting", "waiting", "waiting"] and b["attempts"].to_list() == [1, 1, 0, 0]
    assert b["sent"][0] > 0 and b["sent"][1:].sum() == 0
    resumed = sync.run(progress=False)
    assert resumed.id == run.id and resumed.status == "success", resumed.error
    b = resumed.buckets()  # the record is the resumed run's: bucket 0 stays done, bucket 1 one attempt more
    assert b["state"].to_list() == ["done"] * 4 and b["attempts"].to_list() == [1, 2, 1, 1]
    assert b["error"].is_null().all()
    got = read_dest("duckdb", tmp_path, "d")
    assert got.height == 600 and got["id"].n_unique() == 600 and got.equals(rows(600))
    assert resumed.counts["sent"] == resumed.counts["succeeded"] == 600
    assert sync.run(progress=False).counts["sent"] == 0

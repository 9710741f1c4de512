"""Partitioned runs on an engine: dfsync.engines.local (default suite) and dfsync.engines.ray (slow).

Workers get plain data only and never write the workspace; a worker killed mid-bucket is
dispatched again and its landed batches are settled from the destination's ledger; a killed
driver leaves the run paused, resumed exactly by the next sync.run()."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import polars as pl
import pyarrow as pa
import pytest

import dfsync
from dfsync._bucket import context_task, send_bucket, write_ipc
from dfsync.destinations.base import ACTION_COLUMN, DestinationContext
from dfsync.states import DestinationMode
from tests.faulty import FaultyDestination, env_with_repo
from tests.test_partition import COUNTERS, make_dest, read_dest, records, rows


def _syncs(ws, tmp_path, kind="duckdb", mode="mirror", n=600, partitions=4, dest=None):
    src = tmp_path / "src.parquet"
    rows(n).write_parquet(src)
    kw = dict(source=dfsync.sources.files(str(src)), primary_key="id", destination_mode=mode, batch_size=50)
    one = ws.create_sync("one", destination=make_dest(kind, tmp_path, "one"), **kw)
    part = ws.create_sync("part", destination=dest or make_dest(kind, tmp_path, "part"), partitions=partitions, **kw)
    return src, one, part


def _exact(tmp_path, kind, one, part, r1, r2):
    assert r2.status == "success", r2.error
    assert {k: r1.counts[k] for k in COUNTERS} == {k: r2.counts[k] for k in COUNTERS}
    assert read_dest(kind, tmp_path, "one").equals(read_dest(kind, tmp_path, "part"))
    assert one.delivered().sort("id").equals(part.delivered().sort("id"))


@pytest.mark.parametrize("kind", ["parquet", pytest.param("sqlite", marks=pytest.mark.slow)])
def test_local_processes_equal_one_process(tmp_path, kind):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = _syncs(ws, tmp_path, kind)
    # 'value' float32 now, float64 in the second version: the workers widen it as the driver does
    # (they failed on Parquet with "column 'value' is double in the source but float", which the
    # run's own session had accepted: the widened columns did not travel with the task)
    rows(600).with_columns(pl.col("value").cast(pl.Float32)).write_parquet(src)
    engine = dfsync.engines.local(processes=2)
    # in the background: its thread started the workers, and they die with it (PR_SET_PDEATHSIG acts
    # on the thread); the engine's next run found its pool broken and failed with a raw BrokenProcessPool
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine, background=True).wait()
    _exact(tmp_path, kind, one, part, r1, r2)
    assert records(r1).equals(records(r2))
    b = r2.buckets()
    assert b["state"].to_list() == ["done"] * 4 and b["attempts"].to_list() == [1] * 4
    pl.concat([rows(500, version=2), rows(20, start=900)]).write_parquet(src)
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    _exact(tmp_path, kind, one, part, r1, r2)
    assert read_dest(kind, tmp_path, "part").schema["value"] == pl.Float64
    assert part.run(progress=False, engine=engine).counts["sent"] == 0


def test_a_workers_batches_are_fenced_by_the_runs_owner_epoch(tmp_path):
    """A worker's session carries its run's owner epoch (PostgreSQL workspace), as the driver's does:
    once a newer owner took the run over (its session raised the ledger's fence), a worker of the
    stopped driver writes nothing. The epoch did not travel with the task, so such a worker's
    batches were applied unfenced after the takeover (docs/PARTITIONS.md: fenced as CONCURRENCY.md says)."""
    dest = dfsync.destinations.sqlite(str(tmp_path / "d.sqlite"), table="t")
    schema = pa.schema([("id", pa.int64()), ("name", pa.string()), (ACTION_COLUMN, pa.string())])
    newer = DestinationContext(sync_id=1, sync_name="s", run_id=1, mode=DestinationMode.UPSERT, primary_key=("id",),
                               workspace_id="ws1", owner_epoch=2)
    session = dest.open(newer)  # the process that took the run over raised the fence to its epoch
    session.prepare(schema)
    session.close()
    batch = tmp_path / "batch-1.arrow"
    write_ipc(str(batch), pa.table({"_rid": [0], "_fp": [1], "id": [7], "name": ["late"], ACTION_COLUMN: ["insert"]}))
    task = {"destination": {"kind": dest.kind, **dest.config()}, "modules": [], "bucket": 0, "batches": [(1, str(batch))],
            "context": context_task(dataclasses.replace(newer, owner_epoch=1)), "schema": schema.serialize().to_pybytes()}
    with pytest.raises(dfsync.SyncAlreadyRunning, match="taken over"):
        send_bucket(task)
    with sqlite3.connect(tmp_path / "d.sqlite") as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_literal_secret_is_refused_on_an_engine(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    rows(10).write_parquet(tmp_path / "s.parquet")
    dest = dfsync.destinations.postgres("postgresql://u:literal-pw@127.0.0.1:1/db", table="t")
    sync = ws.create_sync("s", source=dfsync.sources.files(str(tmp_path / "s.parquet")), destination=dest,
                          primary_key="id", partitions=4)
    with pytest.raises(dfsync.ConfigError, match="env:NAME") as err:
        sync.run(progress=False, engine=dfsync.engines.local(processes=2))
    assert "literal-pw" not in str(err.value)
    assert sync.last_run() is None, "refused before a run began"


@pytest.mark.parametrize("point, mode", [
    ("after_write", "insert"),  # the batch committed with its ledger row, the worker died before reporting
    pytest.param("before_write", "insert", marks=pytest.mark.slow),
    pytest.param("open", "upsert", marks=pytest.mark.slow),
    pytest.param("after_write", "mirror", marks=pytest.mark.slow),
])
def test_killed_worker_is_dispatched_again_exactly_once(tmp_path, monkeypatch, point, mode):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = _syncs(ws, tmp_path, "parquet" if mode == "mirror" else "duckdb", mode, n=1200)
    kind = "parquet" if mode == "mirror" else "duckdb"
    once = tmp_path / "killed-once"
    monkeypatch.setenv("DFSYNC_TEST_KILL_WORKER", f"{point}:2:{0 if point == 'open' else 2}:{once}")
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=dfsync.engines.local(processes=2))
    assert once.exists(), "the worker of bucket 2 was killed"
    _exact(tmp_path, kind, one, part, r1, r2)
    got = read_dest(kind, tmp_path, "part")
    assert got.height == 1200 and got["id"].n_unique() == 1200
    b = part.last_run().buckets().filter(pl.col("bucket") == 2)
    assert b["attempts"][0] == 2 and b["state"][0] == "done"
    assert b["error"][0], "the bucket keeps the last error: its first worker died"
    assert part.run(progress=False, engine=dfsync.engines.local(processes=2)).counts["sent"] == 0


def test_waves_of_a_bucket_and_a_killed_worker_every_row_once(tmp_path, monkeypatch):
    """On an engine each bucket's batches go to the workers in waves while the driver cuts the next
    ones: 8 batches a bucket in waves of 2; the worker of bucket 1 killed after its 5th batch
    committed (its third wave) is dispatched again with that wave only; every row once, the same
    results as one process, one attempt more for that bucket alone."""
    from dfsync import _partition

    monkeypatch.setattr(_partition, "MIN_WAVE_ROWS", 1)  # the driver decides the waves
    waves: list[tuple[int, int]] = []
    add = _partition.Waves.add
    monkeypatch.setattr(_partition.Waves, "add", lambda self, b, batches: (waves.append((b, len(batches))),
                                                                            add(self, b, batches))[1])
    once = tmp_path / "killed-once"
    monkeypatch.setenv("DFSYNC_TEST_KILL_WORKER", f"after_write:1:5:{once}")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = _syncs(ws, tmp_path, "duckdb", "insert", n=1600)
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=dfsync.engines.local(processes=2))
    assert once.exists(), "the worker of bucket 1 was killed in a later wave"
    _exact(tmp_path, "duckdb", one, part, r1, r2)
    b = part.last_run().buckets()
    assert len(waves) > 4 and sum(n for _, n in waves) == b["batches"].sum() and max(n for _, n in waves) <= 3
    assert b["attempts"].to_list() == [1, 2, 1, 1] and b["state"].to_list() == ["done"] * 4
    assert b["sent"].sum() == 1600
    monkeypatch.delenv("DFSYNC_TEST_KILL_WORKER")
    assert part.run(progress=False, engine=dfsync.engines.local(processes=2)).counts["sent"] == 0


DRIVER = """
import sys
import tests.faulty
import dfsync
ws = dfsync.Workspace(sys.argv[1])
ws.sync("part").run(progress=False, engine=dfsync.engines.local(processes=2))
print("finished")
"""


@pytest.mark.slow
def test_killed_driver_leaves_the_run_to_resume(tmp_path):
    ws_path = str(tmp_path / "ws.duckdb")
    ws = dfsync.Workspace(ws_path)
    marker = tmp_path / "marker"
    dest = FaultyDestination(make_dest("duckdb", tmp_path, "part"), sleep=0.05, marker=str(marker), marker_after=3)
    src, one, part = _syncs(ws, tmp_path, "duckdb", "insert", n=1500, dest=dest)
    ws.close()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, ws_path], env=env_with_repo(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the driver never reached a bucket's third batch"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    time.sleep(0.5)  # its workers die with it (PR_SET_PDEATHSIG)
    ws = dfsync.Workspace(ws_path)
    run = ws.sync("part").last_run()
    assert run.status == "paused"
    b = run.buckets()  # the dead driver's running buckets wait: nothing runs under a paused run
    assert b.height == 4 and "running" not in b["state"].to_list() and b["attempts"].sum() >= 1
    marker.unlink()
    r1 = ws.sync("one").run(progress=False)
    r2 = ws.sync("part").run(progress=False, engine=dfsync.engines.local(processes=2))
    assert r2.id == run.id and r2.status == "success", r2.error
    assert r2.buckets()["state"].to_list() == ["done"] * 4
    got = read_dest("duckdb", tmp_path, "part")
    assert got.height == 1500 and got["id"].n_unique() == 1500
    assert got.equals(read_dest("duckdb", tmp_path, "one"))
    assert r1.counts["sent"] == 1500
    assert ws.sync("part").run(progress=False, engine=dfsync.engines.local(processes=2)).counts["sent"] == 0


# ---------------------------------------------------------------------- Ray (slow; CI installs dfsync[ray])
@pytest.mark.slow
@pytest.mark.parametrize("kind, mode", [("parquet", "mirror"), ("duckdb", "upsert")])
def test_ray_equals_one_process(tmp_path, local_ray, kind, mode):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = _syncs(ws, tmp_path, kind, mode)
    engine = dfsync.engines.ray(address="auto")
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    _exact(tmp_path, kind, one, part, r1, r2)
    assert records(r1).equals(records(r2))
    assert len(set(r2.buckets()["state"].to_list())) == 1 and r2.buckets()["state"][0] == "done"
    pl.concat([rows(500, version=2), rows(20, start=900)]).write_parquet(src)
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    _exact(tmp_path, kind, one, part, r1, r2)
    assert part.run(progress=False, engine=engine).counts["sent"] == 0


@pytest.mark.slow
def test_ray_reads_the_source_in_splits(tmp_path, local_ray, monkeypatch):
    """Split reads on Ray (tests/test_partition_reads.py has the local engine's): Parquet files and
    row groups read by Ray tasks, the same results as one process. The local cluster's workers are
    on this host, where by default the driver reads: splits are forced here."""
    engine = dfsync.engines.ray(address="auto")
    engine.start()
    assert engine.other_hosts() == [], "the test cluster's one node is this host"
    monkeypatch.setenv("DFSYNC_SPLIT_READS", "1")
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    d = tmp_path / "in"
    d.mkdir()
    rows(400).write_parquet(d / "a.parquet", row_group_size=100)
    rows(100, start=400).write_parquet(d / "b.parquet")
    kw = dict(source=dfsync.sources.files(str(d / "*.parquet")), primary_key="id", destination_mode="mirror")
    one = ws.create_sync("one", destination=make_dest("parquet", tmp_path, "one"), **kw)
    part = ws.create_sync("part", destination=make_dest("parquet", tmp_path, "part"), partitions=4, **kw)
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    _exact(tmp_path, "parquet", one, part, r1, r2)
    assert any("splits" in (e or "") for e in r2.events()["detail"].to_list())


@pytest.mark.slow
def test_ray_worker_killed_is_retried_exactly_once(tmp_path, local_ray, monkeypatch):
    """A Ray worker SIGKILLed after its bucket's second batch committed: Ray retries the task, which
    finds that batch in the destination's ledger; every row once, the next run sends nothing."""
    once = tmp_path / "killed-once"
    monkeypatch.setenv("DFSYNC_TEST_KILL_WORKER", f"after_write:1:2:{once}")  # travels in the task
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    src, one, part = _syncs(ws, tmp_path, "duckdb", "insert", n=1200)
    engine = dfsync.engines.ray(address="auto")
    r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
    assert once.exists(), "the worker of bucket 1 was killed"
    _exact(tmp_path, "duckdb", one, part, r1, r2)
    got = read_dest("duckdb", tmp_path, "part")
    assert got.height == 1200 and got["id"].n_unique() == 1200
    monkeypatch.delenv("DFSYNC_TEST_KILL_WORKER")
    assert part.run(progress=False, engine=engine).counts["sent"] == 0


def test_ray_engine_is_imported_only_when_used():
    code = ("import sys, dfsync; e = dfsync.engines.ray(address='auto'); "
            "assert 'ray' not in sys.modules, 'import dfsync or engines.ray() imported Ray'; print(repr(e))")
    out = subprocess.run([sys.executable, "-c", code], env=env_with_repo(), capture_output=True, text=True)
    assert out.returncode == 0 and "dfsync.engines.ray(address='auto'" in out.stdout, out.stderr


TWO_AT_ONCE = """
import os, sys, time, dfsync
import tests.faulty  # noqa: F401 - registers the destination kind "faulty"
ws_path, go = sys.argv[1], sys.argv[2]
ws = dfsync.Workspace(ws_path)
sync = ws.sync("part")
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
try:
    run = sync.run(progress=False, engine=dfsync.engines.local(processes=2))
except dfsync.SyncAlreadyRunning as exc:
    print("refused", exc, flush=True)
else:
    print("ran", run.id, run.status.value, run.error, flush=True)
"""


@pytest.mark.workspaces("duckdb", "postgres", slow=("postgres",))
def test_two_partitioned_runs_started_at_once_one_runs(tmp_path, ws_target):
    """Two processes start a partitioned run of one sync on the local engine at the same moment:
    exactly one runs (to success), the other gets SyncAlreadyRunning and writes nothing (no run,
    no event, no bucket, no batch); the destination has every row once."""
    ws = dfsync.Workspace(ws_target)
    dest = FaultyDestination(make_dest("duckdb", tmp_path, "part"), sleep=0.1)
    src, one, part = _syncs(ws, tmp_path, "duckdb", "insert", n=600, dest=dest)
    ws.close()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_AT_ONCE, ws_target, str(go)], env=env_with_repo(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()
    go.write_text("")
    outs = [p.communicate(timeout=300) for p in procs]
    said = sorted(out.split(" ", 1)[0] for out, _ in outs)
    assert said == ["ran", "refused"], outs
    ran = next(out for out, _ in outs if out.startswith("ran")).split()
    refused = next(out for out, _ in outs if out.startswith("refused"))
    assert ran[2] == "success", outs
    assert f"run {ran[1]}" in refused or "already" in refused, refused
    ws = dfsync.Workspace(ws_target)
    sync = ws.sync("part")
    assert sync.runs()["run_id"].to_list() == [int(ran[1])]
    assert sync.events().filter(pl.col("detail").str.starts_with("run created")).height == 1
    assert ws.sql("SELECT DISTINCT run_id FROM buckets").to_series().to_list() == [int(ran[1])]
    assert ws.sql("SELECT count(*) FROM batches WHERE run_id <> ?", [int(ran[1])]).item() == 0
    got = read_dest("duckdb", tmp_path, "part")
    assert got.height == 600 and got["id"].n_unique() == 600
    assert sync.run(progress=False).counts["sent"] == 0


@pytest.mark.slow
def test_partitioned_run_into_postgres_equals_one_process_at_scale(tmp_path, pg_server, pg_uri):
    """N=8 on the local engine against one process, into PostgreSQL (upsert): the same table (an
    order-free checksum of every row), counters and delivered state; then 1% changed, the same
    again; then nothing sent. DFSYNC_TEST_EQUIVALENCE_ROWS sets the size (2,000,000 for the issue's
    figure; the default keeps the slow suite short)."""
    n = int(os.environ.get("DFSYNC_TEST_EQUIVALENCE_ROWS", "300000"))
    src = tmp_path / "src.parquet"

    def source(version: int) -> pl.DataFrame:  # version 2: every 100th row changed
        ids = pl.int_range(0, n, eager=True)
        changed = (ids % 100 == 0) & (version > 1)
        return pl.DataFrame({"id": ids}).with_columns(
            name=pl.format("row {} v{}", pl.col("id"), pl.when(changed).then(version).otherwise(1)),
            value=pl.when(pl.col("id") % 7 == 0).then(None).otherwise(pl.col("id") * 0.5 + changed.cast(pl.Int64) * version))

    source(1).write_parquet(src)
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    kw = dict(source=dfsync.sources.files(str(src)), primary_key="id", destination_mode="upsert")
    one = ws.create_sync("one", destination=dfsync.destinations.postgres(pg_uri, table="one"), **kw)
    part = ws.create_sync("part", destination=dfsync.destinations.postgres(pg_uri, table="part"), partitions=8, **kw)
    engine = dfsync.engines.local(processes=2)
    db = pg_uri.rsplit("/", 1)[1]

    def checksum(table: str) -> tuple:
        return tuple(pg_server.execute(f"SELECT count(*), count(DISTINCT id), sum(hashtext(id::text || '|' || "
                                       f"name || '|' || coalesce(value::text, '-'))::numeric) FROM {table}",
                                       dbname=db)[0])

    try:
        for version in (1, 2):
            source(version).write_parquet(src)
            r1, r2 = one.run(progress=False), part.run(progress=False, engine=engine)
            assert r1.status == r2.status == "success", (r1.error, r2.error)
            assert {k: r1.counts[k] for k in COUNTERS} == {k: r2.counts[k] for k in COUNTERS}
            assert checksum("one") == checksum("part") and checksum("part")[:2] == (n, n)
            assert r2.buckets()["state"].to_list() == ["done"] * 8
        assert r2.counts["sent"] == r2.counts["updated"] == n // 100
        assert one.delivered().sort("id").equals(part.delivered().sort("id"))
        assert part.run(progress=False, engine=engine).counts["sent"] == 0
    finally:
        engine.shutdown()


UNGUARDED_SCRIPT = """
import sys
import polars as pl
import dfsync
# no `if __name__ == "__main__":` guard, as in many a user's script: its top level must run once
with open(sys.argv[2], "a") as marker:
    marker.write("top level ran\\n")
ws = dfsync.Workspace(sys.argv[1] + "/ws.duckdb")
df = pl.DataFrame({"id": list(range(400)), "v": [i * 0.5 for i in range(400)]})
sync = ws.create_sync("s", source=df, destination=dfsync.destinations.parquet(sys.argv[1] + "/out"),
                      primary_key="id", destination_mode="mirror", partitions=4, if_exists="update")
run = sync.run(progress=False, engine=dfsync.engines.local(processes=2))
print("ran", run.status.value, run.counts["sent"], flush=True)
"""


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """Spawned workers would re-run a script's top level (creating the sync and starting the run
    again in every worker); the local engine starts them with the script's main module hidden."""
    script, marker = tmp_path / "user_script.py", tmp_path / "marker.txt"
    script.write_text(UNGUARDED_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path), str(marker)], env=env_with_repo(),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ran success 400" in out.stdout, out.stdout + out.stderr
    assert marker.read_text().splitlines() == ["top level ran"], out.stderr
    back = pl.read_parquet(str(tmp_path / "out" / "**" / "*.parquet")).sort("id")
    assert back["id"].to_list() == list(range(400)) and back["v"].to_list() == [i * 0.5 for i in range(400)]

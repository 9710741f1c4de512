"""Chaos on Ray (slow): Ray workers SIGKILLed every few seconds and the driver once, through one
partitioned run into PostgreSQL; every row arrives exactly once.

DFSYNC_TEST_CHAOS_ROWS sets the size (the issue's figure is 10,000,000; the default keeps the
slow suite short), DFSYNC_TEST_CHAOS_EVERY the seconds between two worker kills."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import polars as pl
import psutil
import pytest

import dfsync
from tests.faulty import env_with_repo
from tests.plugins.ray_cluster import ray_task_workers

ROWS = int(os.environ.get("DFSYNC_TEST_CHAOS_ROWS", "1000000"))
EVERY = float(os.environ.get("DFSYNC_TEST_CHAOS_EVERY", "3"))
PARTITIONS = 8

DRIVER = """
import json, sys
import dfsync
ws = dfsync.Workspace(sys.argv[1])
sync = ws.sync("chaos")
engine = dfsync.engines.ray(address="auto")
for _ in range(int(sys.argv[2])):  # sync.run() until success (a bucket whose workers all died pauses the run)
    run = sync.run(progress=False, engine=engine)
    print(json.dumps({"run": run.id, "status": run.status.value, "error": run.error, "sent": run.counts["sent"]}),
          flush=True)
    if run.status == "success":
        break
"""


class Chaos(threading.Thread):
    """SIGKILLs a random Ray worker that is running a task (reading a split of the source, or
    writing a bucket), every ``every`` seconds."""

    def __init__(self, every: float, seed: int = 21) -> None:
        super().__init__(daemon=True)
        self.every, self.rng, self.stop = every, random.Random(seed), threading.Event()
        self.kills: list[tuple[float, int, str]] = []  # (when, pid, task) of workers seen running a task, then gone
        self.failures: list[str] = []

    def run(self) -> None:
        pause = 0.0  # the first worker seen busy is killed at once, each next one a few seconds later
        while not self.stop.wait(pause):
            busy = ray_task_workers("read_task", "send_bucket")
            if not busy:
                pause = 0.2  # look again soon: workers are busy only part of the run
                continue
            pause = self.every * self.rng.uniform(0.5, 1.5)
            victim = self.rng.choice(busy)
            try:
                task = " ".join(victim.cmdline()).split()[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait(30)
            except psutil.NoSuchProcess:
                continue  # it ended on its own meanwhile: not counted as a kill
            except psutil.Error as exc:
                self.failures.append(f"{victim.pid}: {exc!r}")
                continue
            self.kills.append((time.monotonic(), victim.pid, task))
            print(f"chaos: killed Ray worker {victim.pid} running {task} ({len(self.kills)} so far)", flush=True)


def source(n: int) -> pl.DataFrame:
    ids = pl.int_range(0, n, eager=True)
    return pl.DataFrame({"id": ids}).with_columns(
        name=pl.format("row {}", pl.col("id")),
        value=pl.when(pl.col("id") % 7 == 0).then(None).otherwise(pl.col("id") * 0.25))


def checksum(df: pl.DataFrame) -> tuple[int, int, int]:
    """Row count and two order-free checksums of the rows (sums of two independent row hashes)."""
    df = df.select(pl.col("id").cast(pl.Int64), pl.col("name").cast(pl.String), pl.col("value").cast(pl.Float64))
    return (df.height, int((df.hash_rows(seed=1) % 2**32).sum()), int((df.hash_rows(seed=2) % 2**32).sum()))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_ray_workers_and_driver_killed_through_a_run_every_row_once(tmp_path, local_ray, pg_server, pg_uri):
    src = tmp_path / "src.parquet"
    source(ROWS).write_parquet(src)
    want = checksum(pl.read_parquet(src))
    ws_path = str(tmp_path / "ws.duckdb")
    ws = dfsync.Workspace(ws_path)
    sync = ws.create_sync("chaos", source=dfsync.sources.files(str(src)), primary_key="id",
                          destination=dfsync.destinations.postgres(pg_uri, table="chaos"),
                          destination_mode="insert", partitions=PARTITIONS)
    run_key_prefix = f"chaos#{sync.id}/"
    ws.close()
    db = pg_uri.rsplit("/", 1)[1]

    def ledger(sql: str) -> list[tuple]:
        exists = pg_server.execute("SELECT to_regclass('_dfsync_batches') IS NOT NULL", dbname=db)[0][0]
        return pg_server.execute(sql, dbname=db) if exists else []

    def driver(runs: int) -> subprocess.Popen:
        # splits forced: the workers of this one-host cluster are killed while they read too
        return subprocess.Popen([sys.executable, "-c", DRIVER, ws_path, str(runs)],
                                env={**env_with_repo(), "DFSYNC_SPLIT_READS": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    chaos = Chaos(EVERY)
    chaos.start()
    try:
        # the first driver is SIGKILLed once a quarter of the batches landed in the destination
        first = driver(1)
        expected_batches = ROWS // 100_000
        deadline = time.monotonic() + 1800
        while True:
            landed = ledger("SELECT count(*) FROM _dfsync_batches WHERE batch_no > 0")
            if landed and landed[0][0] >= max(1, expected_batches // 4):
                break
            assert first.poll() is None, ("the first driver ended before it was killed", first.communicate())
            assert time.monotonic() < deadline, "no batch landed in 30 minutes"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(60)
        killed_driver_at = landed[0][0]
        # a new driver process resumes the run (and runs it again while buckets are lost to the kills)
        second = driver(30)
        out = ""
        for line in second.stdout:  # each sync.run() of the second driver
            print("driver:", line.strip(), flush=True)
            out += line
        err = second.stderr.read()
        second.wait(60)
    finally:
        chaos.stop.set()
        chaos.join(60)
    assert second.returncode == 0, err[-3000:]
    runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert runs and runs[-1]["status"] == "success", (runs, err[-3000:])
    assert {r["run"] for r in runs} == {runs[0]["run"]}, "the killed driver's run was resumed, not a new one"
    tasks = sorted({t for _, _, t in chaos.kills})
    print(f"chaos: {ROWS:,} rows, {len(chaos.kills)} Ray workers killed ({tasks}), the driver killed once "
          f"({killed_driver_at} batches landed), {len(runs)} sync.run() in the second driver")
    assert not chaos.failures, chaos.failures
    assert chaos.kills, "the chaos thread killed no Ray worker running a task"

    # every row once, with its values: count, order-free checksums, no key twice
    got = pg_server.read(pg_uri, "SELECT id, name, value FROM chaos")
    assert got["id"].n_unique() == got.height, "a key was delivered twice"
    assert checksum(got) == want
    ws = dfsync.Workspace(ws_path)
    sync = ws.sync("chaos")
    run = sync.last_run()
    assert run.id == runs[0]["run"] and run.status == "success"
    assert (run.counts["sent"], run.counts["succeeded"], run.counts["failed"]) == (ROWS, ROWS, 0)
    assert run.buckets()["state"].to_list() == ["done"] * PARTITIONS
    # the destination's ledger and the workspace agree batch for batch
    in_ledger = sorted(b for (b,) in ledger(f"SELECT batch_no FROM _dfsync_batches WHERE batch_no > 0 "
                                             f"AND run_key LIKE '{run_key_prefix}{run.id}%'"))
    in_ws = ws.sql("SELECT batch_no, status, rows FROM batches WHERE run_id = ? ORDER BY batch_no", [run.id])
    assert set(in_ws["status"].to_list()) <= {"committed", "discarded"}, in_ws["status"].value_counts()
    assert in_ledger == in_ws.filter(pl.col("status") == "committed")["batch_no"].to_list(), in_ws["status"].value_counts()
    assert in_ws.filter(pl.col("status") == "committed")["rows"].sum() == ROWS
    assert sync.delivered().height == ROWS
    # and the next run sends nothing
    again = sync.run(progress=False, engine=dfsync.engines.ray(address="auto"))
    assert again.status == "success" and again.counts["sent"] == 0

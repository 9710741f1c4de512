"""The runner's destination writer: batches on background threads, in turn, stopping at a failure."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

import dfsync
from dfsync._writer import SPLIT_MIN_ROWS, DestinationWriter, NotWritten, landed
from dfsync.destinations.base import BatchResult, WriteBatch


class Recording:
    """A session that notes which session and thread wrote each batch."""

    def __init__(self, log: list, parallel: int, fail_on: int | None = None, name: str = "s0") -> None:
        self.log, self.parallel_writes, self.fail_on, self.name = log, parallel, fail_on, name
        self.closed = False
        self.forks = 0

    def fork(self) -> Recording:
        self.forks += 1
        return Recording(self.log, self.parallel_writes, self.fail_on, f"s{self.forks}")

    def write(self, batch: WriteBatch) -> BatchResult:
        time.sleep(0.01)
        if batch.batch_no == self.fail_on:
            raise RuntimeError("refused")
        self.log.append((batch.batch_no, self.name, threading.current_thread().name))
        return BatchResult()

    def close(self) -> None:
        self.closed = True


def batch(n: int) -> WriteBatch:
    return WriteBatch(n, pa.Table.from_batches([], schema=pa.schema([("id", pa.int64())])))


def test_one_session_writes_in_order_off_the_calling_thread():
    log: list = []
    w = DestinationWriter(Recording(log, 1))
    futures = [w.submit(batch(i)) for i in range(1, 6)]
    for f in futures:
        f.result(5)
    w.close()
    assert [b for b, _, _ in log] == [1, 2, 3, 4, 5]
    assert {s for _, s, _ in log} == {"s0"}
    assert threading.current_thread().name not in {t for _, _, t in log}


def test_parallel_sessions_take_batches_in_turn_and_forks_are_closed():
    log: list = []
    first = Recording(log, 2)
    w = DestinationWriter(first)
    assert w.depth == 2
    for f in [w.submit(batch(i)) for i in range(1, 7)]:
        f.result(5)
    forked = w.sessions[1]
    w.close()
    assert {b: s for b, s, _ in log} == {1: "s0", 2: "s1", 3: "s0", 4: "s1", 5: "s0", 6: "s1"}
    assert first.forks == 1 and forked.closed and not first.closed  # the runner closes its own


def test_a_one_batch_run_opens_no_second_connection():
    first = Recording([], 2)
    w = DestinationWriter(first)
    w.submit(batch(1)).result(5)
    w.close()
    assert first.forks == 0


def test_no_write_is_attempted_after_a_failure():
    log: list = []
    w = DestinationWriter(Recording(log, 1, fail_on=2))
    futures = [w.submit(batch(i)) for i in range(1, 5)]
    assert futures[0].result(5) is not None
    with pytest.raises(RuntimeError):
        futures[1].result(5)
    for f in futures[2:]:
        with pytest.raises(NotWritten):
            f.result(5)
    w.close()
    assert [b for b, _, _ in log] == [1]
    assert landed(futures[0]) and not landed(futures[1]) and not landed(futures[2])


def test_postgres_writes_two_batches_at_once_and_lands_every_row(pg_server, pg_uri, tmp_path):
    """Two COPY streams on two connections; the run is exact and every batch is in the ledger."""
    import polars as pl

    def sql(q: str) -> list[tuple]:
        return pg_server.execute(q, dbname=pg_uri.rsplit("/", 1)[1])

    df = pl.DataFrame({"id": list(range(1000)), "v": [f"v{i}" for i in range(1000)]})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")

    def run_with(frame: pl.DataFrame, batch_size: int) -> dfsync.SyncRun:
        sync = ws.create_sync("two", source=dfsync.sources.frame(frame),
                              destination=dfsync.destinations.postgres(pg_uri, table="two_writers"),
                              primary_key="id", destination_mode="upsert", batch_size=batch_size)
        return sync.run(progress=False)

    run = run_with(df, 100)
    assert run.status == "success", run.error
    assert sql("SELECT count(*), count(DISTINCT id) FROM two_writers") == [(1000, 1000)]
    batches = [r[0] for r in sql("SELECT batch_no FROM _dfsync_batches WHERE batch_no > 0 ORDER BY 1")]
    assert batches == list(range(1, 11))
    # the key the first load deferred was built once every batch had landed
    assert sql("SELECT count(*) FROM pg_indexes WHERE tablename = 'two_writers'") == [(1,)]
    df2 = df.with_columns(pl.when(pl.col("id") % 7 == 0).then(pl.lit("changed")).otherwise(pl.col("v")).alias("v"))
    run = run_with(df2, 10)
    assert run.status == "success" and run.counts["updated"] == run.counts["sent"] == 143  # 15 batches
    assert dict(sql("SELECT id, v FROM two_writers")) == dict(zip(df2["id"].to_list(), df2["v"].to_list(), strict=True))


@pytest.mark.parametrize(("parallel", "inline", "total", "want"), [
    (2, False, 30_000, 15_000),             # a re-sync's change set: one share per connection
    (2, False, 150_000, 75_000),            # balanced, not 100k + 50k
    (2, False, 2_000_000, 100_000),         # never above batch_size
    (2, False, 2 * SPLIT_MIN_ROWS - 2, 100_000),  # shares below the floor: not split
    (3, False, 60_000, 20_000),
    (1, False, 30_000, 100_000),            # one connection: batch_size as given
    (2, True, 30_000, 100_000),             # inline writes (HTTP): as given
])
def test_batch_rows_splits_a_small_run_across_the_sessions(parallel, inline, total, want):
    w = DestinationWriter(Recording([], parallel), inline=inline)
    assert w.batch_rows(100_000, total) == want
    assert w.batch_rows(1_000, total) == min(1_000, want)  # a smaller batch_size still rules


def test_postgres_applies_a_mid_size_change_on_both_connections(pg_server, pg_uri, tmp_path):
    """A change set smaller than two batches is split so both connections apply a share,
    and every changed row lands exactly once."""
    import polars as pl

    def sql(q: str) -> list[tuple]:
        return pg_server.execute(q, dbname=pg_uri.rsplit("/", 1)[1])

    n = 3 * SPLIT_MIN_ROWS
    df = pl.DataFrame({"id": list(range(n)), "v": ["a"] * n})
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")

    def run_with(frame: pl.DataFrame) -> dfsync.SyncRun:
        sync = ws.create_sync("split", source=dfsync.sources.frame(frame),
                              destination=dfsync.destinations.postgres(pg_uri, table="split_writes"),
                              primary_key="id", destination_mode="upsert")
        return sync.run(progress=False)

    assert run_with(df).status == "success"
    run = run_with(df.with_columns(pl.when(pl.col("id") % 3 > 0).then(pl.lit("b")).otherwise(pl.col("v")).alias("v")))
    changed = 2 * SPLIT_MIN_ROWS
    assert run.status == "success" and run.counts["updated"] == run.counts["succeeded"] == changed
    ledger = sql("SELECT batch_no, rows FROM _dfsync_batches WHERE batch_no > 0 AND run_key LIKE '%/2@%' "
                 "ORDER BY 1")
    assert ledger == [(1, changed // 2), (2, changed // 2)]
    assert sql("SELECT v, count(*) FROM split_writes GROUP BY v ORDER BY v") == [("a", n - changed), ("b", changed)]


def test_inline_writes_happen_on_the_calling_thread():
    log: list = []
    w = DestinationWriter(Recording(log, 2), inline=True)
    assert w.depth == 0  # each inline write is confirmed before the next batch is read
    assert w.submit(batch(1)).result(0) is not None
    with pytest.raises(RuntimeError):
        DestinationWriter(Recording([], 1, fail_on=1), inline=True).submit(batch(1))
    w.close()
    assert log == [(1, "s0", threading.current_thread().name)]

"""Schedules and the scheduler, on a real workspace file, real Parquet sources and a DuckDB destination.

Time is injected with ``Scheduler(clock=...)`` so "ten hours later" needs no waiting.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.errors import ConfigError
from dfsync.schedule import Scheduler, parse_schedule
from dfsync.sources._frame import FrameSource

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


# ---------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("every minute", timedelta(minutes=1)),
        ("every 15 minutes", timedelta(minutes=15)),
        ("Every  2 Hours", timedelta(hours=2)),
        ("every day", timedelta(days=1)),
        ("every 3 days", timedelta(days=3)),
        ("hourly", timedelta(hours=1)),
        ("daily", timedelta(days=1)),
        ("weekly", timedelta(weeks=1)),
        ("every 1 minute", timedelta(minutes=1)),
    ],
)
def test_intervals_count_from_the_given_time(text: str, delta: timedelta) -> None:
    s = parse_schedule(text)
    assert s is not None and s.kind == "interval"
    assert s.next_after(T0) == T0 + delta
    assert s.next_after(T0).tzinfo is not None


def test_none_is_manual() -> None:
    assert parse_schedule(None) is None


def test_cron_gives_wall_clock_times() -> None:
    s = parse_schedule("*/15 * * * *")
    assert s is not None and s.kind == "cron"
    local = datetime(2024, 3, 1, 12, 7, 30).astimezone()
    nxt = s.next_after(local)
    assert nxt.tzinfo is not None
    assert nxt == local.replace(minute=15, second=0)
    # strictly after: on a boundary, the next boundary
    assert s.next_after(nxt) == nxt + timedelta(minutes=15)
    daily = parse_schedule("0 6 * * *")
    assert daily is not None
    got = daily.next_after(local)
    assert (got.hour, got.minute) == (6, 0) and got > local


@pytest.mark.parametrize("bad", ["every", "every 0 minutes", "every fortnight", "sometimes", "* * *",
                                 "61 * * * *", "", "every -5 minutes",
                                 "0 0 31 2 *"])  # valid fields, but no date matches: was a bare CroniterBadDateError
def test_bad_schedules_list_the_accepted_forms(bad: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_schedule(bad)
    msg = str(ei.value)
    assert "every 15 minutes" in msg and "*/15 * * * *" in msg


def test_next_after_refuses_naive_datetimes() -> None:
    s = parse_schedule("hourly")
    assert s is not None
    with pytest.raises(ValueError, match="timezone-aware"):
        s.next_after(datetime(2024, 1, 1))


# ---------------------------------------------------------------------- fixtures
#: the tests using ``setup`` run on a workspace file and on a PostgreSQL workspace
WORKSPACE_STORES = ("duckdb", "postgres")


@pytest.fixture
def setup(tmp_path, ws_target):
    src = tmp_path / "customers.parquet"
    pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"]}).write_parquet(src)
    warehouse = tmp_path / "warehouse.duckdb"
    ws = dfsync.Workspace(ws_target)
    yield ws, src, warehouse
    ws.close()


def _make(ws, src, warehouse, name="customers", schedule="every 15 minutes", table=None):
    return ws.create_sync(name, source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(warehouse), table=table or name),
                          primary_key="id", schedule=schedule)


def _rows(warehouse, table) -> int:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    finally:
        con.close()


# ---------------------------------------------------------------------- create_sync
def test_create_sync_stores_and_shows_the_next_run(setup) -> None:
    """A scheduled sync that never ran is due at once (its next run is when it was created), so the
    scheduler's first pass runs it: it was due one interval later, and a first `dfsync scheduler --once`
    from cron found nothing to do. Then intervals count from the end of each run."""
    ws, src, warehouse = setup
    before = datetime.now(timezone.utc)
    sync = _make(ws, src, warehouse)
    cron = _make(ws, src, warehouse, name="at_six", schedule="0 6 * * *")
    after = datetime.now(timezone.utc)
    nxt = sync.next_run_at
    assert nxt is not None
    assert before <= nxt <= after and before <= cron.next_run_at <= after
    row = ws.syncs().filter(pl.col("name") == "customers").row(0, named=True)
    assert row["schedule"] == "every 15 minutes"
    assert row["next_run_at"] == nxt
    clock = Clock(datetime.now(timezone.utc))
    assert sorted(r.sync_name for r in Scheduler(ws, clock=clock).run_pending()) == ["at_six", "customers"]
    assert sync.next_run_at == clock.t + timedelta(minutes=15) and cron.next_run_at.astimezone().hour == 6
    # a new version of a sync that never ran is still due at once; of one that ran, an interval on
    manual = _make(ws, src, warehouse, name="manual", schedule=None)
    manual = _make(ws, src, warehouse, name="manual", schedule="every 2 hours")
    assert before <= manual.next_run_at <= datetime.now(timezone.utc)
    # run by hand before the scheduler's first pass: the interval counts from that run
    assert manual.run(progress=False).status == "success"
    assert manual.next_run_at > datetime.now(timezone.utc) + timedelta(minutes=110)
    sync = _make(ws, src, warehouse, schedule="every 30 minutes")
    assert sync.next_run_at > datetime.now(timezone.utc) + timedelta(minutes=25)


def test_create_sync_rejects_a_bad_schedule_and_stores_nothing(setup) -> None:
    ws, src, warehouse = setup
    with pytest.raises(ConfigError, match="accepted"):
        _make(ws, src, warehouse, schedule="every now and then")
    with pytest.raises(ConfigError, match="never comes round"):
        _make(ws, src, warehouse, schedule="0 12 30 2 *")  # February 30th
    assert ws.syncs().height == 0


def test_manual_sync_has_no_next_run_and_is_never_due(setup) -> None:
    ws, src, warehouse = setup
    sync = _make(ws, src, warehouse, schedule=None)
    assert sync.next_run_at is None
    sched = Scheduler(ws, clock=Clock(T0 + timedelta(days=365 * 10)))
    assert sched.run_pending() == []
    assert sync.runs().height == 0


# ---------------------------------------------------------------------- scheduler
def test_due_sync_runs_once_and_next_run_counts_from_now(setup) -> None:
    ws, src, warehouse = setup
    sync = _make(ws, src, warehouse)
    planned = sync.next_run_at
    clock = Clock(planned - timedelta(seconds=1))
    sched = Scheduler(ws, clock=clock)
    assert sched.run_pending() == []  # not due yet
    assert sync.runs().height == 0
    clock.t = planned + timedelta(seconds=5)
    runs = sched.run_pending()
    assert [r.status.value for r in runs] == ["success"]
    assert sync.runs()["trigger"].to_list() == ["schedule"]
    assert _rows(warehouse, "customers") == 3
    assert sync.next_run_at == clock.t + timedelta(minutes=15)
    assert sched.run_pending() == []  # nothing due at the same instant


def test_missed_runs_lead_to_one_catch_up_run(setup) -> None:
    ws, src, warehouse = setup
    sync = _make(ws, src, warehouse)
    # the scheduler was off for ten hours: 40 slots were missed
    clock = Clock(sync.next_run_at + timedelta(hours=10))
    sched = Scheduler(ws, clock=clock)
    assert len(sched.run_pending()) == 1
    assert len(sched.run_pending()) == 0
    assert sync.runs().height == 1
    assert sync.next_run_at == clock.t + timedelta(minutes=15)
    clock.t += timedelta(minutes=15)
    assert len(sched.run_pending()) == 1
    assert sync.runs().height == 2


def test_disabled_syncs_are_skipped(setup) -> None:
    ws, src, warehouse = setup
    a = _make(ws, src, warehouse, name="a")
    b = _make(ws, src, warehouse, name="b")
    due = max(a.next_run_at, b.next_run_at)
    b.disable()
    # a disabled sync shows no next run anywhere (it does not run until enabled)
    assert b.next_run_at is None and a.next_run_at is not None
    listed = dict(ws.syncs().select("name", "next_run_at").iter_rows())
    assert listed["b"] is None and listed["a"] is not None
    sched = Scheduler(ws, clock=Clock(due + timedelta(hours=1)))
    runs = sched.run_pending()
    assert [r.sync_name for r in runs] == ["a"]
    assert b.runs().height == 0
    b.enable()
    assert b.next_run_at is not None
    assert [r.sync_name for r in sched.run_pending()] == ["b"]


@pytest.mark.workspaces("duckdb")
def test_a_scheduler_engine_runs_only_partitioned_syncs_buckets(setup) -> None:
    """Scheduler(engine=...) (`dfsync scheduler --engine local:2`): a due partitioned sync sends its
    buckets from worker processes; a due sync without buckets runs here as always (an engine given
    to it would be refused)."""
    ws, src, warehouse = setup
    plain = _make(ws, src, warehouse, name="plain")
    part = ws.create_sync("part", source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(warehouse), table="part"),
                          primary_key="id", schedule="every 15 minutes", partitions=2)
    clock = Clock(max(plain.next_run_at, part.next_run_at) + timedelta(minutes=1))
    runs = {r.sync_name: r for r in Scheduler(ws, clock=clock, engine=dfsync.engines.local(2)).run_pending()}
    assert {n: r.status.value for n, r in runs.items()} == {"plain": "success", "part": "success"}
    assert _rows(warehouse, "plain") == 3 and _rows(warehouse, "part") == 3
    assert any("dfsync.engines.local(processes=2)" in d for d in runs["part"].events()["detail"].to_list())
    assert not any("dfsync.engines" in (d or "") for d in runs["plain"].events()["detail"].to_list())


def test_a_failed_run_does_not_stop_the_other_syncs(setup, tmp_path, caplog) -> None:
    """... and says why in one warning (it was an INFO line with the status and counts alone: a
    script's ws.scheduler() showed nothing, dfsync scheduler's log no reason)."""
    import logging

    caplog.set_level(logging.INFO, logger="dfsync")
    ws, src, warehouse = setup
    broken_src = tmp_path / "broken.parquet"
    pl.DataFrame({"id": [1], "name": ["x"]}).write_parquet(broken_src)
    broken = _make(ws, broken_src, warehouse, name="broken")
    good = _make(ws, src, warehouse, name="good")
    broken_src.unlink()  # the source disappears: that run fails
    clock = Clock(max(broken.next_run_at, good.next_run_at) + timedelta(minutes=1))
    runs = {r.sync_name: r.status.value for r in Scheduler(ws, clock=clock).run_pending()}
    assert runs == {"broken": "failed", "good": "success"}
    assert broken.next_run_at == clock.t + timedelta(minutes=15)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("dfsync")]
    assert len(warned) == 1 and warned[0].startswith("sync 'broken': run ") and " failed: " in warned[0] \
        and "broken.parquet" in warned[0], warned


def test_a_sync_already_running_is_not_started_again(setup) -> None:
    ws, src, warehouse = setup

    class GatedSource(FrameSource):
        """A frame source whose read waits for the test to open the gate."""

        gate = threading.Event()
        entered = threading.Event()
        armed = False

        def scan(self, cursor=None):
            if self.armed:
                GatedSource.entered.set()
                GatedSource.gate.wait(60)
            return super().scan(cursor)

    source = GatedSource(pl.DataFrame({"id": [1, 2], "name": ["a", "b"]}))
    sync = ws.create_sync("gated", source=source, primary_key="id", schedule="every 15 minutes",
                          destination=dfsync.destinations.duckdb(str(warehouse), table="gated"))
    GatedSource.armed = True
    first = sync.run(progress=False, background=True)
    assert GatedSource.entered.wait(60)
    clock = Clock(sync.next_run_at + timedelta(minutes=1))
    try:
        assert Scheduler(ws, clock=clock).run_pending() == []
    finally:
        GatedSource.gate.set()
        first.wait(60)
    assert first.status.value == "success"
    assert sync.runs().height == 1  # the scheduler added no run
    # and the slot it skipped is planned again from now
    assert sync.next_run_at == clock.t + timedelta(minutes=15)


def test_two_schedulers_share_a_due_run(setup) -> None:
    """A notebook's ws.scheduler() and `dfsync scheduler` on one workspace: one run per slot."""
    ws, src, warehouse = setup
    sync = _make(ws, src, warehouse)
    clock = Clock(sync.next_run_at + timedelta(minutes=1))
    one, two = Scheduler(ws, clock=clock), Scheduler(ws, clock=clock)
    due_for_two = two.due()
    assert len(one.run_pending()) == 1
    # `two` read the sync as due before `one` ran it; its claim must fail
    assert two._run_one(due_for_two[0]) is None
    assert sync.runs().height == 1


def test_a_claim_another_thread_is_changing_is_lost_not_raised(tmp_path) -> None:
    """Two schedulers of one process (a notebook cell with ws.scheduler() run twice) claim a slot
    at once: DuckDB refused the second update of the row (a write conflict), and the pass failed
    with the raw TransactionException. The one that lost the race skips the slot."""
    pl.DataFrame({"id": [1]}).write_parquet(tmp_path / "s.parquet")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = _make(ws, tmp_path / "s.parquet", tmp_path / "w.duckdb")
    slot, claimed = sync.next_run_at, []
    with ws.store._transaction() as con:  # the other scheduler, its claim not committed yet
        con.execute("UPDATE syncs SET next_run_at = ? WHERE id = ?", [slot + timedelta(minutes=15), sync.id])
        other = threading.Thread(target=lambda: claimed.append(
            ws.store.claim_next_run(sync.id, slot, slot + timedelta(minutes=16))))
        other.start()
        other.join()
    assert claimed == [False]
    assert ws.sync(sync.name).next_run_at == slot + timedelta(minutes=15)
    ws.close()


def test_background_scheduler_thread_runs_due_syncs(setup) -> None:
    ws, src, warehouse = setup
    sync = _make(ws, src, warehouse)
    done = threading.Event()
    sched = ws.scheduler(poll_seconds=0.05, clock=Clock(sync.next_run_at + timedelta(minutes=1)),
                         on_run=lambda run: done.set())
    try:
        assert sched.running
        assert done.wait(60)
    finally:
        sched.stop(timeout=60)
    assert not sched.running
    assert sync.runs()["trigger"].to_list() == ["schedule"]
    assert _rows(warehouse, "customers") == 3

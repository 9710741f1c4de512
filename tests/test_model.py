"""Model-based test: random source histories, interruptions and re-runs (hypothesis stateful).

The model is the source itself plus a little bookkeeping about the one paused run a sync
may have. Hypothesis interleaves:

* new source versions — inserts, updates, deletes; nulls in every non-key column; Unicode
  and emoji keys and values; NaN and infinity; cursor timestamps that often stay equal;
* runs that are interrupted (``KeyboardInterrupt`` raised by :class:`FaultyDestination`
  before or after the destination applied the n-th batch -> the run is ``paused``);
* losing the paused run's staged rows (as if its process had died);
* plain runs, which resume a paused run or start a new one.

Invariants checked after every run that ended in ``success``:

* a run that read the latest source version leaves the destination equal to it (mirror,
  full refresh), or — incremental upsert — every row of the latest version is in the
  destination as it is now and every other row is one the source once had; no duplicates;
* counters add up: ``sent == succeeded + failed + skipped``; for a full refresh
  ``queried == inserted + updated + unchanged + invalid``; a run that was never interrupted
  sent exactly ``inserted + updated (+ deleted)``;
* a further run with an unchanged source sends nothing.

The default suite runs a modest number of examples; ``-m slow`` runs many more, and the same
model with its workspace on PostgreSQL (a fresh schema per example).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import dfsync
import dfsync._registry
from tests.faulty import FaultyDestination
from tests.plugins.targets import TARGETS

BATCH = 3
SCHEMA = {"k": pl.String, "name": pl.String, "score": pl.Float64, "updated_at": pl.Datetime("us")}

keys = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=4) | \
    st.sampled_from(["🚀", "é", "e\u0301", "ß", "Ω", "'; DROP TABLE t; --", '"q"', "a b"])
names = st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"),
                            max_size=6)
scores = st.none() | st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from([0.0, -0.0, 1.5])


#: destinations the model draws from; DFSYNC_MODEL_KINDS=postgres,duckdb (say) for a hunt that
#: includes PostgreSQL and its two-connection writer (test_model_many_examples only)
KINDS = [k.strip() for k in os.environ.get("DFSYNC_MODEL_KINDS", "duckdb,parquet,sqlite").split(",") if k.strip()]
_FIXTURES: dict[str, object] = {}  # pg_server, ws_db: handed over by the test that asked for it


def _workspace_target() -> str:
    """In memory (the model is about the engine's logic, and it is 10x faster there), or a fresh
    schema of the PostgreSQL database test_model_on_a_postgres_workspace hands over."""
    db = _FIXTURES.get("ws_db")
    return ":memory:" if db is None else f"{db}?schema=m_{uuid.uuid4().hex[:12]}"


#: checks the model draws (by name, so hypothesis prints them); with any but "none" the
#: destination comparison is skipped (rows may be quarantined) but the counters must add up
CHECKS = ["none", "score between", "name not_null + unique"]


def _checks(which: str) -> list | None:
    import dfsync.checks as dc

    return {"none": None, "score between": [dc.between("score", -1e6, 1e6)],
            "name not_null + unique": [dc.not_null("name"), dc.unique("name")]}[which]


class _Req:
    def __init__(self, kind: str) -> None:
        self.param = kind

    def getfixturevalue(self, name: str) -> object:
        return _FIXTURES[name]


class SyncModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dfsync-model-"))
        self.rows: dict[str, tuple] = {}  # the source now: key -> (name, score, updated_at)
        self.ever: dict[str, set] = {}  # key -> every row version the source ever had
        self.clock = datetime(2024, 1, 1)
        self.version = 0
        self.paused_version: int | None = None  # source version the paused run staged
        self.staging_alive = False
        self.interrupted_run: set[int] = set()

    # ------------------------------------------------------------------ set-up
    @initialize(kind=st.sampled_from(KINDS), incremental=st.booleans(),
                first=st.dictionaries(keys, st.tuples(names, scores), min_size=4, max_size=14),
                checks=st.sampled_from(CHECKS), on_invalid=st.sampled_from(["skip", "warn", "fail"]))
    def setup(self, kind: str, incremental: bool, first: dict, checks: str, on_invalid: str) -> None:
        self.kind = kind
        self.checks, self.on_invalid = checks, on_invalid
        self.rows = {k: (name, score, self.clock) for k, (name, score) in first.items()}
        self.ever = {k: {self._norm(v)} for k, v in self.rows.items()}
        self.incremental = incremental
        self.target = TARGETS[kind](_Req(kind), self.dir)
        self.ws = dfsync.Workspace(_workspace_target())
        self.dest = FaultyDestination(self.target.make("t"))
        self._define()

    def _define(self) -> None:
        """(Re)define the sync over the current source frame (a frame source is a snapshot)."""
        kw = dict(sync_mode="incremental", cursor_field="updated_at", destination_mode="upsert") \
            if self.incremental else dict(destination_mode="mirror")
        self.sync = self.ws.create_sync("model", source=dfsync.sources.frame(self.frame()), destination=self.dest,
                                        primary_key="k", batch_size=BATCH, allow_empty=True,
                                        checks=_checks(self.checks), on_invalid=self.on_invalid, **kw)

    def teardown(self) -> None:
        dfsync._registry.drop_live_staging()
        if hasattr(self, "ws"):
            self.ws.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def frame(self) -> pl.DataFrame:
        ks = sorted(self.rows)
        df = pl.DataFrame({"k": ks, "name": [self.rows[k][0] for k in ks],
                           "score": [self.rows[k][1] for k in ks],
                           "updated_at": [self.rows[k][2] for k in ks]}, schema=SCHEMA)
        if self.kind == "sqlite":  # SQLite cannot keep NaN: the documented fix sends NULL (docs/SCHEMA.md)
            df = df.with_columns(pl.col("score").fill_nan(None))
        if getattr(self, "extra", None) is not None:  # the source's schema changed (schema="evolve")
            df = df.with_columns(extra=pl.col("k").str.len_chars().cast(self.extra))
        return df

    @rule(dtype=st.sampled_from([None, pl.Int32, pl.Int64]))
    def schema_change(self, dtype: object) -> None:
        """A column appears, widens (int32 -> int64), narrows or disappears: every row is sent once more."""
        self.extra = dtype
        event(f"schema: extra {dtype}")
        self.version += 1
        self._define()

    # ------------------------------------------------------------------ source versions
    @rule(data=st.data())
    def new_version(self, data: st.DataObject) -> None:
        if data.draw(st.booleans(), label="clock advances"):  # else cursor timestamps stay equal
            self.clock += timedelta(seconds=data.draw(st.integers(1, 3), label="seconds"))
        existing = sorted(self.rows)
        for k in data.draw(st.lists(keys, max_size=6, unique=True), label="inserts"):
            if k not in self.rows:
                self.rows[k] = (data.draw(names), data.draw(scores), self.clock)
        if existing:
            for k in data.draw(st.lists(st.sampled_from(existing), max_size=4, unique=True), label="updates"):
                name, score, _ = self.rows[k]
                if data.draw(st.booleans(), label="change name"):
                    name = data.draw(names)
                else:
                    score = data.draw(scores)
                self.rows[k] = (name, score, self.clock)
            if not self.incremental:  # an incremental read cannot see deletes (create_sync refuses mirror)
                for k in data.draw(st.lists(st.sampled_from(existing), max_size=3, unique=True), label="deletes"):
                    self.rows.pop(k, None)
        for k, v in self.rows.items():
            self.ever.setdefault(k, set()).add(self._norm(v))
        self.version += 1
        self._define()

    # ------------------------------------------------------------------ runs
    @rule(n=st.integers(1, 4), after=st.booleans())
    def interrupted_run(self, n: int, after: bool) -> None:
        if after:
            self.dest.interrupt_after = n
        else:
            self.dest.interrupt_before = n
        try:
            run = self._run()
        except KeyboardInterrupt:
            run = self.sync.last_run()
            assert run.status == "paused", (run.status, run.error)
            self.interrupted_run.add(run.id)
            event(f"{self.kind}: paused")
            return
        finally:
            self.dest.interrupt_after = self.dest.interrupt_before = None
        self._after_success(run)  # fewer batches than n: the run simply finished

    @rule()
    def process_dies(self) -> None:
        """The paused run's process died: its staged rows are gone, the resume queries again."""
        if self.paused_version is None or not self.staging_alive:
            return
        dfsync._registry.drop_live_staging(self.ws.store.key, self.sync.last_run().id)
        self.staging_alive = False
        event("staging lost")

    @rule()
    def run(self) -> None:
        run = self._run()
        self._after_success(run)

    def _run(self) -> dfsync.SyncRun:
        resuming = self.paused_version is not None
        staged = self.paused_version if resuming and self.staging_alive else self.version
        try:
            run = self.sync.run(progress=False)
        except KeyboardInterrupt:
            self.paused_version, self.staging_alive = staged, True
            raise
        if run.status == "failed" and self.on_invalid == "fail" and self.checks != "none":
            _sums(run.counts)  # a run stopped by its checks adds up too
            assert run.counts["invalid"] > 0 and run.counts["sent"] == 0, (run.counts, run.error)
            assert run.records(status="invalid").height == run.counts["invalid"]
            return run
        assert run.status == "success", run.error
        self.last_staged = staged
        self.paused_version, self.staging_alive = None, False
        return run

    def _after_success(self, run: dfsync.SyncRun) -> None:
        c = run.counts
        _sums(c)
        if run.status == "failed":  # stopped by its checks (see _run)
            return
        assert c["failed"] == 0, run.records(status="failed")
        changes = c["inserted"] + c["updated"] + c["deleted"]
        if run.id not in self.interrupted_run:
            assert c["sent"] == changes, c
        else:  # the rows sent before the interruption are counted once, the rest on resume
            assert c["sent"] >= changes, c
        if self.last_staged == self.version and self.checks == "none":
            event(f"{self.kind} {'incremental' if self.incremental else 'mirror'}: destination checked"
                  + (" after a resume" if run.id in self.interrupted_run else ""))
            self._check_destination()
            again = self.sync.run(progress=False)
            assert again.status == "success" and again.counts["sent"] == 0, (again.counts, again.error)

    # ------------------------------------------------------------------ the check
    def _norm(self, v: tuple) -> tuple:
        name, score, ts = v
        if score is not None and math.isnan(score):
            score = None if self.kind == "sqlite" else "nan"  # SQLite stores NaN as NULL
        if score == 0.0:
            score = 0.0  # -0.0 == 0.0
        return (name, score, ts)

    def _dest_rows(self) -> dict[str, tuple]:
        got = self.target.read("t")
        if got.is_empty():
            return {}
        assert got.height == got["k"].n_unique(), "duplicate keys in the destination"
        if got.schema["updated_at"] == pl.String:  # SQLite keeps timestamps as ISO text
            got = got.with_columns(pl.col("updated_at").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f"))
        return {r["k"]: self._norm((r["name"], r["score"], r["updated_at"])) for r in got.iter_rows(named=True)}

    def _check_destination(self) -> None:
        got = self._dest_rows()
        want = {k: self._norm(v) for k, v in self.rows.items()}
        if not self.incremental:
            assert got == want
            return
        for k, v in want.items():
            assert got.get(k) == v, (k, got.get(k), v)
        for k, v in got.items():
            assert k in want or v in self.ever.get(k, ()), (k, v)

    @invariant()
    def no_run_left_running(self) -> None:
        if hasattr(self, "ws"):
            live = self.ws.sql("SELECT count(*) AS n FROM runs WHERE status IN "
                               "('started','querying','queued','in_progress')")["n"][0]
            assert live == 0


def _sums(c: dict) -> None:
    """STATES.md: both sums hold for every run, every policy, every destination."""
    assert c["sent"] == c["succeeded"] + c["failed"] + c["skipped"], c
    assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"], c


SyncModel.TestCase.settings = settings(max_examples=4, stateful_step_count=8, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow], derandomize=True)
test_model = SyncModel.TestCase


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_model_many_examples(request):
    from hypothesis.stateful import run_state_machine_as_test

    if "postgres" in KINDS:
        _FIXTURES["pg_server"] = request.getfixturevalue("pg_server")

    # derandomized: the same histories every build (a CI run must not depend on luck);
    # DFSYNC_MODEL_EXAMPLES raises the count for a longer exploration, and DFSYNC_MODEL_RANDOM=1
    # draws new histories each time (with -p no:cacheprovider --timeout=0 for a long hunt)
    n = int(os.environ.get("DFSYNC_MODEL_EXAMPLES", "12"))
    run_state_machine_as_test(SyncModel, settings=settings(
        max_examples=n, stateful_step_count=10, deadline=None,
        derandomize=os.environ.get("DFSYNC_MODEL_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow]))


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.workspaces("postgres")
def test_model_on_a_postgres_workspace(ws_target):
    """The default suite's examples with the workspace in a PostgreSQL schema: the same invariants."""
    from hypothesis.stateful import run_state_machine_as_test

    _FIXTURES["ws_db"] = ws_target.split("?", 1)[0]
    try:
        run_state_machine_as_test(SyncModel, settings=settings(
            max_examples=int(os.environ.get("DFSYNC_MODEL_EXAMPLES", "4")), stateful_step_count=8,
            deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]))
    finally:
        _FIXTURES.pop("ws_db", None)

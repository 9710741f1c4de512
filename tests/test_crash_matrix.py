"""SIGKILL a running sync at seeded random points, then recover: the destination is exact.

For every transactional destination (DuckDB, Parquet, SQLite, PostgreSQL, MySQL, Delta) and the modes
insert, upsert and mirror, a sync goes through two source versions. For each version a
seeded plan kills the sync process several times — while it reads the source
(``querying``), while validation runs (``queued``), before or after the destination
applied the n-th batch, at a random moment just after a batch (``jitter``), and around the
end of the run (``finish``) — then one ordinary run completes it. After every kill:

* opening the workspace leaves no run in ``started``/``querying``/``queued``/
  ``in_progress`` (a dead owner's run is ``paused`` if it was transferring, else ``failed``);

after the recovery run of each version:

* the destination equals the source version exactly (mirror/upsert), or holds every
  source row once (insert, whose versions only add rows) — no row lost, none duplicated;
* every run is terminal, and a further run sends nothing (the delivered state is exact).

The plan comes from ``DFSYNC_CRASH_SEED`` (default fixed); a failure prints the seed and
the plan so it can be replayed. Sync processes are forked from a warm parent (imports take most of a fresh
interpreter's life), so a kill point costs well under a second; the scenarios of a module share
that parent while it is idle (``warm_zygote``).

The whole matrix is ``slow`` (CI: ``pytest -m slow``); :func:`test_crash_points_smoke`
keeps three kill points in the default suite. The scenarios run on a workspace file and on a
PostgreSQL workspace (tests/plugins/workspaces.py); on PostgreSQL all of them under ``-m slow``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import polars as pl
import pytest

import dfsync
import dfsync._registry
import tests.faulty  # noqa: F401 - registers the faulty source/destination
from tests.faulty import FaultyDestination, FaultySource, env_with_repo

SEED = int(os.environ.get("DFSYNC_CRASH_SEED", "1310"))
ROWS = 120
BATCH = 10
KILLS_PER_VERSION = 4
#: phases whose kill lands before the transfer started (the run must end failed)
EARLY = ("querying", "queued")
BATCH_PHASES = ("before_write", "after_write", "jitter")
END = ("before_finish", "after_finish")
TRANSACTIONAL = ["duckdb", "parquet", "sqlite", "postgres", "mysql", "delta"]
WORKSPACE_STORES = ("duckdb", "postgres")
SLOW_WORKSPACE_STORES = ("postgres",)

#: A warm parent: it imports everything once, then forks one sync process per kill point
#: (``{"ws", "sync", "faults", "result"}`` on stdin; it answers "pid N", then "exit CODE").
#: The forked process is a real, separate process holding real files and connections; it
#: only skips the second of imports each fresh interpreter would spend.
ZYGOTE = """
import json, os, sys, traceback
import tests.faulty as faulty
import dfsync
import dfsync.checks, dfsync.staging, dfsync.runner
for mod in ("pandas", "dfsync.destinations._duckdb", "dfsync.destinations._parquet",
            "dfsync.destinations._postgres", "dfsync.destinations._sqlite",
            "dfsync._adbc", "adbc_driver_postgresql", "adbc_driver_sqlite",
            "dfsync.destinations._mysql", "pymysql", "dfsync.destinations._delta", "deltalake"):
    try:  # what a run imports lazily
        __import__(mod)
    except ImportError:
        pass
faulty.install_runner_hooks()
print("ready", flush=True)
for line in sys.stdin:
    spec = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulty.FAULTS.update(spec["faults"])
            run = dfsync.Workspace(spec["ws"]).sync(spec["sync"]).run(progress=False)
            out = {"status": run.status.value, "error": run.error}
            code = 0
        except BaseException:
            out = {"traceback": traceback.format_exc()}
        with open(spec["result"], "w") as fh:
            json.dump(out, fh)
        os._exit(code)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("exit", os.waitstatus_to_exitcode(status), flush=True)
"""


# ---------------------------------------------------------------------- data
def source_versions(mode: str, rng: random.Random) -> list[pl.DataFrame]:
    """Two versions: insert only adds rows; upsert adds and updates; mirror also deletes."""
    ids = list(range(ROWS))
    v1 = pl.DataFrame({
        "id": ids,
        "name": [f"row {i} ✓ {rng.randrange(1000)}" for i in ids],
        "value": [None if i % 17 == 0 else i * 0.25 for i in ids],
    })
    new = pl.DataFrame({
        "id": list(range(ROWS, ROWS + 25)),
        "name": [f"new {i} 🚀" for i in range(ROWS, ROWS + 25)],
        "value": [float(i) for i in range(ROWS, ROWS + 25)],
    })
    if mode == "insert":
        return [v1, pl.concat([v1, new])]
    changed = set(rng.sample(ids, 35))
    v2 = v1.with_columns(
        pl.when(pl.col("id").is_in(changed)).then(pl.col("name") + " v2").otherwise(pl.col("name")).alias("name"))
    if mode == "mirror":
        gone = set(rng.sample(sorted(set(ids) - changed), 15))
        v2 = v2.filter(~pl.col("id").is_in(gone))
    return [v1, pl.concat([v2, new])]


def pending_batches(mode: str, version: int) -> int:
    """Batches the version's changes make (what the plan may kill inside)."""
    if version == 0:
        return math.ceil(ROWS / BATCH)
    return math.ceil({"insert": 25, "upsert": 35 + 25, "mirror": 35 + 25 + 15}[mode] / BATCH)


@dataclass
class Kill:
    phase: str
    n: int | None = None
    delay: float = 0.0

    def spec(self, marker: str) -> dict:
        phase = "after_write" if self.phase == "jitter" else self.phase
        # jitter: no hold; the kill lands wherever the process is `delay` seconds later
        return {"phase": phase, "n": self.n, "marker": marker, "hold": 0 if self.phase == "jitter" else 30}


def plan_version(rng: random.Random, batches: int) -> list[Kill]:
    """KILLS_PER_VERSION kill points; batch kills first (they need rows left), end kills last."""
    phases = [rng.choice(EARLY + BATCH_PHASES + BATCH_PHASES + END) for _ in range(KILLS_PER_VERSION)]
    phases.sort(key=lambda p: (p in END, rng.random()))
    left = batches
    plan = []
    for p in phases:
        if p in BATCH_PHASES:
            if left < 2:  # not enough rows left to be sure to reach it: kill earlier instead
                p = rng.choice(EARLY)
            else:
                n = rng.randint(1, min(3, left - 1))
                plan.append(Kill(p, n, rng.uniform(0, 0.08) if p == "jitter" else 0.0))
                left -= n + (p == "jitter")  # a jitter kill may land one batch later
                continue
        plan.append(Kill(p))
    return plan


# ---------------------------------------------------------------------- child processes
class Zygote:
    """The warm parent of the sync processes of one scenario."""

    def __init__(self, tmp_path) -> None:
        self.err = open(tmp_path / "zygote.stderr", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env_with_repo(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.err)
        self.buf = b""
        assert self.line(120) == "ready", self.stderr()

    def stderr(self) -> str:
        self.err.flush()
        with open(self.err.name, "rb") as fh:
            return fh.read().decode(errors="replace")[-4000:]

    def line(self, timeout: float) -> str | None:
        """The next line the zygote printed, or None after ``timeout`` seconds."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"the zygote died: {self.stderr()}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def start(self, spec: dict) -> int:
        self.proc.stdin.write((json.dumps(spec) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        answer = self.line(60)
        assert answer and answer.startswith("pid "), answer
        return int(answer.split()[1])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.err.close()


#: the zygote of the last scenario that ended cleanly (it is idle: every child it forked was reaped
#: and reported), so the next scenario forks from it instead of importing everything again (~1 s)
_WARM: list[Zygote] = []


@contextlib.contextmanager
def warm_zygote(tmp_path):
    """A zygote for one scenario: the previous scenario's when it is idle and alive, else a new one."""
    zygote = _WARM.pop() if _WARM else Zygote(tmp_path)
    if zygote.proc.poll() is not None:
        zygote.close()
        zygote = Zygote(tmp_path)
    clean = False
    try:
        yield zygote
        clean = not zygote.buf
    finally:
        if clean:
            _WARM.append(zygote)
        else:
            zygote.close()


@pytest.fixture(scope="module", autouse=True)
def _close_warm_zygote():
    yield
    while _WARM:
        _WARM.pop().close()


def kill_at(zygote: Zygote, ws_path: str, kill: Kill, marker: str, timeout: float = 120) -> bool:
    """Run a sync process to the kill point and SIGKILL it; False if it finished first."""
    if os.path.exists(marker):
        os.remove(marker)
    result = marker + ".result"
    pid = zygote.start({"ws": ws_path, "sync": "crash", "faults": kill.spec(marker), "result": result})
    deadline = time.monotonic() + timeout
    ended = None
    while not os.path.exists(marker):
        ended = zygote.line(0.005)
        if ended is not None:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the sync process never reached {kill}")
    if ended is None:
        if kill.delay:
            time.sleep(kill.delay)
        # the pid is still ours until the zygote reports its exit; if the process ended on its own
        # during the delay (the zygote reaped it), the kill finds nothing and the line says how it ended
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        ended = zygote.line(60)
    assert ended is not None and ended.startswith("exit "), ended
    code = int(ended.split()[1])
    if code == -signal.SIGKILL:
        return True
    with open(result) as fh:
        out = json.load(fh)
    assert code == 0 and out.get("status") == "success", f"the sync process failed before {kill}: {out}"
    return False


# ---------------------------------------------------------------------- checks
LIVE = ("started", "querying", "queued", "in_progress")


def assert_recovered(ws_path: str, kill: Kill) -> None:
    """Opening the workspace settles the dead owner's run; nothing is left live."""
    ws = dfsync.Workspace(ws_path)
    try:
        runs = ws.sql("SELECT id, status, error FROM runs ORDER BY id")
        assert not runs.filter(pl.col("status").is_in(LIVE)).height, runs
        last = runs.row(-1, named=True)
        if kill.phase == "jitter" and last["status"] == "success":
            return  # the last batch's run finished within the jitter delay: killed after success
        resumed = ws.sql("SELECT count(*) AS n FROM events WHERE run_id = ? AND kind = 'run' "
                         "AND from_status = 'paused'", [last["id"]])["n"][0]
        if kill.phase in EARLY and resumed:
            # a resumed run (it already applied batches) killed before it transferred again
            assert last["status"] == "paused", last
        elif kill.phase in EARLY and last["status"] == "failed":
            assert "interrupted" in last["error"]
        else:  # killed while transferring (or a resumed run killed before it transferred again)
            assert last["status"] in ("paused", "failed"), last
            if kill.phase not in EARLY:
                assert last["status"] == "paused", last
        events = ws.sql("SELECT detail FROM events WHERE run_id = ? ORDER BY id", [last["id"]])["detail"].to_list()
        assert events[-1] == "owner process gone"
    finally:
        ws.close()


def expected_rows(mode: str, versions: list[pl.DataFrame], upto: int) -> pl.DataFrame:
    return versions[upto]


def assert_exact(target, table: str, expected: pl.DataFrame, context: str) -> None:
    got = target.read(table)
    assert got.height == got["id"].n_unique(), f"duplicates in the destination ({context})"
    got = got.select(expected.columns).sort("id")
    want = expected.sort("id")
    assert got["id"].to_list() == want["id"].to_list(), f"rows lost or extra ({context})"
    assert got["name"].to_list() == want["name"].to_list(), f"stale values ({context})"
    assert got["value"].to_list() == want["value"].to_list(), f"stale values ({context})"


@dataclass
class Tally:
    kills: int = 0
    missed: list[str] = field(default_factory=list)


def crash_scenario(tmp_path, target, mode: str, seed: int, kills_per_version: int | None = None,
                   phases: list[Kill] | None = None, ws_path: str | None = None) -> Tally:
    """``ws_path``: the workspace (a ``ws_target``), by default a file in ``tmp_path``."""
    rng = random.Random(f"{seed}-{target.kind}-{mode}")
    versions = source_versions(mode, rng)
    src = tmp_path / "src.parquet"
    ws_path = ws_path or str(tmp_path / "ws.duckdb")
    versions[0].write_parquet(src)
    ws = dfsync.Workspace(ws_path)
    dest = FaultyDestination(target.make("t"))
    ws.create_sync("crash", source=FaultySource(dfsync.sources.files(str(src))), destination=dest,
                   primary_key="id", destination_mode=mode, batch_size=BATCH,
                   checks=[dfsync.checks.not_null("id"), dfsync.checks.unique("id")])
    ws.close()
    tally = Tally()
    plans: list[list[Kill]] = []
    with warm_zygote(tmp_path) as zygote:
        _run_versions(tmp_path, ws_path, target, mode, seed, versions, rng, zygote, tally, plans,
                      kills_per_version, phases)
    return tally


def _run_versions(tmp_path, ws_path, target, mode, seed, versions, rng, zygote, tally, plans, kills_per_version,
                  phases):
    src = tmp_path / "src.parquet"
    marker = str(tmp_path / "marker")
    for v, data in enumerate(versions):
        data.write_parquet(src)
        plan = phases if phases is not None else plan_version(rng, pending_batches(mode, v))
        if kills_per_version is not None:
            plan = plan[:kills_per_version]
        plans.append(plan)
        where = f"seed={seed} {target.kind}/{mode} version {v + 1}, plan {plans}"
        for kill in plan:
            landed = kill_at(zygote, ws_path, kill, marker)
            if not landed and kill.phase in EARLY + END:
                # the run finished before reaching that point: a resumed run does not query again,
                # and a run over files unchanged since the last delivery reads nothing and opens no
                # destination session. Touch the file so the next run reads it, and try once more.
                os.utime(src)
                landed = kill_at(zygote, ws_path, kill, marker)
            if landed:
                tally.kills += 1
                assert_recovered(ws_path, kill)
            else:
                tally.missed.append(f"v{v + 1} {kill}")
        # the recovery run, in this process
        ws = dfsync.Workspace(ws_path)
        try:
            sync = ws.sync("crash")
            run = sync.run(progress=False)
            assert run.status == "success", f"{where}: {run.error}"
            assert_exact(target, "t", data, where)
            again = sync.run(progress=False)
            # replace rewrites the whole table every run, but nothing in it changed
            changed = again.counts["sent"] if mode != "replace" else sum(
                again.counts[c] for c in ("inserted", "updated", "deleted"))
            assert again.status == "success" and changed == 0, f"{where}: {again.counts}"
            statuses = ws.sql("SELECT status FROM runs")["status"].to_list()
            assert set(statuses) <= {"success", "failed"}, f"{where}: {statuses}"
        finally:
            ws.close()


# ---------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["insert", "upsert", "mirror"])
def test_crash_matrix(tmp_path, target, mode, ws_target):
    tally = crash_scenario(tmp_path, target, mode, SEED, ws_path=ws_target)
    # 2 versions x 4 planned kills; a batch kill can miss when an earlier jitter kill landed late
    # and the run had fewer batches left than planned (a fast destination): at least 6 must land,
    # so 18+ kill points per destination over the 3 modes
    assert tally.kills >= 6, f"seed={SEED}: only {tally.kills} kills landed; missed {tally.missed}"


test_crash_matrix.target_kinds = TRANSACTIONAL  # type: ignore[attr-defined]


def test_crash_points_smoke(tmp_path, target, ws_target):
    """Default suite: one kill while querying, one in validation, one after a batch landed."""
    plan = [Kill("querying"), Kill("queued"), Kill("after_write", 2)]
    tally = crash_scenario(tmp_path, target, "mirror", SEED, phases=plan, ws_path=ws_target)
    assert tally.kills == 6, tally.missed


test_crash_points_smoke.target_kinds = ["duckdb"]  # type: ignore[attr-defined]


def test_failed_resume_of_once_per_run_destination_loses_nothing(tmp_path, ws_target):
    """Parquet holds a paused run's batches aside; if the resumed run fails before sending
    again (here: its source is gone), the next run must send those rows again — including
    the deletes whose earlier versions the failed run had superseded.

    Found by the crash matrix (a resumed run SIGKILLed while querying); fixed in
    ``_settle.discard_unapplied_failed_runs`` and ``confirm_batch(keep_superseded=...)``.
    """
    v1 = source_versions("mirror", random.Random(1))[0]
    v2 = v1.filter(pl.col("id") % 2 == 0)  # 60 deletes: the first batches sent are deletes
    src = tmp_path / "src.parquet"
    v1.write_parquet(src)
    lake = tmp_path / "lake"
    ws = dfsync.Workspace(ws_target)
    dest = FaultyDestination(dfsync.destinations.parquet(str(lake)))
    sync = ws.create_sync("p", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                          destination_mode="mirror", batch_size=BATCH)
    for data in (v1, v2):  # a first load, then deletes
        data.write_parquet(src)
        dest.interrupt_after = 5
        with pytest.raises(KeyboardInterrupt):
            sync.run(progress=False)
        paused = sync.last_run()
        assert paused.status == "paused" and paused.counts["succeeded"] == 4 * BATCH  # batch 5 is in flight
        dfsync._registry.drop_live_staging()  # as if the process had died: the resume must query again
        os.rename(src, tmp_path / "away.parquet")
        failed = sync.run(progress=False)
        assert failed.id == paused.id and failed.status == "failed" and "no parquet files match" in failed.error
        os.rename(tmp_path / "away.parquet", src)
        run = sync.run(progress=False)
        assert run.status == "success", run.error
        got = pl.read_parquet(lake / "data.parquet").sort("id")
        assert got.equals(data.sort("id"))
        assert sync.run(progress=False).counts["sent"] == 0


#: a run paused after two batches, its resume killed while querying, then while validating
RESUME_GAP = [Kill("after_write", 2), Kill("querying"), Kill("queued")]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["insert", "replace"])
def test_resumed_run_killed_before_transfer_stays_paused(tmp_path, target, mode, ws_target):
    """STATES.md: a run resumed from ``paused`` that dies while querying or queued goes back to
    ``paused`` (never ``failed``), so the batches it applied stay its own: no double append in
    insert mode, no rewrite lost in replace mode, on a destination that applies a run at its end."""
    tally = crash_scenario(tmp_path, target, mode, SEED, phases=RESUME_GAP, ws_path=ws_target)
    assert tally.kills == 6, tally.missed


# a destination that applies a run at its end and one that commits each batch (the rule is the runner's)
test_resumed_run_killed_before_transfer_stays_paused.target_kinds = ["parquet", "duckdb"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["insert", pytest.param("replace", marks=pytest.mark.slow)])
def test_a_run_applied_before_its_process_died_is_not_undone_by_a_failed_resume(tmp_path, mode, ws_target):
    """Killed after Parquet's final swap (the run is applied, the workspace never heard), then the
    resumed run fails on its source: the applied batches must stay delivered, or the next run
    appends those rows a second time (insert) or loses their delivered state."""
    versions = source_versions("insert", random.Random(7))
    src = tmp_path / "src.parquet"
    ws_path = ws_target
    lake = tmp_path / "lake"
    versions[0].write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:
        ws.create_sync("crash", source=FaultySource(dfsync.sources.files(str(src))), primary_key="id",
                       destination=FaultyDestination(dfsync.destinations.parquet(str(lake))),
                       destination_mode=mode, batch_size=BATCH)
    with warm_zygote(tmp_path) as zygote:
        assert kill_at(zygote, ws_path, Kill("after_finish"), str(tmp_path / "marker"))
    assert pl.read_parquet(lake / "data.parquet").height == ROWS  # the swap happened
    os.rename(src, tmp_path / "away.parquet")
    with dfsync.Workspace(ws_path) as ws:
        sync = ws.sync("crash")
        assert sync.last_run().status == "paused"
        failed = sync.run(progress=False)
        assert failed.status == "failed" and "no parquet files match" in failed.error
        os.rename(tmp_path / "away.parquet", src)
        run = sync.run(progress=False)
        assert run.status == "success", run.error
        got = pl.read_parquet(lake / "data.parquet")
        assert got.height == ROWS and got["id"].n_unique() == ROWS, (got.height, ws.sql(
            "SELECT run_id, kind, from_status, to_status, detail FROM events ORDER BY id").rows())
        again = sync.run(progress=False)
        changed = sum(again.counts[c] for c in ("inserted", "updated", "deleted"))
        assert again.status == "success" and changed == 0, again.counts


# ---------------------------------------------------------------------- a fused first load
#: the steps of a fused first load into a DuckDB table the run creates (dfsync/_fused.py) a process
#: is killed at, and the status opening the workspace leaves its run in: while the source is read,
#: once the new table is committed under its loading name, once the keys are written ahead, once
#: the table is renamed with its ledger rows (delivered, not confirmed), once confirmed
FUSED_POINTS = {"querying": "failed", "fused_loaded": "failed", "fused_written_ahead": "paused",
                "fused_committed": "paused", "fused_confirmed": "paused"}


class FusedKill(Kill):
    def spec(self, marker: str) -> dict:  # jitter: the kill lands `delay` seconds after the point, wherever
        return {"phase": self.phase, "n": None, "marker": marker, "hold": 0 if self.delay else 30}


def fused_scenario(tmp_path, zygote, ws_path: str, mode: str, kill: FusedKill, rows: int = ROWS) -> bool:
    """Kill a fused first load at ``kill``, recover, then a re-sync: the destination is exact after
    each, the table has its key and nothing of the load's own is left. False: the kill missed."""
    import duckdb

    rng = random.Random(f"{SEED}-fused-{mode}-{kill.phase}-{kill.delay}")
    versions = source_versions(mode, rng)
    if rows != ROWS:  # a larger first load alone
        versions = [pl.DataFrame({"id": range(rows), "name": [f"row {i} ✓" for i in range(rows)],
                                  "value": [i * 0.25 for i in range(rows)]})]
    src, dest_path = tmp_path / "src.parquet", str(tmp_path / "dest.duckdb")
    versions[0].write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:  # no checks, no batch size: the first load is fused
        ws.create_sync("crash", source=FaultySource(dfsync.sources.files(str(src))), primary_key="id",
                       destination=dfsync.destinations.duckdb(dest_path, table="t"), destination_mode=mode)
    landed = kill_at(zygote, ws_path, kill, str(tmp_path / "marker"))
    where = f"seed={SEED} fused {mode} killed at {kill}"
    with dfsync.Workspace(ws_path) as ws:
        runs = ws.sql("SELECT id, status FROM runs ORDER BY id")
        assert not runs.filter(pl.col("status").is_in(LIVE)).height, (where, runs)
        if landed and not kill.delay:
            assert runs["status"][-1] == FUSED_POINTS[kill.phase], (where, runs)
        sync = ws.sync("crash")
        for v, data in enumerate(versions):
            data.write_parquet(src)
            run = sync.run(progress=False)
            assert run.status == "success", f"{where}, version {v + 1}: {run.error}"
            assert_exact(FUSED_TARGET(dest_path), "t", data, f"{where}, version {v + 1}")
            again = sync.run(progress=False)
            assert again.status == "success" and again.counts["sent"] == 0, f"{where}: {again.counts}"
        assert set(ws.sql("SELECT status FROM runs")["status"]) <= {"success", "failed"}, where
    con = duckdb.connect(dest_path, read_only=True)
    try:
        assert sorted(r[0] for r in con.execute("SHOW TABLES").fetchall()) == ["_dfsync_batches", "t"], where
        assert con.execute("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 't' "
                           "AND constraint_type = 'PRIMARY KEY'").fetchall()[0][0] == 1, where
    finally:
        con.close()
    return landed


class FUSED_TARGET:  # noqa: N801 - what assert_exact reads
    def __init__(self, path: str) -> None:
        self.path = path

    def read(self, table: str) -> pl.DataFrame:
        import duckdb

        con = duckdb.connect(self.path, read_only=True)
        try:
            return pl.from_arrow(con.sql(f"SELECT * FROM {table}").to_arrow_table())
        finally:
            con.close()


@pytest.mark.parametrize("point", ["fused_written_ahead", "fused_committed"])
def test_fused_first_load_killed_between_its_commits_smoke(tmp_path, point, ws_target):
    """Default suite: a fused first load killed after its keys were written ahead (the table not yet
    committed) and after the table was committed (not yet confirmed)."""
    with warm_zygote(tmp_path) as zygote:
        assert fused_scenario(tmp_path, zygote, ws_target, "insert", FusedKill(point))


@pytest.mark.slow
@pytest.mark.workspaces("postgres")
def test_fused_first_load_crash_points_on_a_postgres_workspace(tmp_path, ws_target):
    """The same in mirror mode on a PostgreSQL workspace (the modes differ in the fused load's own
    steps, run below on the workspace file, not in what the workspace keeps)."""
    test_fused_first_load_crash_points(tmp_path, "mirror", ws_target)


@pytest.mark.slow
@pytest.mark.workspaces("duckdb")
@pytest.mark.parametrize("mode", ["insert", "upsert", "mirror"])
def test_fused_first_load_crash_points(tmp_path, mode, ws_target):
    """Every step of a fused first load, then kills at random moments of a larger one (0-0.6 s
    after the source read began: the read, the key's index, the write-ahead, the commits): three
    per mode."""
    with warm_zygote(tmp_path) as zygote:
        for i, point in enumerate(FUSED_POINTS):
            (tmp_path / point).mkdir()
            assert fused_scenario(tmp_path / point, zygote, _fresh_ws(ws_target, tmp_path / point, i), mode,
                                  FusedKill(point)), point
        rng = random.Random(f"{SEED}-fused-jitter-{mode}")
        for i in range(3):
            where = tmp_path / f"jitter{i}"
            where.mkdir()
            fused_scenario(where, zygote, _fresh_ws(ws_target, where, 10 + i), mode,
                           FusedKill("querying", delay=rng.uniform(0, 0.6)), rows=300_000)


#: the steps of a first load into a Delta table the run creates, written aside (dfsync/_fused_delta.py),
#: and the status opening the workspace leaves its run in: once the files are written aside and
#: the keys ahead (no table yet), once the one commit created the table (not confirmed), once confirmed
ASIDE_POINTS = {"aside_written": "paused", "aside_committed": "paused", "aside_confirmed": "paused"}


@pytest.mark.workspaces("duckdb", "postgres", slow=("postgres",))
@pytest.mark.parametrize("point", ["aside_written", "aside_committed",
                                   pytest.param("aside_confirmed", marks=pytest.mark.slow)])
def test_a_delta_first_load_written_aside_killed_at_each_step(tmp_path, point, ws_target):
    """Killed at each step, the run resumes (reading its source again) and the table is exact
    after it and after a re-sync, with one copy of each row and nothing of the load's own left
    (``_dfsync``); the commit's ledger entry is what tells the resumed run the batch landed."""
    import deltalake

    mode = "mirror"
    versions = source_versions(mode, random.Random(f"{SEED}-aside-{point}"))
    src, path, ws_path = tmp_path / "src.parquet", tmp_path / "t", ws_target
    versions[0].write_parquet(src)
    with dfsync.Workspace(ws_path) as ws:  # no batch size, no partitions: written aside
        ws.create_sync("crash", source=FaultySource(dfsync.sources.files(str(src))), primary_key="id",
                       destination=dfsync.destinations.delta(str(path)), destination_mode=mode)
    with warm_zygote(tmp_path) as zygote:
        assert kill_at(zygote, ws_path, FusedKill(point), str(tmp_path / "marker"))
    assert deltalake.DeltaTable.is_deltatable(str(path)) == (point != "aside_written")
    where = f"seed={SEED} Delta first load written aside, killed at {point}"

    class Read:
        def read(self, table: str) -> pl.DataFrame:
            return pl.read_delta(str(path))

    with dfsync.Workspace(ws_path) as ws:
        runs = ws.sql("SELECT id, status FROM runs ORDER BY id")
        assert runs["status"].to_list() == [ASIDE_POINTS[point]], (where, runs)
        sync = ws.sync("crash")
        for v, data in enumerate(versions):
            data.write_parquet(src)
            run = sync.run(progress=False)
            assert run.status == "success", f"{where}, version {v + 1}: {run.error}"
            assert_exact(Read(), "t", data, f"{where}, version {v + 1}")
            c = run.counts
            assert c["queried"] == c["inserted"] + c["updated"] + c["unchanged"] + c["invalid"], (where, c)
            assert c["sent"] == c["succeeded"] + c["failed"] + c["skipped"], (where, c)
        assert sync.run(progress=False).counts["sent"] == 0, where
    assert not os.path.exists(path / "_dfsync"), where


def _fresh_ws(ws_target: str, where, i: int) -> str:
    """A workspace of its own for each scenario: a file, or another schema of the same server."""
    if ws_target.startswith("postgresql://"):
        base, _, query = ws_target.partition("?")
        return f"{base}?{query}_{i}" if query else f"{base}?schema=w_fused_{i}"
    return str(where / "ws.duckdb")

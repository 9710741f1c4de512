"""A sync process is SIGKILLed mid-transfer; the next run resumes and the destination is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

import dfsync
from tests.faulty import FaultyDestination, env_with_repo

#: on a workspace file and on a PostgreSQL workspace (tests/plugins/workspaces.py: on PostgreSQL
#: the default suite keeps insert mode into DuckDB, the other cases run under -m slow)
WORKSPACE_STORES = ("duckdb", "postgres")

CHILD = """
import sys
import tests.faulty  # registers the fault-injecting destination
import dfsync
ws = dfsync.Workspace(sys.argv[1])
ws.sync(sys.argv[2]).run(progress=False)
print("finished")
"""


def source_rows(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "id": list(range(n)),
        "name": [f"row {i} ✓" for i in range(n)],
        "value": [i * 0.5 for i in range(n)],
    })


def kill_mid_transfer(ws_path: str, name: str, marker: str, timeout: float = 120) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, ws_path, name], env=env_with_repo(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while not os.path.exists(marker):
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"child ended before the kill point: {out.decode()} {err.decode()}")
            if time.time() > deadline:
                raise AssertionError("child never reached the kill point")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


# insert mode (the hardest: a duplicate would show) in the default suite; the other modes, and
# many more kill points, run under -m slow (here and in test_crash_matrix.py)
@pytest.mark.parametrize("mode", ["insert", pytest.param("upsert", marks=pytest.mark.slow),
                                  pytest.param("mirror", marks=pytest.mark.slow)])
def test_sigkill_during_transfer_then_resume_is_exact(tmp_path, target, mode, ws_target):
    data = source_rows(3000)
    src_file = tmp_path / "src.parquet"
    data.write_parquet(src_file)
    marker = str(tmp_path / "marker")
    ws_path = ws_target
    ws = dfsync.Workspace(ws_path)
    dest = FaultyDestination(target.make("t"), sleep=0.03, marker=marker, marker_after=4)
    ws.create_sync("crash", source=dfsync.sources.files(str(src_file)), destination=dest, primary_key="id",
                   destination_mode=mode, batch_size=200)
    ws.close()

    kill_mid_transfer(ws_path, "crash", marker)

    ws = dfsync.Workspace(ws_path)  # opening it finds the dead owner
    sync = ws.sync("crash")
    run = sync.last_run()
    assert run.status == "paused"
    assert run.events()["detail"].to_list()[-1] == "owner process gone"
    assert sync.status == "pending"  # a paused run does not change the sync status

    os.remove(marker)
    resumed = sync.run(progress=False)
    assert resumed.id == run.id, "the paused run is resumed, not replaced"
    assert resumed.status == "success", resumed.error
    states = resumed.events().filter(kind="run")["to_status"].to_list()
    assert states[-4:] == ["querying", "queued", "in_progress", "success"] and "paused" in states
    got = target.read("t")
    assert got.height == 3000 and got["id"].n_unique() == 3000
    assert got.sort("id").equals(data.select(got.columns))
    assert sync.run(progress=False).counts["sent"] == 0  # the delivered state is exact too


def test_kill_before_transfer_fails_run_and_next_starts_afresh(tmp_path, ws_target):
    """A run killed while querying is failed ("owner process gone"); nothing was sent."""
    ws_path = ws_target
    ws = dfsync.Workspace(ws_path)
    sync = ws.create_sync("q", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id")
    # simulate a dead owner: a run in 'querying' whose process is gone
    rid = ws.store.create_run(sync.id, 1, "manual")
    ws.store.transition_run(rid, dfsync.RunStatus.QUERYING)
    ws.store.set_run_fields(rid, owner_pid=2**22 + 12345, owner_token="elsewhere:4206969:1")
    ws.store.set_run_fields(rid, owner_host=__import__("socket").gethostname())
    if ws_path.startswith("postgresql://"):  # there the owner is alive while its session holds the sync lock
        ws.store._release(rid)  # the session ends, as with the owner's process
    ws.close()
    ws = dfsync.Workspace(ws_path)
    run = ws.run(rid)
    assert run.status == "failed" and "interrupted" in run.error
    run2 = ws.sync("q").run(progress=False)
    assert run2.id != rid and run2.status == "success"

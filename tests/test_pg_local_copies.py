"""This host's copies of PostgreSQL workspaces' delivered states stay bounded
(dfsync/store/_statecachegc.py, dfsync/store/_pglocalcopy.py).

Copies go with their sync (deleted, reset), when their sync is gone from the workspace (seen at
the next open), when unused beyond an age, and least recently used first beyond a size; a copy
another live process holds is never removed. A removed copy only means the next read is the
server's: the runs after it stay exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import polars as pl
import pytest

import dfsync
from dfsync.store._statecachegc import hold, limits, prune, release
from tests.plugins.processes import child_env

pytestmark = pytest.mark.postgres


def _copies(root) -> set[str]:
    """'<workspace dir>/<sync id>' of every copy directory under root."""
    out = set()
    if os.path.isdir(root):
        for ws in os.listdir(root):
            if os.path.isdir(os.path.join(root, ws)):
                out |= {f"{ws}/{s}" for s in os.listdir(os.path.join(root, ws))}
    return out


def _files(root, copy: str) -> list[str]:
    return sorted(f for f in os.listdir(os.path.join(root, copy)) if f.endswith(".arrow"))


def _sync(ws, tmp_path, name: str, n: int = 200):
    src = tmp_path / f"{name}.parquet"
    pl.DataFrame({"id": list(range(n)), "v": list(range(n))}).write_parquet(src)
    sync = ws.create_sync(name, source=dfsync.sources.files(str(src)),
                          destination=dfsync.destinations.duckdb(str(tmp_path / f"{name}.duckdb"), table="t"),
                          primary_key="id", destination_mode="mirror", batch_size=100)
    sync.src = src
    run = sync.run()
    assert run.status == "success", run.error
    return sync


@pytest.fixture
def root(tmp_path, monkeypatch):
    """The copies' root for this test, for every workspace opened in it (and its child processes)."""
    r = str(tmp_path / "copies")
    monkeypatch.setenv("DFSYNC_STATE_CACHE", r)
    monkeypatch.delenv("DFSYNC_STATE_CACHE_SIZE", raising=False)
    monkeypatch.delenv("DFSYNC_STATE_CACHE_DAYS", raising=False)
    return r


def test_a_deleted_sync_takes_its_copy_and_a_reset_its_files(pg_server, pg_uri, tmp_path, root):
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    a, b = _sync(ws, tmp_path, "a"), _sync(ws, tmp_path, "b")
    ws_dir = next(iter(os.listdir(root)))
    assert _copies(root) == {f"{ws_dir}/{a.id}", f"{ws_dir}/{b.id}"}
    assert _files(root, f"{ws_dir}/{a.id}")
    b.reset()
    assert _files(root, f"{ws_dir}/{b.id}") == []
    assert b.run().counts["sent"] == 200  # a first load again, read from nobody's copy
    ws.delete_sync("a")
    assert _copies(root) == {f"{ws_dir}/{b.id}"}
    ws.close()


def test_opening_a_workspace_removes_the_copies_of_its_syncs_gone_elsewhere(pg_server, pg_uri, tmp_path, root):
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    a, b = _sync(ws, tmp_path, "a"), _sync(ws, tmp_path, "b")
    ws_dir = next(iter(os.listdir(root)))
    assert _copies(root) == {f"{ws_dir}/{a.id}", f"{ws_dir}/{b.id}"}
    other_copy = os.path.join(root, "another-workspace", "1")  # another workspace's copy: not this one's to judge
    os.makedirs(other_copy)
    open(os.path.join(other_copy, "base-x.arrow"), "wb").close()
    ws.close()  # this process lets go of its copies
    other_host = dfsync.Workspace(f"{pg_uri}?schema=ws")
    other_host.store.state_cache_root = None  # a host that keeps no copy here deletes the sync
    other_host.delete_sync("a")
    other_host.close()
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    assert _copies(root) == {f"{ws_dir}/{b.id}", "another-workspace/1"}
    assert ws.sync("b").run().counts["sent"] == 0  # b's copy still serves (and is exact)
    ws.close()


def test_a_copy_a_live_process_holds_is_never_removed(pg_server, pg_uri, tmp_path, root, monkeypatch):
    ws = dfsync.Workspace(f"{pg_uri}?schema=ws")
    a = _sync(ws, tmp_path, "a")
    ws_dir = next(iter(os.listdir(root)))
    ws.close()
    # another process on this host uses the copy (a read of the state) and stays open
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, dfsync\n"
         "ws = dfsync.Workspace(sys.argv[1])\n"
         "s = ws.sync('a')\n"
         "print(ws.store.delivered(s.id, ['id']).read_all().num_rows, flush=True)\n"
         "sys.stdin.readline()\n"
         "ws.sync('a').run()\n"
         "print('ran', flush=True)\n"
         "sys.stdin.readline()\n",
         f"{pg_uri}?schema=ws"],
        env=child_env(DFSYNC_STATE_CACHE=root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "200"
        # every bound says remove it: unused for ever, no room at all, and its sync deleted elsewhere
        monkeypatch.setenv("DFSYNC_STATE_CACHE_DAYS", "0")
        monkeypatch.setenv("DFSYNC_STATE_CACHE_SIZE", "0")
        time.sleep(0.05)
        ws = dfsync.Workspace(f"{pg_uri}?schema=ws")  # an open prunes
        assert f"{ws_dir}/{a.id}" in _copies(root)
        assert ws.store.prune_local_copies() == []
        assert _files(root, f"{ws_dir}/{a.id}")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ran"  # it kept using its copy meanwhile
        assert f"{ws_dir}/{a.id}" in _copies(root)
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    # the process ended: its hold went with it, and the copy is removed
    assert ws.store.prune_local_copies() == [os.path.join(root, ws_dir, str(a.id))]
    assert _copies(root) == set()
    monkeypatch.delenv("DFSYNC_STATE_CACHE_DAYS")
    monkeypatch.delenv("DFSYNC_STATE_CACHE_SIZE")
    # without its copy the next run reads the server and stays exact
    assert ws.sync("a").run().counts["sent"] == 0
    pl.DataFrame({"id": list(range(210)), "v": [1] * 5 + list(range(5, 210))}).write_parquet(a.src)
    run = ws.sync("a").run()
    assert (run.counts["inserted"], run.counts["updated"]) == (10, 4)  # id 0 had v 0 already
    assert ws.store.delivered_count(a.id) == 210
    ws.close()


def _fake_copy(root, ws: str, sync: int, size: int, age_days: float) -> str:
    d = os.path.join(root, ws, str(sync))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "base-x.arrow"), "wb") as f:
        f.write(b"\0" * size)
    t = time.time() - age_days * 86400
    for p in (os.path.join(d, "base-x.arrow"), d):
        os.utime(p, (t, t))
    return d


def test_bounds_remove_the_stale_then_the_least_recently_used_but_never_a_held_copy(tmp_path):
    root = str(tmp_path)
    old = _fake_copy(root, "w1", 1, 100, age_days=40)
    held_old = _fake_copy(root, "w1", 2, 100, age_days=50)
    a = _fake_copy(root, "w2", 1, 1000, age_days=3)
    b = _fake_copy(root, "w2", 2, 1000, age_days=2)
    c = _fake_copy(root, "w3", 7, 1000, age_days=1)
    fd = hold(held_old)
    try:
        assert fd is not None
        removed = prune(root, max_bytes=2200, max_age=30 * 86400)
        # the stale one, then the least recently used until 2200 bytes (the held one counts, stays)
        assert removed == [old, a]
        assert os.path.isdir(held_old) and os.path.isdir(b) and os.path.isdir(c)
        assert not os.path.exists(os.path.join(root, "w1", "1"))
        # a copy just written is kept whatever the bound
        assert prune(root, keep=c, max_bytes=0) == [b]
        assert os.path.isdir(c) and os.path.isdir(held_old)
        assert not os.path.exists(os.path.join(root, "w2"))  # a workspace's directory goes with its last copy
    finally:
        release(fd)
    assert sorted(prune(root, max_bytes=0)) == sorted([held_old, c])
    assert os.listdir(root) == []


def test_a_hold_taken_while_its_copy_was_removed_is_taken_again(tmp_path):
    d = _fake_copy(str(tmp_path), "w", 1, 10, age_days=0)
    fd = hold(d)
    assert prune(str(tmp_path), max_bytes=0) == []  # held
    release(fd)
    assert prune(str(tmp_path), max_bytes=0) == [d]
    fd = hold(d)  # the directory and its lock file are made again
    try:
        assert fd is not None and os.path.isdir(d)
        assert prune(str(tmp_path), max_bytes=0) == []
    finally:
        release(fd)


def test_the_bounds_are_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("DFSYNC_STATE_CACHE_SIZE", raising=False)
    monkeypatch.delenv("DFSYNC_STATE_CACHE_DAYS", raising=False)
    assert limits() == (5 * 1000**3, 30 * 86400.0)
    monkeypatch.setenv("DFSYNC_STATE_CACHE_SIZE", "512MiB")
    monkeypatch.setenv("DFSYNC_STATE_CACHE_DAYS", "2.5")
    assert limits() == (512 * 1024**2, 2.5 * 86400.0)
    monkeypatch.setenv("DFSYNC_STATE_CACHE_SIZE", "unlimited")
    monkeypatch.setenv("DFSYNC_STATE_CACHE_DAYS", "off")
    assert limits() == (None, None)

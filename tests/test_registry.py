"""Per-process state has one owner, dfsync._registry: stop requests, progress hooks, staged rows
of runs in this process and paused runs, sync locks. Nothing else reaches into a live Runner."""

from __future__ import annotations

import ast
import pathlib
import threading

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync import _registry

PACKAGE = pathlib.Path(dfsync.__file__).parent


@pytest.fixture
def ws(tmp_path):
    w = dfsync.Workspace(tmp_path / "ws.duckdb")
    yield w
    w.close()


def test_stop_request_progress_hooks_and_staging_go_through_the_registry(ws, tmp_path):
    frame = pl.DataFrame({"id": range(50), "v": [f"v{i}" for i in range(50)]})
    sync = ws.create_sync("s", source=dfsync.sources.frame(frame), primary_key="id", batch_size=10,
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    transferring, go = threading.Event(), threading.Event()
    own: list[str] = []

    def gate(status: str, row: dict) -> None:  # the caller's own progress callable
        own.append(status)
        if status == "in_progress" and not transferring.is_set():
            transferring.set()
            assert go.wait(30)

    run = sync.run(background=True, progress=gate)
    assert transferring.wait(30)
    key = (ws.store.key, run.id)
    assert _registry.is_running(*key) and _registry.run_thread(*key) is not None
    seen: list[tuple[str, int]] = []

    def panel(status: str, row: dict) -> None:
        seen.append((status, row["succeeded"]))

    assert _registry.add_progress_hook(*key, panel) and _registry.add_progress_hook(*key, panel)  # once
    assert _registry.staged_rows(*key).loaded  # run.records() reads the running run's rows
    assert len(run.records()) == 50
    assert _registry.request_stop(*key, "pause")
    before = len(own)
    go.set()
    run.wait(60)
    assert run.status == "paused"
    assert not _registry.is_running(*key) and _registry.run_thread(*key) is None
    assert seen and len(seen) == len(own) - before  # called at every report after it was added, once each
    assert seen[-1][0] == "paused"
    assert run.counts["succeeded"] < 50  # stopped at a batch boundary: the rest waits for the resume
    assert not _registry.request_stop(*key, "pause")  # not running here: the caller asks the workspace
    assert not _registry.add_progress_hook(*key, panel)
    staged = _registry.live_staging(*key)
    assert staged is not None and _registry.staged_rows(*key) is staged
    # as if the process had died: the staged rows go, the resume reads the source again
    _registry.drop_live_staging(*key)
    assert _registry.live_staging(*key) is None and not pathlib.Path(staged.temp_dir).exists()
    done = sync.run(progress=False)
    assert done.id == run.id and done.status == "success"
    assert any("querying again" in d for d in done.events()["detail"].drop_nulls().to_list())
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchall() == [(50, 50)]
    finally:
        con.close()


def test_an_abort_asked_before_a_pause_stays_an_abort(ws, tmp_path):
    frame = pl.DataFrame({"id": range(30)})
    sync = ws.create_sync("s", source=dfsync.sources.frame(frame), primary_key="id", batch_size=10,
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    asked = []

    def ask(status: str, row: dict) -> None:
        if status == "in_progress" and not asked:
            asked.append(status)
            key = (ws.store.key, row["id"])
            assert _registry.request_stop(*key, "abort") and _registry.request_stop(*key, "pause")

    run = sync.run(progress=ask)
    assert run.status == "failed" and run.error == "aborted by the user"


def test_the_sync_lock_is_one_per_sync_and_workspace(ws, tmp_path):
    assert _registry.sync_lock(ws.store.key, 1) is _registry.sync_lock(ws.store.key, 1)
    assert _registry.sync_lock(ws.store.key, 1) is not _registry.sync_lock(ws.store.key, 2)
    assert _registry.sync_lock(ws.store.key, 1) is not _registry.sync_lock(ws.store.key + "x", 1)


def test_another_threads_recover_leaves_a_run_that_is_starting_alone(ws, tmp_path, monkeypatch):
    """Every sync.run() (and every scheduler pass) first moves runs whose process died. A run of
    this process counted as alive only once registered, which happens after its row is created:
    another thread's recover() in between (a background scheduler, a second background run) took
    it for the run of a dead process and failed it ("the process running it died")."""
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    create_run, moved = ws.store.create_run, []

    def create_then_recover_elsewhere(*args, **kwargs):  # type: ignore[no-untyped-def]
        run_id = create_run(*args, **kwargs)
        other = threading.Thread(target=lambda: moved.extend(ws.recover()))
        other.start()
        other.join()
        return run_id

    monkeypatch.setattr(ws.store, "create_run", create_then_recover_elsewhere)
    run = sync.run(progress=False)
    assert moved == [] and run.status == "success", run.error
    monkeypatch.undo()
    _registry.begin_start(ws.store.key)  # a start that never registers (its creation failed) ...
    _registry.abandon_start(ws.store.key)
    assert not _registry.owned_run_alive(ws.store.key, run.id)  # ... leaves no run of this process alive


def test_nothing_outside_the_runner_reaches_into_a_live_runner():
    """Callers use the registry's functions; only the runner reads a run's control."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("runner.py", "_registry.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name in ("run_control", "RunControl", "stop_event", "stop_what", "_control", "_LIVE_STAGING",
                        "_RUNS", "_SYNC_LOCKS"):
                offenders.append(f"{rel}:{node.lineno}: {name}")
    assert offenders == []

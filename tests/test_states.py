"""The two state machines of STATES.md: allowed transitions, refused ones, random walks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfsync
from dfsync.states import RUN_TRANSITIONS, SYNC_TRANSITIONS, RunStatus, SyncStatus, check_transition, sync_target

R, S = RunStatus, SyncStatus

EXPECTED_RUN = {
    (None, R.STARTED), (R.STARTED, R.QUERYING), (R.QUERYING, R.QUEUED), (R.QUEUED, R.IN_PROGRESS),
    (R.IN_PROGRESS, R.SUCCESS), (R.IN_PROGRESS, R.PAUSED), (R.PAUSED, R.IN_PROGRESS), (R.PAUSED, R.QUERYING),
    (R.STARTED, R.FAILED), (R.QUERYING, R.FAILED), (R.QUEUED, R.FAILED), (R.IN_PROGRESS, R.FAILED),
    (R.PAUSED, R.FAILED),
    # a run resumed from paused goes back to paused (Store.transition_run refuses it for other runs)
    (R.QUERYING, R.PAUSED), (R.QUEUED, R.PAUSED),
}


def test_run_table_is_exactly_states_md():
    assert set(RUN_TRANSITIONS) == EXPECTED_RUN


def test_str_enums_compare_to_strings():
    assert RunStatus.SUCCESS == "success"
    assert str(SyncStatus.HEALTHY) == "healthy"
    assert dfsync.RunStatus("paused") is RunStatus.PAUSED


@pytest.mark.parametrize("terminal", [R.SUCCESS, R.FAILED])
def test_terminal_states_go_nowhere(terminal):
    for target in RunStatus:
        with pytest.raises(dfsync.InvalidTransition, match="terminal|cannot go"):
            check_transition(terminal, target, what="run")


def test_invalid_transition_message_lists_allowed():
    with pytest.raises(dfsync.InvalidTransition) as exc:
        check_transition(R.STARTED, R.SUCCESS, what="run")
    assert "querying" in str(exc.value) and "failed" in str(exc.value)
    assert isinstance(exc.value, dfsync.DfsyncError)


def test_sync_enable_returns_to_last_outcome():
    assert sync_target(S.DISABLED, "enable") == S.PENDING
    assert sync_target(S.DISABLED, "enable_healthy") == S.HEALTHY
    assert sync_target(S.DISABLED, "enable_failed") == S.FAILED
    with pytest.raises(dfsync.InvalidTransition):
        sync_target(S.DISABLED, "run_succeeded")
    with pytest.raises(dfsync.InvalidTransition):
        sync_target(S.HEALTHY, "enable")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(RunStatus)), min_size=1, max_size=30))
def test_random_run_event_sequences(targets):
    """Drive random targets through the machine: accepted moves are exactly the table's."""
    current: RunStatus | None = None
    for t in targets:
        allowed = (current, t) in EXPECTED_RUN
        if allowed:
            check_transition(current, t, what="run")
            current = t
        else:
            with pytest.raises(dfsync.InvalidTransition):
                check_transition(current, t, what="run")
    if current is not None and current.terminal:
        assert all((current, t) not in RUN_TRANSITIONS for t in RunStatus)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["run_succeeded", "run_failed", "disable", "enable", "enable_healthy",
                                 "enable_failed", "create"]), max_size=30))
def test_random_sync_event_sequences(events):
    current = sync_target(None, "create")
    for e in events:
        if (current, e) in SYNC_TRANSITIONS:
            new = sync_target(current, e)
            if e == "disable":
                assert new == S.DISABLED
            if current == S.DISABLED:
                assert e.startswith("enable")
            current = new
        else:
            with pytest.raises(dfsync.InvalidTransition):
                sync_target(current, e)
    assert current in SyncStatus


@pytest.mark.workspaces("duckdb", "postgres")
def test_store_refuses_invalid_transition_and_logs_valid_ones(tmp_path, ws_target):
    ws = dfsync.Workspace(ws_target)
    import polars as pl

    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id")
    run = sync.run(progress=False)
    assert run.status == "success"
    with pytest.raises(dfsync.InvalidTransition):
        ws.store.transition_run(run.id, RunStatus.IN_PROGRESS)
    ev = run.events().filter(kind="run")
    assert ev["to_status"].to_list() == ["started", "querying", "queued", "in_progress", "success"]
    assert ev["from_status"].to_list()[1:] == ["started", "querying", "queued", "in_progress"]
    assert ev["ts"].is_sorted()


@pytest.mark.workspaces("duckdb", "postgres")
def test_only_a_resumed_run_pauses_before_it_transfers(tmp_path, ws_target):
    ws = dfsync.Workspace(ws_target)
    import polars as pl

    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1]})),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                          primary_key="id")
    rid = ws.store.create_run(sync.id, 1, "manual")
    ws.store.transition_run(rid, RunStatus.QUERYING)
    with pytest.raises(dfsync.InvalidTransition, match="resumed from paused"):
        ws.store.transition_run(rid, RunStatus.PAUSED)
    ws.store.transition_run(rid, RunStatus.QUEUED)
    ws.store.transition_run(rid, RunStatus.IN_PROGRESS)
    ws.store.transition_run(rid, RunStatus.PAUSED, error="why", error_kind="x")
    assert ws.run(rid).error == "why"
    ws.store.transition_run(rid, RunStatus.QUERYING)
    assert ws.run(rid).error is None  # resumed: why it paused is history
    ws.store.transition_run(rid, RunStatus.PAUSED)
    assert ws.run(rid).status == "paused"

"""The two state machines of STATES.md: allowed transitions, refused ones, random walks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfsync
from dfsync.states import (
    RUN_TRANSITIONS,
    SYNC_TRANSITIONS,
    RunStatus,
    SyncStatus,
    check_transition,
    sync_target,
)

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


def test_each_destination_mode_decides_its_policy_once():
    """What each mode sends is one table (STATES.md / API.md), read by staging, the runner,
    preview and the destinations alike."""
    from dfsync.states import DestinationMode as M

    table = {  # mode: (sent actions, removes rows gone from the source, rewrites, upserts)
        M.INSERT: (("insert",), False, False, False),
        M.UPSERT: (("insert", "update"), False, False, True),
        M.UPDATE: (("insert", "update"), False, False, False),
        M.MIRROR: (("insert", "update", "delete"), True, False, True),
        M.REPLACE: (("insert", "update", "unchanged"), True, True, False),
    }
    for mode, (sent, removes, rewrites, upserts) in table.items():
        assert (mode.sent_actions, mode.removes_missing, mode.rewrites, mode.upserts) == (sent, removes, rewrites, upserts)
        assert mode.sends_deletes == ("delete" in sent) and mode.sends_unchanged == ("unchanged" in sent)
        assert mode.sends_updates == ("update" in sent)
    from dfsync.staging import Staging

    assert Staging.send_filter(M.MIRROR) == "_action IN ('insert', 'update', 'delete')"


def test_active_run_statuses_are_one_list():
    from dfsync.states import ACTIVE_RUNS, UNFINISHED_RUNS

    assert ACTIVE_RUNS == ("started", "querying", "queued", "in_progress")
    assert (*ACTIVE_RUNS, "paused") == UNFINISHED_RUNS
    assert [s.value for s in RunStatus if s.active] == list(ACTIVE_RUNS)


@pytest.mark.parametrize("value, ok", [(0, True), (3, True), (0.25, True), (1.0, True), (2.0, True),
                                       (-1, False), (2.5, False), (True, False), ("3", False)])
def test_one_failed_rows_threshold_for_the_limit_and_the_alert(tmp_path, value, ok):
    import polars as pl

    from dfsync.states import failed_rows_allowed

    assert failed_rows_allowed(0.25, 40) == 10 and failed_rows_allowed(3, 40) == 3 and failed_rows_allowed(2.0, 40) == 2
    # 1.0 is a fraction, as the setting's message says ("0.0 to 1.0"): every sent row, not one row
    assert failed_rows_allowed(1.0, 40) == 40 and failed_rows_allowed(1, 40) == 1
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    try:
        for name in ("max_failed_rows", "failed_rows_alert"):
            kwargs = {"source": dfsync.sources.frame(pl.DataFrame({"id": [1]})), "primary_key": "id", name: value,
                      "destination": dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")}
            if ok:
                ws.create_sync(f"s_{name}", **kwargs)
            else:
                with pytest.raises(dfsync.ConfigError, match=f"{name} must be a row count"):
                    ws.create_sync(f"s_{name}", **kwargs)
    finally:
        ws.close()

"""Resource settings: a ``Workspace(...)`` keyword, else a ``DFSYNC_*`` variable read when used."""

from __future__ import annotations

import polars as pl
import pytest

import dfsync
from dfsync._settings import SETTINGS, setting
from dfsync.staging import Staging


def test_an_environment_variable_set_after_import_is_used(monkeypatch):
    monkeypatch.setenv("DFSYNC_STAGING_MEMORY", "300MB")
    monkeypatch.setenv("DFSYNC_POSTGRES_WRITERS", "5")
    staging = Staging()
    try:
        assert staging.memory_limit == "300MB"
    finally:
        staging.close()
    assert setting("postgres_writers") == 5
    monkeypatch.delenv("DFSYNC_POSTGRES_WRITERS")
    assert setting("postgres_writers") == SETTINGS["postgres_writers"].default


def test_workspace_keywords_win_over_the_environment_for_its_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DFSYNC_STAGING_MEMORY", "300MB")
    seen: list[tuple[str, int]] = []

    def progress(status, row):
        seen.append((setting("staging_memory"), setting("mysql_writers")))

    ws = dfsync.Workspace(tmp_path / "ws.duckdb", staging_memory="200MB", mysql_writers=3,
                          workspace_memory="128MB")
    try:
        assert ws.store.memory_limit == "128MB"
        sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})),
                              destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"),
                              primary_key="id")
        assert sync.run(progress=progress).status == "success"
        assert seen and set(seen) == {("200MB", 3)}
        assert setting("staging_memory") == "300MB"  # outside the workspace's runs: the environment
        other = dfsync.Workspace(tmp_path / "other.duckdb")
        assert other.settings == {}
        other.close()
    finally:
        ws.close()


def test_a_bad_setting_is_refused_with_its_variable_named(tmp_path):
    with pytest.raises(dfsync.ConfigError, match="DFSYNC_POSTGRES_WRITERS"):
        dfsync.Workspace(tmp_path / "ws.duckdb", postgres_writers="many")
    assert not (tmp_path / "ws.duckdb").exists()


def test_a_memory_size_or_writer_count_that_cannot_work_is_refused_before_anything_runs(tmp_path, monkeypatch):
    # staging_memory='lots' was taken and every run failed with DuckDB's raw 'Parser Error: Memory must
    # have a number'; workspace_memory='huge' called the workspace file damaged ('restore it from a
    # copy or move it away'); postgres_writers=0 or -3 became 1 and 2.5 became 2 without a word
    for kw, var in [({"staging_memory": "lots"}, "DFSYNC_STAGING_MEMORY"),
                    ({"workspace_memory": "huge"}, "DFSYNC_WORKSPACE_MEMORY"),
                    ({"destination_memory": "-1GB"}, "DFSYNC_DESTINATION_MEMORY"),
                    ({"postgres_writers": 0}, "DFSYNC_POSTGRES_WRITERS"),
                    ({"mysql_writers": 2.5}, "DFSYNC_MYSQL_WRITERS")]:
        with pytest.raises(dfsync.ConfigError, match=rf"{list(kw)[0]}=.*: write a .*{var}") as err:
            dfsync.Workspace(tmp_path / "ws.duckdb", **kw)
        assert not isinstance(err.value, dfsync.WorkspaceError)
    assert not (tmp_path / "ws.duckdb").exists()
    ws = dfsync.Workspace(tmp_path / "ws.duckdb", staging_memory="1.5GiB", workspace_memory="300 MiB",
                          destination_memory="1g", postgres_writers="3")
    assert ws.settings["postgres_writers"] == 3
    sync = ws.create_sync("s", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})), primary_key="id",
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t"))
    assert sync.run(progress=False).status == "success"
    ws.close()
    monkeypatch.setenv("DFSYNC_STAGING_MEMORY", "lots")  # read when a run starts: it fails naming the variable
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    run = ws.sync("s").run(progress=False)
    assert run.status == "failed" and "DFSYNC_STAGING_MEMORY='lots': write a memory size" in run.error, run.error
    ws.close()


def test_a_workspace_argument_of_the_wrong_type_is_an_argument_error_naming_it(tmp_path, monkeypatch):
    """Workspace(busy_timeout='x') raised a bare TypeError from deep inside ('unsupported operand
    type(s) for +: float and str'); busy_timeout=None did the same, -1 and NaN were taken, and
    create='yes' or workspace_memory=1.5 (no unit: 'the workspace file is damaged') went through."""
    path = tmp_path / "ws.duckdb"
    for kw, err, text in [({"busy_timeout": "x"}, dfsync.ArgumentError, "busy_timeout='x': write a number of seconds"),
                          ({"busy_timeout": True}, dfsync.ArgumentError, "busy_timeout=True: .* not bool"),
                          ({"busy_timeout": [30]}, dfsync.ArgumentError, "busy_timeout=.30.: .* not list"),
                          ({"busy_timeout": -1}, dfsync.ConfigError, "busy_timeout=-1: write a number of seconds from 0"),
                          ({"busy_timeout": float("nan")}, dfsync.ConfigError, "busy_timeout=nan"),
                          ({"create": "yes"}, dfsync.ArgumentError, r"create='yes'\): create takes True .* not str"),
                          ({"allowed_callbacks": 5}, dfsync.ArgumentError, "allowed_callbacks=5: write module names"),
                          ({"workspace_memory": 1.5}, dfsync.ConfigError, "workspace_memory=1.5: .* with its unit")]:
        with pytest.raises(err, match=text) as raised:
            dfsync.Workspace(path, **kw)
        assert not isinstance(raised.value, dfsync.WorkspaceError), kw
        if err is dfsync.ArgumentError:
            assert isinstance(raised.value, TypeError)  # still what a type mistake raises in Python
    assert not path.exists()
    ws = dfsync.Workspace(path, busy_timeout=0)
    assert ws.store.busy_timeout == 0
    ws.close()
    monkeypatch.setenv("DFSYNC_BUSY_TIMEOUT", "7")
    ws = dfsync.Workspace(path, busy_timeout=None)  # None: the environment's, else the default
    assert ws.store.busy_timeout == 7
    ws.close()
    monkeypatch.setenv("DFSYNC_BUSY_TIMEOUT", "soon")
    with pytest.raises(dfsync.ConfigError, match="DFSYNC_BUSY_TIMEOUT='soon'"):
        dfsync.Workspace(path, busy_timeout=None)

"""SyncDefinition: the stored JSON of a sync is the same as before it existed, reads back
equal, and a workspace written by an earlier version opens and runs."""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import polars as pl
import pytest

import dfsync
from dfsync.definition import SyncDefinition

# What create_sync stored before SyncDefinition existed (commit 842eab3), for the syncs
# created in _make below; "@" stands for the test's directory.
RICH = json.loads(r'''{"source": {"kind": "files", "path": ["@/src.parquet"], "format": "parquet"}, "destination": {"kind": "duckdb", "path": "@/wh.duckdb", "table": "t"}, "primary_key": ["key"], "mapping": {"key": {"column": "id"}, "name": {"expr": "{\"BinaryExpr\":{\"left\":{\"BinaryExpr\":{\"left\":{\"Column\":\"first\"},\"op\":\"Plus\",\"right\":{\"Literal\":{\"Scalar\":{\"String\":\" \"}}}}},\"op\":\"Plus\",\"right\":{\"Column\":\"last\"}}}"}, "origin": {"static": "crm"}, "updated_at": {"column": "updated_at"}, "amount": {"column": "amount"}}, "sync_mode": "incremental", "cursor_field": "updated_at", "destination_mode": "upsert", "checks": [{"kind": "not_null", "name": "name not_null", "column": "name", "level": "row", "mostly": 1.0, "params": {}}, {"kind": "between", "name": "amount between", "column": "amount", "level": "row", "mostly": 0.9, "params": {"min": 0, "max": 10, "strict_min": false, "strict_max": false}}], "on_invalid": "skip", "max_failed_rows": 0.05, "batch_size": 5000, "schedule": "every 15 minutes", "failed_rows_alert": 3, "allow_empty": false, "schema": "freeze", "callbacks": {"on_success": "json:dumps"}, "lookback": {"seconds": 172800.0}, "initial_cursor": {"type": "datetime", "value": "2023-12-31T00:00:00"}}''')
PLAIN = json.loads(r'''{"source": {"kind": "files", "path": ["@/src.parquet"], "format": "parquet"}, "destination": {"kind": "sqlite", "path": "@/wh.sqlite", "table": "t", "retry_timeout": 30.0}, "primary_key": ["id", "first"], "mapping": null, "sync_mode": "full_refresh", "cursor_field": null, "destination_mode": "mirror", "checks": [], "on_invalid": "fail", "max_failed_rows": 0, "batch_size": 100000, "schedule": null, "failed_rows_alert": null, "allow_empty": false, "schema": "evolve", "callbacks": {}}''')


def _at(d: dict, where) -> dict:
    return json.loads(json.dumps(d).replace('"@/', json.dumps(str(where) + "/")[:-1]))


def _make(ws, tmp_path):
    df = pl.DataFrame({"id": [1, 2], "first": ["a", "b"], "last": ["x", "y"],
                       "updated_at": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)], "amount": [1.5, 2.5]})
    df.write_parquet(tmp_path / "src.parquet")
    rich = ws.create_sync(
        "rich", source=dfsync.sources.files(str(tmp_path / "src.parquet")),
        destination=dfsync.destinations.duckdb(str(tmp_path / "wh.duckdb"), table="t"), primary_key="key",
        mapping={"key": "id", "name": pl.col("first") + " " + pl.col("last"), "origin": dfsync.static("crm"),
                 "updated_at": "updated_at", "amount": "amount"},
        sync_mode="incremental", cursor_field="updated_at", lookback="2 days", initial_cursor="2023-12-31",
        checks=[dfsync.checks.not_null("name"), dfsync.checks.between("amount", 0, 10, mostly=0.9)],
        on_invalid="skip", max_failed_rows=0.05, batch_size=5000, schedule="every 15 minutes",
        on_success="json:dumps", failed_rows_alert=3, schema="freeze")
    plain = ws.create_sync(
        "plain", source=dfsync.sources.files(str(tmp_path / "src.parquet")),
        destination=dfsync.destinations.sqlite(str(tmp_path / "wh.sqlite"), table="t"), primary_key=["id", "first"],
        destination_mode="mirror")
    return rich, plain


def test_create_sync_stores_the_same_json_as_before(tmp_path):
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        rich, plain = _make(ws, tmp_path)
        assert rich.definition == _at(RICH, tmp_path)
        assert list(rich.definition) == list(RICH)  # same keys, same order
        # batch_size=None (the destination's own size) became the default after 842eab3 (issue 22)
        assert plain.definition == {**_at(PLAIN, tmp_path), "batch_size": None}
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:  # as read back from the file
        assert ws.sync("rich").definition == _at(RICH, tmp_path)


@pytest.mark.parametrize("stored", [RICH, PLAIN], ids=["rich", "plain"])
def test_json_round_trip_is_exact(stored):
    spec = SyncDefinition.from_json(stored)
    assert spec.to_json() == stored
    assert json.dumps(spec.to_json()) == json.dumps(stored)  # key order too


def test_read_back_definition_builds_its_parts_on_use(tmp_path):
    spec = SyncDefinition.from_json(_at(RICH, tmp_path))
    assert "checks" not in spec.__dict__ and "destination" not in spec.__dict__  # nothing built yet
    assert spec.sync_mode == dfsync.SyncMode.INCREMENTAL and spec.primary_key == ["key"]
    assert spec.on_success == "json:dumps" and spec.on_failure is None
    assert [c.name for c in spec.checks] == ["name not_null", "amount between"]
    assert "wh.duckdb" in spec.destination.describe()
    assert spec.to_json() == _at(RICH, tmp_path)  # built parts give back the same config


def test_validate_normalises_to_the_stored_form(tmp_path):
    pl.DataFrame({"id": [1], "ts": [dt.datetime(2024, 1, 1)]}).write_parquet(tmp_path / "s.parquet")
    spec = SyncDefinition(source=dfsync.sources.files(str(tmp_path / "s.parquet")),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "w.duckdb"), table="t"),
                          primary_key="id", sync_mode="incremental", cursor_field="ts", lookback="1 hour",
                          checks=dfsync.checks.not_null("ts"), on_failure=print)
    assert spec.validate() is spec
    assert spec.primary_key == ["id"] and spec.sync_mode is dfsync.SyncMode.INCREMENTAL
    assert spec.lookback == {"seconds": 3600.0} and spec.initial_cursor is None
    out = spec.to_json()
    assert out["callbacks"] == {} and "initial_cursor" not in out and out["checks"][0]["kind"] == "not_null"
    assert SyncDefinition.from_json(out).to_json() == out
    with pytest.raises(dfsync.ConfigError, match="batch_size must be a positive integer, not 0"):
        SyncDefinition(source=spec.source, destination=spec.destination, primary_key="id", batch_size=0).validate()


def test_a_workspace_written_by_an_earlier_version_opens_and_runs(tmp_path):
    """A definition stored before some keys existed (schema, allow_empty, failed_rows_alert,
    callbacks): the defaults apply, and the run delivers."""
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        _make(ws, tmp_path)
    old = {k: v for k, v in _at(PLAIN, tmp_path).items()
           if k not in ("schema", "allow_empty", "failed_rows_alert", "callbacks")}
    con = duckdb.connect(str(tmp_path / "ws.duckdb"))  # as an earlier version left the file
    con.execute("UPDATE syncs SET definition = ? WHERE name = 'plain'", [json.dumps(old)])
    con.close()
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        s = ws.sync("plain")
        assert s.definition == old
        assert s.schema_policy == "evolve" and s.allow_empty is False and s.failed_rows_alert is None
        assert s.on_success is None and s.destination_mode == dfsync.DestinationMode.MIRROR
        run = s.run(progress=False)
        assert run.status == dfsync.RunStatus.SUCCESS and run.counts["inserted"] == 2
        rich = ws.sync("rich").run(progress=False)
        assert rich.status == dfsync.RunStatus.SUCCESS and rich.counts["inserted"] == 2


def test_the_runner_receives_plain_data_and_never_sees_the_handles():
    """dfsync/runner.py imports no user-facing handle module and reaches for no handle attribute:
    it gets the definition, the ids, the store and the staging directory; callbacks fire on the
    handle's side."""
    import ast
    import pathlib

    import dfsync.runner

    tree = ast.parse(pathlib.Path(dfsync.runner.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert not imported & {"workspace", "sync", "run", "_callbacks"}, imported
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"workspace", "_run_handle", "on_success", "on_failure", "on_paused", "ws"}, attrs

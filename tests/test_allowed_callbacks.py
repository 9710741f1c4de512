"""Callbacks are code, definitions are data: a stored ``"module:function"`` callback runs only
from a module this host allows; any other is never imported, and the run says so."""

from __future__ import annotations

import ast
import base64
import json
import pathlib
import sys
import warnings

import duckdb
import polars as pl
import pytest

import dfsync

HOOK = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")

def cb(run):
    pathlib.Path({ran!r}).write_text(run.status.value)
'''


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    """``make(name)`` writes module ``name`` whose import writes ``<name>.imported`` and whose
    ``cb`` writes ``<name>.ran``; returns those two paths."""
    mods = tmp_path / "mods"
    mods.mkdir()
    monkeypatch.syspath_prepend(str(mods))

    def make(name: str) -> tuple[pathlib.Path, pathlib.Path]:
        marker, ran = tmp_path / f"{name}.imported", tmp_path / f"{name}.ran"
        (mods / f"{name}.py").write_text(HOOK.format(marker=str(marker), ran=str(ran)))
        return marker, ran

    yield make
    for name in [m for m in sys.modules if m.startswith("dfsync_hook_")]:
        del sys.modules[name]


def _sync(ws, tmp_path, name, **kw):
    return ws.create_sync(name, source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table=name),
                          primary_key="id", **kw)


def test_a_stored_callback_from_a_module_not_allowed_is_never_imported(tmp_path, hooks):
    marker, ran = hooks("dfsync_hook_evil")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb", allowed_callbacks=["dfsync_hook"])  # a prefix, not a package
    try:
        with pytest.warns(UserWarning, match="not imported"):
            sync = _sync(ws, tmp_path, "s", on_success="dfsync_hook_evil:cb")
        run = sync.run(progress=False)
        assert run.status == "success" and run.counts["sent"] == 2  # the run goes on
        assert not marker.exists() and not ran.exists() and "dfsync_hook_evil" not in sys.modules
        notes = run.events().filter(pl.col("kind") == "note")["detail"].to_list()
        assert any("on_success" in n and "not run" in n and "DFSYNC_ALLOWED_CALLBACKS" in n for n in notes), notes
    finally:
        ws.close()
    # the same stored definition on a host that allows the module: imported and called
    ws = dfsync.Workspace(tmp_path / "ws.duckdb", allowed_callbacks=["dfsync_hook_evil"])
    try:
        assert ws.sync("s").run(progress=False).status == "success"
        assert marker.read_text() == "imported" and ran.read_text() == "success"
    finally:
        ws.close()


def test_the_environment_allows_a_package_and_its_submodules(tmp_path, hooks, monkeypatch):
    marker, ran = hooks("dfsync_hook_env")
    monkeypatch.setenv("DFSYNC_ALLOWED_CALLBACKS", "other.pkg, dfsync_hook_env")
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws, warnings.catch_warnings():
        warnings.simplefilter("error")  # allowed: checked (imported) at definition time, no warning
        sync = _sync(ws, tmp_path, "s", on_failure="dfsync_hook_env:cb", on_success="dfsync_hook_env:cb")
        assert marker.exists()
        assert sync.run(progress=False).status == "success" and ran.read_text() == "success"


def test_callables_of_this_session_always_run(ws, tmp_path):
    seen = []
    assert _sync(ws, tmp_path, "s", on_success=lambda r: seen.append(r.id)).run(progress=False).status == "success"
    assert seen == [1]


def test_a_bad_allowed_callbacks_setting_is_refused(tmp_path):
    with pytest.raises(dfsync.ConfigError, match="DFSYNC_ALLOWED_CALLBACKS"):
        dfsync.Workspace(tmp_path / "ws.duckdb", allowed_callbacks=["my team"])


def test_nothing_in_dfsync_evaluates_stored_data():
    """No eval/exec/compile, no pickle/marshal/shelve anywhere in the package."""
    found = []
    for path in pathlib.Path(dfsync.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "eval", "exec", "compile", "__import__"):
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cloudpickle", "dill", "marshal", "shelve") for n in names):
                    found.append(f"{path.name}:{node.lineno} import")
    assert found == []


def test_a_polars_expression_running_python_code_is_never_stored_nor_read_back(tmp_path, dfsync_cli):
    """Polars pickles a Python function inside an expression (map_batches, map_elements, fold) and
    unpickles it when the expression is read back: a check or mapping stored so ran its code in
    every process that ran the sync (dfsync run, the scheduler), past allowed_callbacks."""
    src = tmp_path / "src.parquet"
    pl.DataFrame({"id": [1, 2], "x": [1, -2]}).write_parquet(src)
    ran = tmp_path / "udf.ran"

    def positive(s):  # pickled by value with the expression (a function of this test)
        pathlib.Path(str(ran)).write_text("ran")
        return s > 0

    code_check = dfsync.checks.expression(pl.col("x").map_batches(positive, return_dtype=pl.Boolean), name="pos")
    plain_check = dfsync.checks.expression(pl.col("x") > 0, name="pos")
    with dfsync.Workspace(tmp_path / "ws.duckdb") as ws:
        dest = dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")
        sync = ws.create_sync("s", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                              checks=[code_check], on_invalid="skip")
        run = sync.run(progress=False)  # in the session that made it, it runs
        assert run.status == "success" and run.counts["invalid"] == 1 and ran.exists()
        assert sync.definition["checks"][0]["params"]["expr"] is None and sync.session_only
        mapped = ws.create_sync("m", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                                mapping={"id": "id", "y": pl.col("x").map_batches(positive, return_dtype=pl.Int64)})
        assert "python" in mapped.definition["mapping"]["y"] and mapped.session_only
        # what an earlier version stored, or anyone who can write the definitions: the pickled function
        stored = ws.create_sync("c", source=dfsync.sources.files(str(src)), destination=dest, primary_key="id",
                                checks=[plain_check], on_invalid="skip").definition
    ran.unlink()
    stored["checks"][0]["params"]["expr"] = base64.b64encode(code_check.expr.meta.serialize()).decode()
    con = duckdb.connect(str(tmp_path / "ws.duckdb"))
    con.execute("UPDATE syncs SET definition = ? WHERE name = 'c'", [json.dumps(stored)])
    con.close()
    said = {}
    for name in ("c", "s"):
        out = dfsync_cli("--workspace", str(tmp_path / "ws.duckdb"), "run", name)
        assert out.code != 0 and not ran.exists(), (out.out, out.err)
        said[name] = out.out + out.err
    assert "check 'pos': the stored polars expression holds Python code" in said["c"], said["c"]
    assert "runs a Python function" in said["s"], said["s"]

"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient), in a temp copy.

Jupyter's dirs and HOME point at the test's temp dir, so nothing is written to the real home.
nbclient saves the widget models the notebook created in the notebook's metadata
(``application/vnd.jupyter.widget-state+json``); the tests assert on that saved state, which
is what a reader of the executed notebook would see.

A notebook may declare ``metadata.dfsync.requires`` (modules it needs, e.g. a destination
that lands in another branch); it is skipped only while one of them cannot be imported.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")


def jupyter_env(tmp: pathlib.Path) -> dict[str, str]:
    """Environment for a kernel that writes only under ``tmp`` and imports this checkout's dfsync."""
    home = tmp / "home"
    env = dict(os.environ)
    env.update({
        "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"), "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "IPYTHONDIR": str(home / "ipython"), "TMPDIR": str(tmp / "scratch"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    for d in ("jupyter-config", "jupyter-data", "jupyter-runtime", "ipython"):
        (home / d).mkdir(parents=True, exist_ok=True)
    (tmp / "scratch").mkdir(exist_ok=True)
    return env


def copy_repo_bits(tmp: pathlib.Path) -> pathlib.Path:
    """notebooks/ and data/ side by side, as in a checkout."""
    shutil.copytree(ROOT / "notebooks", tmp / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "data", tmp / "data")
    return tmp / "notebooks"


def missing_requirements(nb: Any, env: dict[str, str]) -> list[str]:
    needs = list((nb.metadata.get("dfsync") or {}).get("requires") or [])
    if not needs:
        return []
    code = ("import importlib.util, json, sys; "
            "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))")
    out = subprocess.run([sys.executable, "-c", code, *needs], capture_output=True, text=True, env=env,
                         cwd=str(ROOT), timeout=60, check=True)
    return json.loads(out.stdout)


def execute(path: pathlib.Path, env: dict[str, str]) -> Any:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=240, store_widget_state=True,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env, cwd=str(path.parent))
    return nb


def widget_models(nb: Any) -> dict[str, dict[str, Any]]:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def models_with_class(models: dict[str, dict[str, Any]], cls: str) -> list[dict[str, Any]]:
    return [m["state"] for m in models.values() if cls in (m["state"].get("_dom_classes") or [])]


def attr(html: str, name: str) -> str:
    m = re.search(rf'{name}="([^"]*)"', html)
    assert m, f"{name} not in {html[:200]!r}"
    return m.group(1)


def panels(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each saved SyncPanel as {status, run_id, runs, run_status, counts} read from its widget models."""
    out = []
    for panel in models_with_class(models, "dfsync-panel"):
        ids = set()
        stack = list(panel["children"])
        while stack:
            mid = stack.pop().removeprefix("IPY_MODEL_")
            ids.add(mid)
            stack.extend(models[mid]["state"].get("children") or [])
        sub = {mid: models[mid] for mid in ids}
        run = models_with_class(sub, "dfsync-run")[0]["value"]
        p = {"status": attr(models_with_class(sub, "dfsync-status")[0]["value"], "data-status"),
             "runs": int(attr(run, "data-runs")), "run_id": attr(run, "data-run-id"),
             "counts": {}, "run_status": None}
        if p["run_id"]:
            p["run_status"] = attr(models_with_class(sub, "dfsync-timeline-widget")[0]["value"], "data-status")
            for k in ("inserted", "updated", "deleted", "unchanged", "invalid", "failed"):
                p["counts"][k] = int(attr(models_with_class(sub, f"dfsync-counter-{k}")[0]["value"], "data-value"))
        out.append(p)
    return out


def run_notebook(name: str, tmp_path: pathlib.Path, extra_env: dict[str, str] | None = None) -> Any:
    nbdir = copy_repo_bits(tmp_path)
    env = {**jupyter_env(tmp_path), **(extra_env or {})}
    path = nbdir / f"{name}.ipynb"
    missing = missing_requirements(nbformat.read(path, as_version=4), env)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, which is not in this checkout yet")
    nb = execute(path, env)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
    # nothing was written to the real home
    assert (tmp_path / "home").exists()
    return nb


def test_notebooks_are_stored_without_outputs() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"01_quickstart", "02_incremental_and_preview", "03_validation",
                                           "04_postgres", "05_monitoring"}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{p.name} has outputs"
        assert "widgets" not in nb.metadata, f"{p.name} has saved widget state"


def test_01_quickstart(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("01_quickstart", tmp_path)
    models = widget_models(nb)
    ps = panels(models)
    # two live panels from sync.run(), then the explicit SyncPanel
    assert len(ps) == 3
    first, second, final = ps
    assert first["run_id"] == "1" and first["run_status"] == "success" and first["counts"]["inserted"] == 200
    assert second["run_id"] == "2" and second["run_status"] == "success"
    assert (second["counts"]["inserted"], second["counts"]["updated"], second["counts"]["deleted"]) == (5, 12, 3)
    assert final == {**second, "status": "healthy", "runs": 2}
    assert all(p["status"] == "healthy" for p in ps)
    progress = [m["state"] for m in models.values() if m["model_name"] == "IntProgressModel"]
    assert len(progress) == 3 and all(p["value"] == p["max"] and p["bar_style"] == "success" for p in progress)
    history = models_with_class(models, "dfsync-history")
    assert len(history) == 1 and history[0]["value"].count("<rect") == 2
    # static reprs are in the outputs too (they do not need the widget manager)
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []))
    assert 'class="dfsync"' in html and "dfsync workspace" in html


def test_02_incremental_and_preview(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("02_incremental_and_preview", tmp_path)
    ps = panels(widget_models(nb))
    assert [p["run_status"] for p in ps] == ["success", "success"]
    assert ps[0]["counts"]["inserted"] == 500
    assert (ps[1]["counts"]["inserted"], ps[1]["counts"]["updated"]) == (40, 10)
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []))
    assert "preview of <code>orders</code>" in html and "nothing would change" in html


def test_03_validation(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("03_validation", tmp_path)
    ps = panels(widget_models(nb))
    assert ps[0]["run_status"] == "failed" and ps[0]["status"] == "failed"
    assert ps[-1]["run_status"] == "success" and ps[-1]["counts"]["invalid"] == 5


def test_04_postgres(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "04_postgres.ipynb", as_version=4)
    if missing_requirements(nb, jupyter_env(tmp_path / "probe")):
        pytest.skip("the PostgreSQL destination is not in this checkout yet")
    try:
        server = request.getfixturevalue("pg_server")
    except pytest.FixtureLookupError:
        pytest.skip("the pg_server fixture (tests/plugins/postgres.py) is not in this checkout yet")
    nb = run_notebook("04_postgres", tmp_path / "run", {"DFSYNC_PG_URI": server.uri})
    ps = panels(widget_models(nb))
    assert [p["run_status"] for p in ps] == ["success", "success", "success"]
    assert ps[1]["counts"]["updated"] == 12


def test_05_monitoring(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("05_monitoring", tmp_path)
    models = widget_models(nb)
    ps = panels(models)
    # the panel opened from the dashboard, then the live panel of the resumed run
    assert len(ps) == 2
    assert ps[0]["run_status"] == "success" and ps[0]["runs"] == 2
    assert ps[1]["run_status"] == "success" and ps[1]["runs"] == 1  # resumed: still one run of events
    assert ps[1]["counts"]["inserted"] == 2000
    # nbclient keeps closed models too, so read the rows the dashboard table holds at the end
    table = models_with_class(models, "dfsync-dashboard-table")
    assert len(table) == 1
    children = [models[c.removeprefix("IPY_MODEL_")]["state"] for c in table[0]["children"]]
    dash_rows = [c for c in children if "dfsync-dashboard-row" in (c.get("_dom_classes") or [])]
    assert len(dash_rows) == 3  # one per sync
    row_html = " ".join(models[c.removeprefix("IPY_MODEL_")]["state"].get("value", "")
                        for r in dash_rows for c in r["children"])
    assert 'data-status="disabled"' in row_html  # orders was disabled before the last refresh
    history = models_with_class(models, "dfsync-history")
    assert len(history) == 1 and history[0]["value"].count("<rect") == 2


def test_run_in_a_notebook_without_ipywidgets_shows_static_html(tmp_path: pathlib.Path) -> None:
    """No ``widgets`` extra: ``sync.run()`` still shows its progress, as HTML updated in place."""
    from nbformat.v4 import new_code_cell, new_notebook

    copy_repo_bits(tmp_path)
    nb = new_notebook(cells=[new_code_cell(c) for c in (
        'import sys\nsys.modules["ipywidgets"] = None  # as if the package were not installed',
        "import pathlib, dfsync\n"
        "ws = dfsync.Workspace('ws.duckdb')\n"
        "sync = ws.create_sync('c', source=dfsync.sources.files(str(pathlib.Path('data/customers_v1.parquet').resolve())),\n"
        "    destination=dfsync.destinations.duckdb('wh.duckdb', table='c'), primary_key='customer_id')\n"
        "run = sync.run()\n"
        "assert run.status == 'success'",
        "try:\n    dfsync.widgets.SyncPanel(sync)\nexcept dfsync.MissingDependencyError as exc:\n    print(exc)",
    )])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nowidgets.ipynb"
    nbformat.write(nb, path)
    out = execute(path, jupyter_env(tmp_path))
    run_outputs = out.cells[1].outputs
    html = [o for o in run_outputs if o.get("output_type") == "display_data"]
    assert len(html) == 1 and "text/html" in html[0]["data"]
    final = html[0]["data"]["text/html"]  # nbclient applied the in-place updates
    assert 'data-status="success"' in final and 'data-value="200"' in final
    assert "widgets" not in out.metadata  # no widget models were created
    printed = "".join(o.get("text", "") for o in out.cells[2].outputs)
    assert "pip install 'dfsync[widgets]'" in printed

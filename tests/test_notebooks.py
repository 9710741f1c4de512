"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient), in a temp copy.

Jupyter's dirs and HOME point at the test's temp dir, so nothing is written to the real home.
nbclient saves the widget models the notebook created in the notebook's metadata
(``application/vnd.jupyter.widget-state+json``); the tests assert on that saved state, which
is what a reader of the executed notebook would see.

A notebook may declare ``metadata.dfsync.requires`` (modules it needs, e.g. a destination
that lands in another branch); it is skipped only while one of them cannot be imported.
"""

from __future__ import annotations

import importlib.util
import json
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

# Found, not imported: importing nbformat costs ~2 CPU-s (jsonschema builds rfc3987_syntax's grammar),
# and every xdist worker imports this module to collect it; the worker running the tests imports it.
for _module in ("nbformat", "nbclient", "ipykernel", "ipywidgets"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"could not import {_module!r}", allow_module_level=True)


def _nbformat() -> Any:
    import nbformat

    return nbformat


def _regenerate() -> Any:
    """notebooks/regenerate.py, the script that saves the committed notebooks (one way to run them)."""
    spec = importlib.util.spec_from_file_location("dfsync_regenerate", ROOT / "notebooks" / "regenerate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


REGENERATE = _regenerate()


def jupyter_env(tmp: pathlib.Path) -> dict[str, str]:
    """Environment for a kernel that writes only under ``tmp`` and imports this checkout's dfsync."""
    env = REGENERATE.kernel_env(tmp)
    env["TMPDIR"] = str(tmp / "scratch")
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
    return REGENERATE.execute(path, env)


def widget_models(nb: Any) -> dict[str, dict[str, Any]]:
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def models_with_class(models: dict[str, dict[str, Any]], cls: str) -> list[dict[str, Any]]:
    return [m["state"] for m in models.values() if cls in (m["state"].get("_dom_classes") or [])]


def attr(html: str, name: str) -> str:
    m = re.search(rf'{name}="([^"]*)"', html)
    assert m, f"{name} not in {html[:200]!r}"
    return m.group(1)


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def html_outputs(nb: Any) -> list[str]:
    return [o.get("data", {}).get("text/html", "") for o in outputs(nb)
            if o.get("output_type") in ("display_data", "execute_result") and "text/html" in o.get("data", {})]


def read_run(html: str) -> dict[str, Any]:
    """Status, run id and counters of the first run shown in a piece of dfsync HTML."""
    body = html[html.index('class="dfsync-run-body"'):]
    return {"run_status": attr(body, "data-status"), "run_id": attr(body, "data-run-id"),
            "counts": {k: int(v) for k, v in re.findall(r'data-counter="(\w+)" data-value="(\d+)"', body)}}


def run_panels(nb: Any) -> list[dict[str, Any]]:
    """What every ``sync.run()`` left in the notebook: its static HTML panel, in order."""
    return [read_run(h) for h in html_outputs(nb) if "dfsync-run-panel" in h]


def panels(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each saved SyncPanel widget as {status, run_id, runs, run_status, counts} read from its models."""
    out = []
    for panel in models_with_class(models, "dfsync-panel"):
        kids = [models[c.removeprefix("IPY_MODEL_")]["state"] for c in panel["children"]]
        header = next(k for k in kids if "dfsync-header" in k["_dom_classes"])["value"]
        body = next(k for k in kids if "dfsync-body" in k["_dom_classes"])["value"]
        status_span = header[header.index('class="dfsync-status"'):]
        p = {"status": attr(status_span, "data-status"), "runs": int(attr(header, "data-runs")),
             "run_id": attr(header, "data-run-id"), "counts": {}, "run_status": None}
        if p["run_id"]:
            p.update({k: v for k, v in read_run(body).items() if k != "run_id"})
        out.append(p)
    return out


def run_notebook(name: str, tmp_path: pathlib.Path, extra_env: dict[str, str] | None = None) -> Any:
    nbdir = copy_repo_bits(tmp_path)
    env = {**jupyter_env(tmp_path), **(extra_env or {})}
    path = nbdir / f"{name}.ipynb"
    missing = missing_requirements(_nbformat().read(path, as_version=4), env)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, which is not in this checkout yet")
    nb = execute(path, env)
    for out in outputs(nb):
        assert out.get("output_type") != "error", f"{name}: {out.get('ename')}: {out.get('evalue')}"
    # nothing was written to the real home
    assert (tmp_path / "home").exists()
    check_renders_anywhere(nb, name)
    return nb


MAX_MODELS = 80  # widget models a notebook may store: a few per widget (and dashboard row), none per run


def check_renders_anywhere(nb: Any, name: str) -> None:
    """What a reader without a kernel sees: run panels as HTML, a snapshot beside every widget."""
    from nbconvert import HTMLExporter

    for out in outputs(nb):
        data = out.get("data", {})
        assert "VBox(children" not in data.get("text/plain", "") and "HBox(children" not in data.get("text/plain", "")
        if "application/vnd.jupyter.widget-view+json" in data and data.get("text/plain", "").startswith("<dfsync"):
            assert 'class="dfsync' in data.get("text/html", ""), f"{name}: a widget output without its HTML snapshot"
    models = widget_models(nb)
    assert len(models) <= MAX_MODELS, f"{name} stores {len(models)} widget models"
    page, _ = HTMLExporter().from_notebook_node(nb)
    for html in html_outputs(nb):
        if "dfsync-run-panel" in html:
            assert html in page or read_run(html)["run_id"] in page  # the run panel is in the exported page


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_has_outputs_that_render_as_html(path: pathlib.Path) -> None:
    """The notebooks are committed with their outputs (notebooks/regenerate.py) and read without a kernel."""
    from nbconvert import HTMLExporter

    nb = _nbformat().read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), f"{path.name}: run notebooks/regenerate.py"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    check_renders_anywhere(nb, path.stem)
    page, _ = HTMLExporter().from_notebook_node(nb)
    if run_panels(nb):
        assert "dfsync-run-panel" in page and 'class="dfsync-run-body"' in page
        assert all(p["run_status"] in ("success", "failed", "paused") for p in run_panels(nb))


def test_notebooks_exist() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {"01_quickstart", "02_incremental_and_preview", "03_validation",
                                           "04_postgres", "05_monitoring", "06_shared_workspace"}


def test_01_quickstart(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("01_quickstart", tmp_path)
    models = widget_models(nb)
    runs = run_panels(nb)
    # two sync.run() panels, then run2's repr
    assert [(r["run_id"], r["run_status"]) for r in runs] == [("1", "success"), ("2", "success"), ("2", "success")]
    assert runs[0]["counts"]["inserted"] == 200
    assert (runs[1]["counts"]["inserted"], runs[1]["counts"]["updated"], runs[1]["counts"]["deleted"]) == (5, 12, 3)
    (final,) = panels(models)
    assert final == {"status": "healthy", "runs": 2, "run_id": "2", "run_status": "success",
                     "counts": runs[1]["counts"]}
    history = models_with_class(models, "dfsync-history")
    assert len(history) == 1 and history[0]["value"].count('class="dfsync-run-bar"') == 2
    # static reprs are in the outputs too (they do not need the widget manager)
    html = "".join(html_outputs(nb))
    assert 'class="dfsync' in html and "dfsync workspace" in html


def test_02_incremental_and_preview(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("02_incremental_and_preview", tmp_path)
    runs = run_panels(nb)
    assert [r["run_status"] for r in runs] == ["success", "success", "success"]  # two runs, run2's repr
    assert runs[0]["counts"]["inserted"] == 500
    assert (runs[1]["counts"]["inserted"], runs[1]["counts"]["updated"]) == (40, 10)
    html = "".join(html_outputs(nb))
    assert "preview of <code>orders</code>" in html and "nothing would change" in html
    assert not widget_models(nb)


def test_03_validation(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("03_validation", tmp_path)
    runs = run_panels(nb)
    assert runs[0]["run_status"] == "failed"
    assert runs[-1]["run_status"] == "success" and runs[-1]["counts"]["invalid"] == 5
    (panel,) = panels(widget_models(nb))
    assert panel["run_status"] == "success" and panel["counts"]["invalid"] == 5


def test_04_postgres(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    nb = _nbformat().read(ROOT / "notebooks" / "04_postgres.ipynb", as_version=4)
    if missing_requirements(nb, jupyter_env(tmp_path / "probe")):
        pytest.skip("the PostgreSQL destination is not in this checkout yet")
    server = request.getfixturevalue("pg_server")
    nb = run_notebook("04_postgres", tmp_path / "run", {"DFSYNC_PG_URI": server.uri})
    runs = run_panels(nb)
    assert [r["run_status"] for r in runs] == ["success", "success", "success"]
    assert runs[1]["counts"]["updated"] == 12
    (panel,) = panels(widget_models(nb))
    assert panel["run_status"] == "success" and panel["runs"] == 2


def test_05_monitoring(tmp_path: pathlib.Path) -> None:
    nb = run_notebook("05_monitoring", tmp_path)
    models = widget_models(nb)
    # the panel opened from the dashboard
    (panel,) = panels(models)
    assert panel["run_status"] == "success" and panel["runs"] == 2
    # the paused run's repr, then the resumed run's panel: the same run, now complete
    runs = run_panels(nb)
    assert runs[-2]["run_status"] == "paused" and runs[-1]["run_status"] == "success"
    assert runs[-1]["run_id"] == runs[-2]["run_id"] and runs[-1]["counts"]["inserted"] == 2000
    table = models_with_class(models, "dfsync-dashboard-table")
    assert len(table) == 1
    cells = [models[c.removeprefix("IPY_MODEL_")]["state"] for c in table[0]["children"]]
    row_cells = [c for c in cells if "dfsync-dashboard-row" in (c.get("_dom_classes") or [])]
    assert len(row_cells) == 3 * 4  # one row per sync
    row_html = " ".join(c["value"] for c in row_cells)
    assert 'data-status="disabled"' in row_html  # orders was disabled before the last refresh
    history = models_with_class(models, "dfsync-history")
    assert len(history) == 1 and history[0]["value"].count('class="dfsync-run-bar"') == 2


@pytest.mark.slow  # a PostgreSQL server and a scheduler process (the sync, never run, is due at its first pass)
def test_06_shared_workspace(tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> None:
    """The notebook and a `dfsync scheduler` process share a PostgreSQL workspace: the scheduler's run
    shows in the notebook's table, panel, history and dashboard."""
    server = request.getfixturevalue("pg_server")
    nb = run_notebook("06_shared_workspace", tmp_path, {"DFSYNC_PG_URI": server.new_database()})
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs(nb))
    assert re.search(r"│ 1\s+┆ success ┆ schedule ┆ 200\s+┆ 200", text), text  # the runs table: the scheduler's run
    assert "scheduler exit code 0" in text and "rows in the warehouse: 200" in text
    models = widget_models(nb)
    (panel,) = panels(models)
    assert panel["status"] == "healthy" and panel["runs"] == 1 and panel["run_id"] == "1"
    assert panel["run_status"] == "success" and panel["counts"]["inserted"] == 200
    history = models_with_class(models, "dfsync-history")
    assert len(history) == 1 and history[0]["value"].count('class="dfsync-run-bar"') == 1
    (table,) = models_with_class(models, "dfsync-dashboard-table")
    rows = " ".join(models[c.removeprefix("IPY_MODEL_")]["state"].get("value", "") for c in table["children"])
    assert "customers" in rows and 'data-status="healthy"' in rows


def test_ten_runs_store_no_more_widget_models_than_one(tmp_path: pathlib.Path) -> None:
    """Runs leave static HTML, not widget models: a notebook's saved state does not grow with its runs."""
    from nbformat.v4 import new_code_cell, new_notebook

    copy_repo_bits(tmp_path)
    sizes = []
    for n in (1, 10):
        nb = new_notebook(cells=[new_code_cell(c) for c in (
            "import dfsync, polars as pl\n"
            f"ws = dfsync.Workspace('ws{n}.duckdb')\n"
            f"pl.DataFrame({{'id': range(100), 'v': -1}}).write_parquet('src{n}.parquet')\n"
            f"sync = ws.create_sync('s', source=dfsync.sources.files('src{n}.parquet'),\n"
            f"    destination=dfsync.destinations.duckdb('wh{n}.duckdb', table='s'), primary_key='id')",
            f"for i in range({n}):\n"
            f"    pl.DataFrame({{'id': range(100), 'v': i}}).write_parquet('src{n}.parquet')\n"
            "    assert sync.run().status == 'success'",
            "dfsync.widgets.SyncPanel(sync)",
            "dfsync.widgets.RunHistory(sync)",
        )])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / f"runs{n}.ipynb"
        _nbformat().write(nb, path)
        out = execute(path, jupyter_env(tmp_path))
        assert all(o.get("output_type") != "error" for o in outputs(out)), [o for o in outputs(out)]
        assert len(run_panels(out)) >= n
        sizes.append(len(widget_models(out)))
    assert sizes[0] == sizes[1] <= 30, sizes


CREATE = (
    "import pathlib, dfsync\n"
    "ws = dfsync.Workspace('ws.duckdb')\n"
    "sync = ws.create_sync('c', source=dfsync.sources.files(str(pathlib.Path('data/customers_v1.parquet').resolve())),\n"
    "    destination=dfsync.destinations.duckdb('wh.duckdb', table='c'), primary_key='customer_id')\n"
)


def small_notebook(tmp_path: pathlib.Path, name: str, *cells: str) -> Any:
    """Write a notebook of ``cells`` next to a copy of data/ and execute it."""
    from nbformat.v4 import new_code_cell, new_notebook

    if not (tmp_path / "data").exists():
        copy_repo_bits(tmp_path)
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / f"{name}.ipynb"
    _nbformat().write(nb, path)
    return execute(path, jupyter_env(tmp_path))


def test_a_background_run_leaves_its_final_state_in_the_saved_output(tmp_path: pathlib.Path) -> None:
    """sync.run(background=True) shows a live SyncPanel (Pause and Abort work while it goes); when the
    run ends, the output's HTML snapshot is brought up to date, so the saved notebook shows the end."""

    out = small_notebook(tmp_path, "background", CREATE + "run = sync.run(background=True)",
                         "run.wait()\nassert run.status == 'success'")
    assert all(o.get("output_type") != "error" for o in outputs(out))
    (shown,) = [o for o in out.cells[0].outputs if o.get("output_type") == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in shown["data"]
    assert read_run(shown["data"]["text/html"])["run_status"] == "success"
    (panel,) = panels(widget_models(out))
    assert panel["run_status"] == "success" and panel["counts"]["inserted"] == 200


def test_run_in_a_notebook_without_ipywidgets_shows_static_html(tmp_path: pathlib.Path) -> None:
    """No ``widgets`` extra: ``sync.run()`` still shows its progress, as HTML updated in place."""

    out = small_notebook(
        tmp_path, "nowidgets", 'import sys\nsys.modules["ipywidgets"] = None  # as if the package were not installed',
        CREATE + "run = sync.run()\nassert run.status == 'success'",
        "try:\n    dfsync.widgets.SyncPanel(sync)\nexcept dfsync.MissingDependencyError as exc:\n    print(exc)")
    run_outputs = out.cells[1].outputs
    html = [o for o in run_outputs if o.get("output_type") == "display_data"]
    assert len(html) == 1 and "text/html" in html[0]["data"]
    final = html[0]["data"]["text/html"]  # nbclient applied the in-place updates
    assert 'data-status="success"' in final and 'data-value="200"' in final
    assert "widgets" not in out.metadata  # no widget models were created
    printed = "".join(o.get("text", "") for o in out.cells[2].outputs)
    assert "pip install 'dfsync[widgets]'" in printed

"""The panels in a real browser: JupyterLab + Debian's Chromium driven by Playwright.

Opens a notebook whose SyncPanel sits inside an ``ipywidgets.Tab`` next to RunHistory and
Dashboard, runs all cells, checks the panel's status and counters as rendered, clicks Run and
sees the run count, status and counters change, clicks Disable and sees the badge change.
Screenshots of every step go to the test's tmp dir. Chromium is Debian's (/usr/bin/chromium);
never ``playwright install``, which downloads a browser. Without Chromium the test is skipped,
except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.test_notebooks import copy_repo_bits, jupyter_env

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 90_000


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser test requirement missing under CI=true: {msg}", pytrace=False)
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PANEL_NOTEBOOK = [
    """
import pathlib, shutil
import dfsync

DATA = pathlib.Path("data").resolve()
work = pathlib.Path("work").resolve()
(work / "source").mkdir(parents=True, exist_ok=True)
shutil.copy(DATA / "customers_v1.parquet", work / "source" / "customers.parquet")
ws = dfsync.Workspace(work / "workspace.duckdb")
sync = ws.create_sync("customers", source=dfsync.sources.files(str(work / "source" / "customers.parquet")),
                      destination=dfsync.destinations.duckdb(str(work / "warehouse.duckdb"), table="customers"),
                      primary_key="customer_id", destination_mode="mirror")
sync.run(progress=False).raise_for_status()
""",
    """
import ipywidgets
panel = dfsync.widgets.SyncPanel(sync)
tab = ipywidgets.Tab([panel, dfsync.widgets.RunHistory(sync), dfsync.widgets.Dashboard(ws)],
                     titles=["panel", "history", "dashboard"])
tab
""",
    """
# the source moves to version 2: the next click on Run sends the difference
shutil.copy(DATA / "customers_v2.parquet", work / "source" / "customers.parquet")
""",
]


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    """A JupyterLab server over a temp copy holding panel.ipynb and data/; yields (base url with token, root)."""
    import importlib.util

    for module in ("jupyterlab", "ipywidgets", "nbformat"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"{module} is not installed (pip install 'dfsync[dev]')")
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    root = tmp_path / "root"
    root.mkdir()
    copy_repo_bits(root)
    nb = new_notebook(cells=[new_code_cell(c.strip()) for c in PANEL_NOTEBOOK])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, root / "panel.ipynb")

    env = jupyter_env(tmp_path)
    settings, workspaces = tmp_path / "lab-settings", tmp_path / "lab-workspaces"
    notif = settings / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    workspaces.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", "--allow-root", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
         "--expose-app-in-browser"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(root), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.25)
        yield f"{base}/lab/tree/panel.ipynb?token={token}", tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def test_sync_panel_in_jupyterlab(lab: tuple[str, pathlib.Path]) -> None:
    if not os.path.exists(CHROMIUM):
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    url, shots = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        step = 0

        def shot(name: str) -> None:
            nonlocal step
            step += 1
            page.screenshot(path=str(shots / f"{step:02d}-{name}.png"), full_page=True)

        try:
            page.goto(url, timeout=TIMEOUT_MS)
            # the kernel must be idle before running cells, or the run-all races the kernel start
            expect(page.get_by_text(re.compile(r"\| Idle$")).first).to_be_visible(timeout=TIMEOUT_MS)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            panel = page.locator(".dfsync-panel")
            expect(panel).to_have_count(1, timeout=TIMEOUT_MS)
            expect(page.locator(".lm-TabBar-tab, .p-TabBar-tab").filter(has_text="history")).to_have_count(1)
            badge = panel.locator(".dfsync-header .dfsync-status .dfsync-badge")
            expect(badge).to_have_attribute("data-status", "healthy", timeout=TIMEOUT_MS)
            expect(badge).to_have_text("healthy")

            def count(name: str) -> object:
                return panel.locator(f'.dfsync-body .dfsync-count[data-counter="{name}"]')

            expect(count("inserted")).to_have_attribute("data-value", "200")
            expect(count("inserted")).to_contain_text("200")
            expect(count("updated")).to_have_attribute("data-value", "0")
            runs = panel.locator(".dfsync-header [data-runs]")
            expect(runs).to_have_attribute("data-runs", "1")
            expect(panel.locator('.dfsync-step[data-step="success"][data-current="true"]')).to_have_count(1)
            expect(panel.locator(".dfsync-body .dfsync-bar")).to_have_attribute("data-percent", "100.0")
            # the last cell (source -> v2) has run too, so the kernel is idle again
            expect(page.get_by_text(re.compile(r"\| Idle$")).first).to_be_visible(timeout=TIMEOUT_MS)
            shot("after-run-all")

            # Run: a background run in the kernel; the panel follows it to the end
            run_button = panel.locator("button.dfsync-btn-run")
            expect(run_button).to_be_enabled()
            run_button.click()
            expect(runs).to_have_attribute("data-runs", "2", timeout=TIMEOUT_MS)
            expect(runs).to_have_attribute("data-run-id", "2")
            expect(panel.locator(".dfsync-timeline[data-status='success']")).to_have_count(1, timeout=TIMEOUT_MS)
            expect(count("inserted")).to_have_attribute("data-value", "5", timeout=TIMEOUT_MS)
            expect(count("updated")).to_have_attribute("data-value", "12")
            expect(count("deleted")).to_have_attribute("data-value", "3")
            expect(count("unchanged")).to_have_attribute("data-value", "185")
            expect(panel.locator(".dfsync-message")).to_contain_text("started run 2")
            expect(run_button).to_be_enabled(timeout=TIMEOUT_MS)
            shot("after-clicking-run")

            # Disable: the badge changes and the button offers Enable; Run is greyed out
            toggle = panel.locator("button.dfsync-btn-toggle")
            expect(toggle).to_have_text(re.compile("Disable"))
            toggle.click()
            expect(badge).to_have_attribute("data-status", "disabled", timeout=TIMEOUT_MS)
            expect(badge).to_have_text("disabled")
            expect(toggle).to_have_text(re.compile("Enable"))
            expect(run_button).to_be_disabled()
            shot("after-clicking-disable")

            toggle.click()
            expect(badge).to_have_attribute("data-status", "healthy", timeout=TIMEOUT_MS)
            expect(run_button).to_be_enabled()
            shot("after-clicking-enable")
        except Exception:
            shot("failure")
            raise
        finally:
            browser.close()
    assert len(list(shots.glob("*.png"))) >= 4

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
from typing import Any

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


THEMES_NOTEBOOK = [
    """
import pathlib
import polars as pl
import dfsync

DATA = pathlib.Path("data").resolve()
work = pathlib.Path("work-themes").resolve()  # the panel notebook's server runs this one too
work.mkdir(exist_ok=True)
src = work / "customers.parquet"


def bad_emails(df):  # 3 missing and 2 malformed e-mails: quarantined by the checks
    return df.with_columns(email=pl.when(pl.col("customer_id").is_in([3, 4, 8])).then(None)
                           .when(pl.col("customer_id").is_in([5, 9])).then(pl.lit("not-an-email"))
                           .otherwise(pl.col("email")))


bad_emails(pl.read_parquet(DATA / "customers_v1.parquet")).write_parquet(src)
ws = dfsync.Workspace(work / "workspace.duckdb")
sync = ws.create_sync("customers", source=dfsync.sources.files(str(src)),
                      destination=dfsync.destinations.duckdb(str(work / "warehouse.duckdb"), table="customers"),
                      primary_key="customer_id", destination_mode="mirror", on_invalid="skip",
                      checks=[dfsync.checks.not_null("email"), dfsync.checks.matches("email", r"^[^@\\s]+@[^@\\s]+$")])
sync.run(progress=False).raise_for_status()
v2 = bad_emails(pl.read_parquet(DATA / "customers_v2.parquet"))
v2.write_parquet(src)
sync.run(progress=False).raise_for_status()
# what the next run would change: new plans and values for a few customers
v2.with_columns(plan=pl.when(pl.col("customer_id").is_between(40, 44)).then(pl.lit("enterprise")).otherwise(pl.col("plan")),
                lifetime_value=pl.when(pl.col("customer_id").is_between(60, 80)).then(pl.col("lifetime_value") + 1)
                .otherwise(pl.col("lifetime_value"))).write_parquet(src)
""",
    "panel = dfsync.widgets.SyncPanel(sync, run_id=1)\npanel",
    "dfsync.widgets.RunHistory(sync)",
    "dfsync.widgets.Dashboard(ws)",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JupyterLab server over a temp copy holding panel.ipynb, themes.ipynb and data/; yields its
    base url and token (``{base}/lab/workspaces/{name}/tree/{name}.ipynb?token=...`` opens a notebook
    in a JupyterLab workspace of its own). One server for the module's tests: each start and stop
    cost ~10 s; each test has its own notebook, work directory, kernel and browser."""
    import importlib.util

    for module in ("jupyterlab", "ipywidgets", "nbformat"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"{module} is not installed (pip install 'dfsync[dev]')")
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    tmp_path = tmp_path_factory.mktemp("lab")
    root = tmp_path / "root"
    root.mkdir()
    copy_repo_bits(root)
    for name, cells in (("panel", PANEL_NOTEBOOK), ("themes", THEMES_NOTEBOOK)):
        nb = new_notebook(cells=[new_code_cell(c.strip()) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        nbformat.write(nb, root / f"{name}.ipynb")

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
        yield f"{base}/lab/workspaces/{{name}}/tree/{{name}}.ipynb?token={token}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def playwright() -> tuple[Any, Any]:
    """Playwright's ``expect`` and ``sync_playwright`` with Debian's Chromium, or skip (fail under CI)."""
    if not os.path.exists(CHROMIUM):
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed")
    return expect, sync_playwright


def test_sync_panel_in_jupyterlab(lab: str, tmp_path: pathlib.Path) -> None:
    expect, sync_playwright = playwright()
    url, shots = lab.format(name="panel"), tmp_path
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


# every text node inside the dfsync widgets: its colour (fill for SVG text) against the first
# opaque background behind it, with opacities and translucent layers composited as drawn
CONTRAST_JS = r"""
(roots) => {
  const parse = (c) => {
    const m = c.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const bg = parse(getComputedStyle(e).backgroundColor);
      if (bg && bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    }
    let c = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) c = over(layers[i], c);
    return c;
  };
  const out = [];
  for (const root of document.querySelectorAll(roots)) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const text = n.textContent.trim();
      const el = n.parentElement;
      if (!text || !el || !el.getClientRects().length) continue;
      if (el.closest("button:disabled")) continue;  // inactive controls are exempt (WCAG 1.4.3)
      const style = getComputedStyle(el);
      if (style.visibility === "hidden") continue;
      let colour = parse(el instanceof SVGElement ? style.fill : style.color);
      if (!colour) continue;
      let opacity = 1;
      for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
      const bg = background(el);
      colour = over([colour[0], colour[1], colour[2], colour[3] * opacity], bg);
      const [a, b] = [lum(colour), lum(bg)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      out.push({text: text.slice(0, 40), ratio: Math.round(ratio * 100) / 100,
                colour: colour.slice(0, 3).map(Math.round).join(","), bg: bg.slice(0, 3).map(Math.round).join(",")});
    }
  }
  return out;
}
"""
ROOTS = ".dfsync-panel, .dfsync-run-history, .dfsync-dashboard"
INTERNAL_COLUMNS = ("_fingerprint", "_status", "_checks", "_action", "_batch", "_run_id")


def test_panels_explain_the_run_in_light_and_dark_themes(lab: str, tmp_path: pathlib.Path) -> None:
    expect, sync_playwright = playwright()
    url, shots = lab.format(name="themes"), tmp_path
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            page.goto(url, timeout=TIMEOUT_MS)
            expect(page.get_by_text(re.compile(r"\| Idle$")).first).to_be_visible(timeout=TIMEOUT_MS)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel = page.locator(".dfsync-panel").first
            history, dashboard = page.locator(".dfsync-run-history"), page.locator(".dfsync-dashboard")
            for x in (panel, history, dashboard):
                expect(x).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.get_by_text(re.compile(r"\| Idle$")).first).to_be_visible(timeout=TIMEOUT_MS)

            # 1. invalid rows per check, each opening to the rows it held back (run 1 had them)
            nulls = panel.locator('.dfsync-check[data-check="email not_null"]')
            expect(nulls).to_have_attribute("data-rows", "3")
            expect(panel.locator('.dfsync-check[data-check="email matches"]')).to_have_attribute("data-rows", "2")
            expect(nulls.locator("summary")).to_contain_text("email not_null")
            nulls.locator("summary").click()
            expect(nulls.locator("table")).to_be_visible()
            expect(nulls.locator("td").filter(has_text=re.compile(r"^8$"))).to_have_count(1)
            # 5. it shows run 1 of 2: it says so and offers the latest
            expect(panel.locator(".dfsync-stale")).to_contain_text("latest run is #2")
            expect(panel.locator("button.dfsync-btn-follow")).to_be_visible()

            # 2. Preview: before -> after values, record columns only, the table inside the panel
            panel.locator("button.dfsync-btn-preview").click()
            before = panel.locator(".dfsync-preview .dfsync-changed .dfsync-before").first
            expect(before).to_be_visible(timeout=TIMEOUT_MS)
            changed = panel.locator(".dfsync-preview .dfsync-changed").first
            expect(changed).to_contain_text("→")
            assert before.inner_text().strip() != changed.locator(".dfsync-after").inner_text().strip()
            expect(panel.locator(".dfsync-preview")).to_contain_text("before from the destination")
            for width in (1400, 760):
                page.set_viewport_size({"width": width, "height": 1800})
                page.wait_for_timeout(300)
                box = panel.bounding_box()
                for table in panel.locator(".dfsync-preview-scroll").all():
                    tb = table.bounding_box()
                    assert tb["x"] >= box["x"] - 1 and tb["x"] + tb["width"] <= box["x"] + box["width"] + 1, (width, tb, box)
            page.set_viewport_size({"width": 1400, "height": 1800})
            text = " ".join(x.inner_text() for x in page.locator(ROOTS).all())
            for col in INTERNAL_COLUMNS:
                assert col not in text
            # 4. the history chart: labelled axes, per-run bars; the dashboard's last run on one line
            expect(history.locator(".dfsync-axis-label").filter(has_text="rows (log scale)")).to_have_count(1)
            expect(history.locator(".dfsync-run-bar")).to_have_count(2)
            last_run = dashboard.locator(".dfsync-last-run").first.bounding_box()
            sync_name = dashboard.locator(".dfsync-dashboard-row code").first.bounding_box()
            assert last_run["height"] < 1.6 * sync_name["height"] + 8, (last_run, sync_name)
            # 6. Refresh buttons are the size of the panel's other buttons
            sizes = [b.bounding_box() for b in (panel.locator("button.dfsync-btn-refresh"),
                                                history.locator("button.dfsync-btn-refresh"),
                                                dashboard.locator("button.dfsync-btn-refresh").last)]
            assert max(b["width"] for b in sizes) < 1.2 * min(b["width"] for b in sizes), sizes
            assert len({round(b["height"]) for b in sizes}) == 1, sizes

            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
                light = "true" if theme.endswith("Light") else "false"
                expect(page.locator(f"body[data-jp-theme-light='{light}']")).to_have_count(1, timeout=TIMEOUT_MS)
                page.wait_for_timeout(500)
                tag = "light" if light == "true" else "dark"
                for name, x in (("sync-panel", panel), ("run-history", history), ("dashboard", dashboard)):
                    x.scroll_into_view_if_needed()
                    x.screenshot(path=str(shots / f"{tag}-{name}.png"))
                # 6. every text colour against its background, WCAG AA (4.5:1)
                seen = page.evaluate(CONTRAST_JS, ROOTS)
                (shots / f"{tag}-contrast.json").write_text(json.dumps(sorted(seen, key=lambda s: s["ratio"]), indent=1))
                assert len(seen) > 50
                low = [s for s in seen if s["ratio"] < 4.5]
                assert not low, f"{theme}: {low[:10]}"
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert {p.name for p in shots.glob("*.png")} >= {f"{t}-{n}.png" for t in ("light", "dark")
                                                       for n in ("sync-panel", "run-history", "dashboard")}

"""The wheel a user installs: it carries the demo's sample data, so ``python -m dfsync demo``
runs from any directory, not only from a checkout."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_from_any_directory(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w",
                            str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dfsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("customers_v1.parquet", "customers_v2.parquet", "orders_v1.csv", "orders_v2.csv"):
        assert f"dfsync/_demo_data/{name}" in names
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                                str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    # the wheel's dfsync first on the path (the dependencies come from this environment)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import dfsync; print(dfsync.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    demo = subprocess.run([sys.executable, "-m", "dfsync", "demo"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "customers=202 rows, orders=540 rows" in demo.stdout
    assert len(re.findall(r"^(customers|orders) +\d+ +success ", demo.stdout, flags=re.M)) == 4

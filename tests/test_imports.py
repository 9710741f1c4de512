"""Every dfsync module imports: a name removed from one module and still imported by another
(a rebase that drops a helper) fails here, not in whichever test happens to reach that code."""

from __future__ import annotations

import importlib
import os
import pkgutil

import pytest

import dfsync

# dfsync.__main__ runs the command when imported (python -m dfsync): tests/test_cli.py covers it
MODULES = sorted(m.name for m in pkgutil.walk_packages(dfsync.__path__, prefix="dfsync.") if m.name != "dfsync.__main__")
# modules that import an optional extra at their top, imported by dfsync only when that extra is in use: without
# the extra installed (README's `pip install -e '.[dev]'` has no Ray) they are skipped, except under CI=true
NEEDS = {"dfsync.engines._ray": "ray"}


def test_the_package_has_its_modules():
    assert {"dfsync.runner", "dfsync.store", "dfsync.staging", "dfsync.destinations.base"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    if name in NEEDS and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.importorskip(NEEDS[name], reason=f"{name} needs the optional {NEEDS[name]!r} package")
    importlib.import_module(name)

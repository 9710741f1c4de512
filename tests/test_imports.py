"""Every dfsync module imports: a name removed from one module and still imported by another
(a rebase that drops a helper) fails here, not in whichever test happens to reach that code."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import dfsync

# dfsync.__main__ runs the command when imported (python -m dfsync): tests/test_cli.py covers it
MODULES = sorted(m.name for m in pkgutil.walk_packages(dfsync.__path__, prefix="dfsync.") if m.name != "dfsync.__main__")


def test_the_package_has_its_modules():
    assert {"dfsync.runner", "dfsync.store", "dfsync.staging", "dfsync.destinations.base"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)

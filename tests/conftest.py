"""Shared test set-up.

Every module in ``tests/plugins/`` is loaded as a pytest plugin, so each backend keeps its
fixtures in its own file. ``tests/plugins/targets.py`` holds the registry behind the
parametrised ``target`` fixture: the same behaviour tests run against every destination.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

import dfsync

pytest_plugins = ["tests.plugins.targets"] + sorted(
    f"tests.plugins.{p.stem}"
    for p in (pathlib.Path(__file__).parent / "plugins").glob("*.py")
    if not p.stem.startswith("_") and p.stem != "targets"  # _cli_zygote.py is a program, not a plugin
)


@pytest.fixture
def ws(tmp_path: pathlib.Path) -> Iterator[dfsync.Workspace]:
    """A fresh workspace file in the test's own directory, closed afterwards."""
    w = dfsync.Workspace(tmp_path / "ws.duckdb")
    yield w
    w.close()

"""Shared test set-up.

Every module in ``tests/plugins/`` is loaded as a pytest plugin, so each backend keeps its
fixtures in its own file. ``tests/plugins/targets.py`` holds the registry behind the
parametrised ``target`` fixture: the same behaviour tests run against every destination.
"""

from __future__ import annotations

import collections
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


#: Seconds of each file run alone (session 22, a busy host: only their ratio to ``SECONDS_PER_TEST``
#: matters), for the files whose time is far from their number of tests times the median: few long
#: tests (servers, a browser, fresh processes, GX) or many short ones. ``--dist loadfile`` hands whole
#: files to the workers, by default largest number of tests first: the long few came last, and the
#: browser's file (2 tests, ~40 s each there) kept one worker busy alone at the end. Handed out by
#: their estimated time instead, longest first, the two workers end together.
FILE_SECONDS = {
    "test_cli.py": 169, "test_secrets.py": 112, "test_checks.py": 89, "test_partition_engines.py": 79,
    "test_multiprocess.py": 78, "test_browser.py": 76, "test_gx_actions.py": 75, "test_crash.py": 70,
    "test_buckets.py": 68, "test_gx_equivalence.py": 50, "test_crash_matrix.py": 38, "test_check_proofs.py": 36,
    "test_outages.py": 36, "test_compact.py": 33, "test_http.py": 25, "test_gx_scope.py": 18, "test_states.py": 17,
    "test_model.py": 15, "test_state_memory.py": 13, "test_writer.py": 9, "test_table_names.py": 7,
    "test_store_boundary.py": 6, "test_definition.py": 5, "test_settings.py": 5, "test_imports.py": 4,
    "test_architecture.py": 3, "test_docs.py": 1,
}
#: the other files' median seconds per test on that host
SECONDS_PER_TEST = 2.7


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # xdist: keep the order pytest_collection_modifyitems sets
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)  # after the plugins' deselections
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files in order of their estimated time, longest first (the order ``--dist loadfile`` hands them
    out in); a file's tests keep their order."""
    count = collections.Counter(item.path.name for item in items)

    def estimate(item: pytest.Item) -> float:
        return FILE_SECONDS.get(item.path.name, count[item.path.name] * SECONDS_PER_TEST)

    items.sort(key=lambda item: (-estimate(item), item.path.name))

"""The ``ws_target`` fixture: where a test's workspace lives, one workspace store per parameter.

``duckdb``: a workspace file in the test's tmp dir. ``postgres``: a fresh schema of one
database on the session's PostgreSQL server (``postgresql://...?schema=w_<hex>``), so every
test has a workspace of its own and two workspaces share one database as users' do.

Which stores a test runs against: ``@pytest.mark.workspaces("duckdb", "postgres")`` on the
test, else ``WORKSPACE_STORES`` in its module, else ``DFSYNC_TEST_WORKSPACES`` (comma-separated,
default ``duckdb``): ``DFSYNC_TEST_WORKSPACES=duckdb,postgres pytest tests/...`` runs a module
that uses the fixture against both. Without a PostgreSQL server the postgres cases skip, and
FAIL under ``CI=true`` (tests/plugins/postgres.py).

To keep the suites short, a test that also takes the ``target`` fixture runs on the
PostgreSQL workspace with the destinations in ``PG_WORKSPACE_TARGETS`` only; those in
``PG_WORKSPACE_SLOW_TARGETS`` are marked ``slow`` there (``pytest -m slow`` runs them), and the
others run on the workspace file only. A suite whose cases
are costly on a server marks whole stores ``slow``: ``@pytest.mark.workspaces("duckdb",
"postgres", slow=("postgres",))``, or ``SLOW_WORKSPACE_STORES = ("postgres",)`` in its module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

STORES = ("duckdb", "postgres")
#: destinations a PostgreSQL-workspace test runs against in the default suite
PG_WORKSPACE_TARGETS = ("duckdb",)
#: and in the slow suite: a destination that commits each batch with its ledger row in its own
#: database (postgres). The workspace store's code (delivered state, write-ahead, confirm, fencing)
#: is the same whatever the destination, and every destination runs against the workspace file: a
#: test that has a ``ws-duckdb`` case with another destination (parquet, sqlite, mysql, delta, http)
#: is not collected again on the PostgreSQL workspace (CI's 25 minutes).
PG_WORKSPACE_SLOW_TARGETS = ("postgres",)


def pytest_configure(config):
    config.addinivalue_line("markers", "workspaces(*stores, slow=()): the workspace stores a test runs "
                                       "against (those in slow only under -m slow)")


def _stores(metafunc) -> list[str]:
    mark = metafunc.definition.get_closest_marker("workspaces")
    if mark is not None:
        return list(mark.args)
    module = getattr(metafunc.module, "WORKSPACE_STORES", None)
    if module:
        return list(module)
    return [s.strip() for s in os.environ.get("DFSYNC_TEST_WORKSPACES", "duckdb").split(",") if s.strip()]


def pytest_generate_tests(metafunc):
    if "ws_target" in metafunc.fixturenames:
        stores = _stores(metafunc)
        unknown = set(stores) - set(STORES)
        assert not unknown, f"unknown workspace store(s) {unknown}; known: {STORES}"
        metafunc.parametrize("ws_target", stores, indirect=True, ids=[f"ws-{s}" for s in stores])


@pytest.fixture(scope="session")
def pg_workspace_db(pg_server) -> str:
    """One database of the session's server that holds every test's workspace schema."""
    return pg_server.new_database()


@pytest.fixture
def ws_target(request, tmp_path) -> Iterator[str]:
    """The target to give ``dfsync.Workspace()``: a file path or a ``postgresql://`` URI.

    Afterwards the test's schemas are dropped: every connection of the ADBC driver reads the
    database's type catalog (two types per table), so a database holding the tables of every
    earlier test made each connect slower as the session went on (~100 ms fresh, +50 ms per 30
    workspaces; hundreds of PostgreSQL-workspace tests run in the slow suite).
    """
    if request.param == "duckdb":
        yield str(tmp_path / "ws.duckdb")
        return
    uri = request.getfixturevalue("pg_workspace_db")
    yield f"{uri}?schema=w_{uuid.uuid4().hex[:12]}"
    _drop_schemas(request.getfixturevalue("pg_server"), uri.rsplit("/", 1)[1])


def _drop_schemas(server, dbname: str) -> None:
    """Drop the schemas tests made in the workspace database (tests run one after another there:
    only the finished test's, and any a test made next to its own, e.g. test_model's)."""
    try:
        rows = server.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', "
                              "'information_schema') AND nspname NOT LIKE 'pg\\_%'", dbname=dbname)
        if rows:
            names = ", ".join('"' + r[0].replace('"', '""') + '"' for r in rows)
            # a process the test left behind may still hold a lock: then the schemas stay
            server.execute(f"SET lock_timeout = '2s'; DROP SCHEMA {names} CASCADE", dbname=dbname)
    except Exception:  # noqa: BLE001 - tidying only: a schema left behind costs time, not correctness
        pass


def _slow_stores(item) -> tuple[str, ...]:
    mark = item.get_closest_marker("workspaces")
    if mark is not None and "slow" in mark.kwargs:
        return tuple(mark.kwargs["slow"])
    return tuple(getattr(item.module, "SLOW_WORKSPACE_STORES", ()))


def _params(item) -> dict:
    return getattr(getattr(item, "callspec", None), "params", {})


def _case(item, params: dict) -> tuple:
    """The test and its parameters but the workspace store."""
    return (item.path, item.originalname, tuple(sorted((k, repr(v)) for k, v in params.items() if k != "ws_target")))


def pytest_collection_modifyitems(config, items):
    on_file = {_case(item, p) for item in items if (p := _params(item)).get("ws_target") == "duckdb"}
    kept, dropped = [], []
    for item in items:
        params = _params(item)
        store, target = params.get("ws_target"), params.get("target", "duckdb")
        if (store == "postgres" and target not in PG_WORKSPACE_TARGETS + PG_WORKSPACE_SLOW_TARGETS
                and _case(item, params) in on_file):
            dropped.append(item)
            continue
        kept.append(item)
        if (store == "postgres" and target not in PG_WORKSPACE_TARGETS) or (store is not None and store in _slow_stores(item)):
            item.add_marker(pytest.mark.slow)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept

"""Roles on a PostgreSQL workspace (docs/SECURITY.md, section 2): the documented SQL, run as written,
gives a viewer, an operator and an admin; each allowed action works under its role, each forbidden
one fails with PermissionDenied naming the action and changes nothing (every workspace table read
before and after, as the superuser).

Real roles on the test server (tests/plugins/postgres.py); each test has its own schema and roles.
"""

from __future__ import annotations

import pathlib
import re
import uuid

import polars as pl
import pytest

import dfsync
import dfsync.checks as dc
from dfsync.states import RunStatus
from dfsync.store._privileges import ALL_ACTIONS, role_name

pytestmark = pytest.mark.postgres

ROOT = pathlib.Path(__file__).resolve().parent.parent


def recipe_sql() -> str:
    """The recipe exactly as docs/SECURITY.md shows it (its first ```sql block)."""
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert blocks and "pg_temp.dfsync_roles" in blocks[0]
    return blocks[0]


def usage_sql() -> str:
    """The documented use of the recipe (its second ```sql block), for the schema ``dfsync``."""
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, re.S)[1]


def snapshot(pg_server, dbname: str, schema: str) -> dict[str, list]:
    """Every table of the workspace schema (rows sorted), its owner and its privileges: what must not change."""
    tables = pg_server.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, '') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1",
        (schema,), dbname=dbname)
    out: dict[str, list] = {"_tables": tables}
    for name, _, _ in tables:
        rows = pg_server.execute(f'SELECT * FROM "{schema}"."{name}"', dbname=dbname)
        out[name] = sorted(map(repr, rows))
    return out


class Roles:
    """A workspace schema with the documented roles and one login each (``uri(role)``)."""

    def __init__(self, pg_server, tmp_path) -> None:
        self.server = pg_server
        base = pg_server.new_database()
        self.dbname = base.rsplit("/", 1)[1]
        self.schema = "r_" + uuid.uuid4().hex[:10]
        self.base = base
        self.tmp = tmp_path
        self.logins = {role: f"{self.schema}_{role[0]}" for role in ("viewer", "operator", "admin")}

    def uri(self, role: str | None = None) -> str:
        if role is None:  # the owner: the test server's superuser
            return f"{self.base}?schema={self.schema}"
        host = self.base.split("@", 1)[1]
        return f"postgresql://{self.logins[role]}@{host}?schema={self.schema}"

    def sql(self, text: str) -> list:
        return self.server.execute(text, dbname=self.dbname)

    def grant(self) -> None:
        """The recipe as documented, then one login per role (as section 2 shows for alice)."""
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as con:
            con.execute(recipe_sql())
            con.execute(usage_sql().splitlines()[0].replace("'dfsync'", f"'{self.schema}'"))
            for role, login in self.logins.items():
                con.execute(f'CREATE ROLE "{login}" LOGIN')
                con.execute(f'GRANT "{self.schema}_{role}" TO "{login}"')

    def drop(self) -> None:
        self.sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        for role in self.logins.values():
            self.sql(f'DROP ROLE IF EXISTS "{role}"')
        for role in ("admin", "operator", "viewer"):
            self.sql(f'DROP ROLE IF EXISTS "{self.schema}_{role}"')

    def snapshot(self) -> dict[str, list]:
        return snapshot(self.server, self.dbname, self.schema)


def _source(tmp_path: pathlib.Path, n: int, name: str = "people") -> dfsync.sources.Source:
    path = tmp_path / f"{name}.parquet"
    pl.DataFrame({"id": list(range(1, n + 1)), "email": [f"p{i}@example.com" for i in range(1, n + 1)],
                  "age": [30 if i % 4 else -1 for i in range(1, n + 1)]}).write_parquet(path)
    return dfsync.sources.files(str(path))


def define(ws: dfsync.Workspace, tmp_path: pathlib.Path, name: str = "people", n: int = 8) -> dfsync.Sync:
    """A sync whose runs keep records: every fourth row fails a check and is skipped (kept as invalid)."""
    return ws.create_sync(name, source=_source(tmp_path, n, name),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table=name),
                          primary_key="id", checks=[dc.between("age", 0, 130)], on_invalid="skip")


@pytest.fixture
def roles(pg_server, tmp_path):
    r = Roles(pg_server, tmp_path)
    try:
        owner = dfsync.Workspace(r.uri())
        define(owner, tmp_path).run(progress=False).raise_for_status()  # state and records exist before the grants
        owner.close()
        r.grant()
        yield r
    finally:
        r.drop()


def _denied(action: str, fn, *args, **kwargs) -> dfsync.PermissionDenied:
    with pytest.raises(dfsync.PermissionDenied) as info:
        fn(*args, **kwargs)
    assert info.value.action == action
    assert info.value.privileges, "the error names the privileges the action needs"
    assert "Nothing was changed" in str(info.value)
    return info.value


def test_the_documented_recipe_is_the_one_tested():
    sql = recipe_sql()
    assert sql.startswith("CREATE OR REPLACE FUNCTION pg_temp.dfsync_roles(ws text)")
    assert "SELECT pg_temp.dfsync_roles('dfsync');" in usage_sql()


def test_role_names_longer_than_postgresql_takes_are_refused(pg_server):
    import psycopg

    schema = "s" * 55  # 55 + len("_operator") = 64 bytes: PostgreSQL would cut it to 63, silently
    with pytest.raises(dfsync.ConfigError, match=f"schema '{schema}' is too long.*at most 63 bytes.*54 bytes"):
        role_name(schema, "operator")
    assert role_name("s" * 54, "operator") == "s" * 54 + "_operator"
    with psycopg.connect(pg_server.new_database(), autocommit=True) as con:
        con.execute(recipe_sql())
        with pytest.raises(psycopg.errors.RaiseException, match=f"schema {schema} is too long.*63 bytes"):
            con.execute(f"SELECT pg_temp.dfsync_roles('{schema}')")
        assert con.execute(f"SELECT count(*) FROM pg_roles WHERE rolname LIKE '{'s' * 50}%'").fetchone()[0] == 0


def test_a_viewer_opens_read_only_sees_history_and_nothing_else(roles, tmp_path):
    from typer.testing import CliRunner

    from dfsync.cli import app
    from dfsync.widgets import SyncPanel

    # a run whose owner died: an operator's open would move it; a viewer's must not
    roles.sql(f'UPDATE "{roles.schema}".runs SET status = \'in_progress\', owner_pid = 999999, '
              f"owner_host = 'gone', owner_token = 'gone:1' WHERE id = 1")
    before = roles.snapshot()
    ws = dfsync.Workspace(roles.uri("viewer"))
    sync = ws.sync("people")
    assert ws.store.capabilities() == frozenset({"view"})
    # everything a viewer may do
    assert ws.syncs()["name"].to_list() == ["people"]
    assert ws.runs().height == 1 and sync.runs().height == 1
    run = sync.last_run()
    assert run.status == RunStatus.IN_PROGRESS  # not recovered by a viewer
    assert run.events().height > 0 and sync.events().height > 0
    assert "people" in repr(sync) and "people" in ws._repr_html_() and run._repr_html_()
    # check results, without their example failing values (those are record values)
    checks = run.validation()
    assert checks.height == 1 and checks["unexpected_count"].to_list() == [2] and checks["partial_unexpected_list"].to_list() == [None]
    cli = CliRunner()
    for args in (["syncs"], ["status", "people"], ["runs", "people"]):
        out = cli.invoke(app, [*args, "--workspace", roles.uri("viewer")])
        assert out.exit_code == 0, (args, out.output)
        assert "people" in out.output or "in_progress" in out.output
    # the panel shows the sync with every button it may not use greyed out
    panel = SyncPanel(sync)
    try:
        for b in (panel.run_button, panel.preview_button, panel.pause_button, panel.abort_button,
                  panel.toggle_button):
            assert b.disabled, b.description
        assert not panel.refresh_button.disabled
    finally:
        panel.close()
    # everything a viewer may not do: PermissionDenied naming the action, nothing changed
    _denied("records", run.records)
    _denied("run", sync.run, progress=False)
    _denied("preview", sync.preview)
    _denied("pause", run.pause)
    _denied("abort", run.abort)
    _denied("disable", sync.disable)
    _denied("reset", sync.reset)
    _denied("create", define, ws, tmp_path, "other")
    _denied("delete", ws.delete_sync, "people")
    _denied("purge", sync.purge_records, "1 day")
    _denied("forget", sync.forget, [4])
    out = cli.invoke(app, ["run", "people", "--workspace", roles.uri("viewer")])
    assert out.exit_code == 1 and "may not run a sync" in out.output, out.output
    # ws.sql() only reads: a write is refused before it reaches the server
    with pytest.raises(dfsync.WorkspaceQueryError, match="only reads"):
        ws.sql("DELETE FROM events")
    # the records table is not readable at all by the viewer's login
    with pytest.raises(dfsync.PermissionDenied):
        ws.sql(f"SELECT * FROM rec_{sync.id}")
    with pytest.raises(dfsync.PermissionDenied):
        ws.sql("SELECT partial_unexpected_list FROM checks")
    ws.close()
    assert roles.snapshot() == before


def test_an_operator_runs_and_reads_records_but_does_not_define(roles, tmp_path):
    ws = dfsync.Workspace(roles.uri("operator"))
    sync = ws.sync("people")
    caps = ws.store.capabilities()
    assert {"run", "pause", "abort", "enable", "disable", "records", "preview"} <= caps
    assert not caps & {"create", "change", "delete"}
    # forbidden first: nothing changes
    before = roles.snapshot()
    _denied("create", define, ws, tmp_path, "other")
    with pytest.raises(dfsync.PermissionDenied) as info:
        ws.create_sync("people", source=_source(tmp_path, 8), primary_key="id", on_invalid="warn",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="people"),
                       checks=[dc.between("age", 0, 130)])
    assert info.value.action == "change" and "UPDATE on column syncs.definition" in str(info.value)
    _denied("delete", ws.delete_sync, "people")
    _denied("forget", sync.forget, [4])
    assert roles.snapshot() == before
    # re-running the same definition (a notebook run again) changes nothing and is allowed
    define(ws, tmp_path)
    # allowed: disable, enable, run (the state and records tables are the operator role's), records
    sync.disable()
    sync.enable()
    define(ws, tmp_path, n=12)  # the same definition; the source grew
    run = sync.run(progress=False).raise_for_status()
    assert run.counts["inserted"] == 3 and run.counts["invalid"] == 3  # rows 4, 8 and 12 fail the check
    assert sorted(run.records("invalid")["email"].to_list()) == ["p12@example.com", "p4@example.com",
                                                                 "p8@example.com"]
    assert "p12@example.com" in run._repr_html_()  # an operator's run view shows the example rows
    assert run.validation()["partial_unexpected_list"].to_list() == ["[-1, -1, -1]"]
    assert sync.preview().counts["insert"] == 0
    assert sync.purge_records("30 days") == 0  # nothing that old
    ws.close()


def test_an_admin_creates_changes_and_deletes_syncs(roles, tmp_path):
    ws = dfsync.Workspace(roles.uri("admin"))
    assert ws.store.capabilities() == ALL_ACTIONS
    other = define(ws, tmp_path, "other", n=4)
    other.run(progress=False).raise_for_status()
    with pytest.warns(UserWarning, match="version 2"):
        ws.create_sync("other", source=_source(tmp_path, 4, "other"), primary_key="id", on_invalid="warn",
                       destination=dfsync.destinations.duckdb(str(tmp_path / "dest.duckdb"), table="other"),
                       checks=[dc.between("age", 0, 130)])
    # the per-sync tables a run of the admin created belong to the operator role: an operator may run it
    op = dfsync.Workspace(roles.uri("operator"))
    op.sync("other").run(progress=False).raise_for_status()
    op.close()
    erased = ws.sync("people").forget([4])  # an erasure request: row 4's age (-1) is a check example
    assert erased["records"] == 1 and erased["checks"] == 1
    examples = roles.sql(f'SELECT partial_unexpected_list::text FROM "{roles.schema}".checks c JOIN '
                         f'"{roles.schema}".runs r ON r.id = c.run_id JOIN "{roles.schema}".syncs s ON '
                         f"s.id = r.sync_id WHERE s.name = 'people'")
    assert examples and all("-1" not in e[0] and "[forgotten key]" in e[0] for e in examples)
    ws.delete_sync("other")
    assert ws.syncs()["name"].to_list() == ["people"]
    left = roles.sql(f"SELECT tablename FROM pg_tables WHERE schemaname = '{roles.schema}' "
                     f"AND tablename ~ '_{other.id}$'")
    assert left == []
    ws.close()


def test_the_duckdb_file_workspace_belongs_to_its_owner(tmp_path):
    ws = dfsync.Workspace(str(tmp_path / "ws.duckdb"))
    assert {"view", "run", "records", "create", "change", "delete"} <= ws.store.capabilities()
    ws.store.require("delete")  # never refused
    ws.close()


def _abort(run, how="abort"):
    """abort() (or pause()) of a run that ended is refused (InvalidTransition) after the privilege check."""
    if run.status.terminal:
        with pytest.raises(dfsync.InvalidTransition):
            getattr(run, how)()
    else:
        getattr(run, how)()


ACTS = {
    "view": lambda ws, sync, run, tmp: (ws.syncs(), sync.runs(), run.events(), run._repr_html_()),
    "records": lambda ws, sync, run, tmp: run.records(),
    "run": lambda ws, sync, run, tmp: sync.run(progress=False),
    "preview": lambda ws, sync, run, tmp: sync.preview(),
    "validate": lambda ws, sync, run, tmp: sync.validate(),
    "pause": lambda ws, sync, run, tmp: _abort(run, "pause"),
    "abort": lambda ws, sync, run, tmp: _abort(run),
    "disable": lambda ws, sync, run, tmp: sync.disable(),
    "reset": lambda ws, sync, run, tmp: sync.reset(),
    "create": lambda ws, sync, run, tmp: define(ws, tmp, "third"),
    "change": lambda ws, sync, run, tmp: ws.create_sync(
        "people", source=_source(tmp, 8), primary_key="id", on_invalid="warn", checks=[dc.between("age", 0, 130)],
        destination=dfsync.destinations.duckdb(str(tmp / "dest.duckdb"), table="people")),
    "delete": lambda ws, sync, run, tmp: ws.delete_sync("other"),
    "purge": lambda ws, sync, run, tmp: sync.purge_records("1 day"),
    "forget": lambda ws, sync, run, tmp: sync.forget([4]),
}
ALLOWED = {"viewer": {"view"}, "operator": set(ACTS) - {"create", "change", "delete", "forget"}, "admin": set(ACTS)}
ACTION_OF = {"validate": "preview"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:sync 'people' already existed")
@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
@pytest.mark.parametrize("act", sorted(ACTS))
def test_each_action_under_each_role(roles, tmp_path, role, act):
    """The whole matrix: an allowed action is not refused; a forbidden one raises PermissionDenied naming
    it and leaves every workspace table (rows, owners, grants) as it was."""
    with dfsync.Workspace(roles.uri()) as owner:
        define(owner, tmp_path, "other", n=4)  # something to delete
    ws = dfsync.Workspace(roles.uri(role))
    sync, before = ws.sync("people"), roles.snapshot()
    run = sync.last_run()
    if act in ALLOWED[role]:
        ACTS[act](ws, sync, run, tmp_path)
        if act in ("view", "records", "preview", "validate"):
            assert roles.snapshot() == before
    else:
        _denied(ACTION_OF.get(act, act), ACTS[act], ws, sync, run, tmp_path)
        assert roles.snapshot() == before
    ws.close()

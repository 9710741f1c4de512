"""Planted secrets appear nowhere: not in the workspace file, logs, stderr, reprs, frames or errors.

Real credentials in use: the throwaway PostgreSQL server's role ``app`` must give its
password (scram-sha-256), and the HTTP test server checks a bearer token and an API-key
header. Syncs run with those secrets as literals (in the URI, ``auth=``, ``headers=``)
and as ``env:NAME`` references; some succeed, some fail
(wrong password, 401, 500s that outlast the retries, a bad source query). Then every
place a secret could leak is collected and searched, raw and URL-encoded.
"""

from __future__ import annotations

import logging
import os
import pathlib
import secrets
import subprocess
import sys
from urllib.parse import quote

import polars as pl
import pytest

import dfsync
from tests.plugins.http_server import Reply

PW = "pw-" + secrets.token_hex(8)
WRONG_PW = "wrongpw-" + secrets.token_hex(8)
TOKEN = "tok-" + secrets.token_hex(12)
API_KEY = "key-" + secrets.token_hex(12)
URL_TOKEN = "qtok-" + secrets.token_hex(8)
ENV_PW = "envpw-" + secrets.token_hex(8)
SECRETS = [PW, WRONG_PW, TOKEN, API_KEY, URL_TOKEN, ENV_PW]


def forms(secret: str) -> list[bytes]:
    return [secret.encode(), quote(secret, safe="").encode()]


def assert_clean(what: str, data: str | bytes) -> None:
    blob = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
    for s in SECRETS:
        for f in forms(s):
            assert f not in blob, f"a secret ({s[:6]}...) leaked into {what}"


def assert_nothing_leaked(ws, ws_path, syncs, seen, capfd, caplog, recwarn, pg_server=None) -> None:
    """Search every place a secret could show: reprs, tables, logs, output, the workspace files."""
    # -- everything a user or a log could see
    seen += [("ws.syncs()", str(ws.syncs().to_dicts())), ("ws.runs()", str(ws.runs().to_dicts())),
             ("repr(ws)", repr(ws)), ("ws html", ws._repr_html_())]
    for table in ("syncs", "runs", "events", "batches", "checks"):
        seen.append((f"table {table}", str(ws.sql(f"SELECT * FROM {table}").to_dicts())))
    for sync in syncs:
        seen += [(f"{sync.name} repr", repr(sync)), (f"{sync.name} html", sync._repr_html_()),
                 (f"{sync.name} runs", str(sync.runs().to_dicts())),
                 (f"{sync.name} events", str(sync.events().to_dicts())),
                 (f"{sync.name} definition", str(sync.definition)),
                 (f"{sync.name} destination", f"{sync.destination!r} {sync.destination.describe()} "
                                              f"{sync.destination.config()} {sync.destination.identity()}"),
                 (f"{sync.name} source", f"{sync.source!r} {sync.source.describe()}")]
        run = sync.last_run()
        seen += [(f"{sync.name} run repr", repr(run)), (f"{sync.name} run html", run._repr_html_()),
                 (f"{sync.name} run error", str(run.error)),
                 (f"{sync.name} run events", str(run.events().to_dicts())),
                 (f"{sync.name} records", str(run.records().to_dicts()))]
    out, err = capfd.readouterr()
    seen += [("stdout", out), ("stderr", err)]
    seen += [(f"log {r.name}", f"{r.getMessage()} {r.exc_text or ''}") for r in caplog.records]
    seen += [("warnings", " ".join(str(w.message) for w in recwarn))]
    for what, text in seen:
        assert_clean(what, text)

    # -- the workspace file and everything next to it (WAL, staging leftovers), byte for byte;
    # a workspace on PostgreSQL: a pg_dump of its whole schema
    ws.close()
    if str(ws_path).startswith("postgresql://"):
        base, schema = str(ws_path).split("?schema=")
        dump = pg_server.dump_schema(base, schema)
        assert b"CREATE TABLE" in dump and b"run created" in dump
        assert_clean("pg_dump of the workspace schema", dump)
    else:
        files = [os.path.join(d, f) for d, _, fs in os.walk(ws_path.parent) for f in fs]
        assert files
        for path in files:
            with open(path, "rb") as fh:
                assert_clean(path, fh.read())
    # a fresh process-level view of the same workspace: what another process would load
    ws2 = dfsync.Workspace(ws_path)
    assert_clean("reopened syncs", str(ws2.syncs().to_dicts()))
    assert_clean("reopened definitions", str(ws2.sql("SELECT definition FROM syncs").to_dicts()))


@pytest.fixture
def app_db(pg_server):
    """A fresh database owned by role ``app``, which must log in with PW."""
    uri = pg_server.new_database()
    name = uri.rsplit("/", 1)[1]
    exists = pg_server.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'")
    verb = "ALTER" if exists else "CREATE"
    pg_server.execute(f"{verb} ROLE app WITH LOGIN PASSWORD '{PW}'")
    pg_server.execute(f'ALTER DATABASE "{name}" OWNER TO app')
    pg_server.execute("ALTER SCHEMA public OWNER TO app", dbname=name)
    pg_server.execute("CREATE TABLE public.src AS SELECT g AS id, 'n' || g AS name FROM generate_series(1, 30) g",
                      dbname=name)
    pg_server.execute("ALTER TABLE public.src OWNER TO app", dbname=name)
    return f"127.0.0.1:{pg_server.port}/{name}"


@pytest.mark.workspaces("duckdb", "postgres")
def test_planted_secrets_appear_nowhere(tmp_path, app_db, http_server, caplog, capfd, monkeypatch, recwarn,
                                        ws_target, pg_server):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DFSYNC_TEST_PGPASS", PW)
    monkeypatch.setenv("DFSYNC_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("DFSYNC_UNUSED", ENV_PW)
    good_uri = f"postgresql://app:{PW}@{app_db}"
    data = pl.DataFrame({"id": list(range(1, 31)), "name": [f"n{i}" for i in range(1, 31)]})
    ws_path = ws_target if ws_target.startswith("postgresql://") else tmp_path / "ws" / "workspace.duckdb"
    ws = dfsync.Workspace(ws_path)
    seen: list[tuple[str, str]] = []  # (what, text) to search
    errors: list[BaseException] = []

    def attempt(label: str, fn):
        try:
            return fn()
        except dfsync.DfsyncError as exc:
            errors.append(exc)
            seen.append((f"{label}: error", f"{exc!s} {exc!r}"))
            return None

    def frame():
        return dfsync.sources.frame(data)

    # -- PostgreSQL: literal password in the URI (works), a wrong one (fails), env: reference (works)
    syncs = []
    syncs.append(attempt("pg-literal", lambda: ws.create_sync(
        "pg_literal", source=frame(), destination=dfsync.destinations.postgres(good_uri, table="t1"),
        primary_key="id")))
    syncs.append(attempt("pg-wrong", lambda: ws.create_sync(
        "pg_wrong", source=frame(),
        destination=dfsync.destinations.postgres(f"postgresql://app:{WRONG_PW}@{app_db}", table="t2"),
        primary_key="id")))
    syncs.append(attempt("pg-env", lambda: ws.create_sync(
        "pg_env", source=frame(),
        destination=dfsync.destinations.postgres(f"postgresql://app@{app_db}", table="t3",
                                                 password="env:DFSYNC_TEST_PGPASS"),
        primary_key="id", destination_mode="mirror")))
    # -- PostgreSQL as a source: a good query, and one that fails
    syncs.append(attempt("pg-source", lambda: ws.create_sync(
        "pg_source", source=dfsync.sources.database(good_uri, "SELECT id, name FROM public.src"),
        destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="from_pg"), primary_key="id")))
    attempt("pg-source-bad", lambda: ws.create_sync(
        "pg_source_bad", source=dfsync.sources.database(good_uri, "SELECT * FROM no_such_table"),
        destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="x"), primary_key="id"))
    # -- HTTP: bearer token, API-key header
    url = f"{http_server.url}/contacts"
    http_server.handler = lambda req: Reply(401, {"error": "bad token"}) \
        if req.headers.get("authorization") != f"Bearer {TOKEN}" else None
    syncs.append(attempt("http-ok", lambda: ws.create_sync(
        "http_ok", source=frame(), destination=dfsync.destinations.http(
            url, auth=TOKEN, headers={"X-Api-Key": API_KEY}, batch_size=10, retry_initial_wait=0.01),
        primary_key="id")))
    syncs.append(attempt("http-env", lambda: ws.create_sync(
        "http_env", source=frame(), destination=dfsync.destinations.http(
            f"{http_server.url}/env", auth="env:DFSYNC_TEST_TOKEN", batch_size=10, retry_initial_wait=0.01),
        primary_key="id")))
    syncs.append(attempt("http-401", lambda: ws.create_sync(
        "http_401", source=frame(), destination=dfsync.destinations.http(
            url, auth="not-the-token", headers={"X-Api-Key": API_KEY}, batch_size=10), primary_key="id")))
    syncs.append(attempt("http-500", lambda: ws.create_sync(
        "http_500", source=frame(), destination=dfsync.destinations.http(
            f"{http_server.url}/down", auth=TOKEN, headers={"X-Api-Key": API_KEY},
            batch_size=10, max_retries=1, retry_initial_wait=0.01, retry_max_wait=0.02), primary_key="id")))
    syncs = [s for s in syncs if s is not None]
    assert len(syncs) == 8, [str(e) for e in errors]
    assert any("no_such_table" in str(e) for e in errors), "the bad source query must fail at create_sync"

    statuses = {}
    for sync in syncs:
        if sync.name == "http_500":
            http_server.handler = lambda req: Reply(500, {"error": "down"})
        progress = sync.name in ("pg_literal", "http_ok")  # the terminal progress bar goes to stderr
        run = attempt(sync.name, lambda s=sync, p=progress: s.run(progress=p))
        if run is not None:
            statuses[sync.name] = run.status.value
            attempt(f"{sync.name} raise_for_status", run.raise_for_status)
    assert statuses == {"pg_literal": "success", "pg_wrong": "failed", "pg_env": "success",
                        "pg_source": "success", "http_ok": "success", "http_env": "success",
                        "http_401": "failed", "http_500": "paused"}, statuses
    # the secrets really were in use: the server saw them, PostgreSQL let `app` in
    auths = {r.headers.get("authorization") for r in http_server.requests}
    assert f"Bearer {TOKEN}" in auths and any(r.headers.get("x-api-key") == API_KEY for r in http_server.requests)
    assert ws.sync("pg_wrong").last_run().error and "password" in ws.sync("pg_wrong").last_run().error.lower()

    assert_nothing_leaked(ws, ws_path, syncs, seen, capfd, caplog, recwarn, pg_server)


@pytest.mark.workspaces("duckdb", "postgres")
def test_token_in_url_query_string_is_not_stored(tmp_path, http_server, caplog, ws_target):
    caplog.set_level(logging.INFO)
    ws = dfsync.Workspace(ws_target)
    sync = ws.create_sync("q", source=dfsync.sources.frame(pl.DataFrame({"id": [1, 2]})),
                          destination=dfsync.destinations.http(f"{http_server.url}/c?access_token={URL_TOKEN}"),
                          primary_key="id")
    assert sync.run(progress=False).status == "success"
    assert_clean("syncs table", str(ws.sql("SELECT definition FROM syncs").to_dicts()))
    assert_clean("logs", " ".join(r.getMessage() for r in caplog.records))


@pytest.mark.workspaces("duckdb", "postgres")
def test_credentials_elsewhere_in_a_url_appear_nowhere(tmp_path, app_db, http_server, caplog, capfd, recwarn,
                                                       ws_target, pg_server):
    """A password as libpq's ``?password=`` query parameter (PostgreSQL destination, database
    source, a PostgreSQL workspace), an HTTP URL's ``user:password@`` and a token in an HTTP
    route's query string: each is used, and appears in no repr, definition, delivered-state key
    (``syncs.state_key``) or workspace file. They were stored and shown as given."""
    caplog.set_level(logging.DEBUG)
    data = pl.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    ws_path = ws_target if ws_target.startswith("postgresql://") else tmp_path / "ws" / "workspace.duckdb"
    ws = dfsync.Workspace(ws_path)
    in_query = f"postgresql://app@{app_db}?password={quote(PW, safe='')}"
    base = http_server.url.replace("http://", f"http://user:{URL_TOKEN}@")
    made = {
        "pg_query_pw": dict(destination=dfsync.destinations.postgres(in_query, table="t_query")),
        "src_query_pw": dict(source=dfsync.sources.database(in_query, "SELECT id, name FROM public.src"),
                             destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")),
        "http_userinfo": dict(destination=dfsync.destinations.http(f"{base}/contacts")),
        "http_route": dict(destination=dfsync.destinations.http(
            f"{http_server.url}/contacts?access_token={TOKEN}",
            update=f"PATCH /contacts/{{id}}?api_key={API_KEY}", delete=("DELETE", f"{base}/contacts/{{id}}"))),
    }
    syncs, seen = [], []
    for name, kw in made.items():
        kw.setdefault("source", dfsync.sources.frame(data))
        sync = ws.create_sync(name, primary_key="id", **kw)
        assert sync.run(progress=False).status == "success", (name, sync.last_run().error)
        syncs.append(sync)
    # the credentials really were used: PostgreSQL let `app` in, the server got basic auth
    assert pg_server.read(f"postgresql://dfsync@{app_db}", "SELECT count(*) AS n FROM t_query")["n"][0] == 3
    assert any(r.headers.get("authorization", "").startswith("Basic ") for r in http_server.requests)
    assert any(TOKEN in r.path for r in http_server.requests)
    shared = dfsync.Workspace(f"postgresql://app@{app_db}?schema=wsq&password={quote(PW, safe='')}")
    assert shared.syncs().is_empty()
    seen += [("repr(shared)", repr(shared)), ("shared.path", str(shared.path))]
    shared.close()
    assert_nothing_leaked(ws, ws_path, syncs, seen, capfd, caplog, recwarn, pg_server)


def test_a_literal_password_keeps_the_sync_in_the_session_that_made_it(tmp_path, app_db):
    """A password written literally (a PostgreSQL destination's or a database source's URI, a
    Delta storage option) is never stored, so the sync runs only where it was made, as with an
    HTTP token: another process (the CLI, a scheduler) is refused before a run exists. Such syncs
    were not marked session-only: the other process ran them without the password, and each
    run failed ('no password supplied'), turning the sync failed."""
    ws_path = tmp_path / "ws.duckdb"
    ws = dfsync.Workspace(ws_path)
    files = tmp_path / "src.parquet"
    pl.DataFrame({"id": [1, 2], "name": ["a", "b"]}).write_parquet(files)
    uri = f"postgresql://app:{PW}@{app_db}"
    made = {
        "pg_dest": dict(source=dfsync.sources.files(str(files)),
                        destination=dfsync.destinations.postgres(uri, table="t_lit")),
        "pg_source": dict(source=dfsync.sources.database(uri, "SELECT id, name FROM public.src"),
                          destination=dfsync.destinations.duckdb(str(tmp_path / "d.duckdb"), table="t")),
        "delta_dest": dict(source=dfsync.sources.files(str(files)), destination=dfsync.destinations.delta(
            str(tmp_path / "lake"), storage_options={"azure_storage_sas_token": PW})),
    }
    for name, kw in made.items():
        sync = ws.create_sync(name, primary_key="id", **kw)
        assert sync.session_only, name
        assert sync.run(progress=False).status == "success", (name, sync.last_run().error)  # here it works
    ws.close()
    root = pathlib.Path(__file__).resolve().parents[1]
    for name in made:
        proc = subprocess.run([sys.executable, "-m", "dfsync", "run", name, "-w", str(ws_path)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "can only run in the Python session that created it" in proc.stderr, proc.stderr
        assert "env:NAME" in proc.stderr and PW not in proc.stdout + proc.stderr
    ws = dfsync.Workspace(ws_path)
    assert ws.syncs()["status"].to_list() == ["healthy"] * 3  # no run was made, none failed
    assert ws.runs().height == 3


@pytest.mark.workspaces("duckdb", "postgres", slow=("postgres",))
def test_planted_mysql_secrets_appear_nowhere(tmp_path, mariadb_server, caplog, capfd, monkeypatch, recwarn,
                                              ws_target, request):
    """MySQL/MariaDB: user ``app`` must give PW; literal, wrong and ``env:`` passwords. Delta Lake:
    secret storage options, as a literal and as an ``env:`` reference."""
    caplog.set_level(logging.DEBUG)
    db = mariadb_server.new_database()
    mariadb_server.execute(f"ALTER USER 'app'@'%' IDENTIFIED BY '{PW}'")
    mariadb_server.execute(f"CREATE TABLE `{db}`.src AS SELECT seq AS id, CONCAT('n', seq) AS name FROM seq_1_to_30",
                           database=db)
    monkeypatch.setenv("DFSYNC_TEST_MYPASS", PW)
    monkeypatch.setenv("DFSYNC_UNUSED", ENV_PW)
    where = f"127.0.0.1:{mariadb_server.port}/{db}"
    data = pl.DataFrame({"id": list(range(1, 31)), "name": [f"n{i}" for i in range(1, 31)]})
    pg = ws_target.startswith("postgresql://")
    ws_path = ws_target if pg else tmp_path / "ws" / "workspace.duckdb"
    ws = dfsync.Workspace(ws_path)
    seen: list[tuple[str, str]] = []
    made = {
        "my_literal": dict(destination=dfsync.destinations.mysql(f"mysql://app:{PW}@{where}", table="t1")),
        "my_wrong": dict(destination=dfsync.destinations.mysql(f"mysql://app:{WRONG_PW}@{where}", table="t2")),
        "my_env": dict(destination=dfsync.destinations.mysql(f"mysql://app@{where}", table="t3",
                                                             password="env:DFSYNC_TEST_MYPASS"),
                       destination_mode="mirror"),
    }
    monkeypatch.setenv("DFSYNC_TEST_DELTA_KEY", ENV_PW)
    made["delta_opts"] = dict(destination=dfsync.destinations.delta(
        str(tmp_path / "lake" / "t"), storage_options={"AWS_SECRET_ACCESS_KEY": "env:DFSYNC_TEST_DELTA_KEY",
                                                       "azure_storage_sas_token": PW}))
    made["my_source"] = dict(
        source=dfsync.sources.database(f"mysql://app@{where}", "SELECT id, name FROM src",
                                       password="env:DFSYNC_TEST_MYPASS"),
        destination=dfsync.destinations.duckdb(str(tmp_path / "from_mysql.duckdb"), table="t"))
    syncs, statuses = [], {}
    for name, kw in made.items():
        kw.setdefault("source", dfsync.sources.frame(data))
        sync = ws.create_sync(name, primary_key="id", **kw)
        syncs.append(sync)
        run = sync.run(progress=name == "my_literal")
        statuses[name] = run.status.value
        try:
            run.raise_for_status()
        except dfsync.DfsyncError as exc:
            seen.append((f"{name}: error", f"{exc!s} {exc!r}"))
    assert statuses == {"my_literal": "success", "my_wrong": "failed", "my_env": "success",
                        "delta_opts": "success", "my_source": "success"}, statuses
    assert "access denied" in ws.sync("my_wrong").last_run().error.lower()
    assert mariadb_server.execute(f"SELECT count(*) FROM `{db}`.t3")[0][0] == 30
    assert_nothing_leaked(ws, ws_path, syncs, seen, capfd, caplog, recwarn,
                          request.getfixturevalue("pg_server") if pg else None)

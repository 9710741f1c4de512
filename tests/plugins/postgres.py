"""A throwaway PostgreSQL 15 cluster for the test session, plus the ``postgres``/``sqlite`` targets.

``pg_server`` (session scope) runs ``initdb`` + ``pg_ctl`` in a temp dir on a free loopback
port (as the ``postgres`` user when the tests run as root: initdb refuses root) and stops it
at the end. Without PostgreSQL the tests are skipped, except under ``CI=true`` where they
FAIL: CI must never pass by skipping the real server.

``pg_server.restart()`` / ``stop()`` / ``start()`` let outage tests take the server away.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl
import pytest

import dfsync

from .targets import Target, register_target

#: a role that must authenticate with a password (every other role is trusted)
PASSWORD_ROLE = "app"
_PG_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/14/bin"]


_STATE_CACHE: list[str] = []


def pytest_configure(config) -> None:
    """PostgreSQL workspaces of the test run (and the processes they start) keep their hosts'
    copies of delivered states in a directory of the run's own, removed at its end."""
    if "DFSYNC_STATE_CACHE" not in os.environ:
        _STATE_CACHE.append(tempfile.mkdtemp(prefix="dfsync-state-cache-"))
        os.environ["DFSYNC_STATE_CACHE"] = _STATE_CACHE[0]


def pytest_unconfigure(config) -> None:
    for d in _STATE_CACHE:
        shutil.rmtree(d, ignore_errors=True)
        os.environ.pop("DFSYNC_STATE_CACHE", None)


def _find_bin(name: str) -> str | None:
    for d in _PG_DIRS:
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required under CI=true: {msg}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {msg}")


@dataclass
class PGServer:
    """A running throwaway cluster. ``uri`` connects as the superuser ``dfsync`` (trust auth)."""

    datadir: str
    port: int
    pg_ctl: str
    as_user: list[str]
    log: str
    user: str = "dfsync"
    dbname: str = "postgres"
    extra: dict[str, str] = field(default_factory=dict)
    extra_state: dict[str, str] = field(default_factory=dict)  # what was asked of the server once

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", self.datadir, "-l", self.log, *args],
                       check=True, capture_output=True, timeout=120)

    # fsync=off survives a server crash (the OS keeps the data) but not an OS crash, which
    # no test makes; synchronous_commit stays on: an acknowledged commit must survive
    # ``stop("immediate")``, or exactly-once tests would blame dfsync for the server's loss
    def start(self) -> None:
        settings = "".join(f" -c {k}={v}" for k, v in self.extra.items())  # e.g. a benchmark's shared_buffers
        self._ctl("-w", "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
                  f"-c fsync=off -c full_page_writes=off{settings}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def execute(self, sql: str, params: tuple | None = None, dbname: str | None = None) -> list[tuple]:
        """Run SQL over psycopg in autocommit (never leaves a session idle in transaction)."""
        import psycopg

        uri = self.uri if dbname is None else self.uri.rsplit("/", 1)[0] + "/" + dbname
        with psycopg.connect(uri, autocommit=True) as con:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def dump_schema(self, uri: str, schema: str) -> bytes:
        """``pg_dump --schema`` of a database of this cluster (``uri`` as from new_database)."""
        pg_dump = _find_bin("pg_dump")
        assert pg_dump, "pg_dump not found"
        out = subprocess.run([pg_dump, f"--schema={schema}", uri], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def new_database(self) -> str:
        """A fresh empty database; returns its URI (tests stay independent)."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.execute(f'CREATE DATABASE "{name}"{self._copy_strategy()}')
        return self.uri.rsplit("/", 1)[0] + "/" + name

    def _copy_strategy(self) -> str:
        """PostgreSQL 15+ copies the template block by block through the WAL by default (~7 MB of WAL
        a database); copying its files is faster for the small empty template (0.10 s against 0.12-0.19 s
        a database on a busy host), and the tests make hundreds."""
        if "strategy" not in self.extra_state:
            version = int(self.execute("SHOW server_version_num")[0][0])
            self.extra_state["strategy"] = " STRATEGY = FILE_COPY" if version >= 150000 else ""
        return self.extra_state["strategy"]

    def read(self, uri: str, sql: str) -> pl.DataFrame:
        import adbc_driver_postgresql.dbapi as pgdb

        with pgdb.connect(uri) as con, con.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
        return pl.from_arrow(table)  # type: ignore[return-value]


@contextlib.contextmanager
def throwaway_server(settings: dict[str, str] | None = None) -> Iterator[PGServer]:
    """A PostgreSQL cluster in a temp dir for as long as the block runs (notebooks/regenerate.py and
    bench/sync_bench.py use it too; ``settings``: server settings, e.g. ``{"shared_buffers": "2GB"}``)."""
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("initdb/pg_ctl not found (apt-get install -y postgresql)")
    try:
        import adbc_driver_postgresql  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        _unavailable(f"{exc} (pip install 'dfsync[postgres]')")
    root = tempfile.mkdtemp(prefix="dfsync-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    datadir = os.path.join(root, "data")
    log = os.path.join(root, "server.log")
    server = PGServer(datadir, _free_port(), pg_ctl, as_user, log, extra=dict(settings or {}))  # type: ignore[arg-type]
    try:
        subprocess.run([*as_user, initdb, "-D", datadir, "-U", "dfsync", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        hba = os.path.join(datadir, "pg_hba.conf")
        with open(hba) as f:
            rules = f.read()
        with open(hba, "w") as f:  # role "app" must give its password (secrets/auth tests)
            f.write(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + rules)
        server.start()
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        tail = pathlib.Path(log).read_text()[-2000:] if os.path.exists(log) else ""
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start a cluster: {exc} {detail.decode(errors='replace')} {tail}")
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PGServer]:
    with throwaway_server() as server:
        yield server


@pytest.fixture
def pg_uri(pg_server: PGServer) -> str:
    """A fresh database of the session cluster for one test."""
    for _ in range(50):  # a previous outage test may still be bringing the server back
        try:
            return pg_server.new_database()
        except Exception:
            time.sleep(0.2)
    return pg_server.new_database()


@register_target("postgres")
def _postgres_target(request, tmp_path) -> Target:
    server: PGServer = request.getfixturevalue("pg_server")
    uri = server.new_database()

    def read(table: str) -> pl.DataFrame:
        exists = server.execute("SELECT to_regclass(%s) IS NOT NULL", ('"' + table.replace('"', '""') + '"',),
                                dbname=uri.rsplit("/", 1)[1])[0][0]
        if not exists:
            return pl.DataFrame()
        return server.read(uri, 'SELECT * FROM "' + table.replace('"', '""') + '"')

    return Target("postgres", lambda table: dfsync.destinations.postgres(uri, table=table), read)


@register_target("sqlite")
def _sqlite_target(request, tmp_path) -> Target:
    path = str(tmp_path / "dest.sqlite")

    def read(table: str) -> pl.DataFrame:
        import sqlite3

        if not os.path.exists(path):
            return pl.DataFrame()
        con = sqlite3.connect(path)
        try:
            quoted = '"' + table.replace('"', '""') + '"'
            if not con.execute("SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?",
                               (table,)).fetchone()[0]:
                return pl.DataFrame()
            return pl.read_database(f"SELECT * FROM {quoted}", con)
        finally:
            con.close()

    return Target("sqlite", lambda table: dfsync.destinations.sqlite(path, table=table), read)

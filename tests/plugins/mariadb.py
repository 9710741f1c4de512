"""A throwaway MariaDB server for the test session, plus the ``mysql`` target.

``mariadb_server`` (session scope) runs ``mariadb-install-db`` and ``mariadbd`` in a temp dir
on a free loopback port (as the ``mysql`` user) and stops it at the end. Without MariaDB the
tests are skipped, except under ``CI=true`` where they FAIL: CI must never pass by skipping
the real server. ``stop()`` / ``start()`` / ``restart()`` let outage tests take it away.

The server keeps InnoDB's redo log on every commit (``innodb_flush_log_at_trx_commit=2``
writes it to the OS at each commit, so a killed server loses nothing; only an OS crash
could, which no test makes).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pytest

import dfsync

from .targets import Target, register_target

#: a user that must give its password (root has none)
PASSWORD_USER = "app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(msg: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"MariaDB is required under CI=true: {msg}", pytrace=False)
    pytest.skip(f"MariaDB not available: {msg}")


@dataclass
class MariaDBServer:
    root: str
    port: int
    proc: subprocess.Popen | None = None

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "data")

    def uri(self, database: str = "mysql", user: str = "root") -> str:
        return f"mysql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        with open(os.path.join(self.root, "server.log"), "ab") as log:
            self.proc = self._spawn(log)
        self._wait()

    def _spawn(self, log) -> subprocess.Popen:
        return subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.root}/sock", "--user=mysql",
             f"--pid-file={self.root}/mariadb.pid", "--innodb-flush-log-at-trx-commit=2",
             "--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M", "--skip-name-resolve",
             "--max-connections=300", "--local-infile=1"],
            stdout=log, stderr=subprocess.STDOUT)

    def _wait(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 120
        while True:
            try:
                self.execute("SELECT 1")
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    with open(os.path.join(self.root, "server.log"), errors="replace") as fh:
                        tail = fh.read()[-2000:]
                    raise RuntimeError(f"mariadbd did not start: {tail}") from None
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if mode == "immediate" else signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self, database: str | None = None):
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", database=database,
                               charset="utf8mb4", autocommit=True, connect_timeout=5)

    def execute(self, sql: str, params: tuple | None = None, database: str | None = None) -> list[tuple]:
        con = self.connect(database)
        try:
            with con.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            con.close()

    def new_database(self) -> str:
        """A fresh empty database; returns its name."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return name

    def read(self, database: str, sql: str) -> pl.DataFrame:
        con = self.connect(database)
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
        finally:
            con.close()
        return pl.DataFrame([list(r) for r in rows], schema=names, orient="row", infer_schema_length=None)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    if not shutil.which("mariadbd") and not os.path.exists("/usr/sbin/mariadbd"):
        _unavailable("mariadbd not found (apt-get install -y mariadb-server)")
    try:
        import pymysql  # noqa: F401
    except ImportError as exc:
        _unavailable(f"{exc} (pip install 'dfsync[mysql]')")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    root = tempfile.mkdtemp(prefix="dfsync-mariadb-")
    if os.geteuid() == 0:
        shutil.chown(root, "mysql", "mysql")
    server = MariaDBServer(root, _free_port())
    try:
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={server.datadir}", "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=180)
        server.start()
        server.execute(f"CREATE USER '{PASSWORD_USER}'@'%' IDENTIFIED BY 'not-the-test-password'")
        server.execute(f"GRANT ALL ON *.* TO '{PASSWORD_USER}'@'%'")
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"could not start a server: {exc} {detail.decode(errors='replace')[-2000:]}")
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mysql_db(mariadb_server: MariaDBServer) -> str:
    """A fresh database of the session server for one test; returns its URI (as root)."""
    for _ in range(50):  # a previous outage test may still be bringing the server back
        try:
            return mariadb_server.uri(mariadb_server.new_database())
        except Exception:
            time.sleep(0.2)
    return mariadb_server.uri(mariadb_server.new_database())


@register_target("mysql")
def _mysql_target(request, tmp_path) -> Target:
    server: MariaDBServer = request.getfixturevalue("mariadb_server")
    db = server.new_database()

    def read(table: str) -> pl.DataFrame:
        if not server.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
                              "AND table_name = %s", (db, table))[0][0]:
            return pl.DataFrame()
        return server.read(db, "SELECT * FROM `" + table.replace("`", "``") + "`")

    return Target("mysql", lambda table: dfsync.destinations.mysql(server.uri(db), table=table), read)

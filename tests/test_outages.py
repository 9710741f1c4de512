"""Destination outages: unavailable at the start, mid-run and at the commit itself.

STATES.md: a transient destination error that outlasts its retries pauses the run; the
next run resumes it. These tests take the real destination away (the PostgreSQL server is
stopped; a TCP proxy cuts the connection right after the client sent ``COMMIT``, so the
commit lands but its answer never arrives; the HTTP server hangs up) and check that the
run pauses (or, for the lost commit answer, carries on) and that a later run completes with
nothing lost and nothing applied twice.

(A PostgreSQL restart in the middle of a run is also covered by
``tests/test_database_e2e.py::test_postgres_restart_mid_run_pauses_then_resumes``.)
"""

from __future__ import annotations

import contextlib
import socket
import threading

import polars as pl

import dfsync
from tests.plugins.http_server import Reply

N = 400


def rows(n: int = N) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(n)), "name": [f"n{i} ✓" for i in range(n)],
                         "score": [i / 4 for i in range(n)]})


def pg_table(pg_server, uri: str, table: str = "t") -> pl.DataFrame:
    return pg_server.read(uri, f'SELECT * FROM "{table}" ORDER BY id')


def test_postgres_down_at_start_pauses_then_completes(pg_server, pg_uri, tmp_path):
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("down", source=dfsync.sources.frame(rows()), primary_key="id", batch_size=50,
                          destination=dfsync.destinations.postgres(pg_uri, table="t", retry_timeout=1),
                          destination_mode="insert")
    pg_server.stop("immediate")
    try:
        run = sync.run(progress=False)
    finally:
        pg_server.start()
    assert run.status == "paused", (run.status, run.error)
    assert "destination unavailable" in run.events().filter(to_status="paused")["detail"][-1]
    assert sync.status == "pending"  # a paused run does not change the sync status
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success", again.error
    got = pg_table(pg_server, pg_uri)
    assert got.equals(rows().sort("id"))
    assert sync.run(progress=False).counts["sent"] == 0


def test_postgres_down_before_a_resync_is_waited_out_once(pg_server, pg_uri, tmp_path):
    """Before a re-sync reads its source it looks whether the destination still holds the rows it
    was sent (the lost-rows look). With the server down, that look retried for the whole
    retry_timeout, then the transfer retried for it again: an outage was waited out twice before
    the run paused. The look is one attempt now; the transfer alone retries."""
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("down2", source=dfsync.sources.frame(rows()), primary_key="id", batch_size=50,
                          destination=dfsync.destinations.postgres(pg_uri, table="t2", retry_timeout=1),
                          destination_mode="mirror")
    assert sync.run(progress=False).status == "success"
    pg_server.stop("immediate")
    try:
        run = sync.run(progress=False, source=rows().with_columns(pl.col("score") + 1))
    finally:
        pg_server.start()
    assert run.status == "paused", (run.status, run.error)
    notes = run.events().filter(kind="note")["detail"].to_list()
    look = [n for n in notes if "whether it still holds the delivered rows" in n]
    assert len(look) == 1 and "(one attempt)" in look[0] and "retried for" not in look[0], notes
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success", again.error
    assert pg_table(pg_server, pg_uri, "t2")["score"].to_list() == [i / 4 + 1 for i in range(N)]


class CommitCutter:
    """A TCP proxy to PostgreSQL that, once armed, forwards the client's ``COMMIT`` and then
    cuts both connections before the server's answer gets back: the commit landed, the
    client cannot know."""

    def __init__(self, port: int, cut_after_commits: int) -> None:
        self.target = port
        self.left = cut_after_commits  # let this many COMMITs through before cutting one
        self.cut = 0
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if from_client and b"COMMIT" in data.upper():
                    with self.lock:
                        self.left -= 1
                        cut = self.left == -1
                    if cut:
                        self.cut += 1
                        import time

                        time.sleep(0.2)  # the server has the COMMIT; its answer is dropped
                        for s in (src, dst):
                            s.shutdown(socket.SHUT_RDWR)
                        break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.sock.close()


def test_postgres_connection_lost_at_commit_applies_the_batch_once(pg_server, pg_uri, tmp_path):
    proxy = CommitCutter(pg_server.port, cut_after_commits=4)
    via_proxy = pg_uri.replace(f":{pg_server.port}/", f":{proxy.port}/")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("commit", source=dfsync.sources.frame(rows()), primary_key="id", batch_size=50,
                          destination=dfsync.destinations.postgres(via_proxy, table="t", retry_timeout=2),
                          destination_mode="insert")
    try:
        run = sync.run(progress=False)
        assert proxy.cut == 1, "the proxy never cut a commit"
        if run.status == "paused":  # the destination gave up on the batch: the next run settles it
            run = sync.run(progress=False)
        assert run.status == "success", run.error
        assert run.counts["failed"] == 0, run.records(status="failed")
    finally:
        proxy.close()
    got = pg_table(pg_server, pg_uri)
    assert got.height == N and got["id"].n_unique() == N
    assert got.equals(rows().sort("id"))
    assert sync.run(progress=False).counts["sent"] == 0


def test_http_server_down_then_back_delivers_each_record_once(tmp_path, http_server):
    """At least once, with idempotency keys: the server hangs up for a while (mid-run), the run
    pauses; when it is back the run resumes and no record is applied under two keys."""
    df = rows(120)
    state = {"n": 0}

    def flaky(req):
        state["n"] += 1
        if state["n"] > 3 and not state.get("back"):
            return Reply(drop=True)  # the server is gone: connections are cut without an answer
        return None

    http_server.handler = flaky
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("api", source=dfsync.sources.frame(df), primary_key="id",
                          destination=dfsync.destinations.http(http_server.url + "/contacts", batch_size=10,
                                                               concurrency=1, max_retries=2,
                                                               retry_initial_wait=0.01, retry_max_wait=0.02),
                          batch_size=20)
    run = sync.run(progress=False)
    assert run.status == "paused", (run.status, run.error)
    assert 0 < run.counts["succeeded"] < 120
    state["back"] = True
    again = sync.run(progress=False)
    assert again.id == run.id and again.status == "success", again.error
    delivered = http_server.delivered()
    assert sorted(r["id"] for r in delivered) == list(range(120))  # each record applied once
    assert all(len(keys) == 1 for keys in http_server.keys_per_record().values())
    assert sync.run(progress=False).counts["sent"] == 0


def test_mysql_connection_lost_at_commit_applies_the_batch_once(mariadb_server, mysql_db, tmp_path):
    """The same cut against MariaDB: PyMySQL's COMMIT reaches the server, its answer is dropped."""
    proxy = CommitCutter(mariadb_server.port, cut_after_commits=4)
    via_proxy = mysql_db.replace(f":{mariadb_server.port}/", f":{proxy.port}/")
    ws = dfsync.Workspace(tmp_path / "ws.duckdb")
    sync = ws.create_sync("commit", source=dfsync.sources.frame(rows()), primary_key="id", batch_size=50,
                          destination=dfsync.destinations.mysql(via_proxy, table="t", retry_timeout=2),
                          destination_mode="insert")
    try:
        run = sync.run(progress=False)
        assert proxy.cut == 1, "the proxy never cut a commit"
        if run.status == "paused":
            run = sync.run(progress=False)
        assert run.status == "success", run.error
        assert run.counts["failed"] == 0, run.records(status="failed")
    finally:
        proxy.close()
    got = mariadb_server.read(mysql_db.rsplit("/", 1)[1], "SELECT * FROM t ORDER BY id")
    assert got.height == N and got["id"].n_unique() == N
    assert got.to_dicts() == rows().sort("id").to_dicts()
    assert sync.run(progress=False).counts["sent"] == 0

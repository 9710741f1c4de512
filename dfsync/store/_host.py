"""One in-memory DuckDB of this process that workspace files are ATTACHed to while open.

``duckdb.connect(path)`` builds a new DuckDB instance whenever the process has no connection
to the file open: its catalog of built-in functions alone is ~15 ms of CPU, and a re-sync opens
its workspace four to six times (``Workspace()``, ``create_sync``, the run's lease, the reopen
after the source read, the status reads after it; bench/RESULTS.md, issue 22). ATTACHing the
file to an instance that already exists costs ~1-2 ms, and DETACHing it (when the last
connection of this process to the file closes) checkpoints it and drops the file lock exactly
as closing the instance did: other processes open the file between operations as before
(docs/CONCURRENCY.md), and the file holds no journal afterwards.

A file this process already holds through an instance of its own (a notebook's
``duckdb.connect(workspace)``) cannot be attached a second time: such an open gets
``duckdb.connect(path)``, which shares that instance, as every open did before.

Memory: DuckDB's ``memory_limit`` is one setting of the instance, not of an attached file. Each
open sets it, as before, to the largest ``workspace_memory`` of the files attached now (one
workspace's small cap does not starve another's run in the same process). A checkpoint (the
DETACH's, and :func:`checkpoint`'s at a run's end) may need more than a small cap: DuckDB's
vacuum merges row groups of a table (a 1.5M-row state: ~12 MB), and a checkpoint DuckDB
cannot finish invalidates the attached database. It runs with :data:`CHECKPOINT_ROOM` more
(the pages it reads are the file's, evicted under that limit, and the attached file's pages
are all dropped when it is detached); the limit is set back after it. A connection whose
statements need more (a delete spread over a large state: :func:`need`) keeps that room until
it closes. One function sets the limit (``_set_limit``), so no thread's open or checkpoint takes
back the room another thread's statement is using.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from .._settings import memory_bytes

log = logging.getLogger("dfsync.store")

#: memory a checkpoint may use beyond the workspace's limit (DuckDB's vacuum of row groups)
CHECKPOINT_ROOM = 64 * 2**20

_lock = threading.Lock()
#: (the instance, the process that made it: a forked child makes its own)
_host: list[tuple[duckdb.DuckDBPyConnection, int]] = []
_inherited: list[duckdb.DuckDBPyConnection] = []


def _after_fork_in_child() -> None:
    """A child forked while another thread of its parent held ``_lock`` would wait for it forever
    (that thread does not exist in the child): the child starts with a lock of its own."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass
class _File:
    alias: str
    path: str  # absolute (its key)
    open: int  # connections of this process to it
    limit: str  # its workspace_memory


#: file key -> its attachment
_attached: dict[str, _File] = {}
#: id of each open connection made by :func:`attach` -> its file key
_hosted: dict[int, str] = {}


def _instance() -> duckdb.DuckDBPyConnection:
    if _host and _host[0][1] == os.getpid():
        return _host[0][0]
    _inherited.extend(h for h, _ in _host)  # a forked child never closes its parent's instance
    _host.clear()
    _attached.clear()
    _hosted.clear()
    con = duckdb.connect(":memory:")
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    # a workspace's spill (its memory is capped) goes to a private directory, not the working directory
    spill = tempfile.mkdtemp(prefix="dfsync-workspace-")
    atexit.register(_remove_spill, spill, os.getpid())
    con.execute(f"SET temp_directory = '{spill.replace(chr(39), chr(39) * 2)}'")
    _host.append((con, os.getpid()))
    return con


def _remove_spill(spill: str, pid: int) -> None:
    """At exit of the process that made it (a child forked from it, exiting normally, runs its
    parent's exit handlers too: the parent may still be using it)."""
    if os.getpid() == pid:
        shutil.rmtree(spill, ignore_errors=True)


def _conflict(exc: duckdb.Error) -> bool:
    """This process holds the file through another instance (DuckDB refuses a second one)."""
    msg = str(exc).lower()
    return "file handle conflict" in msg or "already attached" in msg


#: id of an open connection -> the memory its statements need (:func:`need`), kept while it is open
_needs: dict[int, int] = {}


def _set_limit(con: duckdb.DuckDBPyConnection, extra: int = 0) -> None:
    """(under ``_lock``) The instance's one memory limit: the largest ``workspace_memory`` of the
    files attached now, or more while an open connection needs more (:func:`need`), plus ``extra``
    (a checkpoint's room). Every change of the limit goes through here, so that no thread's
    setting takes back the room another's statement needs."""
    limits = [f.limit for f in _attached.values()]
    if not limits:
        return
    largest = max(limits, key=lambda v: memory_bytes(v) or 0)
    have = memory_bytes(largest)
    if have is None:  # a size dfsync cannot read: as it is
        con.execute(f"SET memory_limit = '{largest}'")
        return
    want = max([have, *_needs.values()]) + extra
    con.execute(f"SET memory_limit = '{largest}'" if want == have else f"SET memory_limit = '{want // 2**20 + 1}MiB'")


def need(con: duckdb.DuckDBPyConnection, size: int) -> None:
    """Let ``con``'s statements use at least ``size`` bytes (never lowered) until it is closed: a
    delete spread over a large table needs room in proportion to the table (store/_delivery.py)."""
    if id(con) not in _hosted:  # an instance of its own: its limit is this connection's
        have = memory_bytes(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        if have and size > have:
            con.execute(f"SET memory_limit = '{size // 2**20 + 1}MiB'")
        return
    with _lock:
        _needs[id(con)] = max(_needs.get(id(con), 0), size)
        _set_limit(con)


def attach(key: str, path: str, memory_limit: str) -> duckdb.DuckDBPyConnection | None:
    """A connection whose default database is the workspace file ``path`` (attached now unless it
    already is), its instance's memory limit set (``memory_limit``, or a larger one of another
    file attached now); None when this process holds the file through an instance of its own
    (the caller connects to that instance). DuckDB's errors (the file locked by another process,
    not a database) are raised as ``duckdb.connect`` raises them."""
    with _lock:
        host = _instance()
        f = _attached.get(key)
        if f is None:
            alias = "ws_" + hashlib.sha1(key.encode()).hexdigest()[:16]
            try:
                host.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS {alias}")
            except duckdb.Error as exc:
                if _conflict(exc):
                    return None
                raise
            f = _attached[key] = _File(alias, key, 0, memory_limit)
        f.open += 1
        f.limit = memory_limit
        con = host.cursor()
        _hosted[id(con)] = key
        try:
            con.execute(f"USE {f.alias}")
            # the workspace's pages are evicted, not kept: a run's memory is its staging
            _set_limit(con)
        except BaseException:
            _release(con)
            raise
    return con


def close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a workspace connection; the last one :func:`attach` made for a file DETACHes it (a
    checkpoint, then the file lock goes), as closing an instance's last connection did."""
    if id(con) not in _hosted:
        con.close()
        return
    with _lock:
        _release(con)


def _release(con: duckdb.DuckDBPyConnection) -> None:
    """(under ``_lock``)"""
    con.close()
    key = _hosted.pop(id(con), None)
    had_need = _needs.pop(id(con), None) is not None
    f = _attached.get(key) if key is not None else None
    if key is None or f is None:
        return
    f.open -= 1
    if f.open > 0:
        if had_need:  # its room is not needed any more
            _set_limit(_instance())
        return
    del _attached[key]
    host = _instance()
    # nothing written since the last checkpoint (no journal): DuckDB does not checkpoint
    with _room(host) if _journal(f.path) else contextlib.nullcontext():
        try:
            host.execute(f"DETACH {f.alias}")
        except duckdb.Error:
            if host.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?",
                            [f.alias]).fetchall()[0][0]:
                # still attached: the next open uses it, the next close detaches it (a close does not
                # fail the caller, as an instance's close whose checkpoint fails does not)
                _attached[key] = f
                log.warning("could not detach the workspace %s (its checkpoint failed); it stays open in "
                            "this process until its next close", f.path)
            # detached, its checkpoint not done: the file keeps its journal (.wal), which the next
            # open replays, as a DuckDB instance whose checkpoint fails at its close leaves it


def checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """CHECKPOINT the workspace of ``con`` (with room for DuckDB's vacuum when it is attached)."""
    if id(con) not in _hosted:
        con.execute("CHECKPOINT")
        return
    with _lock, _room(_instance()):
        con.execute("CHECKPOINT")


def _journal(path: str) -> bool:
    try:
        return os.path.getsize(path + ".wal") > 0
    except OSError:
        return False


@contextlib.contextmanager
def _room(host: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """(under ``_lock``) The instance's memory limit raised by :data:`CHECKPOINT_ROOM`, set back after."""
    _set_limit(host, CHECKPOINT_ROOM)
    try:
        yield
    finally:
        _set_limit(host)


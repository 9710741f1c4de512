"""Compacting a DuckDB workspace file after an erasure, so the erased values leave its bytes.

DuckDB reuses the blocks of deleted and rewritten rows but does not overwrite them: after
``sync.forget(keys)`` or a retention purge no query returns the old values, yet the file
still holds them. :func:`compact_file` writes a fresh copy of the workspace and puts it in
the file's place:

1. every connection of this process to the file is closed (the caller,
   :meth:`~dfsync.store._filelock.FileConnections.compact`, waits for that), one more opening
   checkpoints the journal into the file and closes;
2. an in-memory DuckDB attaches the file read-only: its lock keeps every other process from
   opening the file to write (they wait, as for any lease) until the swap is done; the journal
   (``.wal``) must be absent or empty, else nothing is done;
3. ``COPY FROM DATABASE`` writes every table, view, index, sequence (at its current value)
   and the schema-version table into a new file inside a private directory
   ``<workspace>.compact-<pid>`` (0700, its file 0600) next to the workspace; the copy's row
   counts are compared with the old file's, the copy is fsynced;
4. the copy is renamed over the workspace file (atomic; the directory is fsynced), then the
   read-only attachment lets go.

A crash before the rename leaves the old file whole and a ``.compact-<pid>`` directory that no
opening takes for the workspace (:func:`remove_strays` removes it when its process is dead);
a crash after it leaves the new file, complete and synced.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from collections.abc import Callable
from typing import Any

import duckdb

from .._paths import private_file

_STRAY = ".compact-"


def _literal(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def remove_strays(path: str) -> None:
    """Remove the compaction directories of dead processes next to workspace ``path``."""
    strays = glob.glob(glob.escape(path) + _STRAY + "*")
    if not strays:
        return
    import psutil

    for stray in strays:
        try:
            pid = int(stray.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not psutil.pid_exists(pid):
            shutil.rmtree(stray, ignore_errors=True)


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _counts(con: Any, db: str) -> dict[str, int]:
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY 1", [db]).fetchall()]
    return {t: int(con.execute(f'SELECT count(*) FROM {db}."{t}"').fetchall()[0][0]) for t in tables}


def compact_file(path: str, connect: Callable[..., Any], close: Callable[[Any], None]) -> str | None:
    """Replace the workspace file ``path`` with a compacted copy; None when done, else why not (nothing changed).

    No connection of this process is open on the file. ``connect(how=None)`` opens it as the
    workspace's connections do (waiting while another process has it; ``how()``: another way
    to open it); ``close(con)`` closes what it opened.
    """
    path = os.path.abspath(path)
    remove_strays(path)
    close(connect())  # the last connection of this process closes: DuckDB checkpoints the journal
    wal = path + ".wal"

    def attach() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {_literal(path)} AS old (READ_ONLY)")
        except BaseException:
            con.close()
            raise
        return con

    con = connect(attach)  # waits for other processes as any opening does; then they wait for us
    work = path + _STRAY + str(os.getpid())
    try:
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            return f"its journal {os.path.basename(wal)} was not checkpointed"
        shutil.rmtree(work, ignore_errors=True)
        os.mkdir(work, 0o700)
        os.chmod(work, 0o700)  # mkdir's mode passes through the umask
        new = os.path.join(work, "workspace.duckdb")
        con.execute(f"ATTACH {_literal(new)} AS new")
        try:
            private_file(new)
            con.execute("COPY FROM DATABASE old TO new")
            before, after = _counts(con, "old"), _counts(con, "new")
        finally:
            con.execute("DETACH new")
        if before != after:
            differ = sorted(t for t in before.keys() | after.keys() if before.get(t) != after.get(t))
            return f"its copy did not hold the same rows (tables {', '.join(differ)})"
        if os.path.exists(new + ".wal"):
            return "its copy's journal was not checkpointed"
        private_file(new)
        _fsync(new)
        os.replace(new, path)
        _fsync(os.path.dirname(path))
        return None
    finally:
        close(con)  # the read-only attachment lets go only now: nobody opened the old file meanwhile
        with contextlib.suppress(OSError):
            shutil.rmtree(work)

"""Opening the DuckDB workspace file: short connections, leases and the hand-over between processes.

Concurrency: DuckDB lets one process open a file read-write, and that locks out every
other process. So connections are short: each operation opens the file (cheap when the
process already has it open) and closes it; a running sync *leases* a connection for at
most ``LEASE_SECONDS``, or less when another process waits, and then lets go at the next
batch boundary, so a notebook or CLI in another process gets its turn. A process that finds the file locked retries for
``busy_timeout`` seconds, then raises WorkspaceBusy naming the process that holds it.

Hand-over: DuckDB's file lock does not queue, so a waiter could keep missing the brief gaps
between another process's connections. A waiter therefore announces itself with a marker
file ``<workspace>.wait-<pid>`` while it retries; a lease holder that sees one lets go at
the next batch boundary (not only every LEASE_SECONDS) and waits, at most HANDOVER_SECONDS,
for the marker to go; any process about to open the file first waits the same way for
other processes' markers. Markers of dead processes are removed. See docs/CONCURRENCY.md.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import duckdb

from .._paths import not_writable, owner_problem, private_dir, private_file
from .._settings import setting
from ..errors import WorkspaceBusy, WorkspaceCorrupt, WorkspaceError
from . import _host
from ._common import StoreKey, now
from ._compact import compact_file, remove_strays
from ._migrations import MIGRATIONS, SCHEMA_VERSION

LEASE_SECONDS = 10.0  # waiters announce themselves (markers below), so the lease can be long
HANDOVER_SECONDS = 2.0  # longest a process defers to announced waiters before it goes ahead anyway
RELEASE_GRACE = 0.2  # work outside the workspace (reading a source) shorter than this keeps the file open

_LOCK_RE = re.compile(r"(?:PID|pid)\s*(\d+)")
_local_locks: dict[str, threading.RLock] = {}
_memory_cons: dict[str, duckdb.DuckDBPyConnection] = {}


def _utc(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """The workspace's times in UTC, as a PostgreSQL workspace gives them (its sessions SET TIME ZONE
    'UTC'): DuckDB otherwise hands TIMESTAMPTZ out in the machine's zone, so sync.runs(), events()
    and records() had another dtype on each machine and on each store (a frame of both would not
    concat). GLOBAL: the connection's cursors too."""
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    return con


class _Gate:
    """This process's open connections to one workspace file, so a compaction can wait until
    none is open and hold new ones back until the file is swapped (:meth:`FileConnections.compact`)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.open = 0
        self.compactor: int | None = None  # the thread compacting the file


_gates: dict[str, _Gate] = {}


class _Paused:
    """Stands for a lease whose connection a compaction closed (other threads still see it held)."""

    def close(self) -> None:
        pass


_PAUSED: Any = _Paused()


class FileConnections(StoreKey):
    """Connections to one workspace file (the SQL of its tables is in :class:`~dfsync.store._duckdb.Store`)."""

    def __init__(self, path: str, *, busy_timeout: float = 30.0, create: bool = True,
                 memory_limit: str | None = None, then: Callable[[FileConnections], Any] | None = None) -> None:
        """``then(self)`` runs on the connection that opened and checked the file (one opening for both)."""
        self.path = path
        self.busy_timeout = busy_timeout
        self.memory_limit = memory_limit
        self.memory = path == ":memory:"
        self._key = f"memory:{id(self)}" if self.memory else os.path.abspath(path)
        self._lock = _local_locks.setdefault(self._key, threading.RLock())
        self._gate = _gates.setdefault(self._key, _Gate())
        self._lease: duckdb.DuckDBPyConnection | None = None
        self._lease_since = 0.0
        self._lease_thread: int | None = None
        self._ledger: tuple[str, int, list[tuple[int, str]]] | None = None
        if self.memory:
            _memory_cons[self._key] = _utc(duckdb.connect(":memory:"))
        else:
            if os.path.isdir(path):
                raise WorkspaceError(
                    f"{path} is a directory; a workspace is a file: dfsync.Workspace() (the default, "
                    f".dfsync/workspace.duckdb) or a file path such as "
                    f"{os.path.join(path, '.dfsync', 'workspace.duckdb')}. Nothing was changed.")
            whose = owner_problem(path)
            if whose:
                raise WorkspaceError(
                    f"cannot open the workspace {path}: {whose}. A workspace belongs to the user who "
                    f"created it (its file is readable by that user only); run dfsync as that user, or "
                    f"give this user a workspace of its own. Nothing was changed.")
            exists = os.path.exists(path) and os.path.getsize(path) > 0
            if exists:
                remove_strays(os.path.abspath(path))  # a compaction's copy whose process died
            elif not create:
                raise WorkspaceError(f"no dfsync workspace at {path}; nothing was created. Pass the workspace "
                                     f"file your notebook uses: dfsync.Workspace(PATH), on the command line "
                                     f"--workspace PATH")
            why = self._check_file(exists)
            if why:
                raise WorkspaceError(
                    f"cannot use the workspace {path}: {why}. dfsync writes its workspace file and a journal "
                    f"next to it; give dfsync.Workspace() a path in a directory you can write"
                    f"{' (the file was not changed)' if exists else ''}.")
            private_dir(os.path.dirname(os.path.abspath(path)))  # a directory dfsync makes: 0700
        with self.lease():
            with self._connect() as con:
                if not self.memory and not exists:
                    private_file(path)  # a new file holds only its header yet: owner only from the start
                self._migrate(con, create)
            if then is not None:
                then(self)

    # ------------------------------------------------------------------ connections
    def _check_file(self, exists: bool) -> str | None:
        """The file's header (if it exists) and why it is not writable, or None.

        Closing any handle of the file drops this process's DuckDB lock on it (a POSIX lock), so
        another process could open it to write while this one uses it (or swaps it in a
        compaction): while this process has it open, DuckDB has read its header and writes it,
        and it is not opened to check."""
        with self._gate.cond:
            if self._gate.open or self._gate.compactor is not None:
                return None
            if exists:
                self._check_header()
            return not_writable(self.path)

    def _check_header(self) -> None:
        with open(self.path, "rb") as fh:
            head = fh.read(16)
        if len(head) < 12 or head[8:12] != b"DUCK":
            raise WorkspaceCorrupt(
                f"{self.path} is not a DuckDB workspace file (wrong header). It was not "
                f"changed. Point dfsync.Workspace() at another path, or move this file away "
                f"if you want a fresh workspace."
            )

    def _open(self, connect: Callable[[], duckdb.DuckDBPyConnection] | None = None) -> duckdb.DuckDBPyConnection:
        """A connection to the file (``connect()``: another way to open it, as a compaction does)."""
        if self.memory:
            return _memory_cons[self._key].cursor()
        gate, me = self._gate, threading.get_ident()
        with gate.cond:  # a compaction of another thread: wait until the file is swapped
            gate.cond.wait_for(lambda: gate.compactor in (None, me))
            gate.open += 1
        try:
            return self._open_file(connect)
        except BaseException:
            self._close(None)
            raise

    def _close(self, con: duckdb.DuckDBPyConnection | None) -> None:
        try:
            if con is not None:
                _host.close(con)
        finally:  # counted closed even when the close raised (a compaction waits for the count)
            if not self.memory and con is not _PAUSED:
                with self._gate.cond:
                    self._gate.open -= 1
                    self._gate.cond.notify_all()

    def _open_file(self, connect: Callable[[], duckdb.DuckDBPyConnection] | None) -> duckdb.DuckDBPyConnection:
        self._defer_to_waiters()
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        marker: str | None = None
        try:
            while True:
                try:
                    if connect is not None:
                        return _utc(connect())
                    # the workspace's pages are evicted, not kept: a run's memory is its staging
                    limit = setting('workspace_memory', {'workspace_memory': self.memory_limit})
                    # attached to this process's one in-memory DuckDB (dfsync/store/_host.py): no new
                    # instance per open; a file held through an instance of its own shares that one
                    con = _host.attach(self._key, self.path, limit)
                    if con is None:
                        con = _utc(duckdb.connect(self.path))
                        try:
                            con.execute(f"SET memory_limit = '{limit}'")
                        except BaseException:
                            con.close()
                            raise
                    return con
                except duckdb.IOException as exc:
                    msg = str(exc)
                    if "lock" not in msg.lower():
                        raise WorkspaceCorrupt(
                            f"cannot open the workspace {self.path}: {msg}. The file was not "
                            f"changed; if it is damaged, restore it or move it away."
                        ) from exc
                    if time.monotonic() >= deadline:
                        m = _LOCK_RE.search(msg)
                        holder = f"process {m.group(1)}" if m else "another process"
                        raise WorkspaceBusy(
                            f"workspace busy: {self.path} is held by {holder}. Wait for it to "
                            f"finish, or close that process's connection, then try again."
                        ) from exc
                    if marker is None:
                        marker = self._announce()
                    time.sleep(delay)
                    delay = min(delay * 1.5, 0.1)
                except duckdb.Error as exc:
                    raise WorkspaceCorrupt(
                        f"cannot open the workspace {self.path}: {exc}. The file was not changed; "
                        f"if it is damaged, restore it from a copy or move it away."
                    ) from exc
        finally:
            if marker is not None:
                with contextlib.suppress(OSError):
                    os.remove(marker)

    # A waiter's marker file tells the process holding the file to hand it over.
    def _announce(self) -> str | None:
        marker = f"{self.path}.wait-{os.getpid()}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:  # a read-only directory: we still retry, just without the hint
            return None
        return marker

    def _waiters(self) -> list[str]:
        """Other live processes waiting for the file (stale markers of dead ones are removed)."""
        import psutil

        out = []
        for marker in glob.glob(glob.escape(self.path) + ".wait-*"):
            try:
                pid = int(marker.rsplit("-", 1)[1])
            except ValueError:
                continue
            if pid == os.getpid():
                continue
            if psutil.pid_exists(pid):
                out.append(marker)
            else:
                with contextlib.suppress(OSError):
                    os.remove(marker)
        return out

    def _defer_to_waiters(self) -> None:
        deadline = time.monotonic() + HANDOVER_SECONDS
        while self._waiters() and time.monotonic() < deadline:
            time.sleep(0.005)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one operation (a transaction is the caller's business).

        The thread holding a lease reuses its connection; any other thread opens its own,
        which is cheap while this process has the file open (DuckDB shares the instance).
        """
        lease = self._lease
        if lease is not None and self._lease_thread == threading.get_ident():
            try:
                with self._damaged_file():
                    yield lease
            finally:
                self._private_wal()
            return
        con = self._open()
        try:
            with self._damaged_file():
                yield con
        finally:
            self._close(con)
            self._private_wal()

    def _private_wal(self) -> None:
        """DuckDB creates the journal (``.wal``) with the process umask: owner only, as the file."""
        if not self.memory:
            private_file(self.path + ".wal")

    @contextlib.contextmanager
    def _damaged_file(self) -> Iterator[None]:
        """A truncated or overwritten file opens fine and fails when a page is read: say so."""
        try:
            yield
        except duckdb.IOException as exc:
            raise WorkspaceCorrupt(
                f"the workspace {self.path} could not be read or written: {str(exc).splitlines()[0]}. "
                f"If the file is damaged (truncated, overwritten), restore it from a copy or move it away; "
                f"if the disk is full, free some space. dfsync did not reset it.") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Keep one connection open across many operations of this thread (a run).

        :meth:`release_if_stale` at batch boundaries and :meth:`released` around long work
        that does not need the workspace let other processes in.
        """
        me = threading.get_ident()
        with self._lock:
            if self._lease is not None:
                # None: another thread of this process runs; it keeps its lease
                owns = False if self._lease_thread == me else None
            else:
                owns = True
                self._lease = self._open()
                self._lease_since = time.monotonic()
                self._lease_thread = me
        try:
            yield
        finally:
            if owns:
                with self._lock:
                    if self._lease is not None:
                        self._close(self._lease)
                    self._lease = None
                    self._lease_thread = None

    def _holds_lease(self) -> bool:
        return self._lease is not None and self._lease_thread == threading.get_ident()

    def release_if_stale(self) -> None:
        if self.memory or not self._holds_lease():
            return
        if (time.monotonic() - self._lease_since >= LEASE_SECONDS or self._waiters()
                or self._gate.compactor is not None):  # a compaction by another thread waits for this lease
            with self._lock:
                assert self._lease is not None
                self._close(self._lease)
                time.sleep(0.005)  # a window for a waiting process (_open defers to announced ones)
                self._lease = self._open()
                self._lease_since = time.monotonic()

    def checkpoint(self) -> None:
        """Write this thread's lease's changes into the file (DuckDB's CHECKPOINT), so closing the
        lease afterwards writes next to nothing: a run's end does this while its destination closes
        on another thread (the two mostly wait on the disk). Without a lease of this thread, nothing;
        a checkpoint DuckDB refuses (another connection of this process in a transaction) is left to
        the close, which does it anyway."""
        if self.memory or not self._holds_lease():
            return
        with contextlib.suppress(duckdb.Error), self._connect() as con:
            _host.checkpoint(con)

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Let go of this thread's lease during long work that does not touch the workspace.

        The connection is closed only once the work has lasted ``RELEASE_GRACE`` seconds, or at
        once when another process announces that it waits (a watcher thread checks): short work,
        such as reading a small source, then keeps it instead of closing the file (a checkpoint)
        and opening it again, about 30 ms of every small run.
        """
        if self.memory or not self._holds_lease():
            yield
            return
        with self._lock:
            parked = [self._lease]
            self._lease = None
        done = threading.Event()

        def let_go() -> None:
            deadline = time.monotonic() + RELEASE_GRACE
            while not done.wait(0.01):
                if time.monotonic() >= deadline or self._waiters():
                    with self._lock:
                        con, parked[0] = parked[0], None  # taken first: a close that raises leaves none parked
                        if con is not None:
                            self._close(con)
                    return

        watcher = threading.Thread(target=let_go, name="dfsync-release", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            with self._lock:  # taken back under the lock: the watcher closes only what is still parked
                con, parked[0] = parked[0], None
                if con is not None:
                    self._lease = con
                else:
                    self._lease = self._open()
                    self._lease_since = time.monotonic()

    def compact(self) -> str | None:
        """Rewrite the workspace file without the freed blocks of erased rows (after ``forget`` or
        a purge: see :mod:`dfsync.store._compact`); None when done (or nothing to do: a workspace
        in memory), else why it was not (the file is then unchanged).

        This thread's lease (if it holds one) is closed for the swap and opened again; other
        threads of this process wait for the swap, and a compaction waits at most
        ``busy_timeout`` seconds for their connections to close (a run lets go of its lease at
        its next batch boundary).
        """
        if self.memory:
            return None
        gate, me = self._gate, threading.get_ident()
        with gate.cond:
            if gate.compactor is not None:
                return "another thread of this process was compacting it"
            gate.compactor = me
        held = self._holds_lease()
        try:
            if held:
                lease, self._lease = self._lease, _PAUSED
                self._close(lease)
            with gate.cond:
                if not gate.cond.wait_for(lambda: gate.open == 0, timeout=self.busy_timeout):
                    return f"another thread of this process kept it open for {self.busy_timeout:g} s"
            try:
                return compact_file(self.path, self._open, self._close)
            except (duckdb.Error, OSError, WorkspaceBusy) as exc:  # a full disk, say: the erasure stands; the caller says so
                return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        finally:
            with gate.cond:
                gate.compactor = None
                gate.cond.notify_all()
            if held:
                self._lease = self._open()
                self._lease_since = time.monotonic()

    def close(self) -> None:
        if self.memory:
            con = _memory_cons.pop(self._key, None)
            if con is not None:
                con.close()

    # ------------------------------------------------------------------ schema
    def _migrate(self, con: duckdb.DuckDBPyConnection, create: bool = True) -> None:
        if not self.memory:
            self._refuse_foreign(con, create)
        made = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                           "AND table_name = 'dfsync_schema'").fetchall()[0][0]
        have = con.execute("SELECT coalesce(max(version), 0) FROM dfsync_schema").fetchall()[0][0] if made else 0
        if have > SCHEMA_VERSION:
            raise WorkspaceError(
                f"{self.path} was written by a newer dfsync (schema {have} > {SCHEMA_VERSION}); "
                f"upgrade dfsync to open it"
            )
        if have == SCHEMA_VERSION:
            return
        # Every pending version in one transaction: a new workspace pays one commit (one sync of the
        # file), not one per version, and a file is never left between two versions.
        con.execute("BEGIN TRANSACTION")
        con.execute("CREATE TABLE IF NOT EXISTS dfsync_schema (version INTEGER, applied_at TIMESTAMPTZ)")
        for version in range(have + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[version]:
                con.execute(stmt)
            con.execute("INSERT INTO dfsync_schema VALUES (?, ?)", [version, now()])
        con.execute("COMMIT")

    def _refuse_foreign(self, con: duckdb.DuckDBPyConnection, create: bool) -> None:
        """A DuckDB file that is not a dfsync workspace is never turned into one (nothing is written)."""
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal "
            "ORDER BY 1").fetchall()]
        if "dfsync_schema" in names:
            return
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise WorkspaceError(
                f"{self.path} is a DuckDB database with other tables ({shown}), not a dfsync workspace; "
                f"dfsync did not change it. Give dfsync.Workspace() a file of its own (the default is "
                f"{os.path.join('.dfsync', 'workspace.duckdb')}); to sync into this database use "
                f"dfsync.destinations.duckdb({self.path!r}, table=...)")
        if not create:
            raise WorkspaceError(f"{self.path} is not a dfsync workspace (it has no dfsync tables); nothing was "
                                 f"written. Pass the workspace file your notebook uses: dfsync.Workspace(PATH), "
                                 f"on the command line --workspace PATH")

"""How this host's copies of PostgreSQL workspaces' delivered states stay bounded.

The copies (:mod:`dfsync.store._pgstatecache`) are a cache: the server's rows are the truth, and
a copy that is gone only means the next run of its sync reads the server. So copies are removed:

* **with their sync**: deleting a sync, resetting its state or ``sync.forget`` removes this
  host's copy at once (the store does);
* **when their sync is gone**: opening a workspace removes the copies of its syncs that no
  longer exist there (deleted from another host, or the workspace recreated);
* **when unused**: a copy not used for ``DFSYNC_STATE_CACHE_DAYS`` days (default 30) is removed,
  and while all copies together take more than ``DFSYNC_STATE_CACHE_SIZE`` (default ``5GB``),
  the least recently used go first. Checked when a workspace is opened and whenever a copy gains
  a new base (the moment the cache grows). A copy's last use is its directory's time, renewed by
  every read and write of it.

**A copy in use is never removed.** A process that uses a sync's copy holds a shared lock on the
copy's ``.lock`` file (``flock``) until its workspace is closed or the process ends; removing a
copy takes that lock exclusively without waiting, and skips the copy if anyone holds it. (Where
``flock`` does not exist, a copy used within the last day counts as in use.) ``sync.forget``
removes the copy's files whoever uses it: erased keys leave every copy on this host.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

__all__ = ["HOLD_FILE", "hold", "limits", "prune", "release", "remove_copy", "touch"]

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

HOLD_FILE = ".lock"
DEFAULT_SIZE = "5GB"
DEFAULT_DAYS = 30.0
_UNLOCKED_IN_USE = 86400.0  # without flock: a copy used this recently counts as in use


def limits() -> tuple[int | None, float | None]:
    """(bytes all copies may take, seconds a copy may stay unused) from the environment; None: no bound.
    A value that cannot be read is the default (a cache bound is no reason to stop a run)."""
    from .._settings import memory_bytes

    size = os.environ.get("DFSYNC_STATE_CACHE_SIZE", DEFAULT_SIZE).strip().lower()
    days = os.environ.get("DFSYNC_STATE_CACHE_DAYS", "").strip().lower()
    max_bytes = None if size in ("none", "off", "unlimited") else memory_bytes(size)
    if max_bytes is None and size not in ("none", "off", "unlimited"):
        max_bytes = memory_bytes(DEFAULT_SIZE)
    if days in ("none", "off", "unlimited"):
        return max_bytes, None
    try:
        d = float(days) if days else DEFAULT_DAYS
    except ValueError:
        d = DEFAULT_DAYS
    return max_bytes, max(d, 0.0) * 86400.0


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def hold(directory: str) -> int | None:
    """A shared lock on a copy's directory (its ``.lock`` file, made with the directory), as an
    open descriptor; None when it cannot be had now (a removal holds it, or no ``flock``)."""
    if fcntl is None:
        return None
    for _ in range(3):
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(directory, HOLD_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # being removed right now: the next use tries again
        if _same_file(fd, os.path.join(directory, HOLD_FILE)):
            return fd
        os.close(fd)  # the file was removed (with its copy) between open and lock: again
    return None


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor lets the lock go


def touch(directory: str) -> None:
    """Mark a copy as used now (its directory's time)."""
    with contextlib.suppress(OSError):
        os.utime(directory)


def _rmtree_files(directory: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(os.path.join(directory, HOLD_FILE))  # first: a later holder makes a new one
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(directory))  # the workspace's directory, once it holds no copy


def remove_copy(directory: str, now: float | None = None) -> bool:
    """Remove one copy unless a process holds it (never waits). True if it is gone."""
    if not os.path.isdir(directory):
        return True
    if fcntl is None:  # pragma: no cover - not POSIX
        try:
            if (now or time.time()) - os.stat(directory).st_mtime < _UNLOCKED_IN_USE:
                return False
        except OSError:
            return True
        _rmtree_files(directory)
        return not os.path.isdir(directory)
    path = os.path.join(directory, HOLD_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # someone uses it
        if not _same_file(fd, path):
            return False  # removed and made again meanwhile: someone uses it now
        _rmtree_files(directory)
        return not os.path.isdir(directory)
    finally:
        os.close(fd)


def _copies(root: str) -> list[tuple[str, str, str]]:
    """(workspace directory name, sync directory name, path) of every copy under ``root``."""
    out = []
    with contextlib.suppress(OSError):
        for ws in os.listdir(root):
            wdir = os.path.join(root, ws)
            if ws.startswith(".") or not os.path.isdir(wdir):
                continue
            with contextlib.suppress(OSError):
                for s in os.listdir(wdir):
                    if s.isdigit() and os.path.isdir(os.path.join(wdir, s)):
                        out.append((ws, s, os.path.join(wdir, s)))
    return out


def _usage(directory: str) -> tuple[int, float]:
    """(bytes, last use) of one copy."""
    size, used = 0, 0.0
    with contextlib.suppress(OSError):
        used = os.stat(directory).st_mtime
        with os.scandir(directory) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    size += st.st_size
                    used = max(used, st.st_mtime)
    return size, used


def prune(root: str, *, workspace: str | None = None, live: Any = None, keep: str | None = None,
          max_bytes: int | None = None, max_age: float | None = None, now: float | None = None) -> list[str]:
    """Remove the copies under ``root`` that are not needed (see the module docstring) and that no
    process holds: those of ``workspace`` whose sync id is not in ``live``, those unused for more
    than ``max_age`` seconds, then the least recently used while all take more than ``max_bytes``.
    ``keep`` (a copy just written) is never removed. Returns the directories removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    kept: list[tuple[float, int, str]] = []
    for ws, s, path in _copies(root):
        if keep is not None and os.path.abspath(path) == os.path.abspath(keep):
            kept.append((float("inf"), _usage(path)[0], path))
            continue
        size, used = _usage(path)
        gone = workspace is not None and live is not None and ws == workspace and int(s) not in live
        stale = max_age is not None and now - used > max_age
        if (gone or stale) and remove_copy(path, now):
            removed.append(path)
        else:
            kept.append((used, size, path))
    if max_bytes is not None:
        total = sum(size for _, size, _ in kept)
        for used, size, path in sorted(kept):
            if total <= max_bytes:
                break
            if used != float("inf") and remove_copy(path, now):
                removed.append(path)
                total -= size
    return removed

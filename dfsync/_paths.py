"""Can dfsync write where it was told to? One check, named in every error that needs it.

A file database (a DuckDB or SQLite destination, the workspace) needs its directory writable
as well as the file: DuckDB and SQLite write journals next to it. Without this check a
read-only directory surfaced as "failed to allocate memory" or as a damaged workspace.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

__all__ = ["not_writable", "owner_problem", "private_dir", "private_file", "staging_temp_dir", "user_path"]

#: modes of what dfsync creates for a workspace: readable by its owner only
DIR_MODE, FILE_MODE = 0o700, 0o600


def user_path(path: str | os.PathLike[str]) -> str:
    """A path the user gave (a source file or glob, a destination, a database): ``~`` is the home
    directory, as in polars, pandas and DuckDB (taken literally it made a directory named ``~`` in
    the working directory and wrote the destination there), and the path is made absolute, so a
    stored definition means the same file from any working directory (CLI, scheduler)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def not_writable(path: str, *, is_dir: bool = False) -> str | None:
    """Why ``path`` (a file, or with ``is_dir`` a directory, to create or write) cannot be
    written, or None. Nothing is changed: the probe file is removed at once."""
    path = os.path.abspath(path)
    if is_dir and os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a directory (the path must name a directory)"
    if not is_dir and os.path.isdir(path):
        return f"{path} is a directory, not a file (the path must name a file)"
    folder = path if is_dir else os.path.dirname(path)
    existing = folder
    while not os.path.isdir(existing):
        if os.path.exists(existing):  # a file where a directory of the path would be
            return f"{existing} is a file, so nothing can be made under it"
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not is_dir and os.path.isfile(path):
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            return f"the file {path} is not writable ({exc.strerror})"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".dfsync-write-check-")
    except OSError as exc:
        return f"the directory {existing} is not writable ({exc.strerror})"
    os.close(fd)
    os.remove(probe)
    return None


def private_dir(path: str) -> str:
    """Make directory ``path`` (and each missing parent) readable by its owner only (0700);
    a directory that already existed keeps its mode unless it is the leaf dfsync made."""
    path = os.path.abspath(path)
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode passes through the umask: set it exactly
    return path


#: a staging directory in the system's temp directory (a preview's, a validation's): the prefix, then
#: the process id, so one whose process was killed can be told from one in use
STAGING_PREFIX = "dfsync-staging-"
_OWNED = re.compile(re.escape(STAGING_PREFIX) + r"(\d+)-")


def staging_temp_dir() -> str:
    """A fresh private (0700) directory in the system's temp directory for one staging database,
    named ``dfsync-staging-<pid>-<random>``; its Staging removes it when closed. Those left by a
    process that was killed (SIGKILL: no cleanup runs) are removed here, by the next process of
    the same OS user on this machine that makes one."""
    base = tempfile.gettempdir()
    _remove_orphans(base)
    return tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=base)


def _remove_orphans(base: str) -> None:
    import psutil

    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        found = _OWNED.match(entry.name)
        if found is None or int(found.group(1)) == os.getpid():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                continue
            if psutil.pid_exists(int(found.group(1))) and psutil.Process(int(found.group(1))).status() != psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


def private_file(path: str) -> None:
    """``path`` (if it exists and is ours) readable by its owner only (0600)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, FILE_MODE)


def owner_problem(path: str) -> str | None:
    """Why this OS user may not open the existing file ``path`` dfsync made (it belongs to
    another user, or cannot even be looked at), or None (ours, or not there)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        return (f"permission denied: it (or its directory) belongs to another OS user than "
                f"{_user_name(os.geteuid())}")
    if st.st_uid != os.geteuid():
        return (f"it belongs to the OS user {_user_name(st.st_uid)}, not to {_user_name(os.geteuid())} "
                f"who runs this process")
    return None


def _user_name(uid: int) -> str:
    import pwd

    try:
        return repr(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return f"uid {uid}"

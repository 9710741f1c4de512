"""Can dfsync write where it was told to? One check, named in every error that needs it.

A file database (a DuckDB or SQLite destination, the workspace) needs its directory writable
as well as the file: DuckDB and SQLite write journals next to it. Without this check a
read-only directory surfaced as "failed to allocate memory" or as a damaged workspace.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["not_writable"]


def not_writable(path: str, *, is_dir: bool = False) -> str | None:
    """Why ``path`` (a file, or with ``is_dir`` a directory, to create or write) cannot be
    written, or None. Nothing is changed: the probe file is removed at once."""
    path = os.path.abspath(path)
    folder = path if is_dir else os.path.dirname(path)
    existing = folder
    while not os.path.isdir(existing):
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

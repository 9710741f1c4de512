"""Every error dfsync raises, under one root.

    DfsyncError
    ├── ConfigError                  bad arguments to create_sync / a source / a destination
    │   ├── ArgumentError            a call given an option it does not take, or missing one (also a TypeError)
    │   ├── MissingDependencyError   an optional extra is not installed (names the pip command)
    │   └── SessionOnlyError         a sync whose source lives in another process's memory
    ├── SyncNotFoundError            ws.sync(name) for an unknown name (also a KeyError)
    ├── SyncDisabledError            running a disabled sync
    ├── SyncAlreadyRunning           a second concurrent run of the same sync
    ├── InvalidTransition            a state change STATES.md does not allow
    ├── PermissionDenied             the workspace role lacks a privilege the action needs
    ├── WorkspaceError
    │   ├── WorkspaceBusy            another process holds the workspace file
    │   ├── WorkspaceCorrupt         the file is not a readable dfsync workspace
    │   ├── WorkspaceOutOfDate       a destination holds batches of a run the workspace file does not know
    │   └── WorkspaceQueryError      ws.sql() given a statement that writes, or a query that failed (also a ValueError)
    ├── SourceError                  the source could not be read
    │   ├── EmptySourceError         a full-refresh source returned no rows
    │   ├── InvalidRecordsError      null/duplicate primary keys (on_invalid="fail")
    │   └── CursorValueError         an incremental cursor value no later run could read past (+inf, NaN)
    ├── ValidationFailed             checks failed under on_invalid="fail"
    ├── DestinationError             terminal: the destination refused (auth, schema, missing table)
    │   ├── SchemaMismatchError      the destination table does not fit the records
    │   └── TransientDestinationError  outage that outlasted its retries: the run pauses
    └── SyncRunFailed                run.raise_for_status() on a run that did not succeed

Messages say what went wrong and what to do next. Errors from other libraries are
converted in one place per backend with ``raise ... from exc``; secrets are scrubbed
from every message with :func:`redact`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TypeVar

__all__ = [
    "ArgumentError",
    "ConfigError",
    "CursorValueError",
    "DestinationError",
    "DfsyncError",
    "EmptySourceError",
    "InvalidRecordsError",
    "InvalidTransition",
    "MissingDependencyError",
    "PermissionDenied",
    "SchemaMismatchError",
    "SessionOnlyError",
    "SourceError",
    "SyncAlreadyRunning",
    "SyncDisabledError",
    "SyncNotFoundError",
    "SyncRunFailed",
    "TransientDestinationError",
    "ValidationFailed",
    "WorkspaceBusy",
    "WorkspaceCorrupt",
    "WorkspaceError",
    "WorkspaceOutOfDate",
    "WorkspaceQueryError",
    "redact",
]


_E = TypeVar("_E", bound="DfsyncError")


class DfsyncError(Exception):
    """Root of every error dfsync raises."""

    #: row values the message quotes, as ``(source column, text as in the message, value)``: a run of
    #: a sync with ``sensitive`` fields stores the message with those of its sensitive columns hashed
    quoted: tuple[tuple[str, str, object], ...] = ()

    def __init__(self, message: str = "") -> None:
        super().__init__(redact(message))

    def quoting(self: _E, column: object, *values: tuple[str, object]) -> _E:
        """This error, noting the ``(text as in the message, value)`` of ``column`` it quotes."""
        self.quoted = (*self.quoted, *((str(column), text, v) for text, v in values))
        return self

    def quoting_literals(self: _E, message: str, names: Iterable[str] = ()) -> _E:
        """This error, noting every literal a reader's or driver's ``message`` quotes (`...`,
        '...', "...": "could not parse `ann@example.com` as dtype `i64`", 'invalid input syntax
        for type integer: "ann@example.com"') as a value of any column (``ANY_COLUMN``): the
        message comes from an engine that read rows dfsync never saw, so which column a value
        belongs to is unknown. ``names`` (column names) and type names are not values."""
        keep = set(names)
        found = [m.group(1) or m.group(2) or m.group(3) for m in _LITERAL.finditer(message)
                 if not _NAMED.search(message, 0, m.start())]  # 'relation "orders" does not exist': a name
        return self.quoting(ANY_COLUMN, *((t, t) for t in dict.fromkeys(found)
                                          if t not in keep and not _TYPE_NAME.match(t)))


#: the column of a value quoted by an engine's message about rows dfsync did not read itself
ANY_COLUMN = "*"
#: a quoted literal: a quote inside it when a letter or digit follows ('o'brien@example.com' to INT32),
#: to the end of its line when it is never closed (a value holding a line break, cut by the engine)
_LITERAL = re.compile(r"`((?:[^`\n]|`(?=\w))+)(?:`|$)|'((?:[^'\n]|'(?=\w))+)(?:'|$)|\"((?:[^\"\n]|\"(?=\w))+)(?:\"|$)",
                      re.MULTILINE)
_NAMED = re.compile(r"(?i)\b(relation|column|table|view|function|schema|database|role|user|index|constraint|"
                    r"type|file|catalog|field|key|attribute|operator|sequence|extension|column number \d+ \()\s*$")
_TYPE_NAME = re.compile(
    r"(?i)^(u?int(eger)?\d*|[iuf]\d{1,3}|float\d*|double( precision)?|real|numeric|decimal|number|bool(ean)?|str(ing)?"
    r"|utf-?8|large_string|varchar|char(acter)?( varying)?|text|date|time|timestamp|datetime|interval|duration"
    r"|bigint|smallint|tinyint|hugeint|blob|bytea|binary|json|jsonb|uuid|null|list|struct|array)"
    r"(\s*\(.*\)|\[.*\])?( with(out)? time zone)?$")


class ConfigError(DfsyncError, ValueError):
    """A sync, source or destination was configured with something invalid."""


class ArgumentError(ConfigError, TypeError):
    """A call was given a keyword it does not take (the message names the closest one it does)
    or lacks a required argument; a TypeError too, as Python's own would be."""


class MissingDependencyError(ConfigError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is needed{what} but is not installed. "
            f"Install it with: pip install 'dfsync[{extra}]'"
        )
        self.extra = extra


class SessionOnlyError(ConfigError):
    """The sync reads an in-memory frame that only exists in the process that created it."""


class SyncNotFoundError(DfsyncError, KeyError):
    """No sync with that name exists in the workspace."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class SyncDisabledError(DfsyncError):
    """The sync is disabled; enable it with sync.enable() to run it."""


class SyncAlreadyRunning(DfsyncError):
    """Another run of the same sync is in progress."""


class RunTakenOver(SyncAlreadyRunning):
    """Internal: this process lost its run to another one (it was stopped or cut off longer than the
    heartbeat bound, and the run was taken over). Every workspace write of the run and every batch
    commit of a SQL destination refuse it; the process stops the run without changing anything."""


class InvalidTransition(DfsyncError):
    """A state change that STATES.md does not allow."""


class PermissionDenied(DfsyncError):
    """The workspace role may not do this action; nothing was changed. ``action`` names it (``"run"``,
    ``"delete"``, ...), ``privileges`` what it needs that the role lacks (``"INSERT on table runs"``)."""

    def __init__(self, message: str, action: str = "", privileges: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.action = action
        self.privileges = tuple(privileges)


class WorkspaceError(DfsyncError):
    """The workspace file could not be used."""


class RunNotFoundError(WorkspaceError, KeyError):
    """No run with that id exists in the workspace (``ws.run(id)``)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WorkspaceBusy(WorkspaceError):
    """Another process holds the workspace file open for writing."""


class WorkspaceCorrupt(WorkspaceError):
    """The workspace file is truncated, corrupt, or not a dfsync workspace."""


class WorkspaceOutOfDate(WorkspaceError):
    """A destination already holds batches written under a run's key that this workspace file
    does not know: the file is older than the destination (restored from an earlier copy)."""


class WorkspaceQueryError(WorkspaceError, ValueError):
    """``ws.sql()`` was given a statement that would change the workspace, or a query that failed
    (the database's own message kept, e.g. a syntax error or an unknown column)."""


class SourceError(DfsyncError):
    """The source could not be read."""


class EmptySourceError(SourceError):
    """A full-refresh source returned no rows."""


class InvalidRecordsError(SourceError):
    """The source has rows with null or duplicate primary keys."""


class CursorValueError(SourceError):
    """An incremental sync's cursor field holds a value its window could never move past: +infinity,
    or NaN (which sorts above every number). Delivered, it would become the sync's cursor and every
    later run would read nothing new, so the run fails before anything is sent."""


class ValidationFailed(DfsyncError):
    """Validation checks failed and the sync's policy is on_invalid='fail' (or, under 'skip', they
    quarantined every row of a replace run, which would empty the table)."""


class DestinationError(DfsyncError):
    """The destination refused the data for a reason retrying will not fix."""


class SchemaMismatchError(DestinationError):
    """The destination table does not fit the records (missing column, incompatible type)."""


class TransientDestinationError(DestinationError):
    """The destination was unreachable or overloaded for longer than the retries allow."""


class SyncRunFailed(DfsyncError):
    """Raised by run.raise_for_status() when a run did not end in success."""

    def __init__(self, message: str, run: object | None = None) -> None:
        super().__init__(message)
        self.run = run


_NUMPY_REPR = re.compile(r"\bnp\.(?:float|int|uint|bool|str|bytes|complex|longdouble|double|single)\w*\(([^()]*)\)")

_NUMPY_BOOL = re.compile(r"\bnp\.(True|False)_")


def plain_numbers(text: str) -> str:
    """Numbers as plain values in messages: ``np.float64(-5.0)`` (numpy 2's repr) reads ``-5.0``."""
    if not text or "np." not in text:
        return text
    return _NUMPY_BOOL.sub(r"\1", _NUMPY_REPR.sub(r"\1", text))


_URI_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]+)@")
_KV_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|token|secret|api[_-]?key|authorization)(\s*[=:]\s*)(?:(bearer|basic)\s+)?([^\s&;,'\"]+)"
)
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` removes it wherever it appears, also as JSON
    writes it inside a string (an API's error answer may echo a request header): escaped, and
    with ``\\/`` for ``/`` as PHP's ``json_encode`` and others write it."""
    if value and len(value) >= 4:
        escaped = json.dumps(value)[1:-1]
        _SECRETS.update({value, escaped, escaped.replace("/", "\\/"), json.dumps(value, ensure_ascii=False)[1:-1]})


def redact(text: str) -> str:
    """Remove passwords and tokens from text meant for users, logs or the workspace (and show
    numpy numbers as plain values)."""
    if not text:
        return text
    text = _URI_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_SECRET.sub(
        lambda m: f"{m[1]}{m[2]}{(m[3] + ' ') if m[3] else ''}***", text
    )
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return plain_numbers(text)

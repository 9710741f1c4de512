"""Settings that tune resources, not results (and which stored callbacks a host runs): each a
``Workspace(...)`` keyword or a ``DFSYNC_*`` environment variable, read when used (never at
import time).

A keyword given to ``Workspace(...)`` wins for that workspace's runs, previews and
validations (:func:`use`); else the environment variable; else the default.

>>> setting("postgres_writers", {"postgres_writers": 4})
4
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ArgumentError, ConfigError

__all__ = ["SETTINGS", "check_settings", "setting", "use"]


def _positive_int(v: Any) -> int:  # 0, -3 or 2.5 writers were taken as 1 and 2
    n = int(v) if isinstance(v, str) else v
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("write a whole number from 1")
    return n


def _seconds(v: Any) -> float:  # Workspace(busy_timeout='x') failed later with float + str
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"write a number of seconds from 0, e.g. 30, not {type(v).__name__}")
    try:
        n = float(v)
    except ValueError:
        raise TypeError("write a number of seconds from 0, e.g. 30, not text") from None
    if not math.isfinite(n) or n < 0:
        raise ValueError("write a number of seconds from 0, e.g. 30")
    return n


def _modules(v: Any) -> tuple[str, ...]:
    """Module names (a list, or one string separated by commas), each a dotted Python name."""
    if not isinstance(v, (str, list, tuple, set, frozenset)):
        raise TypeError(f"write module names: a list, or one string separated by commas, not {type(v).__name__}")
    names = [n.strip() for n in (v.split(",") if isinstance(v, str) else list(v))]
    names = [n for n in names if n]
    bad = [n for n in names if not all(part.isidentifier() for part in n.split("."))]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a module name (write e.g. 'myteam.alerts')")
    return tuple(names)


def _retention(v: Any) -> str:  # "30 days": the same form as create_sync(record_retention=)
    from ._sensitive import parse_retention

    return parse_retention(v, "record_retention") or ""


def _flag(v: Any) -> bool:  # on / off: 1, true, yes, on / 0, false, no, off
    if isinstance(v, bool):
        return v
    word = str(v).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{v!r} is neither on nor off (write 1 or 0)")


def _auto_flag(v: Any) -> Any:  # "auto", or on / off
    return "auto" if str(v).strip().lower() == "auto" else _flag(v)


def _size(v: Any) -> str:  # a DuckDB memory size ('512MB', '2GB')
    # not left to DuckDB: 'lots' failed each run with its raw 'Parser Error: Memory must have a
    # number', and a workspace_memory it rejects read as a damaged workspace file
    if memory_bytes(v) is None or not re.search(r"[a-zA-Z]\s*$", str(v)):  # DuckDB wants the unit: '5B', not 5
        raise ValueError("write a memory size with its unit, such as '512MB', '2GB' or '1.5GiB'")
    return str(v).strip()


#: DuckDB's memory size units: KB (or K) = 1000 bytes, KiB = 1024, and so on
_SIZE_UNITS = {"": 1, "b": 1, **{u + s: 1000 ** i for i, u in enumerate("kmgt", 1) for s in ("", "b")},
               **{u + "ib": 1024 ** i for i, u in enumerate("kmgt", 1)}}


def memory_bytes(size: Any) -> int | None:
    """Bytes of a DuckDB memory size, read as DuckDB reads it ('2GB', '1G', '512 MiB', or
    ``current_setting('memory_limit')``'s '953.6 MiB'); None if it cannot be read."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*", str(size))
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    return None if m is None or unit is None else int(float(m.group(1)) * unit)


@dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str


SETTINGS: dict[str, Setting] = {
    "busy_timeout": Setting("DFSYNC_BUSY_TIMEOUT", 30.0, _seconds,
                            "seconds to wait for a workspace another process holds"),
    "staging_memory": Setting("DFSYNC_STAGING_MEMORY", "1GB", _size,
                              "staged rows kept in memory before spilling to disk"),
    "destination_memory": Setting("DFSYNC_DESTINATION_MEMORY", "512MB", _size,
                                  "memory of the DuckDB connection writing a DuckDB destination"),
    "workspace_memory": Setting("DFSYNC_WORKSPACE_MEMORY", "256MB", _size,
                                "memory of a DuckDB workspace file's connection"),
    "postgres_writers": Setting("DFSYNC_POSTGRES_WRITERS", 2, _positive_int,
                                "connections writing the batches of one run into PostgreSQL"),
    "heartbeat_ttl": Setting("DFSYNC_HEARTBEAT_TTL", 60.0, _seconds,
                             "seconds after which a run on a PostgreSQL workspace whose owner stopped "
                             "updating its heartbeat counts as dead (taken over by the next process)"),
    "mysql_writers": Setting("DFSYNC_MYSQL_WRITERS", 1, _positive_int,
                             "connections writing the batches of one run into MySQL / MariaDB"),
    "record_retention": Setting("DFSYNC_RECORD_RETENTION", None, _retention,
                                "how long the records of a sync without its own record_retention are kept"),
    "split_reads": Setting("DFSYNC_SPLIT_READS", "auto", _auto_flag,
                           "read a partitioned run's source in splits on its engine's workers: auto (only when "
                           "some of them are on other hosts than the driver's), 1 (always), 0 (never: the "
                           "driver reads it, as without an engine)"),
    "allowed_callbacks": Setting("DFSYNC_ALLOWED_CALLBACKS", (), _modules,
                                 "modules whose stored 'module:function' callbacks this host runs"),
}

_ACTIVE: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("dfsync_settings", default=None)


def setting(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The value of setting ``name`` now: ``overrides``, the workspace's (:func:`use`), the
    environment, or the default."""
    s = SETTINGS[name]
    for given in (overrides or {}, _ACTIVE.get() or {}):
        if given.get(name) is not None:
            return given[name]
    raw = os.environ.get(s.env)
    if raw is None:
        return s.default
    try:
        return s.parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the environment variable {s.env}={raw!r}: {exc} ({s.doc})") from None


def check_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """``Workspace(...)`` keyword settings, parsed (None: not given); a bad one raises ConfigError."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r}; the settings are: {', '.join(sorted(SETTINGS))}")
        try:
            out[name] = SETTINGS[name].parse(value)
        except (TypeError, ValueError) as exc:  # a TypeError: a value of the wrong type (ArgumentError)
            raise (ArgumentError if isinstance(exc, TypeError) else ConfigError)(f"{name}={value!r}: {exc} ({SETTINGS[name].doc}; "
                              f"the environment variable is {SETTINGS[name].env})") from None
    return out


@contextlib.contextmanager
def use(settings: Mapping[str, Any]) -> Iterator[None]:
    """Make a workspace's settings the ones :func:`setting` sees in this thread (and in threads
    started with a copy of this context)."""
    token = _ACTIVE.set({**(_ACTIVE.get() or {}), **settings})
    try:
        yield
    finally:
        _ACTIVE.reset(token)

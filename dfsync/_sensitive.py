"""Personal data in stored records: ``sensitive=[...]`` fields kept as keyed hashes.

The records of failed, invalid and skipped rows are kept in the workspace (``run.records()``).
A field named in a sync's ``sensitive`` is stored there as ``hmac:`` and 32 hex digits: an
HMAC-SHA256 of the value under a per-workspace key, so the same value is recognisable across
runs (and can be looked up by whoever holds the key: :func:`keyed_hash`) but cannot be read
back. The destination error text of such a record has the value replaced by its hash too, and
so have the example values a check stores for a sensitive column.

The key is never stored in the workspace. It is derived from a secret of the host:

* ``DFSYNC_RECORD_KEY`` (any string; give every host that shares a workspace the same one, as
  an ``env:`` secret of your scheduler), else
* a random key kept in ``$XDG_CONFIG_HOME/dfsync/record.key`` (``~/.config/dfsync/record.key``),
  created on first use, readable by its owner only (``0600``, directory ``0700``),

and the workspace's own id, so two workspaces never share hashes.

>>> h = keyed_hash("ann@example.com", b"k" * 32)
>>> h.startswith("hmac:") and len(h) == 37 and h == keyed_hash("ann@example.com", b"k" * 32)
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa

from ._paths import FILE_MODE, private_dir
from .errors import ConfigError

__all__ = ["KEY_ENV", "PREFIX", "check_sensitive", "key_file", "keyed_hash", "parse_retention", "protect_checks",
           "protect_records", "retention_delta", "workspace_key"]

KEY_ENV = "DFSYNC_RECORD_KEY"
PREFIX = "hmac:"
_MIN_SCRUB = 3  # a value this short is not searched for in error texts (it would mangle them)


def key_file() -> str:
    """Where this user's record key is kept when ``DFSYNC_RECORD_KEY`` is not set."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "dfsync", "record.key")


def _host_secret() -> bytes:
    given = os.environ.get(KEY_ENV)
    if given:
        return given.encode()
    path = key_file()
    try:
        with open(path, "rb") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        pass
    private_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:  # another process made it first: use theirs
        with open(path, "rb") as fh:
            return fh.read().strip()
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


def workspace_key(workspace_id: str) -> bytes:
    """The key hashing the sensitive fields of one workspace's records."""
    return hmac.new(_host_secret(), b"dfsync-records:" + workspace_id.encode(), hashlib.sha256).digest()


def keyed_hash(value: Any, key: bytes) -> str:
    """``hmac:`` and the first 32 hex digits of HMAC-SHA256(key, str(value))."""
    return PREFIX + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def store_key(store: Any) -> bytes:
    """The record key of the workspace ``store`` opens (its id is the ledger id of any new run)."""
    return workspace_key(store.ledger_id(sys.maxsize))


def protect(records: pa.Table | None, sensitive: Sequence[str], store: Any) -> pa.Table | None:
    """Records about to be stored in ``store``, their ``sensitive`` fields hashed."""
    if records is None or not sensitive:
        return records
    return protect_records(records, sensitive, store_key(store))


def protect_results(results: list[dict[str, Any]], sensitive: Sequence[str], store: Any) -> list[dict[str, Any]]:
    """Check results about to be stored in ``store``, the examples of sensitive columns hashed."""
    return protect_checks(results, sensitive, store_key(store)) if sensitive else results


def protect_records(records: pa.Table, sensitive: Sequence[str], key: bytes) -> pa.Table:
    """``records`` with each ``sensitive`` column replaced by its keyed hashes (a string column;
    nulls stay null) and those values replaced by their hashes in ``_error``."""
    cols = [c for c in sensitive if c in records.column_names]
    if not cols or not records.num_rows:
        return records
    swaps: list[dict[str, str]] = [{} for _ in range(records.num_rows)]
    for c in cols:
        values = records.column(c).to_pylist()
        hashed = [None if v is None else keyed_hash(v, key) for v in values]
        for i, (v, h) in enumerate(zip(values, hashed, strict=True)):
            if v is not None and len(str(v)) >= _MIN_SCRUB:
                swaps[i][str(v)] = h  # type: ignore[assignment]
        records = records.set_column(records.column_names.index(c), c, pa.array(hashed, pa.string()))
    if "_error" in records.column_names:
        errors = records.column("_error").to_pylist()
        records = records.set_column(records.column_names.index("_error"), "_error",
                                     pa.array([_scrub(e, s) for e, s in zip(errors, swaps, strict=True)],
                                              pa.string()))
    return records


def _scrub(text: str | None, swaps: dict[str, str]) -> str | None:
    if text is None:
        return None
    for value in sorted(swaps, key=len, reverse=True):  # the longest first: one value may hold another
        text = text.replace(value, swaps[value])
    return text


def protect_checks(results: Iterable[dict[str, Any]], sensitive: Sequence[str], key: bytes) -> list[dict[str, Any]]:
    """Check results with the example values of a sensitive column hashed (``partial_unexpected_list``
    and every list inside ``result``: values, and in ``{"value": ..., "count": ...}`` or
    ``{column: value}`` entries the value and the sensitive columns)."""
    names = {"value", *sensitive}
    out = []
    for r in results:
        if r.get("column_name") in sensitive:
            r = {**r, "partial_unexpected_list": _hash_values(r.get("partial_unexpected_list"), key, names),
                 "result": _hash_lists(r.get("result"), key, names)}
        out.append(r)
    return out


def _hash_values(values: Any, key: bytes, names: set[str]) -> Any:
    if not isinstance(values, list):
        return values
    return [{k: keyed_hash(x, key) if k in names and x is not None else x for k, x in v.items()}
            if isinstance(v, dict) else None if v is None else keyed_hash(v, key) for v in values]


def _hash_lists(obj: Any, key: bytes, names: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _hash_lists(v, key, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return _hash_values(obj, key, names)
    return obj


# ------------------------------------------------------------------ settings
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_RETENTION_RE = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)


def parse_retention(value: Any, what: str = "record_retention") -> str | None:
    """``"30 days"`` (seconds, minutes, hours, days, weeks), a number of days or a timedelta, in
    its stored form (``"30 days"``); None: records are kept until a later run delivers their rows.

    >>> parse_retention("2 Weeks"), parse_retention(1), parse_retention(timedelta(hours=12))
    ('2 weeks', '1 day', '43200 seconds')
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        n, unit = int(value.total_seconds()), "second"
    elif isinstance(value, int) and not isinstance(value, bool):
        n, unit = value, "day"
    else:
        m = _RETENTION_RE.match(str(value))
        if not m:
            raise ConfigError(f"{what}={value!r}: write it as a number and a unit, e.g. '30 days', '12 hours' "
                              f"or '2 weeks' (or a number of days)")
        n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        raise ConfigError(f"{what}={value!r}: give a positive duration (e.g. '30 days')")
    return f"{n} {unit}{'s' if n != 1 else ''}"


def retention_delta(stored: str) -> timedelta:
    """The timedelta of a stored retention (``"30 days"``)."""
    n, unit = stored.split()
    return timedelta(seconds=int(n) * _UNITS[unit.rstrip("s")])


def check_sensitive(value: Any, fields: Sequence[str], key: Sequence[str]) -> list[str]:
    """``sensitive=`` as a list of field names, each a field of the records (after mapping) and
    not a primary key column. (An incremental sync reads the rows it sends again from the source
    by key: their records keep those fields only as hashes, see :mod:`dfsync._retry`.)"""
    names = [value] if isinstance(value, str) else list(value or [])
    for n in names:
        if not isinstance(n, str) or n not in fields:
            raise ConfigError(f"sensitive field {n!r} is not a field of the records; the fields (after mapping) "
                              f"are: {', '.join(fields)}")
        if n in key:
            raise ConfigError(f"sensitive field {n!r} is a primary key column: the workspace needs keys as they are "
                              f"to compare and retry rows; key the sync on another column, or erase a key's traces "
                              f"with sync.forget(keys)")
    return list(dict.fromkeys(names))

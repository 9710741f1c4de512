"""An incremental sync's cursor value as the workspace stores it (JSON with its type)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any


def cursor_to_json(v: Any) -> dict[str, Any] | None:
    """A cursor value as stored (JSON-safe, with its type).

    >>> cursor_from_json(cursor_to_json(date(2024, 1, 31)))
    datetime.date(2024, 1, 31)
    """
    if v is None:
        return None
    if isinstance(v, datetime):
        return {"type": "datetime", "value": v.isoformat()}
    if isinstance(v, date):
        return {"type": "date", "value": v.isoformat()}
    if isinstance(v, (int, float, str, bool)):
        return {"type": type(v).__name__, "value": v}
    return {"type": "str", "value": str(v)}


def cursor_from_json(d: dict[str, Any] | None) -> Any:
    if not d:
        return None
    t, v = d["type"], d["value"]
    if t == "datetime":
        return datetime.fromisoformat(v)
    if t == "date":
        return date.fromisoformat(v)
    return v


def max_cursor(a: Any, b: Any) -> Any:
    """The later of two cursor values (None: not known; values that do not compare: the newer, ``b``)."""
    if a is None:
        return b
    if b is None:
        return a
    try:
        return max(a, b)
    except TypeError:
        return b


def cursor_merge(sync_mode: str) -> Callable[[Any, Any], Any] | None:
    """How the store advances a sync's cursor at a run's end (None: not an incremental sync)."""
    if sync_mode != "incremental":
        return None
    return lambda old, run: cursor_to_json(max_cursor(cursor_from_json(old), cursor_from_json(run)))

"""Where an incremental run starts reading (``lookback=``, ``initial_cursor=``).

A run reads the rows whose cursor is at or past a *start*: the last delivered cursor less
the sync's ``lookback`` (a duration for date/time cursors, a number for numeric ones), or,
before anything was delivered (a first run, or after ``sync.reset()``), ``initial_cursor``
(None: the whole source). Re-reading below the last cursor is safe: the fingerprint diff
against the delivered state sends only rows that are new or really changed, so late and
corrected rows are caught and nothing is sent twice.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl

from ._cursor import cursor_from_json, cursor_to_json, iso_text_start, refuse_stuck_cursor
from .errors import ConfigError
from .sources.base import CursorFilter

if TYPE_CHECKING:
    from .definition import SyncDefinition

__all__ = ["check_window", "new_fields_window", "read_from", "source_cursor"]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)


def _kind(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime) or dtype == pl.Datetime:
        return "datetime"
    if dtype == pl.Date:
        return "date"
    if dtype.is_numeric():
        return "number"
    return "other"


def _text_cursor_hint(column: str, source: Any) -> str:
    """How to read a text cursor column as a date-time (the end of the refusal, from its separator), in
    the terms of the sync's source: a files source's ``schema_overrides`` is an option of the CSV and
    NDJSON readers only."""
    kind, fmt = getattr(source, "kind", None), getattr(source, "format", None)
    cast = f"SELECT * REPLACE (CAST({column} AS TIMESTAMPTZ) AS {column}) FROM ..."
    if kind == "files" and fmt in ("csv", "ndjson"):
        return (f" (text, as CSV and NDJSON files hold dates): read it as one: sources.files(..., "
                f"schema_overrides={{{column!r}: pl.Datetime('us', 'UTC')}}) (or pl.Datetime('us') for times "
                f"without an offset)")
    if kind == "files":
        return (f": the {fmt or 'parquet'} files store it as text, so convert it while reading: "
                f"sources.duckdb_query(\"SELECT * REPLACE (CAST({column} AS TIMESTAMPTZ) AS {column}) FROM "
                f"'<your files>'\"), or sources.frame(pl.scan_{fmt or 'parquet'}('<your files>').with_columns("
                f"pl.col({column!r}).str.to_datetime(time_zone='UTC')))")
    if kind == "frame":
        return (f": convert it in the frame: df.with_columns(pl.col({column!r}).str.to_datetime(time_zone='UTC')) "
                f"(or .str.to_datetime() for times without an offset)")
    if kind == "duckdb_query":
        return f": CAST it in the query: {cast}"
    return (f" (text, as SQLite dates and times): CAST it in the query source (CAST({column} AS TIMESTAMPTZ) on "
            f"PostgreSQL, DATETIME on MySQL); SQLite has no date type, so there select a number, e.g. SELECT *, "
            f"unixepoch({column}) AS {column}_epoch FROM ..., with cursor_field='{column}_epoch' and lookback in "
            f"seconds (lookback=7200 for 2 hours)")


def check_window(field: str, dtype: pl.DataType, lookback: Any, initial_cursor: Any, *,
                 source: Any = None, column: str | None = None) -> dict[str, Any]:
    """Validate ``lookback``/``initial_cursor`` against the cursor's type; their JSON-safe config.

    ``source`` and ``column`` (the source column behind ``field``) word the way out of a text cursor."""

    kind = _kind(dtype)
    out: dict[str, Any] = {}
    if lookback is not None:
        if kind in ("datetime", "date"):
            if isinstance(lookback, timedelta):
                seconds = lookback.total_seconds()
            elif isinstance(lookback, str) and (m := _DURATION.match(lookback)):
                seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
            else:
                raise ConfigError(
                    f"lookback={lookback!r}: the cursor {field!r} is a {dtype}, so lookback is a duration such "
                    f"as '2 days', '36 hours', '90 minutes' or a datetime.timedelta")
            if seconds <= 0:
                raise ConfigError(f"lookback={lookback!r} must be a positive duration")
            out["lookback"] = {"seconds": seconds}
        elif kind == "number":
            if isinstance(lookback, bool) or not isinstance(lookback, (int, float)) or not lookback > 0 \
                    or not math.isfinite(lookback):
                raise ConfigError(f"lookback={lookback!r}: the cursor {field!r} is a number ({dtype}), so "
                                  f"lookback is a positive number of cursor units (e.g. lookback=1000)")
            out["lookback"] = {"amount": lookback}
        else:
            hint = _text_cursor_hint(column or field, source) if dtype == pl.String else ""
            raise ConfigError(f"lookback= needs a date, time or numeric cursor; {field!r} is {dtype}{hint}")
    if initial_cursor is not None:
        value = _initial_value(field, dtype, kind, initial_cursor)
        out["initial_cursor"] = cursor_to_json(value)
    return out


def _initial_value(field: str, dtype: pl.DataType, kind: str, value: Any) -> Any:
    bad = ConfigError(f"initial_cursor={value!r} does not fit the cursor {field!r} ({dtype}); give a "
                      f"{'datetime (or an ISO 8601 string)' if kind == 'datetime' else 'date' if kind == 'date' else 'number' if kind == 'number' else 'value of its type'}")
    if kind == "datetime":
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise bad from None
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            raise bad
        tz = getattr(dtype, "time_zone", None)
        if tz and value.tzinfo is None:
            raise ConfigError(f"initial_cursor={value.isoformat()!r} has no time zone, but the cursor {field!r} "
                              f"is in {tz}; give an aware datetime (e.g. '2013-06-01T00:00:00+00:00')")
        if not tz and value.tzinfo is not None:
            raise ConfigError(f"initial_cursor={value.isoformat()!r} has a time zone, but the cursor {field!r} "
                              f"has none; give a naive datetime")
        return value
    if kind == "date":
        if isinstance(value, str):
            try:
                value = date.fromisoformat(value)
            except ValueError:
                raise bad from None
        if isinstance(value, datetime) or not isinstance(value, date):
            raise bad
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return value
    if not isinstance(value, str):
        raise bad
    return value


def source_cursor(definition: SyncDefinition) -> str:
    """The source column the cursor field is read from: the source is filtered before mapping, so
    a renamed cursor (mapping={'updated': 'time_hour'}) is the source's 'time_hour'."""
    from .mapping import Mapping

    mapping = definition.mapping if isinstance(definition.mapping, Mapping) else Mapping(definition.mapping)
    field = definition.cursor_field
    assert field is not None
    return mapping.source_column(field) or field


def read_from(definition: SyncDefinition, delivered: Any) -> CursorFilter | None:
    """The cursor condition of an incremental run, given the last delivered cursor (or None)."""

    field = definition.cursor_field
    if definition.sync_mode != "incremental" or not field:
        return None
    field = source_cursor(definition)
    if delivered is None:
        start = cursor_from_json(definition.initial_cursor)
        return CursorFilter(field, start) if start is not None else None
    refuse_stuck_cursor(definition.cursor_field, delivered)
    lookback = definition.lookback or {}
    start = delivered
    if "seconds" in lookback and isinstance(delivered, datetime):
        start = delivered - timedelta(seconds=lookback["seconds"])
    elif "seconds" in lookback and isinstance(delivered, date):
        start = delivered - timedelta(days=math.ceil(lookback["seconds"] / 86400))
    elif "amount" in lookback and isinstance(delivered, (int, float)):
        start = delivered - lookback["amount"]
    elif "amount" in lookback and isinstance(delivered, (Decimal, str)):  # text: a decimal stored as text before
        start = Decimal(delivered) - Decimal(str(lookback["amount"]))
    elif isinstance(delivered, str) and (text_start := iso_text_start(delivered)) is not None:
        first = cursor_from_json(definition.initial_cursor)  # never below where the first run started
        start = max(text_start, first) if isinstance(first, str) else text_start
    return CursorFilter(field, start)


def new_fields_window(definition: SyncDefinition, delivered: Any, dest_schema: Any) -> tuple[CursorFilter | None, str]:
    """An incremental run's window when the records now have fields the destination was not sent
    (a column added, or back after it was dropped): schema='evolve' sends every row once with its
    value, and rows below the cursor are not read from it, so this run reads from where a first
    run would. Returns (window, what the run's event says), or (None, "") when nothing is new."""
    from . import _schema

    if delivered is None or definition.schema != "evolve" or not dest_schema:
        return None, ""
    sent = {f.name for f in _schema.load(dest_schema) if f.sent}
    mapping = definition.mapping
    try:  # a mapping names the fields itself; else they are the source's columns (a LIMIT 0 / schema read)
        fields = list(mapping.spec) if mapping.spec else definition.source.schema().names()
    except Exception:  # noqa: BLE001 - the read that follows names what is wrong with the source
        return None, ""
    new = [f for f in fields if f not in sent]
    if not sent or not new:
        return None, ""
    start = read_from(definition, None)
    where = f"from initial_cursor {start.value}" if start is not None else "the whole source"
    what = f"column {new[0]!r} is" if len(new) == 1 else f"columns {', '.join(map(repr, new))} are"
    return start, (f"schema: {what} new since the last delivery: this run reads {where} instead of from "
                   f"its cursor, so every row is sent once with {'its' if len(new) == 1 else 'their'} value")

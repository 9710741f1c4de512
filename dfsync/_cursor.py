"""An incremental sync's cursor value as the workspace stores it (JSON with its type)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ._ident import quote
from ._words import plural
from .errors import CursorValueError


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
    if isinstance(v, Decimal):  # kept as text it was compared as text: '10.00' < '9.99', rows never read
        return {"type": "decimal", "value": str(v)}
    return {"type": "str", "value": str(v)}


def cursor_from_json(d: dict[str, Any] | str | None) -> Any:
    """A stored cursor value: its JSON value, or its JSON text (a run's ``cursor_max``, the cursor its
    confirmed batches reached: a run resumed from ``paused`` starts from it, or it could end lower
    than its batches before the pause had reached)."""
    if isinstance(d, str):
        d = json.loads(d)
    if not d:
        return None
    t, v = d["type"], d["value"]
    if t == "datetime":
        return datetime.fromisoformat(v)
    if t == "date":
        return date.fromisoformat(v)
    if t == "decimal":
        return Decimal(v)
    return v


def greatest(column: Any) -> Any:
    """The greatest value of a cursor column (Arrow) as a Python value. A nanosecond timestamp or
    time is floored to its microsecond, which Python's datetime holds: pyarrow makes none of a value
    finer than that without pandas (not a dfsync dependency), so such a run failed after its first
    batch was applied ('Nanosecond resolution temporal type ... is not safely convertible'). Floored,
    never rounded up: the next run reads the rows at the cursor itself again and the diff leaves them
    out when unchanged."""
    import pyarrow as pa
    import pyarrow.compute as pc

    top = pc.max(column)
    t = top.type
    if top.is_valid and (pa.types.is_timestamp(t) or pa.types.is_time64(t)) and t.unit == "ns":
        top = pc.floor_temporal(top, unit="microsecond")
        top = top.cast(pa.timestamp("us", t.tz) if pa.types.is_timestamp(t) else pa.time64("us"))
    return top.as_py()


def top_cursor(current: Any, column: Any) -> Any:
    """The later of ``current`` and the greatest value of a cursor column (Arrow) delivered."""
    return max_cursor(current, greatest(column))


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


def _stuck(field: str, value: str, where: str) -> CursorValueError:
    why = " (NaN sorts above every number)" if value == "NaN" else ""
    return CursorValueError(
        f"the cursor field {field!r} is {value} {where}. An incremental run reads the rows at or past the "
        f"greatest cursor delivered, and no value is past {value}{why}, so every later run would read nothing "
        f"new. Nothing was sent. Send NULL for such values from the source (rows with a null cursor are read "
        f"by every run): in a frame pl.when(pl.col(C).is_finite()).then(pl.col(C)), in a query CASE WHEN "
        f"isfinite(C) THEN C END, for its source column C; or choose another cursor_field.")


def refuse_stuck_values(staging: Any, defn: Any, delivered: Any = None) -> None:
    """Raise CursorValueError when a row about to be sent has a float cursor of +inf or NaN. Either
    would be the greatest value delivered, the sync's cursor for good (-inf, and far-future dates
    and times, are ordinary values: a later one still moves the window on)."""
    field = defn.cursor_field
    if defn.sync_mode != "incremental" or not field or field not in staging.columns:
        return
    c = quote(field)
    kind = staging.con.execute(f"SELECT typeof({c}) FROM stg LIMIT 1").fetchall()
    if not kind or not (kind[0][0] in ("DOUBLE", "FLOAT", "VARCHAR") or kind[0][0] == "DATE"
                        or kind[0][0].startswith("TIMESTAMP")):
        return
    where = f"{staging.send_filter(defn.destination_mode)} AND rowid NOT IN (SELECT _rid FROM invalid)"
    if kind[0][0] == "VARCHAR":
        if delivered is None:  # a first run: the rows it sends against the initial_cursor it read from
            delivered = cursor_from_json(defn.initial_cursor)
        refuse_unordered_text(staging.con, field, where, delivered if isinstance(delivered, str) else None)
        return
    if kind[0][0] in ("DOUBLE", "FLOAT"):
        n_nan, n_inf = staging.con.execute(f"SELECT count(*) FILTER (WHERE isnan({c})), count(*) FILTER (WHERE "
                                           f"isinf({c}) AND {c} > 0) FROM stg WHERE {where}").fetchall()[0]
        if n_inf or n_nan:
            raise _stuck(field, "+inf" if n_inf else "NaN", f"in {plural(n_inf or n_nan, 'row')} this run would send")
        return
    # a date or timestamp of 'infinity' (a DuckDB or PostgreSQL source): no value is past it either
    inf = f"isinf(CAST({c} AS TIMESTAMPTZ))" if "TZ" in kind[0][0] or "TIME ZONE" in kind[0][0] else f"isinf({c})"
    n_inf = staging.con.execute(f"SELECT count(*) FILTER (WHERE {inf} AND {c} > '1970-01-01') "  # see _schema_values.isinf
                                f"FROM stg WHERE {where}").fetchall()[0][0]
    if n_inf:
        raise _stuck(field, "infinity", f"in {plural(n_inf, 'row')} this run would send")


# Text a cursor compares as text, whose order as text is not the order of what it writes: a date
# written month- or day-first ('10/1/2024' < '9/30/2024'), a number with fewer digits ('9' > '10')
# or a negative one. The run would keep the greatest text as its cursor and never read the rows
# past it that sort below it: lost, with the run saying success. (ISO 8601 text written one way sorts as it should.)
_DAY_FIRST = r"^\s*[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}([^0-9]|$)"
_NUMBER = r"^\s*[-+]?[0-9]+([.][0-9]*)?\s*$"
# ISO 8601 date-times sort as text only when written one way: '2024-10-01 11:00' sorts below
# '2024-10-01T10:00' (' ' < 'T'), and '...T10:00+05:00' above '...T09:00Z'
_ISO_TIME = r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:"
_ZONE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)\s*$"


def refuse_unordered_text(con: Any, field: str, where: str, delivered: str | None = None) -> None:
    """Raise CursorValueError when the text cursor values of the rows about to be sent do not sort
    as text the way their dates or numbers do."""
    c = quote(field)
    dated, digits, negative = con.execute(
        f"SELECT count(*) FILTER (WHERE regexp_matches({c}, '{_DAY_FIRST}')), "
        f"count(DISTINCT length(regexp_extract({c}, '[0-9]+'))) FILTER (WHERE regexp_matches({c}, '{_NUMBER}')), "
        f"count(*) FILTER (WHERE regexp_matches({c}, '^\\s*-[0-9]') AND regexp_matches({c}, '{_NUMBER}')) "
        f"FROM stg WHERE {where}").fetchall()[0]
    # the ways the rows about to be sent, and the cursor delivered before, write their date-times
    way = f"substr(ltrim({c}), 11, 1) || regexp_extract({c}, '{_ZONE}')"
    examples = [r[0] for r in con.execute(
        f"SELECT min({c}) FROM (SELECT {c} FROM stg WHERE {where} UNION ALL SELECT ?) WHERE "
        f"regexp_matches({c}, '{_ISO_TIME}') GROUP BY {way} ORDER BY 1 LIMIT 3", [delivered]).fetchall()]
    if len(examples) > 1 and not dated:
        raise CursorValueError(
            f"the cursor field {field!r} is text holding ISO 8601 date-times written in more than one way "
            f"({', '.join(repr(v) for v in examples)}: 'T' or a space between date and time, or different UTC "
            f"offsets), which sort differently as text ('2024-10-01 11:00' comes before '2024-10-01T10:00'). An "
            f"incremental run reads the rows at or past the greatest cursor delivered, compared as text, so later "
            f"rows that sort below it would never be read. Nothing was sent. Read it as a timestamp: "
            f"sources.files(..., schema_overrides={{C: pl.Datetime('us', 'UTC')}}) or a CAST(C AS TIMESTAMPTZ) in "
            f"a query source; or choose another cursor_field.")
    if not dated and digits < 2 and not negative:
        return
    pattern = _DAY_FIRST if dated else _NUMBER
    examples = [r[0] for r in con.execute(
        f"SELECT DISTINCT {c} FROM stg WHERE {where} AND regexp_matches({c}, '{pattern}') "
        f"ORDER BY length({c}), {c} LIMIT 3").fetchall()]
    shown = ", ".join(repr(v) for v in examples)
    what = "dates written month- or day-first" if dated else "numbers"
    ouch = "'10/1/2024' comes before '9/30/2024'" if dated else "'10' comes before '9', '-5' after '-1'"
    way = ("read it as a date, e.g. from a CSV file with a query source: sources.duckdb_query(\"SELECT * "
           "FROM read_csv('file.csv', dateformat='%m/%d/%Y')\"), or write it as ISO 8601 text ('2024-10-01' "
           "sorts as it should)" if dated else
           "read it as a number: sources.files(..., schema_overrides={C: pl.Int64}) or a CAST in a query source")
    raise CursorValueError(
        f"the cursor field {field!r} is text holding {what} ({shown}), which sort differently as text "
        f"({ouch}). An incremental run reads the rows at or past the "
        f"greatest cursor delivered, compared as text, so later rows that sort below it would never be read. "
        f"Nothing was sent. For its source column C, {way}; or choose another cursor_field.")


_ISO_START = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:")


def iso_text_start(value: str) -> str | None:
    """Where an incremental run reads from, as text, when its stored cursor is ISO 8601 date-time
    text (None: it is not). Compared as text from the cursor itself, a newer row written another way
    ('2024-01-01 11:00' below '2024-01-01T10:00', or with another UTC offset) sorts below it and was
    never read: lost, the run a success. Every way of writing an instant at or past the cursor starts
    with a date at or past that of the cursor 14 hours (the widest UTC offset) earlier, so the run reads
    from that date: such a row is read, and refused with the mix it makes (CursorValueError) instead of
    missed; rows re-read unchanged are not sent again.

    >>> iso_text_start('2024-01-02T01:00:00+05:00')
    '2024-01-01'
    """
    text = value.strip()
    if not _ISO_START.match(text):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # a zone or suffix Python does not read: two days below its own date is below every offset
        try:
            return (date.fromisoformat(text[:10]) - timedelta(days=2)).isoformat()
        except ValueError:  # no date at all ('2024-13-45 10:00'): compared as the text it is
            return None
    try:
        if when.tzinfo is not None:
            when = when.astimezone(timezone.utc).replace(tzinfo=None)
        return (when - timedelta(hours=14)).date().isoformat()
    except OverflowError:  # within a day of year 1 or 9999: two days below its own date, or year 1
        day = when.date()
        return (day - timedelta(days=2)).isoformat() if day > date(1, 1, 2) else "0001-01-01"


def refuse_stuck_cursor(field: str, delivered: Any) -> None:
    """A cursor stored before such values were refused: say so instead of reading nothing."""
    if isinstance(delivered, float) and (math.isnan(delivered) or delivered == math.inf):
        raise _stuck(field, "+inf" if delivered > 0 else "NaN",
                     "as the sync's stored cursor (delivered by an earlier run); once the source sends NULL for it, sync.reset() "
                     "(dfsync reset NAME) makes the next run a first load")

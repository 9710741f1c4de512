"""CSV columns that polars turns into dates and timestamps (``try_parse_dates``) must mean what
their text says.

polars reads a date written with slashes, dashes or dots before the year (``02/01/2024``) day
first, always: a US file of monthly figures (``02/01/2024`` = 1 February) arrived as 2 January
without a word, and only a day above 12 (``01/13/2024``) made the read fail. It also cuts a
timestamp's fraction to microseconds (``09:30:00.123456789`` arrived as ``.123456``). Both are
refused here, before anything is read, naming the column, a value and the way to say what it
means. A column whose text has a first field above 12 is read day first as polars does (no other
reading is possible).
"""

from __future__ import annotations

import re
from typing import Any

import polars as pl

from ..errors import SourceError

#: day / month / year as polars recognises it (its "DMY" patterns)
_DAY_FIRST = r"^\s*(\d{1,2})([-/.])(\d{1,2})[-/.]\d{4}"
#: more than six digits after the seconds
_FINER_THAN_US = r"\d:\d\d[.,]\d{7,}"


def _date_exprs(temporal: dict[str, pl.DataType]) -> list[pl.Expr]:
    """What :func:`_refuse_dates` needs of each date or timestamp column's text, in one pass."""
    exprs = []
    for c, t in temporal.items():
        col = pl.col(c)
        exprs.append(col.drop_nulls().first().alias(f"{c}\0first"))
        exprs.append(col.str.extract(_DAY_FIRST, 1).cast(pl.Int32).max().alias(f"{c}\0day"))
        if isinstance(t, pl.Datetime) and t.time_unit != "ns":
            exprs.append(col.filter(col.str.contains(_FINER_THAN_US)).first().alias(f"{c}\0fine"))
    return exprs


def _refuse_dates(found: dict[str, Any], temporal: dict[str, pl.DataType], describe: str) -> None:
    """Refuse CSV columns polars would parse into other dates or cut timestamps (see above)."""
    for c, t in temporal.items():
        first, day = found[f"{c}\0first"], found[f"{c}\0day"]
        hit = re.match(_DAY_FIRST, first or "")
        if hit and day is not None and day <= 12:
            sep = hit.group(2)
            kind, fn = ("dates", "to_date") if isinstance(t, pl.Date) else ("timestamps", "to_datetime")
            rest = first[hit.end():].strip()
            tail = " %H:%M:%S" if rest.count(":") == 2 else " %H:%M" if rest else ""
            raise SourceError(
                f"{describe}: column {c!r} holds {kind} written like {first!r}, which could be day first or "
                f"month first, and no value settles it (none has a first number above 12); polars would read "
                f"them day first. Say which: read the column as text and parse it in the mapping, "
                f"sources.files(..., schema_overrides={{{c!r}: pl.String}}) with "
                f"mapping={{{c!r}: pl.col({c!r}).str.{fn}('%m{sep}%d{sep}%Y{tail}')}} for month first "
                f"('%d{sep}%m{sep}%Y{tail}' for day first). Nothing was read or sent.").quoting(c, (repr(first), first))
        fine = found.get(f"{c}\0fine")
        if fine is not None:
            zone = f", {t.time_zone!r}" if isinstance(t, pl.Datetime) and t.time_zone else ""
            raise SourceError(
                f"{describe}: column {c!r} has timestamps finer than microseconds ({fine!r}), which polars "
                f"would cut to microseconds; read them as nanoseconds: sources.files(..., schema_overrides="
                f"{{{c!r}: pl.Datetime('ns'{zone})}}). Nothing was read or sent.").quoting(c, (repr(fine), fine))


#: an integer written with a leading zero (``01234``, ``-007``), which a number would not keep
_LEADING_ZERO = r"^\s*[+-]?0\d"
_FILE = "\0file"


def _digits(text: pl.Expr) -> pl.Expr:
    """The significant digits of a number's text (``'-0.0120e5'`` -> ``'12'``)."""
    mantissa = text.str.replace(r"[eE].*$", "").str.replace_all(r"[^0-9]", "")
    return mantissa.str.strip_chars_start("0").str.strip_chars_end("0")


def _lost(text: pl.Expr, value: pl.Expr) -> pl.Expr:
    """Does the float ``value`` read from ``text`` keep fewer digits than the text has (or overflow)?"""
    return value.is_not_null() & (
        (value.is_finite() & (_digits(text) != _digits(value.cast(pl.String))))
        | (value.is_infinite() & ~text.str.to_lowercase().str.contains("inf")))


def _may_lose(text: pl.Expr, value: pl.Expr) -> pl.Expr:
    """A cheap superset of :func:`_lost`: at most 15 significant digits always read back (a text of 15
    bytes or fewer has no more), and so does a text written as the float's own shortest form; an
    exponent can still overflow (inf) or underflow (0)."""
    return value.is_not_null() & (((text.str.len_bytes() > 15) & (value.cast(pl.String) != text))
                                  | value.is_infinite() | (value == 0))


def csv_checks(files: list[str], options: dict[str, Any], describe: str, *, dates: bool = True) -> list[str]:
    """The checks of a CSV source's files before they are read, in one pass over their text: its
    dates (``dates``: see the module's docstring) and its numbers. Returns the columns to read as
    text: those polars would read as integers although some value is written with a leading zero
    (a zip code ``01234``, an account ``007``), which as numbers lose the zeros (``1234``) without a
    word. A column polars would read as floats although a value has more digits than a float keeps
    (``1234567890123456.78`` read as ``1234567890123456.8``, an integer above 2**53 among decimals)
    is refused, naming the column, the value and the file. (The two checks scanned every new
    version of the files once each.)"""
    given = options.get("schema_overrides") or {}
    if "schema" in options or "dtypes" in options or not isinstance(given, dict):
        return []  # the types are given (every column, or by position): the user's own choice, read as given
    try:
        schema = pl.scan_csv(files, try_parse_dates=True, **options).collect_schema()
    except Exception:  # noqa: BLE001 - an unreadable file: the read itself says so, with its name
        return []
    temporal = {c: t for c, t in schema.items() if isinstance(t, (pl.Date, pl.Datetime))} if dates else {}
    ints = [c for c, t in schema.items() if t.is_integer() and c not in given]
    floats = [c for c, t in schema.items() if t.is_float() and c not in given]
    if not temporal and not ints and not floats:
        return []
    text = pl.scan_csv(files, **{**options, "include_file_paths": _FILE, "schema_overrides": {
        **given, **dict.fromkeys([*temporal, *ints, *floats], pl.String)}})
    exprs = _date_exprs(temporal)
    exprs += [pl.col(c).str.contains(_LEADING_ZERO).any().alias(c) for c in ints]
    exprs += [_may_lose(pl.col(c), pl.col(c).cast(pl.Float64, strict=False)).any().alias(c) for c in floats]
    try:
        found = text.select(exprs).collect().row(0, named=True)
    except Exception:  # noqa: BLE001 - as above
        return []
    _refuse_dates(found, temporal, describe)
    try:
        for c in (c for c in floats if found[c]):  # the few values that may lose digits, looked at closely
            maybe = text.select(pl.col(c), pl.col(c).cast(pl.Float64, strict=False).alias("\0f"), pl.col(_FILE)).filter(
                _may_lose(pl.col(c), pl.col("\0f"))).collect()
            hit = maybe.filter(_lost(pl.col(c), pl.col("\0f"))).head(1)
            if hit.height:
                plain = pl.col(c).str.strip_chars()
                stats = text.select(pl.col(c).str.contains("[eEnN]").any().alias("exp"),  # exponents, nan, inf
                                    plain.str.extract(r"^[+-]?0*(\d*)", 1).str.len_chars().max().alias("int"),
                                    plain.str.extract(r"\.(\d*)$", 1).str.len_chars().max().alias("places"))
                raise _float_error(describe, c, hit.row(0), stats.collect().row(0, named=True))
    except SourceError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable file: the read itself says so, with its name
        return []
    return [c for c in ints if found[c]]


def _float_error(describe: str, c: str, hit: tuple, stats: dict[str, Any]) -> SourceError:
    value, as_float, file = hit[0].strip(), hit[1], hit[2]
    way = f"as text, sources.files(..., schema_overrides={{{c!r}: pl.String}}), to cast in the mapping"
    places = stats["places"] or 0
    digits = (stats["int"] or 0) + places
    if not stats["exp"] and digits <= 38:  # the decimal type every value of the column fits
        way = (f"as exact decimals, sources.files(..., schema_overrides={{{c!r}: pl.Decimal({max(digits, 1)}, "
               f"{places})}}), or {way}")
    return SourceError(
        f"{describe}: column {c!r} holds {value!r} (in {file}), which polars would read as the float "
        f"{as_float!r}: a float keeps about 15 significant digits. Read the column {way}. Nothing was "
        f"read or sent.").quoting(c, (repr(value), value), (repr(as_float), as_float))

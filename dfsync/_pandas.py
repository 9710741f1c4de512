"""A pandas DataFrame as a polars DataFrame, converted as docs/SCHEMA.md says or refused.

``pandas_to_polars`` is the one place a pandas frame is converted. What it does:

* NaN in a float column is pandas' missing value: it becomes NULL (a polars frame's NaN
  stays NaN). Nullable extension dtypes (``Int64``, ``boolean``, ``string``, ``Float64``)
  keep their type; a categorical column is sent as its values (text, or the categories'
  type); a pyarrow-backed date64 column of whole days stays a date (polars makes timestamps).
* An object column converts when its values are of one kind (all text, all bytes, all
  ints, all dicts, ...); ints mixed with floats convert to float when every int is exact
  in a float (up to 2**53). An object column of only None/NaN is polars' Null type, as in a
  polars frame (polars would make it text): its first values give it a type (docs/SCHEMA.md).
* Refused with a :class:`ConfigError` naming the column and the fix: an object column of
  mixed kinds (ints and strings, text and bytes, ...) or of arbitrary Python objects,
  Period / Interval / sparse / complex columns, MultiIndex column labels, duplicate column
  names, and a MultiIndex or named row index (its values would be dropped: ``reset_index()``
  makes them columns). An unnamed row index (row numbers) is not sent.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import polars as pl

from ._arrow import is_uuid, uuid_text
from .errors import ConfigError

__all__ = ["pandas_to_polars"]

_EXACT = 2**53


def _kind(v: Any) -> str | None:
    import numpy as np

    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, np.integer)):
        return "int"
    if isinstance(v, (float, np.floating)):
        return "float"
    if isinstance(v, str):
        return "text"
    if isinstance(v, (bytes, bytearray)):
        return "bytes"
    if isinstance(v, decimal.Decimal):
        return "decimal"
    if isinstance(v, dt.datetime):  # pandas.Timestamp too
        return "datetime"
    if isinstance(v, dt.date):
        return "date"
    if isinstance(v, dt.time):
        return "time"
    if isinstance(v, dt.timedelta):  # pandas.Timedelta too
        return "duration"
    if isinstance(v, dict):
        return "dict"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "list"
    return None


#: what pandas' (C-speed) ``infer_dtype`` says of a column whose values are all of one kind
_ONE_KIND = frozenset({"string", "bytes", "floating", "integer", "decimal", "boolean", "datetime", "date",
                       "time", "timedelta", "empty"})


def _check_object_column(name: str, col: Any) -> str | None:
    """Refuse an object column that has no one column type; returns pandas' inferred kind of it
    (``"empty"``: only None/NaN), or None for a pandas string column."""
    import pandas as pd

    if isinstance(col.dtype, pd.StringDtype):
        return None  # text (or missing) by construction
    inferred = pd.api.types.infer_dtype(col, skipna=True)
    if inferred in ("datetime", "date", "decimal"):
        _check_one_kind(name, inferred, col.dropna())
    if inferred in _ONE_KIND:
        return inferred  # one kind: no need to look at each value in Python (336k flights: 2 s a column)
    values = col.dropna()
    kinds: dict[str, Any] = {}
    for v in values:
        k = _kind(v)
        if k is None:
            raise ConfigError(
                f"column {name!r} holds Python objects of type {type(v).__name__} ({v!r:.60}), which have no "
                f"column type; convert them in the frame first, e.g. df[{name!r}] = df[{name!r}].astype(str) "
                f"(or map them to numbers / dicts)").quoting(name, (f"{v!r:.60}", v))
        kinds.setdefault(k, v)
        if len(kinds) > 2:
            break
    if len(kinds) <= 1:
        return inferred
    if set(kinds) == {"int", "float"}:
        ints = [v for v in values if _kind(v) == "int"]
        if all(-_EXACT <= int(v) <= _EXACT for v in ints):
            return inferred  # converted to float, every value exact
    shown = ", ".join(f"{k} ({v!r:.30})" for k, v in kinds.items())
    raise ConfigError(
        f"column {name!r} mixes values of different kinds: {shown}; a column has one type. Convert it "
        f"in the frame first, e.g. df[{name!r}] = df[{name!r}].astype(str) for text, or "
        f"pd.to_numeric(df[{name!r}]) for numbers").quoting(name, *((f"{v!r:.30}", v) for v in kinds.values()))


def _check_one_kind(name: str, inferred: str, values: Any) -> None:
    """What pandas calls one kind but converts with a loss: naive datetimes with tz-aware ones (the
    zone was dropped: 00:00 UTC arrived as a naive 00:00), datetimes among dates (``date`` for pandas:
    12:00 arrived as the date), decimals wider than the 38 digits a column holds (polars crashed on
    ``Decimal('1e40')``) or not finite."""
    fix = f"df[{name!r}] = df[{name!r}].astype(str)"
    if inferred == "datetime":
        aware = {v.tzinfo is not None for v in values}
        if len(aware) > 1:
            raise ConfigError(
                f"column {name!r} mixes naive datetimes with tz-aware ones; they are kept apart (a naive value "
                f"has no instant). Make them one kind first, e.g. df[{name!r}] = pd.to_datetime(df[{name!r}], "
                f"utc=True) if the naive ones are UTC")
    elif inferred == "date":
        hit = next((v for v in values if isinstance(v, dt.datetime)), None)
        if hit is not None:
            raise ConfigError(
                f"column {name!r} mixes dates with datetimes ({hit!r:.60}), which would arrive as dates without "
                f"their time of day; make them one kind first, e.g. df[{name!r}] = pd.to_datetime(df[{name!r}])"
            ).quoting(name, (f"{hit!r:.60}", hit))
    else:
        whole = scale = 0
        for v in values:
            if not v.is_finite():
                if v.is_nan():
                    continue  # pandas' missing value, as NaN in a float column
                raise ConfigError(f"column {name!r} holds the decimal {v!r}, which a decimal column cannot hold; "
                                  f"convert it first, e.g. {fix} or df[{name!r}].astype(float)").quoting(name, (repr(v), v))
            t = v.as_tuple()
            whole, scale = max(whole, len(t.digits) + int(t.exponent)), max(scale, -int(t.exponent))
            if whole + scale > 38:
                raise ConfigError(
                    f"column {name!r} holds decimals needing more than 38 digits ({v!r:.60} among them), more than "
                    f"a decimal column holds; convert it first, e.g. {fix} (every digit) or "
                    f"df[{name!r}].astype(float)").quoting(name, (f"{v!r:.60}", v))


def pandas_to_polars(df: Any) -> pl.DataFrame:
    """Convert a pandas DataFrame (see the module docstring), or raise ConfigError naming the column."""
    import pandas as pd

    if isinstance(df.columns, pd.MultiIndex):
        raise ConfigError(
            f"the frame's columns have several levels ({list(df.columns[:2])}...); give them one-level "
            f"names first, e.g. df.columns = ['_'.join(map(str, c)) for c in df.columns]")
    dup = df.columns[df.columns.duplicated()].tolist()
    if dup:
        raise ConfigError(f"the frame has duplicate column names {dup[:5]}; rename them so each is unique")
    index = df.index
    if isinstance(index, pd.MultiIndex) or index.name is not None:
        names = [n for n in index.names if n is not None]
        clash = [n for n in names if n in df.columns]
        if clash:  # df.reset_index() would fail: 'cannot insert id, already exists'
            raise ConfigError(
                f"the frame's row index {names} is named like its column{'s' if len(clash) > 1 else ''} "
                f"{clash}, so it is not clear which to send; drop the index with df.reset_index(drop=True) "
                f"(the column stays), or rename it and keep it: df.rename_axis({['row_' + str(n) for n in names] if len(names) > 1 else 'row_' + str(names[0])!r}).reset_index()")
        raise ConfigError(
            f"the frame's row index {names or list(index.names)} holds values that would not be sent; "
            f"make them columns with df.reset_index() (or drop them with df.reset_index(drop=True))")
    empty: list[str] = []  # object columns of only None/NaN
    for name in df.columns:
        col = df[name]
        dtype = col.dtype
        kind = getattr(dtype, "kind", "")
        if isinstance(dtype, (pd.PeriodDtype, pd.IntervalDtype)):
            raise ConfigError(
                f"column {name!r} is a pandas {dtype} column, which has no column type; convert it first, "
                f"e.g. df[{name!r}] = df[{name!r}].astype(str)"
                + (f" or df[{name!r}].dt.to_timestamp()" if isinstance(dtype, pd.PeriodDtype) else ""))
        if isinstance(dtype, pd.SparseDtype):
            raise ConfigError(f"column {name!r} is sparse; convert it first: df[{name!r}] = "
                              f"df[{name!r}].sparse.to_dense()")
        if kind == "c":
            raise ConfigError(f"column {name!r} holds complex numbers, which have no column type; split "
                              f"them first (np.real / np.imag) or df[{name!r}] = df[{name!r}].astype(str)")
        if kind == "O" and _check_object_column(str(name), col) == "empty":
            empty.append(str(name))
    try:
        out = pl.from_pandas(df)
    except BaseException as exc:  # name the column that fails (a polars panic is a BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        for name in df.columns:
            try:
                pl.from_pandas(df[[name]])
            except BaseException as col_exc:
                if isinstance(col_exc, (KeyboardInterrupt, SystemExit)):
                    raise
                fix = (f"df[{name!r}] = df[{name!r}].dt.tz_convert('UTC') (the same instants; a zone such as a "
                       f"fixed offset polars cannot read)" if isinstance(df[name].dtype, pd.DatetimeTZDtype)
                       else f"df[{name!r}] = df[{name!r}].astype(str)")
                raise ConfigError(
                    f"column {name!r} cannot be converted ({type(col_exc).__name__}: "
                    f"{str(col_exc).splitlines()[0][:200]}); convert it in the frame first, e.g. {fix}") from None
        raise ConfigError(f"the pandas frame cannot be converted: {type(exc).__name__}: {str(exc)[:200]}") from None
    for name in df.columns:  # pyarrow-backed date64 (days in milliseconds): polars reads a timestamp
        arrow = getattr(df[name].dtype, "pyarrow_dtype", None)
        if arrow is not None and str(arrow) == "date64[ms]" and (out[str(name)].dt.truncate("1d") == out[str(name)]).all():
            out = out.with_columns(out[str(name)].cast(pl.Date))
        elif arrow is not None and is_uuid(arrow):  # pd.ArrowDtype(pa.uuid()): polars reads raw bytes
            out = out.with_columns(uuid_text(pl.col(str(name))))
    if empty:  # an object column of only None/NaN has no kind: polars' Null, as a polars frame's
        out = out.with_columns(pl.col(empty).cast(pl.Null))  # polars reads it as text (docs/SCHEMA.md)
    for name in df.columns:  # pandas Timestamps with nanoseconds in an object column convert to microseconds
        dtype = out.schema[str(name)]
        if getattr(df[name].dtype, "kind", "") == "O" and isinstance(dtype, pl.Datetime) and dtype.time_unit != "ns":
            hit = next((v for v in df[name].dropna() if getattr(v, "nanosecond", 0)), None)
            if hit is not None:
                raise ConfigError(
                    f"column {name!r} holds timestamps with nanoseconds ({hit}) as Python objects, which convert "
                    f"to {dtype.time_unit} and would lose them; make it a datetime column first: df[{name!r}] = "
                    f"pd.to_datetime(df[{name!r}]) (nanoseconds kept), or add .dt.floor('us') if they do not matter"
                ).quoting(name, (str(hit), hit))
    for name, dtype in out.schema.items():
        if isinstance(dtype, pl.Object) or type(dtype).__name__ in ("Extension", "BaseExtension"):
            raise ConfigError(f"column {name!r} converts to {dtype}, which has no column type; convert it "
                              f"first, e.g. df[{name!r}] = df[{name!r}].astype(str)")
    return out

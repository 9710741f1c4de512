"""The small protocol every source implements.

A source is a description (no open connection). The staging engine asks it for rows
in one of two shapes, whichever is cheaper for that source:

* ``duckdb_relation(con, cursor)``: a DuckDB relation on the staging connection (files,
  DuckDB SQL): DuckDB reads it natively, no Python in the loop; or an Arrow record batch
  reader (databases), streamed in and counted on the way. May return None.
* ``scan(cursor)``: a polars LazyFrame (always available), streamed into DuckDB as Arrow
  batches.

``cursor`` is None (full refresh) or a :class:`CursorFilter`: read only rows whose
``field >= value`` (at or past the last delivered cursor; the diff removes the
boundary rows that were already delivered). Sources push it down where they can.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

import polars as pl

from .._kinds import Kinds

__all__ = [
    "CursorFilter",
    "Source",
    "query_text",
    "register_source",
    "source_from_config",
]


#: An incremental run reads the rows at or above its cursor, and the rows whose cursor is null:
#: they cannot be placed in the window, and reading them only on the first run would leave a later
#: null-cursor row (or a change to one) behind without a word. Every source builds its filter here.
NULL_CURSOR_SQL = "({field} >= {value} OR {field} IS NULL)"



def query_text(sql: str) -> str:
    """A source's SQL as it is kept and wrapped (``SELECT * FROM (<query>) AS q WHERE ...`` for a
    cursor, a split or a LIMIT 0): without surrounding blanks and trailing semicolons, and ending
    in a newline when its last line holds a ``--`` comment, which would otherwise swallow the
    closing parenthesis of every wrapped form (a query ending in '-- all rows' failed at
    create_sync, or only at its second incremental run)."""
    sql = sql.strip().rstrip(";").rstrip()
    return sql + "\n" if "--" in sql.rsplit("\n", 1)[-1] else sql

@dataclass(frozen=True)
class CursorFilter:
    field: str
    value: Any  # a Python scalar (int, float, str, date, datetime)

    def apply(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """``field >= value OR field IS NULL`` on a polars frame (a row with no cursor value has no
        place in the window, so every incremental run reads it and the diff sends it only when it
        changed; see :data:`NULL_CURSOR_SQL`). A stored time-zone-aware cursor is compared in the
        column's own time zone (polars refuses to compare two zones), so a cursor kept from a
        column in America/New_York reads the same instants on the next run."""
        value: Any = self.value
        dtype = lf.collect_schema().get(self.field)  # once: for a CSV or NDJSON scan it reads the files' first rows
        refuse_other_type(self.field, value, dtype)
        if isinstance(value, datetime) and value.tzinfo is not None:
            if isinstance(dtype, pl.Datetime) and dtype.time_zone:
                value = pl.lit(value).dt.convert_time_zone(dtype.time_zone)
        elif isinstance(value, str) and isinstance(dtype, pl.Decimal):
            value = Decimal(value)  # a decimal cursor stored as text before it was kept as a decimal
        return lf.filter((pl.col(self.field) >= value) | pl.col(self.field).is_null())

    def where(self, quoted_field: str, placeholder: str) -> str:
        """The SQL condition of :meth:`apply` for a database or DuckDB query."""
        return NULL_CURSOR_SQL.format(field=quoted_field, value=placeholder)


def refuse_other_type(field: str, value: Any, dtype: Any) -> None:
    """SourceError when the cursor column is now of a type the stored cursor cannot be compared
    with (text, a number, naive or aware datetimes swapped): polars' own words named no way out."""
    from datetime import date

    from ..errors import SourceError

    if dtype is None or value is None:
        return
    temporal = isinstance(dtype, (pl.Datetime, pl.Date))
    if isinstance(value, datetime):
        fits = dtype == pl.Date or isinstance(dtype, pl.Datetime) and \
            (dtype.time_zone is None) == (value.tzinfo is None)
    elif isinstance(value, date):
        fits = temporal
    elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        fits = dtype.is_numeric()
    elif isinstance(value, str):
        fits = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Decimal)
    else:
        return
    if not fits:
        raise SourceError(
            f"cursor_field {field!r} is {dtype} in the source now, but the sync's last cursor, "
            f"{value} ({type(value).__name__}), was read from it as another type: its window cannot be read. "
            f"Give the column its former type back in the source, or run sync.reset() "
            f"to forget the cursor (the next run is a first load; the destination is not touched); "
            f"nothing was sent")


class Source(ABC):
    kind: ClassVar[str]
    #: True when the source only exists in this process (an in-memory frame).
    session_only: ClassVar[bool] = False

    @abstractmethod
    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame: ...

    #: True when ``SELECT count(*)`` of its relation reads only metadata (Parquet footers).
    counts_from_metadata: ClassVar[bool] = False

    def duckdb_relation(self, con: Any, cursor: CursorFilter | None = None) -> Any | None:
        """A DuckDB relation on ``con``, or a ``pyarrow.RecordBatchReader`` to stream, or None."""
        return None

    def snapshot(self) -> str | None:
        """A cheap signature of the data as it is now (files: paths, sizes, mtimes), or None.

        Equal signatures before and after a read mean the read saw one version of the data.
        """
        return None

    def schema(self) -> pl.Schema:
        """Column names and types, without reading the data where possible."""
        return self.scan().collect_schema()

    def cursor_problem(self, field: str) -> str | None:
        """Why the source column ``field`` cannot be an incremental cursor, or None (the column
        is given as one type and compared in the source as another)."""
        return None

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-safe configuration (secrets as ``env:NAME`` references)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Source:
        return cls(**config)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"{self.kind}({args})"

    def __repr__(self) -> str:
        return f"<dfsync source {self.describe()}>"

    def read_error(self, message: str) -> str:
        """Why reading this source failed, for the run's error (``message``: the reader's first
        line, without the engine's wrapping); a source adds what the user can do about it."""
        return f"could not read {self.describe()}: {_unwrapped(message)}"

    def identity(self) -> str:
        return json.dumps({"kind": self.kind, **self.config()}, sort_keys=True, default=str)


def _unwrapped(message: str) -> str:
    """A reader's error without DuckDB's wrapping of a polars/Arrow stream (``Invalid Input Error:
    reading the stream registered as '_src_raw' failed: Unknown error: ...``)."""
    message = re.sub(r"^.*?reading the stream registered as '[^']*' failed: (Unknown error: )?", "", message)
    return re.sub(r"\.?\s*Detail: Python exception: Traceback.*$", "", message)  # the rest is not on this line


_KINDS: Kinds[Source] = Kinds("source", [f"dfsync.sources.{m}" for m in ("_frame", "_files", "_duckdb_query", "_database")])
register_source = _KINDS.register
source_from_config = _KINDS.from_config

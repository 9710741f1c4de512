"""In-memory frames: polars (eager or lazy), pandas, Arrow. Session-only by nature.

The source keeps the frame object, not a copy: every run (and preview) reads it as it is
then, through :meth:`FrameSource.read`, the one place a frame becomes a polars LazyFrame.
An in-place pandas edit (``df.loc[0:4, "dep_delay"] = 999``) is seen by the next run; polars
frames and Arrow tables are read without a copy.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from .._pandas import pandas_to_polars
from ..errors import ConfigError, SessionOnlyError
from .base import CursorFilter, Source, register_source


@register_source
class FrameSource(Source):
    kind = "frame"
    session_only = True

    def __init__(self, df: Any, *, name: str | None = None) -> None:
        self.name = name
        _check_frame(df)
        self.frame = df

    def read(self) -> pl.LazyFrame:
        """The frame as it is now, as a polars LazyFrame (pandas is converted at each read)."""
        return _to_lazy(self.frame)

    def scan(self, cursor: CursorFilter | None = None) -> pl.LazyFrame:
        lf = self.read()
        if cursor is not None:
            lf = cursor.apply(lf)
        return lf

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Source:
        raise SessionOnlyError(
            "this sync reads an in-memory frame that only exists in the Python session that "
            "created it; run it from that session, or give it a files, duckdb_query or "
            "database source to run it from another process (CLI, scheduler)"
        )

    def describe(self) -> str:
        return f"frame({self.name or 'in-memory'})"


def _check_frame(df: Any) -> None:
    if isinstance(df, (pl.LazyFrame, pl.DataFrame)) or type(df).__module__.split(".")[0] in ("pyarrow", "pandas"):
        return
    raise ConfigError(
        f"sources.frame() takes a polars DataFrame/LazyFrame, a pandas DataFrame or an Arrow "
        f"table, not {type(df).__name__}; for files use sources.files(path)"
    )


def _to_lazy(df: Any) -> pl.LazyFrame:
    if isinstance(df, pl.LazyFrame):
        return df
    if isinstance(df, pl.DataFrame):
        return df.lazy()
    mod = type(df).__module__.split(".")[0]
    if mod == "pyarrow":
        import pyarrow as pa

        if isinstance(df, pa.RecordBatch):
            df = pa.Table.from_batches([df])
        return pl.from_arrow(df).lazy()  # type: ignore[union-attr]
    if mod == "pandas":
        return pandas_to_polars(df).lazy()
    _check_frame(df)
    raise AssertionError("unreachable")
